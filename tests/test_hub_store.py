"""The hub's database layer on both engines: migrations, durability settings, concurrent
upserts, a hub.db from before migrations, and errors that say what to do."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from test_sync import cli_command, make_kiosk

from kiosk.config import load_config
from kiosk.errors import StoreError
from kiosk.hub import migrate
from kiosk.hub.database import default_url, parse_url, resolve_url
from kiosk.hub.schema import metadata
from kiosk.hub.store import HubStore
from kiosk.sync.payload import read_results

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


def test_migrations_build_exactly_the_schema_the_code_uses(hub_url: str) -> None:
    store = HubStore(hub_url)
    try:
        assert migrate.current_revision(store.engine) == migrate.head_revision() == "0002"
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
        assert migrate.current_revision(store.engine) == "0002"
        assert store.device_for_token("test") == "old-kiosk"  # sha256("test") was stored
        assert store.result_ids() == {"0123456789abcdef0123456789abcdef"}
        assert store.findings_of("0123456789abcdef0123456789abcdef")[0]["probability"] == 0.2
        assert {d["name"]: d["kiosk_version"] for d in store.devices()} == {"old-kiosk": None}
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

    assert before.returncode == 1 and "0001, 0002" in before.stdout, before.stderr
    assert first.returncode == 0 and "applied 0001, 0002" in first.stdout, first.stderr
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
