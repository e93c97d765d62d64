"""`calibrated` and the calibration's id, kind and date in the wire format, exports and pushes,
with hubs older than those fields still served."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from kiosk.config import KioskConfig
from kiosk.store import FindingRecord, ResultRecord, Store
from kiosk.sync.client import push
from kiosk.sync.export import export_results
from kiosk.sync.payload import LATER_FIELDS, parse_result, read_results

FINDING = FindingRecord("pneumonia", "Pneumonia", 0.2, 0.4, 0.5, False)


def _kiosk(tmp_path: Path) -> tuple[KioskConfig, Store, list[str]]:
    config = KioskConfig(device_id="kiosk-c", data_dir=tmp_path / "kiosk-c")
    store = Store(config.db_path)
    ids = []
    for kind in ("site", "factory", None):
        record = ResultRecord(
            status="ok",
            source="camera",
            input_kind="photo",
            device_id="kiosk-c",
            findings=[FINDING],
            model_id="m",
            model_sha256="a" * 64,
            calibration_id=f"{kind}-cal" if kind else None,
            calibration_kind=kind,
            calibration_date="2026-11-29T10:00:00Z" if kind else None,
        )
        ids.append(store.save_result(record))
    return config, store, ids


def test_stored_results_and_payloads_say_whether_they_are_calibrated(tmp_path: Path) -> None:
    config, store, ids = _kiosk(tmp_path)
    try:
        site, factory, raw = read_results(store, ids)
        assert site.calibrated is True and site.calibration is not None
        assert (site.calibration.id, site.calibration.kind) == ("site-cal", "site")
        assert site.calibration.date == "2026-11-29T10:00:00Z"
        assert factory.calibration is not None and factory.calibration.kind == "factory"
        assert raw.calibrated is False and raw.calibration is None
        row = store.get_result(ids[1])
        assert row is not None and row["calibrated"] and row["calibration_kind"] == "factory"
        # A result from a kiosk older than these fields still reads (they are optional).
        old = json.loads(site.model_dump_json(exclude=set(LATER_FIELDS)))
        assert parse_result(old).calibrated is None

        out = tmp_path / "export.csv"
        export_results(store, config, since="2020-01-01", until=None, fmt="csv", out=out)
        rows = list(csv.DictReader(io.StringIO(out.read_text())))
        by_id = {r["result_id"]: r for r in rows}
        assert by_id[ids[0]]["calibrated"] == "1" and by_id[ids[0]]["calibration_kind"] == "site"
        assert by_id[ids[1]]["calibration_kind"] == "factory"
        assert by_id[ids[2]]["calibrated"] == "0" and by_id[ids[2]]["calibration_id"] == ""
        lines_out = tmp_path / "export.jsonl"
        export_results(store, config, since="2020-01-01", until=None, fmt="jsonl", out=lines_out)
        lines = [json.loads(x) for x in lines_out.read_text().splitlines()]
        assert [x["calibrated"] for x in lines] == [True, True, False]
        assert lines[1]["calibration"] == {
            "id": "factory-cal",
            "kind": "factory",
            "date": "2026-11-29T10:00:00Z",
        }
    finally:
        store.close()


class _OldHub(BaseHTTPRequestHandler):
    """Answers like a hub from before `calibrated`: its wire schema forbids unknown fields."""

    bodies: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        extra = [k for k in body["results"][0] if k in LATER_FIELDS]
        if extra:
            status = 400
            reply = {
                "error": f"results[0].{extra[0]}: is not a known field (the hub never accepts it)",
                "field": f"results[0].{extra[0]}",
            }
        else:
            status = 200
            reply = {"accepted": [r["id"] for r in body["results"]], "rejected": []}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def old_hub() -> Iterator[str]:
    _OldHub.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OldHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_push_to_an_older_hub_leaves_the_new_fields_out(tmp_path: Path, old_hub: str) -> None:
    config, store, ids = _kiosk(tmp_path)
    config.sync.url, config.sync.token, config.sync.timeout_s = old_hub, "t", 5.0
    try:
        report = push(store, config, sleep=lambda s: None)
        assert report.complete and report.sent == len(ids), report.to_dict()
        first, second = _OldHub.bodies
        assert "calibrated" in first["results"][0]
        assert all(not LATER_FIELDS & set(r) for r in second["results"])
        assert second["results"][0]["calibration_id"] == "site-cal"  # the old field stays
    finally:
        store.close()
