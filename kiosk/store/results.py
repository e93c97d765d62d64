"""Analysed images: storing a result with its findings, reading it back, listing and filtering.

A result, its findings, its audit line and its outbox entry are written in one transaction, so
a result that was shown is a result that was stored and will be synced. What this module does
not do: decide anything about images or models (the pipeline does), or send results (sync).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import sqlite_utils

from kiosk.clock import utcnow
from kiosk.store.audit import write_audit
from kiosk.store.db import StoreBase
from kiosk.store.records import ResultRecord


def decode_result(db: sqlite_utils.Database, row: dict[str, Any]) -> dict[str, Any]:
    """A ``results`` row with JSON fields decoded, its findings and its confirmed diagnoses."""
    for key in ("corners", "quality", "timings_ms", "logits", "cam"):
        if row.get(key):
            row[key] = json.loads(row[key])
    features = row.pop("features", None)
    row["has_features"] = features is not None
    row["calibrated"] = bool(row.get("calibration_id"))
    row["findings"] = [
        dict(f)
        for f in db.table("findings").rows_where("result_id = ?", [row["id"]], order_by="rowid")
    ]
    for f in row["findings"]:
        f["positive"] = bool(f["positive"])
    row["diagnoses"] = {
        d["code"]: d for d in db.table("diagnoses").rows_where("result_id = ?", [row["id"]])
    }
    return row


class ResultsMixin(StoreBase):
    """Results and their findings."""

    def save_result(self, record: ResultRecord, *, actor: str = "pipeline") -> str:
        """Store a result, its findings, an audit line and an outbox entry atomically."""
        features = None
        if record.features is not None:
            features = np.asarray(record.features, dtype=np.float16).tobytes()
        row = {
            "id": record.id,
            "created_at": record.created_at,
            "device_id": record.device_id,
            "source": record.source,
            "input_kind": record.input_kind,
            "status": record.status,
            "reason": record.reason,
            "corners": json.dumps(record.corners) if record.corners is not None else None,
            "quality": json.dumps(record.quality),
            "model_id": record.model_id,
            "model_version": record.model_version,
            "model_sha256": record.model_sha256,
            "calibration_id": record.calibration_id,
            "calibration_kind": record.calibration_kind,
            "calibration_date": record.calibration_date,
            "timings_ms": json.dumps(record.timings_ms),
            "logits": json.dumps(record.logits) if record.logits is not None else None,
            "features": features,
            "image_path": record.image_path,
            "cam": json.dumps(record.cam) if record.cam is not None else None,
            "patient_ref": record.patient_ref,
        }
        with self.transaction() as db:
            db.table("results").insert(row)
            if record.findings:
                db.table("findings").insert_all(
                    {
                        "result_id": record.id,
                        "code": f.code,
                        "label": f.label,
                        "raw": float(f.raw),
                        "probability": float(f.probability),
                        "threshold": float(f.threshold),
                        "positive": int(f.positive),
                    }
                    for f in record.findings
                )
            db.table("outbox").insert(
                {
                    "result_id": record.id,
                    "enqueued_at": utcnow(),
                    "state": "pending",
                    "attempts": 0,
                }
            )
            write_audit(db, actor, "result.stored", record.id, {"status": record.status})
        return record.id

    def get_result(self, result_id: str) -> dict[str, Any] | None:
        """One result with its findings and confirmed diagnoses, JSON fields decoded."""
        with self._lock:
            try:
                row = self.db.table("results").get(result_id)
            except sqlite_utils.db.NotFoundError:
                return None
            return decode_result(self.db, dict(row))

    def result_features(self, result_id: str) -> np.ndarray | None:
        with self._lock:
            rows = list(self.db.query("select features from results where id = ?", [result_id]))
        if not rows or rows[0]["features"] is None:
            return None
        return np.frombuffer(rows[0]["features"], dtype=np.float16).astype(np.float32)

    def list_results(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        since: str | None = None,
        until: str | None = None,
        status: str | None = None,
        finding: str | None = None,
        positive: bool | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Newest first, filtered; returns (rows, total matching)."""
        where: list[str] = ["1=1"]
        params: list[Any] = []
        if since:
            where.append("r.created_at >= ?")
            params.append(since)
        if until:
            where.append("r.created_at < ?")
            params.append(until)
        if status:
            where.append("r.status = ?")
            params.append(status)
        if finding:
            clause = "exists (select 1 from findings f where f.result_id = r.id and f.code = ?"
            params.append(finding)
            if positive is not None:
                clause += " and f.positive = ?"
                params.append(int(positive))
            where.append(clause + ")")
        elif positive is not None:
            where.append(
                "exists (select 1 from findings f where f.result_id = r.id and f.positive = ?)"
            )
            params.append(int(positive))
        sql_where = " and ".join(where)
        with self._lock:
            total = next(
                self.db.query(f"select count(*) as n from results r where {sql_where}", params)
            )["n"]
            rows = [
                decode_result(self.db, dict(r))
                for r in self.db.query(
                    f"select * from results r where {sql_where} "
                    "order by r.created_at desc, r.rowid desc limit ? offset ?",
                    [*params, int(limit), int(offset)],
                )
            ]
        return rows, int(total)
