"""Turning stored results into what a page shows: words, percentages, bars and the CAM overlay.

Pure functions over ``Store.get_result`` dicts and numpy arrays; no Flask. The overlay is
rendered server-side as a semi-transparent PNG the size of the film preview, so the browser
only stacks two images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np

from kiosk.errors import ImageError

logger = logging.getLogger(__name__)

OVERLAY_MAX_SIDE_PX = 1024
OVERLAY_MAX_ALPHA = 0.6
OVERLAY_FLOOR = 0.35  # CAM values below this fraction of the maximum are not drawn

# Quality flags in words a nurse understands; unknown flags fall back to their name.
FLAG_TEXT = {
    "uncalibrated": "The calibration could not be applied: probabilities are the model's raw "
    "scores.",
    "image_not_stored_by_config": "The film image was not kept (storage is switched off).",
    "image_not_stored_low_disk": "The film image was not kept: the disk is nearly full.",
    "not_xray": "This does not look like a chest X-ray the model knows.",
    "no_film": "No film was found in the photo.",
    "blurred": "The photo is blurred.",
    "glare": "There is glare on the film.",
    "overexposed": "The photo is over-exposed.",
    "underexposed": "The photo is too dark.",
    "too_small": "The image is too small.",
    "film_too_small": "The film is too small in the photo.",
    "blank": "The film looks blank.",
}

STATUS_TEXT = {"ok": "Analysed", "rejected": "Photo not usable", "error": "Could not analyse"}
FACTORY_LABEL = "factory (photographed films, rendered)"


@dataclass(frozen=True)
class CalibrationView:
    """What a page says about the calibration behind a result's probabilities."""

    site: bool  # calibrated on this kiosk's own labelled films
    headline: str  # short, for the live card
    text: str  # one sentence, for the result page


def calibration_view(result: dict[str, Any]) -> CalibrationView:
    """Plain words for a stored result: site calibration, factory calibration, or none."""
    cal_id = result.get("calibration_id")
    kind = result.get("calibration_kind") or ("site" if cal_id else None)
    if kind == "site":
        date = str(result.get("calibration_date") or "")[:10]
        when = f", {date}" if date else ""
        return CalibrationView(
            True,
            "Calibrated for this kiosk",
            f"Probabilities are calibrated for films photographed on this kiosk (site "
            f"calibration {cal_id}{when}).",
        )
    if kind == "factory":
        return CalibrationView(
            False,
            f"Not calibrated for this kiosk: {FACTORY_LABEL} calibration",
            f"Not calibrated for this kiosk. Probabilities use the {FACTORY_LABEL} calibration "
            "shipped with the model, not one fitted on this kiosk's films.",
        )
    return CalibrationView(
        False,
        "Not calibrated for this kiosk: raw model scores",
        "Not calibrated for this kiosk. Probabilities are raw scores of a model trained on "
        "digital X-rays; on photographed films they can be far off.",
    )


@dataclass(frozen=True)
class FindingView:
    """One finding, ready for a template."""

    code: str
    label: str
    probability_pct: int
    threshold_pct: int
    positive: bool
    word: str  # "Positive" / "Negative"
    confirmed: int | None  # a supervisor's 0/1, if any


def local_time(iso: str | None) -> str:
    """``2026-11-26T14:48:00.000Z`` -> ``2026-11-26 15:48`` in the kiosk's local time."""
    if not iso:
        return ""
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def short_id(result_id: str | None) -> str:
    return (result_id or "")[:8]


def findings_view(result: dict[str, Any]) -> list[FindingView]:
    diagnoses = result.get("diagnoses") or {}
    views = []
    for f in result.get("findings") or []:
        confirmed = diagnoses.get(f["code"])
        views.append(
            FindingView(
                code=str(f["code"]),
                label=str(f["label"]),
                probability_pct=round(100 * float(f["probability"])),
                threshold_pct=round(100 * float(f["threshold"])),
                positive=bool(f["positive"]),
                word="Positive" if f["positive"] else "Negative",
                confirmed=int(confirmed["label"]) if confirmed else None,
            )
        )
    return views


def quality_notes(result: dict[str, Any]) -> list[str]:
    quality = result.get("quality") or {}
    notes = [FLAG_TEXT.get(flag, str(flag).replace("_", " ")) for flag in quality.get("flags", [])]
    notes.extend(str(n) for n in quality.get("notes", []))
    advice = quality.get("advice")
    if advice and result.get("status") == "ok":
        notes.append(str(advice))
    return list(dict.fromkeys(notes))


def cam_overlay_rgba(cam: Any, size: tuple[int, int], finding_index: int = 0) -> np.ndarray:
    """RGBA uint8 (h, w, 4) heat overlay for one finding of a (gh, gw, C) CAM grid.

    ``size`` is the film's (h, w); the overlay is at most ``OVERLAY_MAX_SIDE_PX`` on its long
    side (the browser stretches it over the film). Raises ImageError for a malformed CAM.
    """
    grid = np.asarray(cam, dtype=np.float32)
    if grid.ndim == 2:
        grid = grid[:, :, None]
    if grid.ndim != 3 or grid.shape[0] < 1 or grid.shape[1] < 1:
        raise ImageError(f"the stored activation map has shape {grid.shape}", "analyse again")
    if not 0 <= finding_index < grid.shape[2]:
        raise ImageError(f"the activation map has no finding number {finding_index}")
    values = np.nan_to_num(grid[:, :, finding_index])
    h, w = size
    scale = min(1.0, OVERLAY_MAX_SIDE_PX / max(h, w))
    out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
    up = cv2.resize(values, (out_w, out_h), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(up.min()), float(up.max())
    norm = (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)
    norm = np.clip(norm, 0.0, 1.0)
    colours = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    rgb = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)
    alpha = np.clip((norm - OVERLAY_FLOOR) / (1.0 - OVERLAY_FLOOR), 0.0, 1.0) * OVERLAY_MAX_ALPHA
    return np.dstack([rgb, (alpha * 255).astype(np.uint8)])


def encode_rgba_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGBA uint8 image."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA))
    if not ok:
        raise ImageError("could not encode the overlay as PNG")
    return buf.tobytes()
