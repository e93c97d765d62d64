"""The SQLite store: schema, atomic result writes, audit, outbox, calibrations."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kiosk.errors import StoreError
from kiosk.store import MIGRATIONS, FindingRecord, ResultRecord, Store


def _record(**kw: object) -> ResultRecord:
    base: dict[str, object] = {
        "status": "ok",
        "source": "camera",
        "input_kind": "photo",
        "device_id": "kiosk-1",
        "findings": [FindingRecord("pneumonia", "Pneumonia", 0.8, 0.7, 0.5, True)],
        "model_id": "m",
        "model_sha256": "a" * 64,
        "features": np.linspace(0, 1, 8, dtype=np.float32),
    }
    base.update(kw)
    return ResultRecord(**base)  # type: ignore[arg-type]


def test_result_findings_audit_and_outbox_in_one_write(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    rid = store.save_result(_record())
    row = store.get_result(rid)
    assert row is not None and row["status"] == "ok"
    assert row["findings"][0]["positive"] is True
    assert store.outbox_counts()["pending"] == 1
    assert store.audit_log()[0]["action"] == "result.stored"
    feats = store.result_features(rid)
    assert feats is not None and np.allclose(feats, np.linspace(0, 1, 8), atol=1e-3)
    # WAL is on, so readers never block the kiosk's writer.
    assert next(store.db.query("PRAGMA journal_mode"))["journal_mode"] == "wal"


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    first = store.save_result(_record())
    with pytest.raises(StoreError):
        # Same primary key: the whole transaction (findings, outbox, audit) must roll back.
        store.save_result(_record(id=first))
    assert next(store.db.query("select count(*) n from results"))["n"] == 1
    assert next(store.db.query("select count(*) n from findings"))["n"] == 1
    assert next(store.db.query("select count(*) n from outbox"))["n"] == 1
    assert next(store.db.query("select count(*) n from audit"))["n"] == 1


def test_audit_log_is_append_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    store.audit("tech", "rig.set_up")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.db.execute("delete from audit")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.db.execute("update audit set actor = 'x'")


def test_migrations_apply_once_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    store = Store(path)
    assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
    store.save_result(_record())
    store.close()
    again = Store(path)
    assert again.pending_migrations() == []
    assert again.migrate() == []
    assert len(again.list_results()[0]) == 1


def test_list_filters_and_pagination(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    for i in range(7):
        positive = i % 2 == 0
        store.save_result(
            _record(
                created_at=f"2026-01-0{i + 1}T10:00:00.000Z",
                findings=[FindingRecord("pneumonia", "Pneumonia", 0.5, 0.5, 0.5, positive)],
            )
        )
    store.save_result(_record(status="rejected", findings=[], created_at="2026-01-09T00:00:00Z"))
    rows, total = store.list_results(limit=3)
    assert total == 8 and len(rows) == 3 and rows[0]["status"] == "rejected"
    _, positives = store.list_results(finding="pneumonia", positive=True)
    assert positives == 4
    _, in_range = store.list_results(since="2026-01-02", until="2026-01-04")
    assert in_range == 2
    assert store.list_results(status="rejected")[1] == 1


def test_confirm_diagnosis_requeues_for_sync(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    rid = store.save_result(_record())
    store.mark_sent([rid])
    assert store.outbox_counts()["sent"] == 1
    store.confirm_diagnosis(rid, "pneumonia", 1, by="sup")
    assert store.outbox_counts()["pending"] == 1
    assert store.get_result(rid)["diagnoses"]["pneumonia"]["label"] == 1  # type: ignore[index]
    assert len(store.labelled_cases("a" * 64)) == 1
    with pytest.raises(StoreError, match="no result"):
        store.confirm_diagnosis("nope", "pneumonia", 1, by="sup")


def test_calibration_activation_is_per_model(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    for cid, sha in (("c1", "a" * 64), ("c2", "a" * 64), ("c3", "b" * 64)):
        store.save_calibration({"id": cid, "model_id": "m", "model_sha256": sha})
    store.activate_calibration("c1")
    store.activate_calibration("c3")
    assert store.active_calibration("a" * 64)["id"] == "c1"  # type: ignore[index]
    store.activate_calibration("c2")
    assert store.active_calibration("a" * 64)["id"] == "c2"  # type: ignore[index]
    assert store.active_calibration("b" * 64)["id"] == "c3"  # type: ignore[index]
    assert store.active_calibration("c" * 64) is None
    with pytest.raises(StoreError):
        store.activate_calibration("missing")


def test_readable_with_sqlite_utils_cli(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    store = Store(path)
    store.save_result(_record())
    store.close()
    out = subprocess.run(
        [sys.executable, "-m", "sqlite_utils", "rows", str(path), "findings"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"code": "pneumonia"' in out.stdout


def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        Store(blocker / "k.db")


def test_calibration_rollback_walks_the_history_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    sha = "a" * 64
    for cid in ("c1", "c2", "c3"):
        store.save_calibration({"id": cid, "model_id": "m", "model_sha256": sha})
    store.save_calibration({"id": "other", "model_id": "m2", "model_sha256": "b" * 64})
    store.activate_calibration("c1")
    store.activate_calibration("c2")
    store.activate_calibration("other")
    store.deactivate_calibrations(sha)
    store.activate_calibration("c3")
    assert store.rollback_calibration(sha) is None  # back to "no calibration"
    assert store.active_calibration(sha) is None
    assert store.rollback_calibration(sha) == "c2"
    assert store.active_calibration(sha)["id"] == "c2"  # type: ignore[index]
    assert store.rollback_calibration(sha) == "c1"
    assert store.rollback_calibration(sha) is None
    assert store.rollback_calibration(sha) is None  # nothing further back
    assert store.active_calibration("b" * 64)["id"] == "other"  # type: ignore[index]


def test_calibration_kind_migration_marks_older_calibrated_results_as_site(
    tmp_path: Path,
) -> None:
    """Results stored before 0006 were calibrated by a site record or not at all."""
    import sqlite_utils

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    db.table("_migrations").create({"name": str, "applied_at": str}, pk="name")
    for name, fn in MIGRATIONS:
        if name.startswith("0006"):
            break
        fn(db)
        db.table("_migrations").insert({"name": name, "applied_at": "2026-01-01"})
    db.table("calibrations").insert({"id": "cal-1", "created_at": "2026-02-02T00:00:00Z"})
    for rid, cal in (("r1", "cal-1"), ("r2", None)):
        db.table("results").insert(
            {
                "id": rid,
                "created_at": "2026-03-03",
                "device_id": "d",
                "status": "ok",
                "calibration_id": cal,
            }
        )
    db.conn.close()
    store = Store(path)
    try:
        calibrated, raw = store.get_result("r1"), store.get_result("r2")
        assert calibrated is not None and raw is not None
        assert calibrated["calibration_kind"] == "site" and calibrated["calibrated"]
        assert calibrated["calibration_date"] == "2026-02-02T00:00:00Z"
        assert raw["calibration_kind"] is None and not raw["calibrated"]
    finally:
        store.close()
