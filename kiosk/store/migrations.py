"""The kiosk database's schema: named migrations, applied once each, in order of definition.

Each migration runs in its own transaction together with its line in the ``_migrations`` table
(``name``, ``applied_at``), so a migration is either applied and recorded or neither.

Why not sqlite-utils' ``Migrations``: it keeps its bookkeeping in ``_sqlite_migrations``
(``id``, ``migration_set``, ``name``, ``applied_at``), so databases already in the field, whose
``_migrations`` table it does not read, would re-run ``0001_initial`` and fail; and it runs each
migration in ``db.atomic()`` rather than the store's locked ``BEGIN IMMEDIATE`` transaction.

What this module does not do: read or write any row of the tables it creates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlite_utils

from kiosk.clock import utcnow
from kiosk.store.db import StoreBase

logger = logging.getLogger(__name__)

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(name: str) -> Callable[[Migration], Migration]:
    """Register a schema migration. Order of definition is order of application."""

    def register(fn: Migration) -> Migration:
        MIGRATIONS.append((name, fn))
        return fn

    return register


@migration("0001_initial")
def _m0001(db: sqlite_utils.Database) -> None:
    db.table("results").create(
        {
            "id": str,
            "created_at": str,
            "device_id": str,
            "source": str,
            "input_kind": str,
            "status": str,
            "reason": str,
            "corners": str,
            "quality": str,
            "model_id": str,
            "model_version": str,
            "model_sha256": str,
            "calibration_id": str,
            "timings_ms": str,
            "logits": str,
            "features": bytes,
            "image_path": str,
            "cam": str,
            "patient_ref": str,
        },
        pk="id",
        not_null={"created_at", "device_id", "status"},
    )
    db.table("results").create_index(["created_at"])
    db.table("results").create_index(["status"])
    db.table("findings").create(
        {
            "result_id": str,
            "code": str,
            "label": str,
            "raw": float,
            "probability": float,
            "threshold": float,
            "positive": int,
        },
        pk=("result_id", "code"),
        foreign_keys=[("result_id", "results", "id")],
    )
    db.table("findings").create_index(["code", "positive"])
    db.table("audit").create(
        {
            "id": int,
            "at": str,
            "actor": str,
            "action": str,
            "subject": str,
            "details": str,
        },
        pk="id",
    )
    db.table("outbox").create(
        {
            "result_id": str,
            "enqueued_at": str,
            "state": str,
            "attempts": int,
            "last_error": str,
            "last_attempt_at": str,
            "sent_at": str,
        },
        pk="result_id",
        foreign_keys=[("result_id", "results", "id")],
    )
    db.table("outbox").create_index(["state"])
    db.table("diagnoses").create(
        {
            "result_id": str,
            "code": str,
            "label": int,
            "confirmed_by": str,
            "confirmed_at": str,
            "source": str,
        },
        pk=("result_id", "code"),
        foreign_keys=[("result_id", "results", "id")],
    )
    db.table("calibrations").create(
        {
            "id": str,
            "model_id": str,
            "model_sha256": str,
            "created_at": str,
            "created_by": str,
            "method": str,
            "active": int,
            "record": str,
            "diagram_path": str,
        },
        pk="id",
    )
    db.table("calibrations").create_index(["model_sha256", "active"])
    db.table("users").create(
        {
            "username": str,
            "role": str,
            "password_hash": str,
            "created_at": str,
            "disabled": int,
        },
        pk="username",
    )
    db.table("api_tokens").create(
        {"token_hash": str, "name": str, "role": str, "created_at": str}, pk="token_hash"
    )
    db.table("settings").create({"key": str, "value": str}, pk="key")
    # Append-only: the audit log can be added to, never changed or emptied.
    db.execute(
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END"
    )


@migration("0002_audit_subject_index")
def _m0002(db: sqlite_utils.Database) -> None:
    # The sync client counts a result's revisions in the audit log by subject.
    db.table("audit").create_index(["subject"])


@migration("0003_outbox_quarantine")
def _m0003(db: sqlite_utils.Database) -> None:
    # A row that breaks the wire schema gets state 'quarantined', its error in last_error and
    # the time here, so it stops blocking every later push and someone can see why.
    db.table("outbox").add_column("quarantined_at", str)


@migration("0004_user_session_version")
def _m0004(db: sqlite_utils.Database) -> None:
    # Sessions carry the version they were made with; sign-out, disabling and a new password
    # bump it, which ends every session of that user at their next request.
    db.table("users").add_column("session_version", int, not_null_default=0)


@migration("0005_api_token_last_used")
def _m0005(db: sqlite_utils.Database) -> None:
    db.table("api_tokens").add_column("last_used_at", str)


@migration("0006_result_calibration_kind")
def _m0006(db: sqlite_utils.Database) -> None:
    # Which kind of calibration made a result's probabilities ("site" | "factory") and when it
    # was made; results stored before factory calibrations existed were calibrated by a site
    # record (or not at all).
    db.table("results").add_column("calibration_kind", str)
    db.table("results").add_column("calibration_date", str)
    db.execute(
        "update results set calibration_kind = 'site', calibration_date = "
        "(select c.created_at from calibrations c where c.id = results.calibration_id) "
        "where calibration_id is not null"
    )


class MigrationsMixin(StoreBase):
    """Which migrations a database has, and applying the rest."""

    def applied_migrations(self) -> list[str]:
        if not self.db.table("_migrations").exists():
            return []
        return [r["name"] for r in self.db.table("_migrations").rows]

    def pending_migrations(self) -> list[str]:
        """Names of migrations not yet applied. Read-only."""
        done = set(self.applied_migrations())
        return [name for name, _ in MIGRATIONS if name not in done]

    def migrate(self) -> list[str]:
        """Apply pending migrations, each with its bookkeeping in one transaction."""
        with self._lock:
            if not self.db.table("_migrations").exists():
                self.db.table("_migrations").create({"name": str, "applied_at": str}, pk="name")
            applied = []
            for name, fn in MIGRATIONS:
                if name in self.applied_migrations():
                    continue
                with self.transaction() as db:
                    fn(db)
                    db.table("_migrations").insert({"name": name, "applied_at": utcnow()})
                applied.append(name)
                logger.info("database migration %s applied", name)
            return applied
