"""Upserting one batch of results into the hub, idempotently, in the caller's transaction.

Results are keyed by their UUID. ``INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE`` (the same
statement on SQLite and PostgreSQL) writes a result only when it is new, or newer than what the
hub holds: a higher ``revision``, or the same revision with different content. A replayed batch
changes nothing; an older version arriving late is acknowledged (the hub holds something newer)
but not written; a result id that belongs to another device is refused. Findings and diagnoses
of a written result are replaced as a whole. Rows are written in id order, so two transactions
touching the same results lock them in the same order and cannot deadlock.

A result's ``calibrated`` and ``calibration`` (kind, date) are stored as sent; a kiosk older
than these fields leaves them NULL. They are part of the content digest, so sending them again
unchanged changes nothing either.

What this module does not do: open or commit transactions (``store``), authenticate anyone
(``auth``), or parse JSON (``payload`` and ``app``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from kiosk.hub.schema import devices, diagnoses, findings, ingests, results
from kiosk.sync.payload import PayloadError, ResultPayload

logger = logging.getLogger(__name__)

# Rows per multi-row INSERT: well under SQLite's 32,766 bound parameters at 22 columns.
ROWS_PER_STATEMENT = 500


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


@dataclass(frozen=True)
class DeviceReport:
    """What a push says about its kiosk (None: not said, keep what the hub had)."""

    outbox: dict[str, int] | None = None
    kiosk_sent_at: str | None = None
    kiosk_version: str | None = None


def check_unique_codes(results_: Sequence[ResultPayload], where: str = "results") -> None:
    """Refuse a result that names one finding or diagnosis code twice (PayloadError naming the
    field), before the database would refuse it with an integrity error."""
    for n, r in enumerate(results_):
        for kind, codes in (
            ("findings", [f.code for f in r.findings]),
            ("diagnoses", [d.code for d in r.diagnoses]),
        ):
            seen: set[str] = set()
            for m, code in enumerate(codes):
                if code in seen:
                    raise PayloadError(
                        f"{where}[{n}].{kind}[{m}].code",
                        f"{code!r} appears twice in one result",
                        "send each finding and diagnosis code once per result",
                    )
                seen.add(code)


def dialect_insert(conn: Connection) -> Callable[..., Any]:
    """``insert`` with ``on_conflict_do_*`` for this connection's engine (same API on both)."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _row(device_id: str, r: ResultPayload, now: str, via: str, thumb: bytes | None) -> dict:
    return {
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
        "calibration_id": r.calibration_id or (r.calibration.id if r.calibration else None),
        "quality": json.dumps(r.quality),
        "timings_ms": json.dumps(r.timings_ms),
        "corners": json.dumps(r.corners) if r.corners is not None else None,
        "content_sha256": r.content_sha256(),
        "thumbnail_jpeg": thumb,
        "calibrated": r.calibrated,
        "calibration_kind": r.calibration.kind if r.calibration else None,
        "calibration_date": r.calibration.date if r.calibration else None,
    }


def _newer(a: ResultPayload, b: ResultPayload) -> bool:
    """Whether ``a`` replaces ``b`` (the same rule the upsert's WHERE applies)."""
    return a.revision > b.revision or (
        a.revision == b.revision and a.content_sha256() != b.content_sha256()
    )


def upsert_results(
    conn: Connection,
    device_id: str,
    batch: Sequence[ResultPayload],
    *,
    now: str,
    via: str,
    report: DeviceReport | None = None,
) -> IngestOutcome:
    """Write one device's batch in ``conn``'s open transaction; see the module docstring."""
    out = IngestOutcome()
    insert = dialect_insert(conn)
    conn.execute(insert(devices).values(name=device_id, created_at=now).on_conflict_do_nothing())
    # One version per id (a batch naming an id twice keeps the newer, as if sent in order).
    chosen: dict[str, ResultPayload] = {}
    thumbs: dict[str, bytes] = {}
    bad: dict[str, str] = {}
    for r in batch:
        if r.thumbnail is not None:
            try:
                thumbs[r.id] = base64.b64decode(r.thumbnail.base64, validate=True)
            except (binascii.Error, ValueError):
                bad[r.id] = "thumbnail.base64 is not valid base64"
                continue
        if r.id not in chosen or _newer(r, chosen[r.id]):
            chosen[r.id] = r
    ids = sorted(i for i in chosen if i not in bad)
    before = (
        {
            row.id: row.device_id
            for row in conn.execute(
                select(results.c.id, results.c.device_id).where(results.c.id.in_(ids))
            )
        }
        if ids
        else {}
    )
    rows = [_row(device_id, chosen[i], now, via, thumbs.get(i)) for i in ids]
    written: set[str] = set()
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        stmt = insert(results).values(rows[start : start + ROWS_PER_STATEMENT])
        ex = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=[results.c.id],
            set_={
                **{
                    c.name: ex[c.name]
                    for c in results.columns
                    if c.name not in ("id", "received_at", "thumbnail_jpeg")
                },
                "thumbnail_jpeg": func.coalesce(ex.thumbnail_jpeg, results.c.thumbnail_jpeg),
            },
            where=and_(
                results.c.device_id == ex.device_id,
                or_(
                    ex.revision > results.c.revision,
                    and_(
                        ex.revision == results.c.revision,
                        ex.content_sha256 != results.c.content_sha256,
                    ),
                ),
            ),
        ).returning(results.c.id)
        written.update(conn.execute(stmt).scalars())
    if written:
        _replace_children(conn, sorted(written), chosen)
    unwritten = [i for i in ids if i not in written]
    owners = (
        {
            row.id: row.device_id
            for row in conn.execute(
                select(results.c.id, results.c.device_id).where(results.c.id.in_(unwritten))
            )
        }
        if unwritten
        else {}
    )
    stolen = {i for i in unwritten if owners.get(i) != device_id}
    fill = [{"rid": i, "thumb": thumbs[i]} for i in unwritten if i in thumbs and i not in stolen]
    if fill:
        conn.execute(
            update(results)
            .where(results.c.id == bindparam("rid"), results.c.thumbnail_jpeg.is_(None))
            .values(thumbnail_jpeg=bindparam("thumb")),
            fill,
        )
    out.inserted = sum(1 for i in written if i not in before)
    out.updated = len(written) - out.inserted
    out.unchanged = len(unwritten) - len(stolen)
    for i in sorted(stolen):
        logger.warning("hub: device %s sent result %s owned by another device", device_id, i)
    for r in batch:
        if r.id in bad:
            out.rejected.append({"id": r.id, "error": bad[r.id]})
        elif r.id in stolen:
            out.rejected.append({"id": r.id, "error": "this result id belongs to another device"})
        else:
            out.accepted.append(r.id)
    _record(conn, device_id, batch, chosen, out, now=now, via=via, report=report)
    return out


def _replace_children(conn: Connection, ids: list[str], chosen: dict[str, ResultPayload]) -> None:
    conn.execute(delete(findings).where(findings.c.result_id.in_(ids)))
    conn.execute(delete(diagnoses).where(diagnoses.c.result_id.in_(ids)))
    finding_rows = [
        {
            "result_id": i,
            "code": f.code,
            "label": f.label,
            "raw": f.raw,
            "probability": f.probability,
            "threshold": f.threshold,
            "positive": int(f.positive),
        }
        for i in ids
        for f in chosen[i].findings
    ]
    diagnosis_rows = [
        {
            "result_id": i,
            "code": d.code,
            "label": d.label,
            "confirmed_by": d.confirmed_by,
            "confirmed_at": d.confirmed_at,
        }
        for i in ids
        for d in chosen[i].diagnoses
    ]
    if finding_rows:
        conn.execute(findings.insert(), finding_rows)
    if diagnosis_rows:
        conn.execute(diagnoses.insert(), diagnosis_rows)


def _record(
    conn: Connection,
    device_id: str,
    batch: Sequence[ResultPayload],
    chosen: dict[str, ResultPayload],
    out: IngestOutcome,
    *,
    now: str,
    via: str,
    report: DeviceReport | None,
) -> None:
    """Update what the hub knows of the device (pushes only) and log the ingest."""
    if via == "push":
        values: dict[str, Any] = {"last_contact_at": now}
        report = report or DeviceReport()
        if report.outbox is not None:
            values.update(
                reported_pending=report.outbox["pending"],
                reported_failed=report.outbox["failed"],
                reported_sent=report.outbox["sent"],
            )
        if report.kiosk_sent_at:
            values["last_kiosk_time"] = report.kiosk_sent_at
        if report.kiosk_version:
            values["kiosk_version"] = report.kiosk_version
        # The last result of a push is the newest the kiosk sent: its model and calibration
        # are what the kiosk runs now.
        latest_cal = next((r.calibration_id for r in reversed(batch) if r.calibration_id), None)
        if latest_cal:
            values["calibration_id"] = latest_cal
        latest_model = next((r.model for r in reversed(batch) if r.model.id), None)
        if latest_model is not None:
            values.update(model_id=latest_model.id, model_version=latest_model.version)
        conn.execute(update(devices).where(devices.c.name == device_id).values(**values))
    conn.execute(
        ingests.insert().values(
            device_id=device_id,
            received_at=now,
            via=via,
            results=len(batch),
            inserted=out.inserted,
            updated=out.updated,
            unchanged=out.unchanged,
            rejected=len(out.rejected),
            kiosk_sent_at=report.kiosk_sent_at if report else None,
        )
    )
