"""The factory calibration shipped with a model: finding it, checking it, reading it.

A model's manifest may name a calibration record (``"calibration": {"file", "sha256"}``) fitted
on rendered photographs of films (``python -m kiosk.lab.factory_calibration``). The pipeline
applies it while the kiosk has no active site calibration for that model, and labels results
"factory (photographed films, rendered)". :func:`load_factory` returns it only when it is
intact (sha256), of kind "factory" and fitted for exactly this model file; otherwise it logs
why and returns None, so a broken factory file means "not calibrated", never a crash.

What this module does not do: fit the record (the lab command does) or choose between factory
and site calibrations (the pipeline does: site first).
"""

from __future__ import annotations

import hashlib
import json
import logging

from kiosk.calibration.records import CalibrationRecord
from kiosk.errors import CalibrationError
from kiosk.model.manifest import Manifest

logger = logging.getLogger(__name__)


def load_factory(manifest: Manifest) -> CalibrationRecord | None:
    """The model's factory calibration, or None (none named, or unusable: logged)."""
    name = manifest.calibration.get("file")
    if not name:
        return None
    path = manifest.path.parent / str(name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        logger.error("factory calibration %s cannot be read: %s", path, exc)
        return None
    expected = manifest.calibration.get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        logger.error("factory calibration %s does not match its sha256 in the manifest", path)
        return None
    try:
        record = CalibrationRecord.from_dict(json.loads(data))
    except (ValueError, CalibrationError) as exc:
        logger.error("factory calibration %s is not a valid record: %s", path, exc)
        return None
    if record.kind != "factory":
        logger.error("%s is a %s calibration, not a factory one: not used", path, record.kind)
        return None
    if record.model_sha256 != manifest.sha256:
        logger.error(
            "factory calibration %s was fitted for model sha256 %s…, not %s… (%s): re-run "
            "`python -m kiosk.lab.factory_calibration --model %s`",
            path,
            record.model_sha256[:12],
            manifest.sha256[:12],
            manifest.id,
            manifest.path,
        )
        return None
    return record
