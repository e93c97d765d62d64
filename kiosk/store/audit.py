"""The audit log: who did what to which subject, append-only (SQLite triggers refuse changes).

``write_audit`` adds a line inside a transaction another area already holds, so a change and
its audit line are stored together. What this module does not do: decide what is audited, or
hold patient identifiers (callers pass ids and codes only).
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from kiosk.clock import utcnow
from kiosk.store.db import StoreBase


def write_audit(
    db: sqlite_utils.Database,
    actor: str,
    action: str,
    subject: str | None,
    details: dict[str, Any] | None,
) -> None:
    """Append one audit line within the caller's transaction."""
    db.table("audit").insert(
        {
            "at": utcnow(),
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": json.dumps(details or {}),
        }
    )


class AuditMixin(StoreBase):
    """Appending to and reading the audit log."""

    def audit(
        self,
        actor: str,
        action: str,
        subject: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append one line to the audit log (never patient identifiers in details)."""
        with self.transaction() as db:
            write_audit(db, actor, action, subject, details)

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(r)
                for r in self.db.query("select * from audit order by id desc limit ?", [int(limit)])
            ]
