"""Calibration records per model file: storing, activating, rolling back, reading.

At most one calibration is active per model (by the model file's sha256); activations,
deactivations and roll-backs are audited, and the audit log is the history a roll-back walks.
What this module does not do: fit or apply a calibration (``kiosk.calibration``).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from kiosk.clock import utcnow
from kiosk.errors import StoreError
from kiosk.store.audit import write_audit
from kiosk.store.db import StoreBase


class CalibrationsMixin(StoreBase):
    """Calibration records."""

    def save_calibration(
        self,
        record: dict[str, Any],
        *,
        diagram_path: str | None = None,
        activate: bool = False,
        actor: str = "cli",
        details: dict[str, Any] | None = None,
    ) -> None:
        """Store a calibration record (a dict with id, model_id, model_sha256, ...).

        One ``calibration.stored`` audit line, with ``details`` (e.g. where the labelled cases
        came from). ``activate`` activates it unchecked: callers that must not activate a
        worse-than-none calibration go through ``kiosk.calibration.workflow.activate``.
        """
        with self.transaction() as db:
            db.table("calibrations").insert(
                {
                    "id": record["id"],
                    "model_id": record["model_id"],
                    "model_sha256": record["model_sha256"],
                    "created_at": record.get("created_at") or utcnow(),
                    "created_by": record.get("created_by") or actor,
                    "method": json.dumps(record.get("methods") or record.get("method")),
                    "active": 0,
                    "record": json.dumps(record),
                    "diagram_path": diagram_path,
                }
            )
            write_audit(db, actor, "calibration.stored", record["id"], details)
        if activate:
            self.activate_calibration(record["id"], actor=actor)

    def activate_calibration(self, calibration_id: str, *, actor: str = "cli") -> None:
        """Make one calibration the active one for its model (the previous one is kept)."""
        with self.transaction() as db:
            rows = list(
                db.query("select model_sha256 from calibrations where id = ?", [calibration_id])
            )
            if not rows:
                raise StoreError(
                    f"no calibration with id {calibration_id}", "see `kiosk calibrate list`"
                )
            db.execute(
                "update calibrations set active = 0 where model_sha256 = ?",
                [rows[0]["model_sha256"]],
            )
            db.execute("update calibrations set active = 1 where id = ?", [calibration_id])
            write_audit(db, actor, "calibration.activated", calibration_id, None)

    def rollback_calibration(self, model_sha256: str, *, actor: str = "cli") -> str | None:
        """Undo the last change of this model's active calibration; repeat to go further back.

        The audit log is the history: activations and "none" are pushed, roll-backs pop. Returns
        the id now active, or None (raw model probabilities) when the history is exhausted.
        """
        short = model_sha256[:12]
        with self.transaction() as db:
            ids = {
                r["id"]
                for r in db.query(
                    "select id from calibrations where model_sha256 = ?", [model_sha256]
                )
            }
            stack: list[str | None] = []
            for row in db.query(
                "select action, subject from audit where action like 'calibration.%' order by id"
            ):
                action, subject = row["action"], row["subject"]
                if action == "calibration.activated" and subject in ids:
                    stack.append(subject)
                elif action == "calibration.deactivated" and subject == short:
                    stack.append(None)
                elif action == "calibration.rolled_back" and subject == short and stack:
                    stack.pop()
            if stack:
                stack.pop()
            target = stack[-1] if stack else None
            db.execute("update calibrations set active = 0 where model_sha256 = ?", [model_sha256])
            if target is not None:
                db.execute("update calibrations set active = 1 where id = ?", [target])
            write_audit(db, actor, "calibration.rolled_back", short, {"now_active": target})
        return target

    def deactivate_calibrations(self, model_sha256: str, *, actor: str = "cli") -> None:
        """Use no calibration for this model (raw model probabilities)."""
        with self.transaction() as db:
            db.execute("update calibrations set active = 0 where model_sha256 = ?", [model_sha256])
            write_audit(db, actor, "calibration.deactivated", model_sha256[:12], None)

    def active_calibration(self, model_sha256: str) -> dict[str, Any] | None:
        """The active calibration record for exactly this model file, or None."""
        with self._lock:
            rows = list(
                self.db.query(
                    "select record from calibrations where model_sha256 = ? and active = 1",
                    [model_sha256],
                )
            )
        return json.loads(rows[0]["record"]) if rows else None

    def list_calibrations(self, model_sha256: str | None = None) -> list[dict[str, Any]]:
        sql = "select id, model_id, model_sha256, created_at, created_by, method, active, "
        sql += "diagram_path from calibrations"
        params: list[Any] = []
        if model_sha256:
            sql += " where model_sha256 = ?"
            params.append(model_sha256)
        with self._lock:
            return [dict(r) for r in self.db.query(sql + " order by created_at desc", params)]

    def get_calibration(self, calibration_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(
                self.db.query(
                    "select record, active, diagram_path from calibrations where id = ?",
                    [calibration_id],
                )
            )
        if not rows:
            return None
        record: dict[str, Any] = json.loads(rows[0]["record"])
        record["active"] = bool(rows[0]["active"])
        record["diagram_path"] = rows[0]["diagram_path"]
        return record


def read_active_calibration(db_path: Path, model_sha256: str) -> dict[str, Any] | None:
    """The active calibration record of this model, read from the database file read-only.

    For `kiosk analyze --no-store`: it neither creates nor migrates the database (None when the
    file does not exist yet). Raises StoreError when the file exists but cannot be read.
    """
    if not Path(db_path).is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "select record from calibrations where model_sha256 = ? and active = 1",
                [model_sha256],
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(
            f"cannot read the active calibration from {db_path}: {exc}",
            "check the file's permissions, or run without --no-store",
        ) from exc
    return json.loads(rows[0][0]) if rows else None
