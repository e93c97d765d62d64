"""Exports for sneakernet: atomic files with a manifest; `kiosk hub import` without duplicates.

Imports run on both hub engines (``hub_url``, tests/pg.py)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from test_sync import (
    SECRET_MARKERS,
    HubThread,
    cli_command,
    connect,
    hub_view,
    kiosk_view,
    make_kiosk,
    run_cli,
)

from kiosk.errors import SyncError
from kiosk.hub.importer import import_export, read_export
from kiosk.hub.store import HubStore
from kiosk.store import ResultRecord
from kiosk.sync.client import push
from kiosk.sync.export import export_results, manifest_path, parse_time

pytest_plugins = ("pg",)

FORMATS = ["jsonl", "csv", "sqlite", "fhir"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_round_trips_through_hub_import_twice(
    tmp_path: Path, fmt: str, hub_url: str
) -> None:
    config, store, ids = make_kiosk(tmp_path, "kiosk-x", 20)
    confirmed = next(i for i in ids if store.get_result(i)["status"] == "ok")  # type: ignore[index]
    store.confirm_diagnosis(confirmed, "effusion", 1, by="dr-x")
    out = tmp_path / "stick" / f"export.{fmt}"

    manifest = export_results(store, config, since="2026-01-01", until=None, fmt=fmt, out=out)  # type: ignore[arg-type]

    data = out.read_bytes()
    on_disk = json.loads(manifest_path(out).read_text())
    assert on_disk["sha256"] == hashlib.sha256(data).hexdigest() == manifest.sha256
    assert on_disk["counts"]["results"] == 20 and on_disk["device_id"] == "kiosk-x"
    assert on_disk["schema_version"] == 1 and on_disk["format"] == fmt
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    for marker in SECRET_MARKERS:
        assert marker not in data

    hub = HubStore(hub_url)
    first = import_export(hub, out, "kiosk-x")
    second = import_export(hub, manifest_path(out), "kiosk-x")

    assert (first.inserted, first.unchanged, first.already_imported) == (20, 0, False)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 20)
    assert second.already_imported
    assert hub_view(hub, "kiosk-x") == kiosk_view(store)
    diag = hub.query("select * from diagnoses where result_id = :r", {"r": confirmed})
    assert [(d["code"], d["label"]) for d in diag] == [("effusion", 1)]
    hub.close()


def test_import_after_push_adds_nothing_and_old_export_does_not_revert(
    tmp_path: Path, hub_url: str
) -> None:
    config, store, ids = make_kiosk(tmp_path, "kiosk-y", 8)
    out = tmp_path / "monday.jsonl"
    export_results(store, config, since="2026-01-01", until=None, fmt="jsonl", out=out)
    target = next(i for i in ids if store.get_result(i)["status"] == "ok")  # type: ignore[index]
    store.confirm_diagnosis(target, "pneumonia", 0, by="dr-y")
    hub = HubThread(hub_url)
    try:
        connect(config, hub.url, hub.store.add_device("kiosk-y"))
        assert push(store, config).complete
        report = import_export(hub.store, out, "kiosk-y")
        assert report.inserted == 0 and report.updated == 0 and report.unchanged == 8
        rows = hub.store.query("select * from diagnoses where result_id = :r", {"r": target})
        assert [(r["code"], r["label"]) for r in rows] == [("pneumonia", 0)]
        assert hub_view(hub.store, "kiosk-y") == kiosk_view(store)
    finally:
        hub.close()


def test_time_range_is_since_inclusive_until_day_inclusive(tmp_path: Path) -> None:
    config, store, _ = make_kiosk(tmp_path, "kiosk-z", 0)
    times = [
        "2026-10-31T23:59:59.999Z",
        "2026-11-01T00:00:00.000Z",
        "2026-11-02T23:59:59.999Z",
        "2026-11-03T00:00:00.000Z",
    ]
    for t in times:
        store.save_result(
            ResultRecord(
                status="ok", source="x", input_kind="photo", device_id="kiosk-z", created_at=t
            )
        )
    out = tmp_path / "range.csv"
    manifest = export_results(
        store, config, since="2026-11-01", until="2026-11-02", fmt="csv", out=out
    )
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["created_at"] for r in rows] == times[1:3]
    assert manifest.since == "2026-11-01T00:00:00.000Z"
    assert manifest.until == "2026-11-03T00:00:00.000Z"
    assert parse_time("2026-11-01T12:00:00+02:00") == "2026-11-01T10:00:00.000Z"
    with pytest.raises(SyncError, match="YYYY-MM-DD"):
        parse_time("last tuesday")


def test_altered_or_incomplete_export_is_refused(tmp_path: Path) -> None:
    config, store, _ = make_kiosk(tmp_path, "kiosk-w", 5)
    out = tmp_path / "e.jsonl"
    export_results(store, config, since="2026-01-01", until=None, fmt="jsonl", out=out)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:-1]))  # a copy cut short
    with pytest.raises(SyncError, match="does not match its manifest"):
        read_export(out)
    manifest_path(out).unlink()
    with pytest.raises(SyncError, match="manifest"):
        read_export(out)


def test_cli_export_and_hub_import_as_processes(tmp_path: Path, hub_url: str) -> None:
    config, store, _ = make_kiosk(tmp_path, "kiosk-v", 6)
    result = run_cli(
        config,
        ["export", "--since", "2026-01-01", "--format", "sqlite", "--out", str(tmp_path / "v.db")],
    )
    assert result.exit_code == 0, result.output
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env["KIOSK_DATA_DIR"] = str(tmp_path / "hub")
    env["KIOSK_HUB_DATABASE_URL"] = hub_url
    runs = [
        subprocess.run(
            [*cli_command(), "hub", "import", "--device", "kiosk-v", str(tmp_path / "v.db")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    assert "6 new" in runs[0].stdout
    assert "0 new" in runs[1].stdout and "imported before" in runs[1].stdout
    assert hub_view(hub_url, "kiosk-v") == kiosk_view(store)
    bad = run_cli(config, ["export", "--since", "soon", "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
