"""Opening the hub's database: one SQLAlchemy engine, SQLite or PostgreSQL, same code path.

``hub.database_url`` (env ``KIOSK_HUB_DATABASE_URL``, flag ``--database-url``) names it:
``sqlite:////var/lib/kiosk-hub/hub.db`` or ``postgresql://hub@db.example.org/hub`` (the driver
is always psycopg 3; ``postgresql+psycopg://`` is accepted as written). Without one, the hub uses
``hub.db`` in ``KIOSK_DATA_DIR``.

Durability: a batch is acknowledged only after its transaction commits, and a commit is durable
on both engines: SQLite runs in WAL mode with ``synchronous=FULL`` (the WAL is fsynced at every
commit), PostgreSQL with ``synchronous_commit=on`` forced for the hub's connections. Writers on
SQLite take the write lock up front (``BEGIN IMMEDIATE``) so two writers queue instead of
failing half-way; readers use a plain ``BEGIN`` and never block a writer (WAL).

What this module does not do: know any table (``schema``), create or migrate them
(``migrate``), or decide what a request may do (``store``, ``app``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from kiosk.errors import StoreError

logger = logging.getLogger(__name__)

HUB_DB_NAME = "hub.db"
SQLITE_BUSY_TIMEOUT_S = 30.0
POOL_SIZE = 8
POOL_MAX_OVERFLOW = 8
POOL_TIMEOUT_S = 30.0
PG_CONNECT_TIMEOUT_S = 10
WRITE_OPTION = "kiosk_hub_write"
URL_HELP = "use sqlite:///PATH/hub.db or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"


def default_url(data_dir: Path) -> str:
    """The embedded default: ``hub.db`` in the data directory."""
    return f"sqlite:///{Path(data_dir) / HUB_DB_NAME}"


def resolve_url(flag: str | None, configured: str | None, data_dir: Path) -> str:
    """The URL to use: the command-line flag, else ``hub.database_url``, else the default."""
    return flag or configured or default_url(data_dir)


def parse_url(url: str) -> URL:
    """Check a hub database URL and pin the PostgreSQL driver to psycopg 3.

    Raises StoreError naming the URL (password hidden) when it is not a SQLite file or a
    PostgreSQL database. Does not connect.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"{url!r} is not a database URL", URL_HELP) from exc
    # Split by hand: asking SQLAlchemy for the driver loads the dialect of any name given.
    backend, _, driver = parsed.drivername.partition("+")
    shown = redact(parsed)
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise StoreError(
                f"{shown}: the hub talks to PostgreSQL through psycopg 3 only (got {driver!r})",
                "write postgresql://... or postgresql+psycopg://...",
            )
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StoreError(
                f"{shown}: the hub needs a SQLite file, not an in-memory database",
                "use sqlite:///PATH/hub.db (three slashes, then the path)",
            )
        return parsed
    raise StoreError(f"{shown}: unsupported database {backend!r}", URL_HELP)


def redact(url: URL | str) -> str:
    """The URL as text with any password replaced by ``***`` (for messages and logs)."""
    parsed = url if isinstance(url, URL) else make_url(url)
    return parsed.render_as_string(hide_password=True)


def create_hub_engine(url: str) -> Engine:
    """An engine with a connection pool and the durability settings above. Does not connect."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database is not None
        path = Path(parsed.database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder of the hub database {path}: {exc}",
                "check KIOSK_DATA_DIR / hub.database_url and the folder's permissions",
            ) from exc
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
            pool_size=POOL_SIZE,
            max_overflow=POOL_MAX_OVERFLOW,
            pool_timeout=POOL_TIMEOUT_S,
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    query_options = parsed.query.get("options")
    options = "-c synchronous_commit=on"
    if isinstance(query_options, str):
        options = f"{query_options} {options}"
    return create_engine(
        parsed.difference_update_query(["options"]),
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S, "options": options},
        pool_size=POOL_SIZE,
        max_overflow=POOL_MAX_OVERFLOW,
        pool_timeout=POOL_TIMEOUT_S,
        pool_pre_ping=True,
    )


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Transactions are begun by _sqlite_begin, not by pysqlite's implicit BEGIN before DML.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
