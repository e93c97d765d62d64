"""The outbox: which stored results still have to reach the hub, and how sending went.

A result enters the outbox when it is stored (``results``) and again when a diagnosis of it is
confirmed (``diagnoses``). States: ``pending``, ``failed`` (sending went wrong; tried again),
``sent``, and ``quarantined``: the stored row breaks the wire schema, so sending it again cannot
help; it is skipped by every push until it is re-queued (a confirmed diagnosis) and its error is
shown by ``kiosk sync status`` and the supervisor's sync page.

What this module does not do: send anything (``kiosk.sync.client``).
"""

from __future__ import annotations

from typing import Any

from kiosk.clock import utcnow
from kiosk.store.db import StoreBase


class OutboxMixin(StoreBase):
    """The sync queue."""

    def outbox_batch(self, limit: int) -> list[str]:
        """Ids of results waiting to be sent (pending or failed), oldest first."""
        with self._lock:
            return [
                r["result_id"]
                for r in self.db.query(
                    "select result_id from outbox where state in ('pending', 'failed') "
                    "order by enqueued_at, rowid limit ?",
                    [int(limit)],
                )
            ]

    def mark_sent(self, result_ids: list[str], *, enqueued_before: str | None = None) -> None:
        """Mark results as delivered (unless re-queued after ``enqueued_before``)."""
        now = utcnow()
        with self.transaction() as db:
            for rid in result_ids:
                if enqueued_before:
                    db.execute(
                        "update outbox set state='sent', sent_at=?, last_error=null "
                        "where result_id=? and enqueued_at <= ?",
                        [now, rid, enqueued_before],
                    )
                else:
                    db.execute(
                        "update outbox set state='sent', sent_at=?, last_error=null "
                        "where result_id=?",
                        [now, rid],
                    )

    def mark_failed(self, result_ids: list[str], error: str) -> None:
        now = utcnow()
        with self.transaction() as db:
            for rid in result_ids:
                db.execute(
                    "update outbox set state='failed', attempts=attempts+1, last_error=?, "
                    "last_attempt_at=? where result_id=?",
                    [error[:500], now, rid],
                )

    def quarantine(self, result_id: str, error: str) -> None:
        """Take a result that cannot be sent as stored out of every later push, with why."""
        now = utcnow()
        with self.transaction() as db:
            db.execute(
                "update outbox set state='quarantined', last_error=?, last_attempt_at=?, "
                "quarantined_at=? where result_id=?",
                [error[:500], now, now, result_id],
            )

    def quarantined(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest quarantined results: ``result_id``, ``error``, ``quarantined_at``."""
        with self._lock:
            return [
                {
                    "result_id": r["result_id"],
                    "error": r["last_error"],
                    "quarantined_at": r["quarantined_at"],
                }
                for r in self.db.query(
                    "select result_id, last_error, quarantined_at from outbox "
                    "where state = 'quarantined' order by quarantined_at desc limit ?",
                    [int(limit)],
                )
            ]

    def outbox_counts(self) -> dict[str, Any]:
        with self._lock:
            counts = {
                r["state"]: r["n"]
                for r in self.db.query("select state, count(*) as n from outbox group by state")
            }
            last = list(
                self.db.query(
                    "select last_error, last_attempt_at from outbox where last_error is not null "
                    "order by last_attempt_at desc limit 1"
                )
            )
        return {
            "pending": int(counts.get("pending", 0)),
            "failed": int(counts.get("failed", 0)),
            "sent": int(counts.get("sent", 0)),
            "quarantined": int(counts.get("quarantined", 0)),
            "last_error": last[0]["last_error"] if last else None,
            "last_error_at": last[0]["last_attempt_at"] if last else None,
        }
