"""The hub database behind one object: devices and tokens, batches, and the numbers it shows.

``HubStore(url)`` opens SQLite or PostgreSQL through a pooled SQLAlchemy engine (``database``),
brings the schema to the newest migration (``migrate``), and runs every write in its own
transaction: ``ingest`` returns only after the commit, so an acknowledged batch is durable.
Safe to share between threads (each call borrows a pooled connection).

What this module does not do: HTTP (``app``), the upsert rules themselves (``ingest``), the
fleet view's judgement of a kiosk (``fleet``), or reading export files (``importer``).
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, case, func, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from kiosk.clock import utcnow
from kiosk.errors import StoreError, SyncError
from kiosk.hub import migrate
from kiosk.hub.database import WRITE_OPTION, create_hub_engine, redact
from kiosk.hub.ingest import DeviceReport, IngestOutcome, upsert_results
from kiosk.hub.schema import devices, findings, imports, results, settings
from kiosk.sync.payload import ResultPayload
from kiosk.tokens import hash_token, new_token

logger = logging.getLogger(__name__)

DEVICE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
ADMIN_TOKEN_KEY = "admin_token_hash"


class HubStore:
    """The hub database (SQLite or PostgreSQL)."""

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        """Open the database at ``url`` and, unless ``upgrade=False``, migrate it to the newest
        schema. Raises StoreError saying what is wrong with the URL or the database."""
        self.url = url
        self.engine: Engine = create_hub_engine(url)
        try:
            with self.engine.connect():
                pass
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise StoreError(
                f"cannot open the hub database {redact(self.engine.url)}: {_brief(exc)}",
                "check hub.database_url / --database-url, that the server runs and the "
                "user may log in, or the folder's permissions for SQLite",
            ) from exc
        if upgrade:
            migrate.upgrade(self.engine)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return str(self.engine.dialect.name)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction, committed on success, rolled back on error."""
        options = {WRITE_OPTION: True}
        with self.engine.connect().execution_options(**options) as conn, conn.begin():
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in a read transaction (one consistent snapshot on both engines)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def close(self) -> None:
        """Close every pooled connection. The store is not usable afterwards."""
        self.engine.dispose()

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a read-only SQL statement with ``:name`` parameters, as dicts (for scripts
        and tests; the hub's own code uses the table objects of ``schema``)."""
        with self.read() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params or {})]

    # -- devices and tokens ----------------------------------------------------------------

    def add_device(self, name: str) -> str:
        """Register a kiosk (or give it a new token); returns the token, stored only as a hash."""
        if not re.match(DEVICE_NAME_PATTERN, name):
            raise SyncError(
                f"device name {name!r} is not allowed",
                "use letters, digits, '.', '_' or '-' (the kiosk's device_id), up to 100",
            )
        token = new_token()
        with self.write() as conn:
            changed = conn.execute(
                update(devices).where(devices.c.name == name).values(token_hash=hash_token(token))
            ).rowcount
            if not changed:
                conn.execute(
                    insert(devices).values(
                        name=name, token_hash=hash_token(token), created_at=utcnow()
                    )
                )
        logger.info("hub: token issued for device %s", name)
        return token

    def device_for_token(self, token: str) -> str | None:
        """The device whose token this is, or None. Looks the sha256 up by index: a hash
        cannot be guessed byte by byte from timing, and the match is confirmed in constant
        time."""
        digest = hash_token(token)
        with self.read() as conn:
            row = conn.execute(
                select(devices.c.name, devices.c.token_hash).where(devices.c.token_hash == digest)
            ).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        return str(row.name)

    def device_names(self) -> set[str]:
        """Names of every kiosk the hub knows."""
        with self.read() as conn:
            return set(conn.execute(select(devices.c.name)).scalars())

    def devices(self) -> list[dict[str, Any]]:
        """Each known kiosk with what it last reported and how many results the hub holds.

        ``calibrated``, ``calibration_kind`` and ``calibration_date`` are those of the kiosk's
        newest analysed result (by its own ``created_at``; a rejected film has no
        probabilities to calibrate); when that result says whether it was calibrated, its
        ``calibration_id`` (None when not calibrated) replaces the one the last push named.
        All None for a kiosk older than these fields: then ``calibration_id`` is as before.
        """
        counts = (
            select(results.c.device_id, func.count().label("n"))
            .group_by(results.c.device_id)
            .subquery()
        )
        newest = (
            select(results.c.id)
            .where(results.c.device_id == devices.c.name, results.c.status == "ok")
            .order_by(results.c.created_at.desc(), results.c.id.desc())
            .limit(1)
            .correlate(devices)
            .scalar_subquery()
        )
        latest = results.alias("latest")
        stmt = (
            select(
                devices.c.name,
                devices.c.created_at,
                devices.c.last_contact_at,
                devices.c.reported_pending,
                devices.c.reported_failed,
                devices.c.reported_sent,
                devices.c.last_kiosk_time,
                case(
                    (latest.c.calibrated.is_(None), devices.c.calibration_id),
                    else_=latest.c.calibration_id,
                ).label("calibration_id"),
                latest.c.calibrated,
                latest.c.calibration_kind,
                latest.c.calibration_date,
                devices.c.kiosk_version,
                devices.c.model_id,
                devices.c.model_version,
                func.coalesce(counts.c.n, 0).label("results"),
            )
            .select_from(
                devices.outerjoin(counts, counts.c.device_id == devices.c.name).outerjoin(
                    latest, latest.c.id == newest
                )
            )
            .order_by(devices.c.name)
        )
        with self.read() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def set_admin_token(self) -> str:
        """A new admin token for the supervisor page (replaces the old one)."""
        token = new_token()
        with self.write() as conn:
            changed = conn.execute(
                update(settings)
                .where(settings.c.key == ADMIN_TOKEN_KEY)
                .values(value=hash_token(token))
            ).rowcount
            if not changed:
                conn.execute(insert(settings).values(key=ADMIN_TOKEN_KEY, value=hash_token(token)))
        return token

    def check_admin_token(self, token: str) -> bool:
        """Whether ``token`` is the current admin token (constant-time comparison)."""
        with self.read() as conn:
            stored = conn.execute(
                select(settings.c.value).where(settings.c.key == ADMIN_TOKEN_KEY)
            ).scalar()
        return stored is not None and hmac.compare_digest(str(stored), hash_token(token))

    # -- results ---------------------------------------------------------------------------

    def ingest(
        self,
        device_id: str,
        batch: Sequence[ResultPayload],
        *,
        via: str = "push",
        report: DeviceReport | None = None,
    ) -> IngestOutcome:
        """Upsert one device's results in one transaction; returns after the commit."""
        with self.write() as conn:
            return upsert_results(conn, device_id, batch, now=utcnow(), via=via, report=report)

    def result_ids(self, device_id: str | None = None) -> set[str]:
        """Ids of the results held (of one device, or all)."""
        stmt = select(results.c.id)
        if device_id is not None:
            stmt = stmt.where(results.c.device_id == device_id)
        with self.read() as conn:
            return set(conn.execute(stmt).scalars())

    def count_results(self) -> int:
        """How many results the hub holds."""
        with self.read() as conn:
            return int(conn.execute(select(func.count()).select_from(results)).scalar_one())

    def findings_of(self, result_id: str) -> list[dict[str, Any]]:
        """The findings the hub holds for one result, by code."""
        stmt = (
            select(
                findings.c.code,
                findings.c.label,
                findings.c.raw,
                findings.c.probability,
                findings.c.threshold,
                findings.c.positive,
            )
            .where(findings.c.result_id == result_id)
            .order_by(findings.c.code)
        )
        with self.read() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def was_imported(self, data_sha256: str) -> bool:
        """Whether an export file with this sha256 was imported before."""
        with self.read() as conn:
            found = conn.execute(
                select(imports.c.data_sha256).where(imports.c.data_sha256 == data_sha256)
            ).first()
        return found is not None

    def record_import(self, row: dict[str, Any]) -> None:
        """Remember one imported export file (a second record of the same file is ignored)."""
        with self.write() as conn:
            exists = conn.execute(
                select(imports.c.data_sha256).where(imports.c.data_sha256 == row["data_sha256"])
            ).first()
            if exists is None:
                conn.execute(insert(imports).values(**row))

    # -- supervisor summary ----------------------------------------------------------------

    def summary(self, days: int = 30) -> dict[str, Any]:
        """Numbers for the supervisor page: kiosks, results per day, positives per finding."""
        day = func.substr(results.c.created_at, 1, 10).label("day")
        per_day_stmt = (
            select(day, func.count().label("n")).group_by(day).order_by(day.desc()).limit(int(days))
        )
        positives_stmt = (
            select(
                findings.c.code,
                func.max(findings.c.label).label("label"),
                func.sum(findings.c.positive).label("positive"),
                func.count().label("total"),
            )
            .group_by(findings.c.code)
            .order_by(findings.c.code)
        )
        with self.read() as conn:
            per_day = [dict(r._mapping) for r in conn.execute(per_day_stmt)]
            positives = [dict(r._mapping) for r in conn.execute(positives_stmt)]
            total = conn.execute(select(func.count()).select_from(results)).scalar_one()
        return {
            "devices": self.devices(),
            "per_day": per_day,
            "positives": positives,
            "total": int(total),
        }


def _brief(exc: SQLAlchemyError) -> str:
    """The driver's own message, first line (SQLAlchemy adds SQL and a link we do not need)."""
    origin = getattr(exc, "orig", None) or exc
    return str(origin).strip().splitlines()[0] if str(origin).strip() else type(exc).__name__
