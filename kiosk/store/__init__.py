"""The kiosk's SQLite database (sqlite-utils, WAL): results, findings, audit, outbox, calibrations.

One file, ``<data_dir>/kiosk.db``, readable with the ``sqlite-utils`` CLI or Datasette. A result,
its findings, its audit line and its outbox entry are written in one transaction, so a result
that was shown is a result that was stored and will be synced. Schema changes are named
migrations, applied once each, each in its own transaction together with its bookkeeping.

One module per area: ``db`` (connection, transactions, storage errors), ``migrations``,
``records``, ``results``, ``audit``, ``diagnoses``, ``outbox``, ``calibrations``, ``settings``,
and ``accounts`` (users and API tokens; import it from ``kiosk.store.accounts``).

What this package does not do: decide anything about images or models. It stores what the
pipeline hands it and answers queries; the sync client reads the outbox through it.
"""

from __future__ import annotations

from pathlib import Path

from kiosk.store.audit import AuditMixin
from kiosk.store.calibrations import CalibrationsMixin
from kiosk.store.db import open_database
from kiosk.store.diagnoses import DiagnosesMixin
from kiosk.store.migrations import MIGRATIONS, MigrationsMixin, migration
from kiosk.store.outbox import OutboxMixin
from kiosk.store.records import FindingRecord, ResultRecord
from kiosk.store.results import ResultsMixin
from kiosk.store.settings import SettingsMixin

__all__ = [
    "MIGRATIONS",
    "FindingRecord",
    "ResultRecord",
    "Store",
    "migration",
    "open_database",
]


class Store(
    ResultsMixin,
    DiagnosesMixin,
    OutboxMixin,
    CalibrationsMixin,
    SettingsMixin,
    AuditMixin,
    MigrationsMixin,
):
    """The kiosk database. Safe to share between threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.migrate()
