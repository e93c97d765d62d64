"""The fleet view (page, JSON, CLI): which kiosk needs a visit, on both engines."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_sync import HubThread, connect, make_kiosk, run_cli

import kiosk
from kiosk.hub.fleet import DRIFT_MIN_CASES, drift_check, fleet
from kiosk.hub.ingest import DeviceReport
from kiosk.sync.client import push
from kiosk.sync.payload import (
    CalibrationPayload,
    DiagnosisPayload,
    FindingPayload,
    ModelPayload,
    ResultPayload,
)

pytest_plugins = ("pg",)

NOW = datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def result(
    days_ago: int, probability: float, confirmed: int | None, model: str = "1.2.0"
) -> ResultPayload:
    return ResultPayload(
        id=uuid.uuid4().hex,
        revision=2 if confirmed is not None else 1,
        created_at=_iso(NOW - timedelta(days=days_ago)),
        status="ok",
        model=ModelPayload(id="cxr-pneumonia-effl0", version=model, sha256="ab"),
        calibration_id="cal-site-1",
        findings=[
            FindingPayload(
                code="pneumonia",
                label="Pneumonia",
                raw=probability,
                probability=probability,
                threshold=0.42,
                positive=probability >= 0.42,
            )
        ],
        diagnoses=[]
        if confirmed is None
        else [DiagnosisPayload(code="pneumonia", label=confirmed, confirmed_by="dr-a")],
    )


@pytest.fixture
def hub(hub_url: str) -> HubThread:
    h = HubThread(hub_url)
    yield h  # type: ignore[misc]
    h.close()


def test_fleet_says_which_kiosk_needs_a_visit(hub: HubThread) -> None:
    store = hub.store
    for name in ("ward-ok", "ward-drift", "ward-backlog", "ward-silent"):
        store.add_device(name)
    # ward-ok: 40 confirmed cases, calibrated (p = 0.5, half positive), 2 results per day.
    ok = [result(i % 7, 0.5, i % 2) for i in range(40)]
    store.ingest(
        "ward-ok",
        ok,
        report=DeviceReport(
            outbox={"pending": 40, "failed": 0, "sent": 10},
            kiosk_sent_at=_iso(NOW),
            kiosk_version="0.1.0",
        ),
    )
    # ward-drift: the model says 10 %, but 35 of 40 confirmed films were positive.
    drift = [result(1, 0.1, int(i < 35), model="1.1.0") for i in range(40)]
    store.ingest(
        "ward-drift", drift, report=DeviceReport(outbox={"pending": 40, "failed": 0, "sent": 0})
    )
    # ward-backlog: 700 waiting before this push of 10, and a clock stuck in 1970.
    store.ingest(
        "ward-backlog",
        [result(0, 0.3, None) for _ in range(10)],
        report=DeviceReport(
            outbox={"pending": 650, "failed": 50, "sent": 0},
            kiosk_sent_at="1970-01-01T00:10:00.000Z",
        ),
    )

    kiosks = {k.name: k for k in fleet(store, now=NOW + timedelta(minutes=1))}

    assert set(kiosks) == {"ward-ok", "ward-drift", "ward-backlog", "ward-silent"}
    good = kiosks["ward-ok"]
    assert good.needs_visit == [] and not good.drift_flag
    assert good.kiosk_version == "0.1.0" and good.model_version == "1.2.0"
    assert good.calibration_id == "cal-site-1" and good.backlog == 0
    assert [d["n"] for d in good.results_per_day] == [5, 5, 6, 6, 6, 6, 6]
    assert good.results_per_day[-1]["day"] == NOW.date().isoformat()
    assert good.drift[0].n == 40 and good.drift[0].observed_positives == 20

    bad = kiosks["ward-drift"]
    assert bad.drift_flag and bad.model_version == "1.1.0"
    assert bad.drift[0].observed_positives == 35 and bad.drift[0].expected_positives == 4.0
    assert any(r.startswith("drift in pneumonia") for r in bad.needs_visit)

    late = kiosks["ward-backlog"]
    assert late.backlog == 690
    assert "690 results waiting on the kiosk" in late.needs_visit
    assert any("clock off" in r for r in late.needs_visit)
    assert kiosks["ward-silent"].needs_visit == ["never pushed"]
    assert kiosks["ward-silent"].backlog is None


def test_drift_needs_enough_cases() -> None:
    few = drift_check("pneumonia", [(0.1, 1)] * (DRIFT_MIN_CASES - 1))
    many = drift_check("pneumonia", [(0.1, 1)] * DRIFT_MIN_CASES)
    assert not few.flagged and few.z is None and "needed" in few.note
    assert many.flagged and many.z is not None and many.z > 3


def _row(html: str, name: str) -> str:
    """The table row of one kiosk on a hub page."""
    (row,) = [r.split("</tr>")[0] for r in html.split("<tr") if f"<td>{name}</td>" in r]
    return row


def test_pages_say_plainly_whether_a_kiosk_is_calibrated(hub: HubThread) -> None:
    store = hub.store
    site = CalibrationPayload(id="cal-site-1", kind="site", date="2026-11-20T09:00:00Z")
    calibrated = {"calibrated": True, "calibration": site}
    raw = {"calibrated": False, "calibration_id": None}
    # ward-site: its newest analysed result is calibrated (an older one was not); the newest of
    # all is a rejected film, which has no probabilities to calibrate and does not count.
    rejected = result(0, 0.5, None).model_copy(update={"status": "rejected", "findings": [], **raw})
    store.ingest(
        "ward-site",
        [
            result(3, 0.5, None).model_copy(update=raw),
            result(1, 0.5, None).model_copy(update=calibrated),
            rejected,
        ],
    )
    # ward-raw: calibrated once, now not: 4 confirmed cases on raw model scores.
    store.ingest(
        "ward-raw",
        [
            result(5, 0.5, None).model_copy(update=calibrated),
            *[result(1, 0.5, i % 2).model_copy(update=raw) for i in range(4)],
        ],
    )
    store.ingest("ward-old", [result(1, 0.5, None)])  # a kiosk older than `calibrated`
    admin = store.set_admin_token()
    client = hub.app.test_client()

    kiosks = {k.name: k for k in fleet(store, now=NOW + timedelta(minutes=1))}
    pages = [
        client.get(p, auth=("supervisor", admin)).get_data(as_text=True) for p in ("/", "/fleet")
    ]
    data = client.get("/api/v1/fleet", auth=("supervisor", admin)).get_json()

    good, bad, old = kiosks["ward-site"], kiosks["ward-raw"], kiosks["ward-old"]
    assert (good.calibrated, good.calibration_id, good.calibration_kind, good.calibration_date) == (
        True,
        "cal-site-1",
        "site",
        "2026-11-20T09:00:00Z",
    )
    assert (bad.calibrated, bad.calibration_id, bad.calibration_kind) == (False, None, None)
    assert (old.calibrated, old.calibration_id, old.calibration_kind) == (None, "cal-site-1", None)
    assert bad.drift[0].uncalibrated == 4 and "4 of 4 not calibrated" in bad.drift[0].note
    assert good.drift == [] and old.drift == []
    by_name = {k["name"]: k for k in data["kiosks"]}
    assert by_name["ward-raw"]["calibrated"] is False and by_name["ward-old"]["calibrated"] is None
    for html in pages:
        assert "not calibrated" in _row(html, "ward-raw")
        assert "site calibration" not in _row(html, "ward-raw")
        assert "cal-site-1" in _row(html, "ward-site")
        assert "site calibration, 2026-11-20" in _row(html, "ward-site")
        assert "not calibrated" not in _row(html, "ward-site")
        assert "cal-site-1" in _row(html, "ward-old")
        assert "not calibrated" not in _row(html, "ward-old")
        assert "site calibration" not in _row(html, "ward-old")


def test_fleet_page_json_and_cli_after_a_real_push(tmp_path: Path, hub: HubThread) -> None:
    config, store, _ = make_kiosk(tmp_path, "ward-3", 12)
    connect(config, hub.url, hub.store.add_device("ward-3"), batch_size=5)
    assert push(store, config).complete
    client = hub.app.test_client()
    assert client.get("/fleet").status_code == 401
    assert client.get("/api/v1/fleet").status_code == 401
    admin = hub.store.set_admin_token()

    page = client.get("/fleet", auth=("supervisor", admin)).get_data(as_text=True)
    data = client.get("/api/v1/fleet", auth=("supervisor", admin)).get_json()

    (row,) = data["kiosks"]
    assert row["name"] == "ward-3" and row["kiosk_version"] == kiosk.__version__
    assert row["model_id"] == "cxr-pneumonia-effl0" and row["model_version"] == "1.2.0"
    assert row["results_total"] == 12 and row["backlog"] == 0
    assert row["drift_flag"] is False and len(row["results_per_day"]) == 7
    assert "ward-3" in page and kiosk.__version__ in page and "cxr-pneumonia-effl0" in page
    cli = run_cli(config, ["hub", "fleet", "--json", "--database-url", hub.store.url])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)[0]["results_total"] == 12
