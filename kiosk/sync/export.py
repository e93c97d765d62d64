"""Exports for sneakernet (a USB stick to the supervisor), and importing them on the hub.

``export_results`` writes one data file (``jsonl``, ``csv``, ``sqlite`` or ``fhir``) and then a
manifest ``<out>.manifest.json`` with the counts, the data file's sha256, the device id, the
time range and the schema version. Both are written to a temp file, fsynced and renamed, the
manifest last: a manifest on the stick means a complete, verifiable export.

``import_export`` (``kiosk hub import``) checks the sha256 against the manifest and upserts
the results like a push does (same ids, same revisions), so importing an export twice, or an
export of results already pushed, adds nothing. A file imported before is recognised by its
sha256 and reported as such (its results are still checked, which changes nothing).

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
import sqlite3
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import sqlite_utils

from kiosk import __version__
from kiosk.clock import utcnow
from kiosk.config import KioskConfig
from kiosk.errors import SyncError
from kiosk.imageio import atomic_write_bytes
from kiosk.store import Store
from kiosk.sync import fhir
from kiosk.sync.hub import HubStore
from kiosk.sync.payload import (
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    PayloadError,
    ResultPayload,
    parse_result,
    read_results,
)

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


@dataclass
class ImportReport:
    """What ``kiosk hub import`` did."""

    device_id: str
    results: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int
    already_imported: bool = False


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
    except ValueError as exc:
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


def export_results(
    store: Store,
    config: KioskConfig,
    *,
    since: str,
    until: str | None,
    fmt: ExportFormat,
    out: Path,
) -> ExportManifest:
    """Write the results created in [since, until) to ``out`` plus its manifest."""
    if fmt not in FORMATS:
        raise SyncError(f"unknown export format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    since_t = parse_time(since)
    until_t = parse_time(until, end_of_day=True) if until else None
    out = Path(out)
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


# -- hub side -------------------------------------------------------------------------------


def read_manifest(path: Path) -> ExportManifest:
    """The manifest of an export (``path`` is the data file or the manifest itself)."""
    path = Path(path)
    mpath = path if path.name.endswith(".manifest.json") else manifest_path(path)
    try:
        raw = json.loads(mpath.read_text())
        manifest = ExportManifest(**raw)
    except FileNotFoundError as exc:
        raise SyncError(
            f"no manifest {mpath.name} next to the export",
            "copy the .manifest.json file too; it proves the export is complete",
        ) from exc
    except (ValueError, TypeError) as exc:
        raise SyncError(f"the manifest {mpath} is not valid ({exc})") from exc
    if manifest.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        raise SyncError(
            f"{mpath.name} has schema version {manifest.schema_version}, "
            f"this hub reads {sorted(SUPPORTED_SCHEMA_VERSIONS)}",
            "upgrade the hub",
        )
    return manifest


def read_export(path: Path) -> tuple[ExportManifest, list[ResultPayload]]:
    """Verify an export against its manifest and read its results."""
    path = Path(path)
    manifest = read_manifest(path)
    is_manifest = path.name.endswith(".manifest.json")
    data_path = path.with_name(manifest.data_file) if is_manifest else path
    try:
        data = data_path.read_bytes()
    except FileNotFoundError as exc:
        raise SyncError(f"the export data file {data_path} is missing") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.sha256:
        raise SyncError(
            f"{data_path.name} does not match its manifest (sha256 {digest[:12]}…, "
            f"expected {manifest.sha256[:12]}…): the copy is incomplete or altered",
            "export again on the kiosk and copy both files",
        )
    results = _parse_data(manifest.format, data, data_path)
    if len(results) != manifest.counts.get("results"):
        raise SyncError(
            f"{data_path.name} holds {len(results)} results, its manifest says "
            f"{manifest.counts.get('results')}"
        )
    return manifest, results


def _parse_data(fmt: str, data: bytes, path: Path) -> list[ResultPayload]:
    if fmt == "jsonl":
        return [
            parse_result(json.loads(line), f"line {n}")
            for n, line in enumerate(data.decode().splitlines(), start=1)
            if line.strip()
        ]
    if fmt == "csv":
        return _parse_csv(data.decode())
    if fmt == "sqlite":
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("select payload from results order by created_at, id").fetchall()
        finally:
            conn.close()
        return [parse_result(json.loads(p), f"row {n}") for n, (p,) in enumerate(rows, 1)]
    if fmt == "fhir":
        return fhir.results_from_bundle(json.loads(data))[1]
    raise SyncError(f"unknown export format {fmt!r} in the manifest")


def _parse_csv(text: str) -> list[ResultPayload]:
    grouped: dict[str, dict[str, Any]] = {}
    for n, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        rid = row["result_id"]
        if rid not in grouped:
            try:
                grouped[rid] = {
                    "id": rid,
                    "revision": int(row["revision"]),
                    "created_at": row["created_at"],
                    "status": row["status"],
                    "reason": row["reason"] or None,
                    "input_kind": row["input_kind"] or None,
                    "model": {
                        "id": row["model_id"] or None,
                        "version": row["model_version"] or None,
                        "sha256": row["model_sha256"] or None,
                    },
                    "calibration_id": row["calibration_id"] or None,
                    "quality": json.loads(row["quality_json"] or "{}"),
                    "timings_ms": json.loads(row["timings_ms_json"] or "{}"),
                    "corners": json.loads(row["corners_json"]) if row["corners_json"] else None,
                    "diagnoses": json.loads(row["diagnoses_json"] or "[]"),
                    "findings": [],
                }
            except (ValueError, KeyError) as exc:
                raise PayloadError(f"csv line {n}", f"cannot be read ({exc})") from exc
        if row["finding"]:
            grouped[rid]["findings"].append(
                {
                    "code": row["finding"],
                    "label": row["label"],
                    "raw": float(row["raw"]),
                    "probability": float(row["probability"]),
                    "threshold": float(row["threshold"]),
                    "positive": row["positive"] == "1",
                }
            )
    return [parse_result(g, f"csv result {rid}") for rid, g in grouped.items()]


def import_export(hub: HubStore, path: Path) -> ImportReport:
    """Import an export into the hub: verified, idempotent, never a duplicate."""
    manifest, results = read_export(path)
    seen = list(hub.db.query("select 1 from imports where data_sha256 = ?", [manifest.sha256]))
    outcome = hub.ingest(manifest.device_id, results, via="import")
    if not seen:
        with hub.transaction() as db:
            db.table("imports").insert(
                {
                    "data_sha256": manifest.sha256,
                    "imported_at": utcnow(),
                    "device_id": manifest.device_id,
                    "format": manifest.format,
                    "results": len(results),
                    "manifest": json.dumps(manifest.to_dict()),
                }
            )
    logger.info(
        "hub: imported %s export of %s: %d new, %d updated, %d unchanged",
        manifest.format,
        manifest.device_id,
        outcome.inserted,
        outcome.updated,
        outcome.unchanged,
    )
    return ImportReport(
        device_id=manifest.device_id,
        results=len(results),
        inserted=outcome.inserted,
        updated=outcome.updated,
        unchanged=outcome.unchanged,
        rejected=len(outcome.rejected),
        already_imported=bool(seen),
    )
