"""The kiosk's SQLite database (sqlite-utils, WAL): results, findings, audit, outbox, calibrations.

One file, ``<data_dir>/kiosk.db``, readable with the ``sqlite-utils`` CLI or Datasette. A result,
its findings, its audit line and its outbox entry are written in one transaction, so a result
that was shown is a result that was stored and will be synced. Schema changes are named
migrations, applied once each, each in its own transaction together with its bookkeeping.

What this module does not do: decide anything about images or models. It stores what the
pipeline hands it and answers queries; the sync client reads the outbox through it.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from kiosk.clock import utcnow
from kiosk.errors import StoreError

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


@dataclass(frozen=True)
class FindingRecord:
    """One finding of a stored result."""

    code: str
    label: str
    raw: float
    probability: float
    threshold: float
    positive: bool


@dataclass
class ResultRecord:
    """Everything the pipeline stores about one analysed image."""

    status: str
    source: str
    input_kind: str
    device_id: str
    reason: str | None = None
    corners: list[list[float]] | None = None
    quality: dict[str, Any] = field(default_factory=dict)
    findings: list[FindingRecord] = field(default_factory=list)
    model_id: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    calibration_id: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    logits: list[float] | None = None
    features: np.ndarray | None = None
    image_path: str | None = None
    cam: list[Any] | None = None
    patient_ref: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=utcnow)


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
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=10000")
    return db


class Store:
    """The kiosk database. Safe to share between threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.db = open_database(self.path)
        except (sqlite3.Error, OSError) as exc:
            raise _storage_error(exc, self.path) from exc
        self._lock = threading.RLock()
        self.migrate()

    # -- plumbing -------------------------------------------------------------------------

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

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def free_mb(self) -> float:
        return shutil.disk_usage(self.path.parent).free / 1e6

    # -- results --------------------------------------------------------------------------

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
            self._audit(db, actor, "result.stored", record.id, {"status": record.status})
        return record.id

    def get_result(self, result_id: str) -> dict[str, Any] | None:
        """One result with its findings and confirmed diagnoses, JSON fields decoded."""
        with self._lock:
            try:
                row = self.db.table("results").get(result_id)
            except sqlite_utils.db.NotFoundError:
                return None
            return self._decode(dict(row))

    def _decode(self, row: dict[str, Any]) -> dict[str, Any]:
        for key in ("corners", "quality", "timings_ms", "logits", "cam"):
            if row.get(key):
                row[key] = json.loads(row[key])
        features = row.pop("features", None)
        row["has_features"] = features is not None
        row["findings"] = [
            dict(f)
            for f in self.db.table("findings").rows_where(
                "result_id = ?", [row["id"]], order_by="rowid"
            )
        ]
        for f in row["findings"]:
            f["positive"] = bool(f["positive"])
        row["diagnoses"] = {
            d["code"]: d
            for d in self.db.table("diagnoses").rows_where("result_id = ?", [row["id"]])
        }
        return row

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
                self._decode(dict(r))
                for r in self.db.query(
                    f"select * from results r where {sql_where} "
                    "order by r.created_at desc, r.rowid desc limit ? offset ?",
                    [*params, int(limit), int(offset)],
                )
            ]
        return rows, int(total)

    # -- audit ------------------------------------------------------------------------------

    @staticmethod
    def _audit(
        db: sqlite_utils.Database,
        actor: str,
        action: str,
        subject: str | None,
        details: dict[str, Any] | None,
    ) -> None:
        db.table("audit").insert(
            {
                "at": utcnow(),
                "actor": actor,
                "action": action,
                "subject": subject,
                "details": json.dumps(details or {}),
            }
        )

    def audit(
        self,
        actor: str,
        action: str,
        subject: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append one line to the audit log (never patient identifiers in details)."""
        with self.transaction() as db:
            self._audit(db, actor, action, subject, details)

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(r)
                for r in self.db.query("select * from audit order by id desc limit ?", [int(limit)])
            ]

    # -- confirmed diagnoses ----------------------------------------------------------------

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
            self._audit(db, by, "diagnosis.confirmed", result_id, {"code": code, "label": label})

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
            return [self._decode(dict(self.db.table("results").get(i))) for i in ids]

    # -- outbox -----------------------------------------------------------------------------

    def outbox_batch(self, limit: int) -> list[str]:
        """Ids of results waiting to be sent (pending or failed), oldest first."""
        with self._lock:
            return [
                r["result_id"]
                for r in self.db.query(
                    "select result_id from outbox where state != 'sent' "
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
            "last_error": last[0]["last_error"] if last else None,
            "last_error_at": last[0]["last_attempt_at"] if last else None,
        }

    # -- calibrations -----------------------------------------------------------------------

    def save_calibration(
        self,
        record: dict[str, Any],
        *,
        diagram_path: str | None = None,
        activate: bool = False,
        actor: str = "cli",
    ) -> None:
        """Store a calibration record (a dict with id, model_id, model_sha256, ...)."""
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
            self._audit(db, actor, "calibration.stored", record["id"], None)
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
            self._audit(db, actor, "calibration.activated", calibration_id, None)

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
            self._audit(db, actor, "calibration.rolled_back", short, {"now_active": target})
        return target

    def deactivate_calibrations(self, model_sha256: str, *, actor: str = "cli") -> None:
        """Use no calibration for this model (raw model probabilities)."""
        with self.transaction() as db:
            db.execute("update calibrations set active = 0 where model_sha256 = ?", [model_sha256])
            self._audit(db, actor, "calibration.deactivated", model_sha256[:12], None)

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

    # -- settings ---------------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        with self._lock:
            rows = list(self.db.query("select value from settings where key = ?", [key]))
        return rows[0]["value"] if rows else None

    def set_setting(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.table("settings").upsert({"key": key, "value": value}, pk="key")
