"""``kiosk hub import``: a kiosk's export from a USB stick into the hub, verified, no duplicates.

The export (``kiosk export`` on the kiosk: a data file plus ``<data>.manifest.json``) is checked
against its manifest (sha256, result count, schema version), then upserted like a push: same
ids, same revisions, so importing twice, or an export of results already pushed, adds nothing.
A file imported before is recognised by its sha256 and reported as such.

Which kiosk: the manifest is not signed, so anyone with a text editor can write any
``device_id`` into it. The operator names the kiosk (``--device NAME``, the person who took the
stick from that kiosk vouches for it); the import refuses a manifest naming another device, and
a result id the hub already holds for another device is refused as in a push. The
``data_file`` a manifest names must be a plain file name next to the manifest.

What this module does not do: write exports (``kiosk.sync.export``, on the kiosk), or talk HTTP.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiosk.clock import utcnow
from kiosk.errors import SyncError
from kiosk.hub.ingest import check_unique_codes
from kiosk.hub.store import DEVICE_NAME_PATTERN, HubStore
from kiosk.sync import fhir
from kiosk.sync.export import ExportManifest, manifest_path
from kiosk.sync.payload import (
    SUPPORTED_SCHEMA_VERSIONS,
    PayloadError,
    ResultPayload,
    parse_result,
)

logger = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"


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


def read_manifest(path: Path) -> ExportManifest:
    """The manifest of an export (``path`` is the data file or the manifest itself)."""
    path = Path(path)
    mpath = path if path.name.endswith(MANIFEST_SUFFIX) else manifest_path(path)
    try:
        raw = json.loads(mpath.read_text())
        manifest = ExportManifest(**raw)
    except FileNotFoundError as exc:
        raise SyncError(
            f"no manifest {mpath.name} next to the export",
            "copy the .manifest.json file too; it proves the export is complete",
        ) from exc
    except (ValueError, TypeError, RecursionError) as exc:
        raise SyncError(f"the manifest {mpath} is not valid ({exc})") from exc
    if manifest.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        raise SyncError(
            f"{mpath.name} has schema version {manifest.schema_version}, "
            f"this hub reads {sorted(SUPPORTED_SCHEMA_VERSIONS)}",
            "upgrade the hub",
        )
    return manifest


def _data_path(path: Path, manifest: ExportManifest) -> Path:
    if not path.name.endswith(MANIFEST_SUFFIX):
        return path
    name = manifest.data_file
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
    ):
        raise SyncError(
            f"the manifest {path.name} names the data file {name!r}, which is not a file name "
            "in the manifest's folder",
            "the manifest is damaged or was not written by a kiosk; export again on the kiosk",
        )
    return path.with_name(name)


def read_export(path: Path) -> tuple[ExportManifest, list[ResultPayload]]:
    """Verify an export against its manifest and read its results."""
    path = Path(path)
    manifest = read_manifest(path)
    data_path = _data_path(path, manifest)
    try:
        data = data_path.read_bytes()
    except FileNotFoundError as exc:
        raise SyncError(f"the export data file {data_path} is missing") from exc
    except OSError as exc:
        raise SyncError(f"the export data file {data_path} cannot be read: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.sha256:
        raise SyncError(
            f"{data_path.name} does not match its manifest (sha256 {digest[:12]}…, "
            f"expected {str(manifest.sha256)[:12]}…): the copy is incomplete or altered",
            "export again on the kiosk and copy both files",
        )
    try:
        results = _parse_data(manifest.format, data, data_path)
    except (ValueError, KeyError, RecursionError, sqlite3.Error) as exc:
        raise SyncError(f"{data_path.name} cannot be read as {manifest.format}: {exc}") from exc
    if len(results) != manifest.counts.get("results"):
        raise SyncError(
            f"{data_path.name} holds {len(results)} results, its manifest says "
            f"{manifest.counts.get('results')}"
        )
    check_unique_codes(results, where=data_path.name)
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
                    **_csv_calibration(row),
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


def _csv_calibration(row: dict[str, str]) -> dict[str, Any]:
    """``calibrated`` and ``calibration`` of one CSV row, as the kiosk had them in the wire
    object (so a pushed result and its CSV export have the same content digest). An export from
    a kiosk older than these columns has none of them: both stay absent."""
    out: dict[str, Any] = {}
    flag = row.get("calibrated") or ""
    if flag not in ("", "0", "1"):
        raise ValueError(f"calibrated is {flag!r}, not 1, 0 or empty")
    if flag:
        out["calibrated"] = flag == "1"
    kind, date = row.get("calibration_kind") or None, row.get("calibration_date") or None
    if row["calibration_id"] and (kind or date):
        out["calibration"] = {"id": row["calibration_id"], "kind": kind, "date": date}
    return out


def import_export(hub: HubStore, path: Path, device: str) -> ImportReport:
    """Import an export of kiosk ``device`` into the hub: verified, idempotent, never a
    duplicate. Raises SyncError when the manifest names another device."""
    if not re.match(DEVICE_NAME_PATTERN, device):
        raise SyncError(
            f"device name {device!r} is not allowed",
            "name the kiosk the stick came from, as in `kiosk hub devices`",
        )
    manifest, results = read_export(path)
    if manifest.device_id != device:
        raise SyncError(
            f"the export's manifest says it comes from {manifest.device_id!r}, "
            f"but you named {device!r}",
            "check which kiosk the stick came from; the manifest is not signed, so the hub "
            "only imports when both agree",
        )
    seen = hub.was_imported(manifest.sha256)
    outcome = hub.ingest(device, results, via="import")
    if not seen:
        hub.record_import(
            {
                "data_sha256": manifest.sha256,
                "imported_at": utcnow(),
                "device_id": device,
                "format": manifest.format,
                "results": len(results),
                "manifest": json.dumps(manifest.to_dict()),
            }
        )
    logger.info(
        "hub: imported %s export of %s: %d new, %d updated, %d unchanged",
        manifest.format,
        device,
        outcome.inserted,
        outcome.updated,
        outcome.unchanged,
    )
    return ImportReport(
        device_id=device,
        results=len(results),
        inserted=outcome.inserted,
        updated=outcome.updated,
        unchanged=outcome.unchanged,
        rejected=len(outcome.rejected),
        already_imported=seen,
    )
