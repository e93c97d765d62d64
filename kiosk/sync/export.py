"""Exports for sneakernet: a USB stick from the kiosk to the supervisor's hub.

``export_results`` writes one data file (``jsonl``, ``csv``, ``sqlite`` or ``fhir``) and then a
manifest ``<out>.manifest.json`` with the counts, the data file's sha256, the device id, the
time range and the schema version. Both are written to a temp file, fsynced and renamed, the
manifest last: a manifest on the stick means a complete, verifiable export. An existing file is
replaced only with ``overwrite=True`` (``kiosk export --force``), and never the kiosk's live
database or its ``-wal``/``-shm`` files, whatever the path, link or option.

Reading them back is the hub's job: ``kiosk.hub.importer`` (``kiosk hub import``) checks the
sha256 against the manifest and upserts the results like a push does. This module imports
nothing of the hub.

Every result says whether its probabilities were calibrated: ``calibrated`` and
``calibration`` (``id``, ``kind`` "site" or "factory", ``date``) in the JSON forms, and the
columns ``calibrated``, ``calibration_kind``, ``calibration_date`` at the end of the CSV (hubs
read CSV columns by name, so older hubs still import it; an older hub refuses the new fields
of a JSON Lines or SQLite export, upgrade it or export CSV).

Time range: ``since`` is inclusive, ``until`` exclusive, both on the kiosk's ``created_at``
(UTC). A bare date for ``until`` means the end of that day.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import sqlite_utils

from kiosk import __version__
from kiosk.atomic import atomic_write_bytes
from kiosk.clock import utcnow
from kiosk.config import KioskConfig
from kiosk.errors import SyncError
from kiosk.store import Store
from kiosk.sync import fhir
from kiosk.sync.payload import SCHEMA_VERSION, ResultPayload, read_results

logger = logging.getLogger(__name__)

ExportFormat = Literal["jsonl", "csv", "sqlite", "fhir"]
FORMATS: tuple[str, ...] = ("jsonl", "csv", "sqlite", "fhir")
CSV_COLUMNS = [
    "result_id",
    "revision",
    "created_at",
    "status",
    "reason",
    "input_kind",
    "model_id",
    "model_version",
    "model_sha256",
    "calibration_id",
    "finding",
    "label",
    "raw",
    "probability",
    "threshold",
    "positive",
    "quality_json",
    "timings_ms_json",
    "corners_json",
    "diagnoses_json",
    "calibrated",
    "calibration_kind",
    "calibration_date",
]


@dataclass
class ExportManifest:
    """What the manifest next to an export says."""

    schema_version: int
    format: str
    device_id: str
    created_at: str
    since: str
    until: str | None
    data_file: str
    sha256: str
    bytes: int
    counts: dict[str, int] = field(default_factory=dict)
    kiosk_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_time(value: str, *, end_of_day: bool = False) -> str:
    """A date or ISO time as the store's UTC text form (``2026-11-26T00:00:00.000Z``)."""
    text = value.strip()
    try:
        if len(text) == 10:
            moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
            if end_of_day:
                moment += timedelta(days=1)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise SyncError(
            f"{value!r} is not a date or time", "use YYYY-MM-DD or 2026-11-26T14:00:00Z"
        ) from exc
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _result_ids(store: Store, since: str, until: str | None) -> list[str]:
    sql, params = "select id from results where created_at >= ?", [since]
    if until:
        sql += " and created_at < ?"
        params.append(until)
    return [r["id"] for r in store.db.query(sql + " order by created_at, rowid", params)]


def _jsonl(results: list[ResultPayload]) -> bytes:
    return b"".join(
        json.dumps(r.model_dump(mode="json", exclude_none=True), separators=(",", ":")).encode()
        + b"\n"
        for r in results
    )


def _csv(results: list[ResultPayload]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS)
    writer.writeheader()
    for r in results:
        base = {
            "result_id": r.id,
            "revision": r.revision,
            "created_at": r.created_at,
            "status": r.status,
            "reason": r.reason or "",
            "input_kind": r.input_kind or "",
            "model_id": r.model.id or "",
            "model_version": r.model.version or "",
            "model_sha256": r.model.sha256 or "",
            "calibration_id": r.calibration_id or "",
            "quality_json": json.dumps(r.quality),
            "timings_ms_json": json.dumps(r.timings_ms),
            "corners_json": json.dumps(r.corners) if r.corners is not None else "",
            "diagnoses_json": json.dumps([d.model_dump() for d in r.diagnoses]),
            "calibrated": "" if r.calibrated is None else int(r.calibrated),
            "calibration_kind": (r.calibration.kind or "") if r.calibration else "",
            "calibration_date": (r.calibration.date or "") if r.calibration else "",
        }
        if not r.findings:
            writer.writerow(base)
        for f in r.findings:
            writer.writerow(
                base
                | {
                    "finding": f.code,
                    "label": f.label,
                    "raw": repr(f.raw),
                    "probability": repr(f.probability),
                    "threshold": repr(f.threshold),
                    "positive": int(f.positive),
                }
            )
    return buf.getvalue().encode()


def _sqlite(results: list[ResultPayload], path: Path) -> None:
    """A SQLite file with one ``results`` table holding the wire object of each result."""
    db = sqlite_utils.Database(path)
    db.table("results").create(
        {"id": str, "revision": int, "created_at": str, "status": str, "payload": str}, pk="id"
    )
    db.table("findings").create(
        {"result_id": str, "code": str, "probability": float, "positive": int},
        pk=("result_id", "code"),
        foreign_keys=[("result_id", "results", "id")],
    )
    db.table("results").insert_all(
        {
            "id": r.id,
            "revision": r.revision,
            "created_at": r.created_at,
            "status": r.status,
            "payload": json.dumps(r.model_dump(mode="json", exclude_none=True)),
        }
        for r in results
    )
    db.table("findings").insert_all(
        {"result_id": r.id, "code": f.code, "probability": f.probability, "positive": f.positive}
        for r in results
        for f in r.findings
    )
    db.conn.commit()
    db.conn.close()


def _atomic_sqlite(results: list[ResultPayload], out: Path) -> bytes:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        tmp_path.unlink()
        _sqlite(results, tmp_path)
        data = tmp_path.read_bytes()
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, out)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return data


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".manifest.json")


def _is_same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def check_target(out: Path, database: Path, *, overwrite: bool) -> None:
    """Refuse to write an export over the live database, or over any file without
    ``overwrite``; raises SyncError saying what to do."""
    live = [database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]
    for target in (out, manifest_path(out)):
        if any(_is_same_file(target, db_file) for db_file in live):
            raise SyncError(
                f"{target} is the kiosk's live database; an export must never replace it",
                "write the export to another file, e.g. on the USB stick",
            )
    if not overwrite:
        for target in (out, manifest_path(out)):
            if target.exists() or target.is_symlink():
                raise SyncError(
                    f"{target} already exists; nothing was written",
                    "choose another --out file, or add --force to replace it",
                )


def export_results(
    store: Store,
    config: KioskConfig,
    *,
    since: str,
    until: str | None,
    fmt: ExportFormat,
    out: Path,
    overwrite: bool = False,
) -> ExportManifest:
    """Write the results created in [since, until) to ``out`` plus its manifest.

    Raises SyncError when ``out`` or its manifest exists (unless ``overwrite``) or is the live
    database (always).
    """
    if fmt not in FORMATS:
        raise SyncError(f"unknown export format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    since_t = parse_time(since)
    until_t = parse_time(until, end_of_day=True) if until else None
    out = Path(out)
    check_target(out, store.path, overwrite=overwrite)
    with store.transaction():
        results = read_results(store, _result_ids(store, since_t, until_t))
    if fmt == "sqlite":
        data = _atomic_sqlite(results, out)
    else:
        if fmt == "jsonl":
            data = _jsonl(results)
        elif fmt == "csv":
            data = _csv(results)
        else:
            data = json.dumps(fhir.bundle(config.device_id, results), indent=1).encode()
        atomic_write_bytes(out, data)
    manifest = ExportManifest(
        schema_version=SCHEMA_VERSION,
        format=fmt,
        device_id=config.device_id,
        created_at=utcnow(),
        since=since_t,
        until=until_t,
        data_file=out.name,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        counts={
            "results": len(results),
            "findings": sum(len(r.findings) for r in results),
            "diagnoses": sum(len(r.diagnoses) for r in results),
        },
    )
    atomic_write_bytes(manifest_path(out), json.dumps(manifest.to_dict(), indent=2).encode())
    store.audit("export", "results.exported", None, {"format": fmt, "results": len(results)})
    logger.info("exported %d results as %s", len(results), fmt)
    return manifest
