"""The hub's database layer on both engines: migrations, durability settings, concurrent
upserts, a hub.db from before migrations, the calibration of each result (stored, exported,
re-sent, imported), and errors that say what to do."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from test_sync import HubThread, cli_command, make_kiosk, post_raw

from kiosk.config import load_config
from kiosk.errors import StoreError
from kiosk.hub import migrate
from kiosk.hub.database import default_url, parse_url, resolve_url
from kiosk.hub.importer import import_export
from kiosk.hub.schema import metadata
from kiosk.hub.store import HubStore
from kiosk.sync.export import CSV_COLUMNS, export_results
from kiosk.sync.payload import parse_result, read_results

pytest_plugins = ("pg",)

# What the SQLite-only hub (sqlite-utils) created, verbatim from its hub.db.
LEGACY_SCHEMA = """
CREATE TABLE "devices" ("name" TEXT PRIMARY KEY, "token_hash" TEXT, "created_at" TEXT,
  "last_contact_at" TEXT, "reported_pending" INTEGER, "reported_failed" INTEGER,
  "reported_sent" INTEGER, "last_kiosk_time" TEXT, "calibration_id" TEXT);
CREATE TABLE "results" ("id" TEXT PRIMARY KEY,
  "device_id" TEXT NOT NULL REFERENCES "devices"("name"), "revision" INTEGER NOT NULL,
  "created_at" TEXT NOT NULL, "received_at" TEXT NOT NULL, "updated_at" TEXT, "via" TEXT,
  "status" TEXT NOT NULL, "reason" TEXT, "input_kind" TEXT, "model_id" TEXT,
  "model_version" TEXT, "model_sha256" TEXT, "calibration_id" TEXT, "quality" TEXT,
  "timings_ms" TEXT, "corners" TEXT, "content_sha256" TEXT, "thumbnail_jpeg" BLOB);
CREATE INDEX "idx_results_device_id_created_at" ON "results" ("device_id", "created_at");
CREATE INDEX "idx_results_received_at" ON "results" ("received_at");
CREATE TABLE "findings" ("result_id" TEXT REFERENCES "results"("id"), "code" TEXT,
  "label" TEXT, "raw" REAL, "probability" REAL, "threshold" REAL, "positive" INTEGER,
  PRIMARY KEY ("result_id", "code"));
CREATE INDEX "idx_findings_code_positive" ON "findings" ("code", "positive");
CREATE TABLE "diagnoses" ("result_id" TEXT REFERENCES "results"("id"), "code" TEXT,
  "label" INTEGER, "confirmed_by" TEXT, "confirmed_at" TEXT, PRIMARY KEY ("result_id", "code"));
CREATE TABLE "ingests" ("id" INTEGER PRIMARY KEY, "device_id" TEXT REFERENCES "devices"("name"),
  "received_at" TEXT, "via" TEXT, "results" INTEGER, "inserted" INTEGER, "updated" INTEGER,
  "unchanged" INTEGER, "rejected" INTEGER, "kiosk_sent_at" TEXT);
CREATE INDEX "idx_ingests_device_id_received_at" ON "ingests" ("device_id", "received_at");
CREATE TABLE "imports" ("data_sha256" TEXT PRIMARY KEY, "imported_at" TEXT, "device_id" TEXT,
  "format" TEXT, "results" INTEGER, "manifest" TEXT);
CREATE TABLE "settings" ("key" TEXT PRIMARY KEY, "value" TEXT);
INSERT INTO devices (name, token_hash, created_at) VALUES ('old-kiosk',
  '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08', '2026-10-01T00:00:00.000Z');
INSERT INTO results (id, device_id, revision, created_at, received_at, status)
  VALUES ('0123456789abcdef0123456789abcdef', 'old-kiosk', 1, '2026-10-01T10:00:00.000Z',
  '2026-10-01T10:00:01.000Z', 'ok');
INSERT INTO findings VALUES ('0123456789abcdef0123456789abcdef', 'pneumonia', 'Pneumonia',
  0.25, 0.2, 0.42, 0);
"""

CALIBRATION_COLUMNS = ("calibrated", "calibration_kind", "calibration_date", "calibration_id")
RESULT_ID = "0123456789abcdef0123456789abcdef"


def test_migrations_build_exactly_the_schema_the_code_uses(hub_url: str) -> None:
    store = HubStore(hub_url)
    try:
        assert migrate.current_revision(store.engine) == migrate.head_revision() == "0003"
        assert migrate.pending(store.engine) == []
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == [], diff
        assert migrate.upgrade(store.engine) == []  # running again does nothing
    finally:
        store.close()


def test_a_hub_db_from_before_migrations_is_adopted_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY_SCHEMA)
    conn.close()

    store = HubStore(f"sqlite:///{path}")
    try:
        assert migrate.current_revision(store.engine) == "0003"
        assert store.device_for_token("test") == "old-kiosk"  # sha256("test") was stored
        assert store.result_ids() == {"0123456789abcdef0123456789abcdef"}
        assert store.findings_of("0123456789abcdef0123456789abcdef")[0]["probability"] == 0.2
        assert {d["name"]: d["kiosk_version"] for d in store.devices()} == {"old-kiosk": None}
        assert store.query(
            "select calibrated, calibration_kind, calibration_date, calibration_id from results"
        ) == [dict.fromkeys(CALIBRATION_COLUMNS)]
    finally:
        store.close()


def test_sqlite_commits_are_durable_before_an_acknowledgement(tmp_path: Path) -> None:
    store = HubStore(default_url(tmp_path))
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.close()


def test_postgresql_commits_are_synchronous(pg_url: str) -> None:
    store = HubStore(pg_url)
    try:
        assert store.query("SHOW synchronous_commit") == [{"synchronous_commit": "on"}]
        assert store.engine.pool.size() >= 4  # a pool, not one connection
    finally:
        store.close()


def test_the_same_batch_from_many_threads_at_once_lands_once(tmp_path: Path, hub_url: str) -> None:
    _, kiosk, ids = make_kiosk(tmp_path, "kiosk-c", 30)
    batch = read_results(kiosk, ids)
    store = HubStore(hub_url)
    outcomes, errors = [], []

    def send() -> None:
        try:
            outcomes.append(store.ingest("kiosk-c", batch))
        except Exception as exc:  # the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert errors == []
        assert sum(o.inserted for o in outcomes) == 30
        assert sum(o.unchanged for o in outcomes) == 5 * 30
        assert all(sorted(o.accepted) == sorted(ids) for o in outcomes)
        assert store.count_results() == 30
        n = store.query("select count(*) as n from findings")[0]["n"]
        assert n == sum(len(r.findings) for r in batch)
    finally:
        store.close()


def test_database_url_comes_from_flag_config_or_data_dir(tmp_path: Path) -> None:
    env = {"KIOSK_DATA_DIR": str(tmp_path), "KIOSK_HUB_DATABASE_URL": "postgresql://h/db"}
    config = load_config(env=env)
    assert config.hub.database_url == "postgresql://h/db"
    assert resolve_url(None, config.hub.database_url, config.data_dir) == "postgresql://h/db"
    assert resolve_url("sqlite:///x.db", config.hub.database_url, config.data_dir) == (
        "sqlite:///x.db"
    )
    assert resolve_url(None, None, tmp_path) == f"sqlite:///{tmp_path / 'hub.db'}"
    assert parse_url("postgresql://u:secret@h/db").drivername == "postgresql+psycopg"
    assert parse_url("postgres://u@h/db").drivername == "postgresql+psycopg"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "is not a database URL"),
        ("mysql://u@h/db", "unsupported database"),
        ("sqlite://", "not an in-memory database"),
        ("postgresql+psycopg2://u:pw@h/db", "psycopg 3 only"),
    ],
)
def test_bad_urls_say_what_to_write(url: str, says: str) -> None:
    with pytest.raises(StoreError, match=says) as caught:
        HubStore(url)
    assert "pw" not in str(caught.value)  # passwords never appear in messages
    assert caught.value.fix


def test_unreachable_postgresql_names_the_setting(tmp_path: Path) -> None:
    from pg import free_port

    with pytest.raises(StoreError, match="cannot open the hub database") as caught:
        HubStore(f"postgresql://hub:s3cret@127.0.0.1:{free_port()}/hub")
    assert "s3cret" not in str(caught.value) and "hub.database_url" in str(caught.value)


def test_a_database_from_a_newer_hub_is_refused(hub_url: str) -> None:
    store = HubStore(hub_url)
    try:
        with store.write() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0999'")
        with pytest.raises(StoreError, match=r"'0999'.*newer hub"):
            migrate.pending(store.engine)
        with pytest.raises(StoreError, match="newer hub"):
            HubStore(hub_url).close()
    finally:
        store.close()


def test_cli_migrate_on_both_engines(tmp_path: Path, hub_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env["KIOSK_DATA_DIR"] = str(tmp_path / "hub-data")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli_command(), "hub", "migrate", "--database-url", hub_url, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    before, first, again, after = run("--check"), run(), run(), run("--check")

    assert before.returncode == 1 and "0001, 0002, 0003" in before.stdout, before.stderr
    assert first.returncode == 0 and "applied 0001, 0002, 0003" in first.stdout, first.stderr
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert after.returncode == 0 and "none" in after.stdout


def test_the_kiosk_side_of_sync_loads_neither_flask_nor_the_hub() -> None:
    code = (
        "import sys, kiosk.sync.client, kiosk.sync.export, kiosk.sync.payload, kiosk.sync.fhir\n"
        "bad = sorted(m for m in sys.modules if m == 'flask' or m.startswith('kiosk.hub')"
        " or m.startswith('sqlalchemy'))\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def _alembic(conn: Any) -> Config:
    """Alembic's config on an open connection, to stop at an older revision than the hub does."""
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    return config


def test_migration_0003_keeps_the_rows_of_a_0002_database(hub_url: str) -> None:
    store = HubStore(hub_url, upgrade=False)
    try:
        with store.write() as conn:
            command.upgrade(_alembic(conn), "0002")
            conn.execute(text("INSERT INTO devices (name) VALUES ('ward-2')"))
            conn.execute(
                text(
                    "INSERT INTO results (id, device_id, revision, created_at, received_at, "
                    "status, calibration_id, content_sha256) VALUES (:id, 'ward-2', 1, "
                    "'2026-11-01T10:00:00.000Z', '2026-11-01T10:00:01.000Z', 'ok', "
                    "'cal-site-2', 'digest')"
                ),
                {"id": RESULT_ID},
            )
            conn.execute(
                text(
                    "INSERT INTO findings VALUES "
                    "(:id, 'pneumonia', 'Pneumonia', 0.3, 0.25, 0.42, 0)"
                ),
                {"id": RESULT_ID},
            )
        assert migrate.pending(store.engine) == ["0003"]

        assert migrate.upgrade(store.engine) == ["0003"]

        assert migrate.current_revision(store.engine) == "0003"
        (row,) = store.query("select * from results")
        assert (row["id"], row["status"], row["content_sha256"]) == (RESULT_ID, "ok", "digest")
        assert {c: row[c] for c in CALIBRATION_COLUMNS} == {
            "calibrated": None,
            "calibration_kind": None,
            "calibration_date": None,
            "calibration_id": "cal-site-2",  # from 0001, kept
        }
        assert store.findings_of(RESULT_ID)[0]["probability"] == 0.25
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []

        # And back: the downgrade drops the columns in place, rows and findings stay.
        with store.write() as conn:
            command.downgrade(_alembic(conn), "0002")
        (row,) = store.query("select * from results")
        assert "calibrated" not in row and row["calibration_id"] == "cal-site-2"
        assert len(store.findings_of(RESULT_ID)) == 1
    finally:
        store.close()


def _wire(n: int, **calibration: Any) -> dict[str, Any]:
    """One result as a kiosk sends it, with the given calibration fields (or none of them)."""
    return {
        "id": f"{n:032x}",
        "revision": 1,
        "created_at": f"2026-11-2{n}T10:00:00.000Z",
        "status": "ok",
        "model": {"id": "cxr-pneumonia-effl0", "version": "1.2.0", "sha256": "ab"},
        "findings": [
            {
                "code": "pneumonia",
                "label": "Pneumonia",
                "raw": 0.61,
                "probability": 0.55,
                "threshold": 0.42,
                "positive": True,
            }
        ],
        **calibration,
    }


SITE = {
    "calibration_id": "cal-site-7",
    "calibrated": True,
    "calibration": {"id": "cal-site-7", "kind": "site", "date": "2026-11-20T09:00:00Z"},
}


@pytest.fixture
def hub(hub_url: str) -> Iterator[HubThread]:
    h = HubThread(hub_url)
    yield h
    h.close()


def test_calibration_of_each_result_is_stored_and_exported(hub: HubThread) -> None:
    token = hub.store.add_device("ward-1")
    calibrated, raw, old = _wire(1, **SITE), _wire(2, calibrated=False), _wire(3)
    old["calibration_id"] = "cal-old"  # a kiosk before `calibrated`: only the id travels
    body = {"schema_version": 1, "device_id": "ward-1", "results": [calibrated, raw, old]}
    stored_sql = (
        "select id, calibrated, calibration_kind, calibration_date, calibration_id "
        "from results order by id"
    )

    status, reply = post_raw(hub.url, token, json.dumps(body).encode())
    stored = hub.store.query(stored_sql)
    again_status, again = post_raw(hub.url, token, json.dumps(body).encode())

    assert (status, reply["inserted"]) == (200, 3), reply
    # SQLite answers 1/0 where PostgreSQL answers true/false: compare as truth values.
    assert [tuple(r.values()) for r in stored] == [
        (calibrated["id"], True, "site", "2026-11-20T09:00:00Z", "cal-site-7"),
        (raw["id"], False, None, None, None),
        (old["id"], None, None, None, "cal-old"),
    ]
    assert [r["calibrated"] is None for r in stored] == [False, False, True]
    assert (again_status, again["inserted"], again["updated"], again["unchanged"]) == (
        200,
        0,
        0,
        3,
    )
    assert hub.store.query(stored_sql) == stored  # re-sent: nothing changed

    admin = hub.store.set_admin_token()
    text_csv = hub.app.test_client().get("/results.csv", auth=("supervisor", admin)).get_data(True)
    header = text_csv.splitlines()[0].split(",")
    rows = {r["result_id"]: r for r in csv.DictReader(io.StringIO(text_csv))}

    assert header[-3:] == CSV_COLUMNS[-3:] == ["calibrated", "calibration_kind", "calibration_date"]
    got = {
        rid: (r["calibrated"], r["calibration_kind"], r["calibration_date"], r["probability"])
        for rid, r in rows.items()
    }
    assert got == {
        calibrated["id"]: ("1", "site", "2026-11-20T09:00:00Z", "0.55"),
        raw["id"]: ("0", "", "", "0.55"),
        old["id"]: ("", "", "", "0.55"),
    }


def test_a_changed_calibration_at_the_same_revision_replaces_the_stored_one(
    hub_url: str,
) -> None:
    store = HubStore(hub_url)
    try:
        first = parse_result(_wire(1, **SITE))
        later = dict(SITE, calibration={"id": "cal-site-7", "kind": "factory", "date": None})
        second = parse_result(_wire(1, **later))
        assert store.ingest("ward-1", [first]).inserted == 1
        outcome = store.ingest("ward-1", [second])
        (row,) = store.query("select calibration_kind, calibration_date from results")
    finally:
        store.close()
    assert outcome.updated == 1
    assert row == {"calibration_kind": "factory", "calibration_date": None}


def test_a_csv_export_of_pushed_results_keeps_their_calibration(
    tmp_path: Path, hub_url: str
) -> None:
    config, kiosk, ids = make_kiosk(tmp_path, "ward-c", 12)
    kiosk.db.conn.execute(
        "update results set calibration_kind = 'factory', "
        "calibration_date = '2026-10-30T08:00:00Z' where calibration_id is not null"
    )
    kiosk.db.conn.commit()
    out = tmp_path / "stick" / "ward-c.csv"
    export_results(kiosk, config, since="2026-01-01", until=None, fmt="csv", out=out)
    hub = HubStore(hub_url)
    try:
        hub.ingest("ward-c", read_results(kiosk, ids))
        sql = "select calibrated, calibration_kind, calibration_date from results order by id"
        pushed = hub.query(sql)

        report = import_export(hub, out, "ward-c")

        assert (report.inserted, report.updated, report.unchanged) == (0, 0, 12)
        assert hub.query(sql) == pushed
        # Analysed films were calibrated (factory); a rejected film, if any, was not.
        kinds = {(bool(r["calibrated"]), r["calibration_kind"]) for r in pushed}
        assert (True, "factory") in kinds and kinds <= {(True, "factory"), (False, None)}
        assert all(r["calibrated"] is not None for r in pushed)
    finally:
        hub.close()
