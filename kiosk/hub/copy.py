"""``kiosk hub copy --from URL --to URL``: move a whole hub to another database, e.g. from the
embedded SQLite file to PostgreSQL, without losing or doubling a row.

Both databases are brought to the newest schema first (the source must already be there: its
migration is a separate, deliberate step). Tables are copied in foreign-key order, in chunks;
every row is inserted with ``ON CONFLICT DO NOTHING`` on its primary key, so a copy that was
interrupted can simply be run again. Afterwards every table must hold the same number of rows
on both sides, and the results the same (id, device, revision, content digest): otherwise the
copy fails and says which table differs (the destination held other data before).
PostgreSQL's id sequence of ``ingests`` is moved past the copied ids, so the next push works.

Stop the hub (``kiosk-hub.service``) during the copy: pushes that arrive meanwhile would be
missing from the destination (kiosks would send them again only if they were never
acknowledged).

What this module does not do: merge two live hubs, delete anything from the source, or
switch the hub over (point ``hub.database_url`` at the destination afterwards).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from sqlalchemy import Table, func, select, text

from kiosk.errors import StoreError
from kiosk.hub import migrate
from kiosk.hub.database import redact
from kiosk.hub.ingest import dialect_insert
from kiosk.hub.schema import TABLES_IN_ORDER, results
from kiosk.hub.store import HubStore

logger = logging.getLogger(__name__)

ROWS_PER_CHUNK = 500


@dataclass
class CopyReport:
    """Rows per table in the source, and how many of them were new in the destination."""

    source_rows: dict[str, int] = field(default_factory=dict)
    copied_rows: dict[str, int] = field(default_factory=dict)


def results_digest(store: HubStore) -> str:
    """sha256 over every result's id, device, revision and content digest, in id order."""
    digest = hashlib.sha256()
    stmt = select(
        results.c.id, results.c.device_id, results.c.revision, results.c.content_sha256
    ).order_by(results.c.id)
    with store.read() as conn:
        for row in conn.execution_options(yield_per=ROWS_PER_CHUNK).execute(stmt):
            digest.update("\x1f".join(str(v) for v in row).encode() + b"\x1e")
    return digest.hexdigest()


def _count(store: HubStore, table: Table) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _copy_table(source: HubStore, dest: HubStore, table: Table) -> int:
    pk = list(table.primary_key.columns)
    copied = 0
    chunk: list[dict] = []

    def flush() -> int:
        with dest.write() as conn:
            stmt = dialect_insert(conn)(table).values(chunk)
            # RETURNING lists only the rows inserted (rowcount is -1 for psycopg here).
            stmt = stmt.on_conflict_do_nothing(index_elements=pk).returning(pk[0])
            return len(conn.execute(stmt).all())

    with source.read() as conn:
        rows = conn.execution_options(yield_per=ROWS_PER_CHUNK).execute(select(table).order_by(*pk))
        for row in rows:
            chunk.append(dict(row._mapping))
            if len(chunk) >= ROWS_PER_CHUNK:
                copied += flush()
                chunk = []
    if chunk:
        copied += flush()
    return copied


def copy_hub(source_url: str, dest_url: str) -> CopyReport:
    """Copy every row of the hub at ``source_url`` into ``dest_url``; see the module docstring.

    Raises StoreError when source and destination are the same, the source is not at the newest
    schema, or the destination ends up different from the source.
    """
    if redact(source_url) == redact(dest_url):
        raise StoreError("--from and --to name the same database", "name two databases")
    source = HubStore(source_url, upgrade=False)
    try:
        todo = migrate.pending(source.engine)
        if todo:
            raise StoreError(
                f"the source {redact(source.engine.url)} is not at the newest schema "
                f"({len(todo)} migrations pending)",
                f"run `kiosk hub migrate --database-url {redact(source.engine.url)}` first",
            )
        dest = HubStore(dest_url)
        try:
            report = CopyReport()
            for table in TABLES_IN_ORDER:
                report.source_rows[table.name] = _count(source, table)
                report.copied_rows[table.name] = _copy_table(source, dest, table)
                logger.info(
                    "hub copy: %s: %d rows, %d new",
                    table.name,
                    report.source_rows[table.name],
                    report.copied_rows[table.name],
                )
            if dest.dialect == "postgresql":
                with dest.write() as conn:
                    conn.execute(
                        text(
                            "SELECT setval(pg_get_serial_sequence('ingests', 'id'), "
                            "GREATEST((SELECT max(id) FROM ingests), 1))"
                        )
                    )
            _verify(source, dest, report)
        finally:
            dest.close()
    finally:
        source.close()
    return report


def _verify(source: HubStore, dest: HubStore, report: CopyReport) -> None:
    for table in TABLES_IN_ORDER:
        held = _count(dest, table)
        if held != report.source_rows[table.name]:
            raise StoreError(
                f"after the copy, table {table.name} holds {held} rows in the destination and "
                f"{report.source_rows[table.name]} in the source",
                "copy into an empty database (the destination held other data)",
            )
    if results_digest(source) != results_digest(dest):
        raise StoreError(
            "after the copy, the results differ between source and destination (same count, "
            "other ids or versions)",
            "copy into an empty database (the destination held other data)",
        )
