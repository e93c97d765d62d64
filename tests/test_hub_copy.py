"""Moving a hub: `kiosk hub copy` from SQLite to PostgreSQL, and a pg_dump backup restored."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_sync import make_kiosk, run_cli

from kiosk.config import KioskConfig
from kiosk.errors import StoreError
from kiosk.hub.copy import copy_hub, results_digest
from kiosk.hub.importer import import_export
from kiosk.hub.schema import TABLES_IN_ORDER
from kiosk.hub.store import HubStore
from kiosk.sync.export import export_results
from kiosk.sync.payload import read_results

pytest_plugins = ("pg",)


def counts(store: HubStore) -> dict[str, int]:
    return {
        t.name: int(store.query(f"select count(*) as n from {t.name}")[0]["n"])
        for t in TABLES_IN_ORDER
    }


def filled_hub(tmp_path: Path, url: str) -> tuple[HubStore, dict[str, str], str]:
    """A hub with two kiosks' pushes, a confirmed diagnosis, an import and an admin token."""
    hub = HubStore(url)
    tokens = {name: hub.add_device(name) for name in ("ward-a", "ward-b")}
    for n, name in enumerate(tokens):
        config, store, ids = make_kiosk(tmp_path / "kiosks", name, 25, seed=n)
        ok = next(i for i in ids if store.get_result(i)["status"] == "ok")  # type: ignore[index]
        store.confirm_diagnosis(ok, "pneumonia", 1, by="dr-a")
        for start in range(0, 25, 10):
            hub.ingest(name, read_results(store, ids[start : start + 10]))
    config, store, _ = make_kiosk(tmp_path / "kiosks", "ward-c", 5, seed=7)
    out = tmp_path / "stick" / "c.jsonl"
    export_results(store, config, since="2026-01-01", until=None, fmt="jsonl", out=out)
    import_export(hub, out, "ward-c")
    return hub, tokens, hub.set_admin_token()


def test_copy_sqlite_to_postgresql_loses_and_doubles_nothing(tmp_path: Path, pg_url: str) -> None:
    source_url = f"sqlite:///{tmp_path / 'old' / 'hub.db'}"
    source, tokens, admin = filled_hub(tmp_path, source_url)
    before = counts(source)
    digest = results_digest(source)
    diagnoses_sql = "select result_id, code, label, confirmed_by from diagnoses order by 1, 2"
    source_diagnoses = source.query(diagnoses_sql)
    source.close()
    config = KioskConfig(device_id="hub", data_dir=tmp_path / "data")

    first = run_cli(config, ["hub", "copy", "--from", source_url, "--to", pg_url])
    again = run_cli(config, ["hub", "copy", "--from", source_url, "--to", pg_url])

    assert first.exit_code == 0, first.output
    assert "results: 55 rows (55 new" in first.output and "copy verified" in first.output
    assert again.exit_code == 0 and "results: 55 rows (0 new" in again.output  # idempotent
    dest = HubStore(pg_url)
    try:
        assert counts(dest) == before
        assert before["results"] == 55 and before["findings"] > 100 and before["ingests"] == 7
        assert results_digest(dest) == digest
        assert dest.device_for_token(tokens["ward-a"]) == "ward-a"
        assert dest.check_admin_token(admin)
        assert dest.query(diagnoses_sql) == source_diagnoses and len(source_diagnoses) >= 2
        # The id sequence moved past the copied ingests: the next push is recorded.
        _, store_d, ids_d = make_kiosk(tmp_path / "later", "ward-a", 3, seed=99)
        outcome = dest.ingest("ward-a", read_results(store_d, ids_d))
        assert outcome.inserted == 3 and counts(dest)["ingests"] == 8
    finally:
        dest.close()


def test_copy_refuses_what_it_cannot_verify(tmp_path: Path, pg_url: str) -> None:
    source_url = f"sqlite:///{tmp_path / 'a' / 'hub.db'}"
    source, _, _ = filled_hub(tmp_path, source_url)
    source.close()
    other = HubStore(pg_url)
    other.add_device("someone-else")  # the destination already holds other data
    other.close()
    with pytest.raises(StoreError, match="devices holds 4 rows in the destination and 3"):
        copy_hub(source_url, pg_url)
    with pytest.raises(StoreError, match="same database"):
        copy_hub(source_url, source_url)


def test_pg_dump_backup_restores_the_same_hub(tmp_path: Path, pg_cluster: object) -> None:
    from pg import PgCluster

    assert isinstance(pg_cluster, PgCluster)
    url = pg_cluster.create_database("live")
    hub, tokens, admin = filled_hub(tmp_path, url)
    before, digest = counts(hub), results_digest(hub)
    hub.close()
    dump = pg_cluster.root / "hub.dump"
    port = str(pg_cluster.port)
    conn = ["-h", "127.0.0.1", "-p", port, "-U", "postgres"]
    pg_cluster.run("pg_dump", *conn, "-Fc", "-f", str(dump), url.rsplit("/", 1)[1])
    restored_url = pg_cluster.create_database("restored")
    pg_cluster.run("pg_restore", *conn, "-d", restored_url.rsplit("/", 1)[1], str(dump))

    restored = HubStore(restored_url)
    try:
        assert counts(restored) == before and results_digest(restored) == digest
        assert restored.device_for_token(tokens["ward-b"]) == "ward-b"
        assert restored.check_admin_token(admin)
    finally:
        restored.close()
