"""The supervisor's hub: receives pushes from many kiosks, imports exports, shows a summary.

Storage is ``<data_dir>/hub.db`` (SQLite through sqlite-utils, WAL): plain tables with foreign
keys and indexes, so ``datasette hub.db`` browses it. Results are keyed by their UUID and
upserted idempotently: a replayed batch changes nothing; a higher ``revision`` of a result
(e.g. a newly confirmed diagnosis) replaces its findings and diagnoses; a lower one is ignored
but still acknowledged, because the hub already holds something newer.

Time: the kiosk's ``created_at`` is stored exactly as sent, next to the hub's own
``received_at``. Nothing is ordered or refused by kiosk time (a Pi has no battery clock).

Security: each kiosk has its own bearer token, of which only a sha256 is stored; the token's
device must be the payload's ``device_id`` (403 otherwise). The supervisor page uses HTTP
basic auth with a separate admin token. Run behind an HTTPS reverse proxy (docs/sync.md):
bearer tokens and basic auth are only as private as the transport.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hmac
import io
import json
import logging
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils
from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from kiosk.clock import utcnow
from kiosk.errors import StoreError, SyncError
from kiosk.store import open_database
from kiosk.sync.payload import PayloadError, ResultPayload, parse_batch
from kiosk.tokens import hash_token

logger = logging.getLogger(__name__)

HUB_DB_NAME = "hub.db"
MAX_CONTENT_LENGTH_BYTES = 8 * 1024 * 1024
ADMIN_USER = "supervisor"
DEVICE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


@dataclass
class IngestOutcome:
    """What one batch did to the hub database."""

    accepted: list[str] = field(default_factory=list)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
        }


class HubStore:
    """The hub database. One connection behind a lock: SQLite serialises writers anyway."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.db = open_database(self.path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(
                f"cannot open the hub database {self.path}: {exc}",
                "check KIOSK_DATA_DIR and its permissions",
            ) from exc
        self._lock = threading.RLock()
        with self.transaction():
            self._create_schema()

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def _create_schema(self) -> None:
        db = self.db
        if not db.table("devices").exists():
            db.table("devices").create(
                {
                    "name": str,
                    "token_hash": str,
                    "created_at": str,
                    "last_contact_at": str,
                    "reported_pending": int,
                    "reported_failed": int,
                    "reported_sent": int,
                    "last_kiosk_time": str,
                    "calibration_id": str,
                },
                pk="name",
            )
        if not db.table("results").exists():
            db.table("results").create(
                {
                    "id": str,
                    "device_id": str,
                    "revision": int,
                    "created_at": str,
                    "received_at": str,
                    "updated_at": str,
                    "via": str,
                    "status": str,
                    "reason": str,
                    "input_kind": str,
                    "model_id": str,
                    "model_version": str,
                    "model_sha256": str,
                    "calibration_id": str,
                    "quality": str,
                    "timings_ms": str,
                    "corners": str,
                    "content_sha256": str,
                    "thumbnail_jpeg": bytes,
                },
                pk="id",
                not_null={"device_id", "revision", "created_at", "received_at", "status"},
                foreign_keys=[("device_id", "devices", "name")],
            )
            db.table("results").create_index(["device_id", "created_at"])
            db.table("results").create_index(["received_at"])
        if not db.table("findings").exists():
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
        if not db.table("diagnoses").exists():
            db.table("diagnoses").create(
                {
                    "result_id": str,
                    "code": str,
                    "label": int,
                    "confirmed_by": str,
                    "confirmed_at": str,
                },
                pk=("result_id", "code"),
                foreign_keys=[("result_id", "results", "id")],
            )
        if not db.table("ingests").exists():
            db.table("ingests").create(
                {
                    "id": int,
                    "device_id": str,
                    "received_at": str,
                    "via": str,
                    "results": int,
                    "inserted": int,
                    "updated": int,
                    "unchanged": int,
                    "rejected": int,
                    "kiosk_sent_at": str,
                },
                pk="id",
                foreign_keys=[("device_id", "devices", "name")],
            )
            db.table("ingests").create_index(["device_id", "received_at"])
        if not db.table("imports").exists():
            db.table("imports").create(
                {
                    "data_sha256": str,
                    "imported_at": str,
                    "device_id": str,
                    "format": str,
                    "results": int,
                    "manifest": str,
                },
                pk="data_sha256",
            )
        if not db.table("settings").exists():
            db.table("settings").create({"key": str, "value": str}, pk="key")

    # -- devices and tokens ----------------------------------------------------------------

    def add_device(self, name: str) -> str:
        """Register a kiosk (or give it a new token); returns the token, stored only as a hash."""
        if not re.match(DEVICE_NAME_PATTERN, name):
            raise SyncError(
                f"device name {name!r} is not allowed",
                "use letters, digits, '.', '_' or '-' (the kiosk's device_id), up to 100",
            )
        token = secrets.token_urlsafe(32)
        with self.transaction() as db:
            existing = list(db.query("select name from devices where name = ?", [name]))
            if existing:
                db.execute(
                    "update devices set token_hash = ? where name = ?", [hash_token(token), name]
                )
            else:
                db.table("devices").insert(
                    {"name": name, "token_hash": hash_token(token), "created_at": utcnow()}
                )
        logger.info("hub: token issued for device %s", name)
        return token

    def device_for_token(self, token: str) -> str | None:
        """The device name whose token this is, comparing every hash in constant time."""
        digest = hash_token(token)
        found = None
        with self._lock:
            rows = list(self.db.query("select name, token_hash from devices"))
        for row in rows:
            if row["token_hash"] and hmac.compare_digest(row["token_hash"], digest):
                found = row["name"]
        return found

    def devices(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(r)
                for r in self.db.query(
                    "select d.name, d.created_at, d.last_contact_at, d.reported_pending, "
                    "d.reported_failed, d.reported_sent, d.last_kiosk_time, d.calibration_id, "
                    "(select count(*) from results r where r.device_id = d.name) as results "
                    "from devices d order by d.name"
                )
            ]

    def set_admin_token(self) -> str:
        """A new admin token for the supervisor page (replaces the old one)."""
        token = secrets.token_urlsafe(24)
        with self.transaction() as db:
            db.table("settings").upsert(
                {"key": "admin_token_hash", "value": hash_token(token)}, pk="key"
            )
        return token

    def check_admin_token(self, token: str) -> bool:
        with self._lock:
            rows = list(self.db.query("select value from settings where key = 'admin_token_hash'"))
        return bool(rows) and hmac.compare_digest(rows[0]["value"], hash_token(token))

    # -- results ---------------------------------------------------------------------------

    def ingest(
        self,
        device_id: str,
        results: list[ResultPayload],
        *,
        via: str = "push",
        outbox: dict[str, int] | None = None,
        kiosk_sent_at: str | None = None,
    ) -> IngestOutcome:
        """Upsert results of one device in one transaction; idempotent by (id, revision)."""
        out = IngestOutcome()
        now = utcnow()
        with self.transaction() as db:
            if not list(db.query("select 1 from devices where name = ?", [device_id])):
                db.table("devices").insert({"name": device_id, "created_at": now})
            for result in results:
                self._upsert_one(db, device_id, result, now, via, out)
            update: dict[str, Any] = {"last_contact_at": now}
            if outbox is not None:
                update.update(
                    reported_pending=outbox["pending"],
                    reported_failed=outbox["failed"],
                    reported_sent=outbox["sent"],
                )
            if kiosk_sent_at:
                update["last_kiosk_time"] = kiosk_sent_at
            latest_cal = next(
                (r.calibration_id for r in reversed(results) if r.calibration_id), None
            )
            if latest_cal:
                update["calibration_id"] = latest_cal
            if via == "push":
                db.table("devices").update(device_id, update)
            db.table("ingests").insert(
                {
                    "device_id": device_id,
                    "received_at": now,
                    "via": via,
                    "results": len(results),
                    "inserted": out.inserted,
                    "updated": out.updated,
                    "unchanged": out.unchanged,
                    "rejected": len(out.rejected),
                    "kiosk_sent_at": kiosk_sent_at,
                }
            )
        return out

    def _upsert_one(
        self,
        db: sqlite_utils.Database,
        device_id: str,
        r: ResultPayload,
        now: str,
        via: str,
        out: IngestOutcome,
    ) -> None:
        digest = r.content_sha256()
        rows = list(
            db.query(
                "select device_id, revision, content_sha256, thumbnail_jpeg is not null as thumb "
                "from results where id = ?",
                [r.id],
            )
        )
        try:
            thumb = base64.b64decode(r.thumbnail.base64, validate=True) if r.thumbnail else None
        except (binascii.Error, ValueError):
            out.rejected.append({"id": r.id, "error": "thumbnail.base64 is not valid base64"})
            return
        if rows and rows[0]["device_id"] != device_id:
            out.rejected.append({"id": r.id, "error": "this result id belongs to another device"})
            logger.warning("hub: device %s sent result %s owned by another device", device_id, r.id)
            return
        if rows:
            old = rows[0]
            newer = r.revision > old["revision"] or (
                r.revision == old["revision"] and digest != old["content_sha256"]
            )
            if not newer:
                if thumb is not None and not old["thumb"]:
                    db.execute("update results set thumbnail_jpeg = ? where id = ?", [thumb, r.id])
                out.unchanged += 1
                out.accepted.append(r.id)
                return
            db.execute("delete from findings where result_id = ?", [r.id])
            db.execute("delete from diagnoses where result_id = ?", [r.id])
        row = {
            "id": r.id,
            "device_id": device_id,
            "revision": r.revision,
            "created_at": r.created_at,
            "received_at": now,
            "updated_at": now,
            "via": via,
            "status": r.status,
            "reason": r.reason,
            "input_kind": r.input_kind,
            "model_id": r.model.id,
            "model_version": r.model.version,
            "model_sha256": r.model.sha256,
            "calibration_id": r.calibration_id,
            "quality": json.dumps(r.quality),
            "timings_ms": json.dumps(r.timings_ms),
            "corners": json.dumps(r.corners) if r.corners is not None else None,
            "content_sha256": digest,
            "thumbnail_jpeg": thumb,
        }
        if rows:
            row.pop("received_at")
            if thumb is None:
                row.pop("thumbnail_jpeg")
            sets = ", ".join(f"{k} = ?" for k in row if k != "id")
            db.execute(
                f"update results set {sets} where id = ?",
                [*(v for k, v in row.items() if k != "id"), r.id],
            )
            out.updated += 1
        else:
            cols = ", ".join(row)
            db.execute(
                f"insert into results ({cols}) values ({', '.join('?' * len(row))})",
                list(row.values()),
            )
            out.inserted += 1
        if r.findings:
            db.conn.executemany(
                "insert into findings (result_id, code, label, raw, probability, threshold, "
                "positive) values (?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.id, f.code, f.label, f.raw, f.probability, f.threshold, int(f.positive))
                    for f in r.findings
                ],
            )
        if r.diagnoses:
            db.conn.executemany(
                "insert into diagnoses (result_id, code, label, confirmed_by, confirmed_at) "
                "values (?, ?, ?, ?, ?)",
                [(r.id, d.code, d.label, d.confirmed_by, d.confirmed_at) for d in r.diagnoses],
            )
        out.accepted.append(r.id)

    def result_ids(self, device_id: str | None = None) -> set[str]:
        with self._lock:
            if device_id is None:
                return {r["id"] for r in self.db.query("select id from results")}
            return {
                r["id"]
                for r in self.db.query("select id from results where device_id = ?", [device_id])
            }

    def findings_of(self, result_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(r)
                for r in self.db.query(
                    "select code, label, raw, probability, threshold, positive from findings "
                    "where result_id = ? order by code",
                    [result_id],
                )
            ]

    # -- supervisor summary ----------------------------------------------------------------

    def summary(self, days: int = 30) -> dict[str, Any]:
        """Numbers for the supervisor page."""
        with self._lock:
            per_day = [
                dict(r)
                for r in self.db.query(
                    "select substr(created_at, 1, 10) as day, count(*) as n from results "
                    "group by day order by day desc limit ?",
                    [days],
                )
            ]
            positives = [
                dict(r)
                for r in self.db.query(
                    "select code, max(label) as label, sum(positive) as positive, "
                    "count(*) as total from findings group by code order by code"
                )
            ]
            total = next(self.db.query("select count(*) as n from results"))["n"]
        return {
            "devices": self.devices(),
            "per_day": per_day,
            "positives": positives,
            "total": int(total),
        }

    def csv_rows(self, since: str | None = None, until: str | None = None) -> Iterator[list[Any]]:
        """One row per finding of each result (results without findings get one row)."""
        where, params = ["1=1"], []
        if since:
            where.append("r.created_at >= ?")
            params.append(since)
        if until:
            where.append("r.created_at < ?")
            params.append(until)
        sql = (
            "select r.id, r.device_id, r.created_at, r.received_at, r.status, r.model_id, "
            "r.model_version, r.calibration_id, f.code, f.raw, f.probability, f.threshold, "
            "f.positive, d.label as confirmed_label from results r "
            "left join findings f on f.result_id = r.id "
            "left join diagnoses d on d.result_id = r.id and d.code = f.code "
            f"where {' and '.join(where)} order by r.created_at, r.id, f.code"
        )
        with self._lock:
            rows = [list(r.values()) for r in self.db.query(sql, params)]
        yield from rows


CSV_HEADER = [
    "result_id",
    "device_id",
    "created_at",
    "received_at",
    "status",
    "model_id",
    "model_version",
    "calibration_id",
    "finding",
    "raw",
    "probability",
    "threshold",
    "positive",
    "confirmed_label",
]


def _error(status: int, message: str, field_name: str | None = None) -> tuple[Response, int]:
    body: dict[str, Any] = {"error": message}
    if field_name is not None:
        body["field"] = field_name
    return jsonify(body), status


def create_hub_app(
    data_dir: Path,
    *,
    max_content_length: int = MAX_CONTENT_LENGTH_BYTES,
    store: HubStore | None = None,
) -> Flask:
    """The hub's Flask app: ``POST /api/v1/ingest`` for kiosks, ``/`` and ``/results.csv``
    for the supervisor (basic auth, user ``supervisor``, password = admin token)."""
    app = Flask(__name__, template_folder="templates")
    app.config["MAX_CONTENT_LENGTH"] = max_content_length
    hub = store or HubStore(Path(data_dir) / HUB_DB_NAME)
    app.extensions["hub_store"] = hub

    @app.errorhandler(413)
    def too_large(_exc: Exception) -> tuple[Response, int]:
        logger.warning("hub: refused a request larger than %d bytes", max_content_length)
        return _error(
            413,
            f"request larger than {max_content_length} bytes; send fewer results per batch "
            "(sync.batch_size) or without thumbnails",
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return _error(exc.code or 500, exc.description or exc.name)

    @app.post("/api/v1/ingest")
    def ingest() -> tuple[Response, int]:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            logger.warning("hub: ingest without a bearer token refused")
            resp, status = _error(401, "missing 'Authorization: Bearer <token>' header")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp, status
        device = hub.device_for_token(token.strip())
        if device is None:
            logger.warning("hub: ingest with an unknown token refused")
            resp, status = _error(401, "unknown token; issue one with `kiosk hub add-device`")
            resp.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return resp, status
        body = request.get_json(silent=True, force=True)
        if body is None:
            return _error(400, "the body is not valid JSON")
        try:
            batch = parse_batch(body)
        except PayloadError as exc:
            logger.warning("hub: invalid batch from %s: %s", device, exc.field)
            return _error(400 if exc.field != "schema_version" else 422, str(exc), exc.field)
        if batch.device_id != device:
            logger.warning("hub: token of %s used for device_id %s", device, batch.device_id)
            return _error(
                403,
                f"device_id {batch.device_id!r} does not match this token's device",
                "device_id",
            )
        outcome = hub.ingest(
            device,
            batch.results,
            outbox=batch.outbox.model_dump() if batch.outbox else None,
            kiosk_sent_at=batch.sent_at,
        )
        logger.info(
            "hub: %s sent %d results (%d new, %d updated, %d unchanged)",
            device,
            len(batch.results),
            outcome.inserted,
            outcome.updated,
            outcome.unchanged,
        )
        return jsonify(outcome.to_dict()), 200

    @app.get("/api/v1/health")
    def health() -> tuple[Response, int]:
        return jsonify({"ok": True}), 200

    def admin_ok() -> bool:
        auth = request.authorization
        return bool(auth and auth.password and hub.check_admin_token(auth.password))

    def ask_login() -> Response:
        logger.warning("hub: supervisor page request without valid credentials")
        return Response(
            "supervisor login required (user 'supervisor', password: `kiosk hub admin-token`)\n",
            401,
            {"WWW-Authenticate": 'Basic realm="kiosk hub", charset="UTF-8"'},
        )

    @app.get("/")
    def index() -> Response | str:
        if not admin_ok():
            return ask_login()
        summary = hub.summary()
        max_day = max((d["n"] for d in summary["per_day"]), default=1)
        return render_template("hub_index.html", s=summary, max_day=max_day, now=utcnow())

    @app.get("/results.csv")
    def results_csv() -> Response:
        if not admin_ok():
            return ask_login()
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_HEADER)
        for row in hub.csv_rows(request.args.get("since"), request.args.get("until")):
            writer.writerow(row)
        return Response(
            buf.getvalue(),
            200,
            {
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": "attachment; filename=hub-results.csv",
            },
        )

    return app
