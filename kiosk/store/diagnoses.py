"""Diagnoses confirmed by a supervisor, and the labelled cases they make for the site loop.

Confirming (or correcting) a diagnosis re-queues its result in the outbox so the hub hears of
it. What this module does not do: fit calibrations from the cases (``kiosk.recalibrate``).
"""

from __future__ import annotations

from typing import Any

from kiosk.clock import utcnow
from kiosk.errors import StoreError
from kiosk.store.audit import write_audit
from kiosk.store.db import StoreBase
from kiosk.store.results import decode_result


class DiagnosesMixin(StoreBase):
    """Confirmed diagnoses."""

    def confirm_diagnosis(
        self, result_id: str, code: str, label: int, *, by: str, source: str = "page"
    ) -> None:
        """Record (or correct) a supervisor's confirmed diagnosis; re-queues the result for sync."""
        if label not in (0, 1):
            raise StoreError(f"a confirmed diagnosis is 0 or 1, not {label!r}")
        with self.transaction() as db:
            if not list(db.query("select 1 from results where id = ?", [result_id])):
                raise StoreError(f"no result with id {result_id}", "check the result id")
            db.table("diagnoses").upsert(
                {
                    "result_id": result_id,
                    "code": code,
                    "label": int(label),
                    "confirmed_by": by,
                    "confirmed_at": utcnow(),
                    "source": source,
                },
                pk=("result_id", "code"),
            )
            db.execute(
                "update outbox set state = 'pending', enqueued_at = ? where result_id = ?",
                [utcnow(), result_id],
            )
            write_audit(db, by, "diagnosis.confirmed", result_id, {"code": code, "label": label})

    def labelled_cases(self, model_sha256: str) -> list[dict[str, Any]]:
        """Results of this model with at least one confirmed diagnosis (for the site loop)."""
        with self._lock:
            ids = [
                r["id"]
                for r in self.db.query(
                    "select distinct r.id from results r join diagnoses d on d.result_id = r.id "
                    "where r.model_sha256 = ? and r.status = 'ok' order by r.created_at",
                    [model_sha256],
                )
            ]
            return [decode_result(self.db, dict(self.db.table("results").get(i))) for i in ids]
