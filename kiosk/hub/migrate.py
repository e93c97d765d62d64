"""Versioned migrations of the hub database (Alembic, run from Python; no alembic.ini).

The migrations ship inside the package (``kiosk/hub/migrations/versions``) and run in one
transaction with Alembic's bookkeeping, so a migration either happens completely or not at
all, on SQLite and on PostgreSQL alike. A ``hub.db`` made by the SQLite-only hub (tables but no
``alembic_version``) is recognised and stamped at the baseline ``0001`` first, then upgraded.
Two hubs starting at once against one PostgreSQL database take turns (an advisory lock).

What this module does not do: open the database (``database``), or define what the newest
schema is (``schema`` and the migration files do).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from kiosk.errors import StoreError
from kiosk.hub.database import WRITE_OPTION, redact

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BASELINE_REVISION = "0001"
# Any number, the same for every hub process: PostgreSQL advisory lock key of migrations.
PG_MIGRATION_LOCK_KEY = 7_160_016


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration this code knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the hub ships no migrations"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: empty or never migrated). Read-only."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def pending(engine: Engine) -> list[str]:
    """Migrations not yet applied, oldest first. Read-only: changes nothing."""
    script = ScriptDirectory.from_config(_config())
    current = current_revision(engine)
    if current is not None and current not in {s.revision for s in script.walk_revisions()}:
        raise _newer_database(engine, current)
    revisions = [s.revision for s in script.iterate_revisions("head", current or "base")]
    return list(reversed(revisions))


def upgrade(engine: Engine) -> list[str]:
    """Bring the database to the newest schema; returns the revisions applied (maybe none).

    Raises StoreError when the database was migrated by a newer hub, or cannot be written.
    """
    try:
        todo = pending(engine)
        if not todo:
            return []
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK_KEY})
            config = _config(conn)
            if _is_unversioned_legacy(conn):
                logger.info(
                    "hub: stamping a database made before migrations at %s", BASELINE_REVISION
                )
                command.stamp(config, BASELINE_REVISION)
            command.upgrade(config, "head")
    except CommandError as exc:
        raise StoreError(
            f"cannot migrate the hub database {redact(engine.url)}: {exc}",
            "upgrade this hub's software to the version that last migrated the database",
        ) from exc
    except SQLAlchemyError as exc:
        raise StoreError(
            f"cannot migrate the hub database {redact(engine.url)}: {exc.__class__.__name__}: "
            f"{exc}",
            "check that the database is reachable and that its user may create tables",
        ) from exc
    logger.info("hub: database migrated through %s", ", ".join(todo))
    return todo


def _is_unversioned_legacy(conn: Connection) -> bool:
    names = set(inspect(conn).get_table_names())
    return "results" in names and "alembic_version" not in names


def _newer_database(engine: Engine, current: str) -> StoreError:
    return StoreError(
        f"the hub database {redact(engine.url)} is at migration {current!r}, which this hub "
        f"does not know (newest here: {head_revision()!r})",
        "it was migrated by a newer hub: run that version, or restore a backup from before",
    )
