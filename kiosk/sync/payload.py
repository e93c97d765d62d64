"""The wire format between kiosk and hub: one result as the hub receives it, and a push batch.

The same result object travels in a push (``POST /api/v1/ingest``), in a JSON Lines export and
in the rows of the CSV and SQLite exports, so the hub has one way to read all of them.

What is never in it: the film's ``source`` path and the ``patient_ref`` of a result. The hub
rejects a result that carries either (``extra="forbid"``), so a future kiosk bug cannot leak
them into the supervisor's database.

``revision`` orders versions of one result without trusting any clock: it counts the audit
lines that changed the result on its kiosk (stored, each confirmed diagnosis). The audit log is
append-only, so the count only grows. The hub keeps the highest revision it has seen.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path
from typing import Any

import cv2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kiosk.errors import KioskError
from kiosk.imaging.decode import read_image
from kiosk.imaging.encode import encode_jpeg
from kiosk.store import Store

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
LATER_FIELDS = frozenset({"calibrated", "calibration"})
"""Optional result fields added after schema version 1 shipped. A hub older than them refuses
them by name ("is not a known field"); the push client then sends the batch without them."""
THUMBNAIL_PX = 256
THUMBNAIL_JPEG_QUALITY = 80
# Audit actions that change what the hub should hold for a result.
REVISION_ACTIONS = ("result.stored", "diagnosis.confirmed")


class PayloadError(KioskError):
    """A batch or a result does not follow the wire format; ``field`` names where."""

    def __init__(self, field: str, message: str, fix: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message, fix)
        self.field = field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FindingPayload(_Wire):
    code: str = Field(min_length=1, max_length=64)
    label: str = Field(max_length=200)
    raw: float = Field(ge=0.0, le=1.0)
    probability: float = Field(ge=0.0, le=1.0)
    threshold: float = Field(ge=0.0, le=1.0)
    positive: bool


class DiagnosisPayload(_Wire):
    code: str = Field(min_length=1, max_length=64)
    label: int = Field(ge=0, le=1)
    confirmed_by: str | None = Field(default=None, max_length=200)
    confirmed_at: str | None = Field(default=None, max_length=40)


class ModelPayload(_Wire):
    id: str | None = Field(default=None, max_length=200)
    version: str | None = Field(default=None, max_length=100)
    sha256: str | None = Field(default=None, max_length=64)


class CalibrationPayload(_Wire):
    """The calibration behind a result's probabilities (absent: not calibrated)."""

    id: str = Field(min_length=1, max_length=200)
    kind: str | None = Field(default=None, pattern=r"^(site|factory)$")
    date: str | None = Field(default=None, max_length=40)


class ThumbnailPayload(_Wire):
    mime: str = Field(pattern=r"^image/jpeg$")
    width: int = Field(ge=1, le=4096)
    height: int = Field(ge=1, le=4096)
    base64: str = Field(min_length=4)


class ResultPayload(_Wire):
    """One result as the hub stores it (no source path, no patient reference)."""

    id: str = Field(pattern=r"^[0-9a-fA-F-]{32,36}$")
    revision: int = Field(ge=1)
    created_at: str = Field(min_length=10, max_length=40)
    status: str = Field(pattern=r"^(ok|rejected|error)$")
    reason: str | None = Field(default=None, max_length=2000)
    input_kind: str | None = Field(default=None, max_length=32)
    corners: list[list[float]] | None = None
    quality: dict[str, Any] = Field(default_factory=dict)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    model: ModelPayload = Field(default_factory=ModelPayload)
    calibration_id: str | None = Field(default=None, max_length=200)
    calibrated: bool | None = None  # None: sent by a kiosk older than this field
    calibration: CalibrationPayload | None = None
    findings: list[FindingPayload] = Field(default_factory=list, max_length=64)
    diagnoses: list[DiagnosisPayload] = Field(default_factory=list, max_length=64)
    thumbnail: ThumbnailPayload | None = None

    def content_sha256(self) -> str:
        """Digest of everything but the thumbnail: equal digests mean the same content."""
        data = self.model_dump_json(exclude={"thumbnail"}).encode()
        return hashlib.sha256(data).hexdigest()


class OutboxCounts(_Wire):
    pending: int = Field(ge=0)
    failed: int = Field(ge=0)
    sent: int = Field(ge=0)


class IngestBatch(_Wire):
    """The body of ``POST /api/v1/ingest``."""

    schema_version: int
    device_id: str = Field(min_length=1, max_length=200)
    sent_at: str | None = Field(default=None, max_length=40)
    outbox: OutboxCounts | None = None
    results: list[ResultPayload] = Field(max_length=5000)


def describe_validation_error(exc: ValidationError, prefix: str = "") -> PayloadError:
    """The first problem of a pydantic error as a PayloadError naming the field path."""
    err = exc.errors()[0]
    parts: list[str] = []
    for p in err["loc"]:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]" if parts else f"[{p}]"]
        else:
            parts.append(str(p))
    field = ".".join(parts)
    if prefix:
        field = f"{prefix}.{field}" if field else prefix
    if err["type"] == "extra_forbidden":
        return PayloadError(field, "is not a known field (the hub never accepts it)")
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return PayloadError(field, f"{err['msg']}{suffix}")


def parse_batch(body: Any) -> IngestBatch:
    """Validate a decoded JSON body; raise PayloadError naming the first bad field."""
    if not isinstance(body, dict):
        raise PayloadError("", "the body must be a JSON object")
    version = body.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise PayloadError(
            "schema_version",
            f"{version!r} is not supported (this hub reads {sorted(SUPPORTED_SCHEMA_VERSIONS)})",
            "upgrade the hub or the kiosk so both speak the same schema version",
        )
    try:
        return IngestBatch.model_validate(body)
    except ValidationError as exc:
        raise describe_validation_error(exc) from exc


def parse_result(data: Any, where: str = "result") -> ResultPayload:
    """Validate one result object (from an export line or row)."""
    try:
        return ResultPayload.model_validate(data)
    except ValidationError as exc:
        raise describe_validation_error(exc, where) from exc


# -- kiosk side: read results from the kiosk database ---------------------------------------


def revisions(store: Store, result_ids: list[str]) -> dict[str, int]:
    """Revision of each result: how many audit lines stored or changed it."""
    out = dict.fromkeys(result_ids, 1)
    if not result_ids:
        return out
    marks = ",".join("?" * len(result_ids))
    actions = ",".join("?" * len(REVISION_ACTIONS))
    for row in store.db.query(
        f"select subject, count(*) as n from audit where subject in ({marks}) "
        f"and action in ({actions}) group by subject",
        [*result_ids, *REVISION_ACTIONS],
    ):
        out[row["subject"]] = max(1, int(row["n"]))
    return out


def result_payload(row: dict[str, Any], revision: int) -> ResultPayload:
    """Build the wire object from ``Store.get_result`` output; drops source and patient_ref."""
    diagnoses = [
        DiagnosisPayload(
            code=d["code"],
            label=int(d["label"]),
            confirmed_by=d.get("confirmed_by"),
            confirmed_at=d.get("confirmed_at"),
        )
        for _, d in sorted(row.get("diagnoses", {}).items())
    ]
    return ResultPayload(
        id=row["id"],
        revision=revision,
        created_at=row["created_at"],
        status=row["status"],
        reason=row.get("reason"),
        input_kind=row.get("input_kind"),
        corners=row.get("corners") or None,
        quality=row.get("quality") or {},
        timings_ms=row.get("timings_ms") or {},
        model=ModelPayload(
            id=row.get("model_id"), version=row.get("model_version"), sha256=row.get("model_sha256")
        ),
        calibration_id=row.get("calibration_id"),
        calibrated=bool(row.get("calibration_id")),
        calibration=CalibrationPayload(
            id=row["calibration_id"],
            kind=row.get("calibration_kind") or "site",
            date=row.get("calibration_date"),
        )
        if row.get("calibration_id")
        else None,
        findings=[
            FindingPayload(
                code=f["code"],
                label=f["label"] or f["code"],
                raw=f["raw"],
                probability=f["probability"],
                threshold=f["threshold"],
                positive=bool(f["positive"]),
            )
            for f in row.get("findings", [])
        ],
        diagnoses=diagnoses,
    )


def read_results(store: Store, result_ids: list[str]) -> list[ResultPayload]:
    """Wire objects for these ids (missing ids are skipped), in the order given."""
    revs = revisions(store, result_ids)
    out = []
    for rid in result_ids:
        row = store.get_result(rid)
        if row is None:
            logger.warning("result %s is in the outbox but not in the database", rid)
            continue
        out.append(result_payload(row, revs[rid]))
    return out


def image_paths(store: Store, result_ids: list[str]) -> dict[str, str]:
    """``image_path`` of each result that has one (relative to the data directory)."""
    if not result_ids:
        return {}
    marks = ",".join("?" * len(result_ids))
    return {
        r["id"]: r["image_path"]
        for r in store.db.query(
            f"select id, image_path from results where id in ({marks}) and image_path is not null",
            result_ids,
        )
    }


def make_thumbnail(path: Path, size_px: int = THUMBNAIL_PX) -> ThumbnailPayload | None:
    """A small JPEG of the film image, or None when the file is gone or unreadable."""
    try:
        pixels = read_image(path).pixels
    except KioskError as exc:
        logger.debug("no thumbnail: %s", exc)
        return None
    height, width = pixels.shape[:2]
    scale = min(1.0, size_px / max(height, width))
    if scale < 1.0:
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = cv2.resize(pixels, new_size, interpolation=cv2.INTER_AREA)
    data = encode_jpeg(pixels, THUMBNAIL_JPEG_QUALITY)
    return ThumbnailPayload(
        mime="image/jpeg",
        width=int(pixels.shape[1]),
        height=int(pixels.shape[0]),
        base64=base64.b64encode(data).decode("ascii"),
    )
