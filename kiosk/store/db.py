"""Opening a SQLite database (WAL, foreign keys), its transactions and its storage errors.

``open_database`` is shared by the kiosk's store and the hub's. ``StoreBase`` is the part of the
kiosk's :class:`~kiosk.store.Store` that every area builds on: one connection, one lock and
explicit ``BEGIN IMMEDIATE`` transactions whose SQLite errors become a ``StoreError`` a user
can act on (full disk, read-only file, damaged database).

What this module does not do: know any table. The schema is in ``migrations``, the queries in
one module per area.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from kiosk.errors import StoreError


def _storage_error(exc: BaseException, path: Path) -> StoreError:
    text = str(exc)
    if "full" in text or getattr(exc, "errno", None) == 28:
        return StoreError(
            f"the disk holding {path} is full; nothing new was stored",
            "free space (old images: `kiosk retention run`) or move KIOSK_DATA_DIR",
        )
    if "readonly" in text or "read-only" in text or isinstance(exc, PermissionError):
        return StoreError(
            f"{path} is read-only for this user",
            "check the data directory's owner and permissions",
        )
    if "malformed" in text or "not a database" in text:
        return StoreError(
            f"the database {path} is damaged ({text})",
            "restore it from a backup (see the technician's section of the README)",
        )
    return StoreError(f"database error on {path}: {text}")


def open_database(path: Path) -> sqlite_utils.Database:
    """One shareable connection in WAL mode with foreign keys, for the kiosk's and the hub's
    databases. Transactions are explicit (``isolation_level=None``); the caller serialises use
    with a lock. Raises sqlite3.Error or OSError: callers turn them into errors a user can act on.

    ``synchronous=FULL`` fsyncs the WAL at every commit, so a result shown on the screen (or a
    batch acknowledged) survives a power cut; with ``NORMAL`` the last commits before the cut
    can be lost. ``python -m kiosk.lab.store_bench`` measures what FULL costs.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=10000")
    return db


class StoreBase:
    """The kiosk database's connection and lock. Safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.db = open_database(self.path)
        except (sqlite3.Error, OSError) as exc:
            raise _storage_error(exc, self.path) from exc
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error; errors become StoreError."""
        with self._lock:
            conn = self.db.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _storage_error(exc, self.path) from exc
            try:
                yield self.db
                conn.execute("COMMIT")
            except BaseException as exc:
                conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _storage_error(exc, self.path) from exc
                raise

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def free_mb(self) -> float:
        return shutil.disk_usage(self.path.parent).free / 1e6
