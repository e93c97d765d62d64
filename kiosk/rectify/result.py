"""What rectification hands on: the film quad, the rectified film and the quality verdict.

What this module does not do: measure anything; the gate's flags come from ``gates``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class Quality:
    """Verdict on one photo (or digital image): machine flags plus human text."""

    ok: bool
    reason: str | None  # human text for a rejection
    advice: str | None  # what to do about it
    flags: tuple[str, ...]  # why it was refused (codes): no_film, cut_off, blurred, glare, ...
    metrics: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what was imperfect but did not refuse it
    checks: dict[str, tuple[float, float]] = field(default_factory=dict)  # value, limit

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: metrics rounded, a measurement that could not be made (NaN) as null."""
        return {
            "ok": self.ok,
            "flags": list(self.flags),
            "notes": list(self.notes),
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "checks": {
                k: {"value": _json_number(v), "limit": _json_number(lim)}
                for k, (v, lim) in self.checks.items()
            },
            "advice": self.advice,
        }


def _json_number(value: float) -> float | None:
    v = float(value)
    return round(v, 4) if math.isfinite(v) else None


@dataclass(frozen=True)
class RectifyResult:
    """What ``rectify`` found: the film quad, the rectified film and the verdict."""

    status: Literal["ok", "rejected"]
    corners: np.ndarray | None  # (4, 2) float32 in input pixels, TL TR BR BL
    film: np.ndarray | None  # grey uint8, approximates the digital image (bone bright)
    quality: Quality
    timings_ms: dict[str, float]


# Order matters: the first flag present gives the reason shown to the user.
MESSAGES: dict[str, tuple[str, str]] = {
    "no_film": (
        "No film found on the lightbox",
        "Clip the film in the middle of the lightbox, fully inside the frame",
    ),
    "film_too_small": (
        "The film is too small in the picture to be read",
        "Move the camera closer to the lightbox, or zoom in, so the film fills most of the picture",
    ),
    "cut_off": (
        "The film is cut off by the edge of the picture",
        "Move the film to the middle of the lightbox so all four edges are visible",
    ),
    "overexposed": (
        "The photo is over-exposed: the lung fields are pure white",
        "Lower the camera exposure or recalibrate the rig",
    ),
    "underexposed": (
        "The photo is too dark: the lung fields are black",
        "Switch the lightbox on, or raise the camera exposure and recalibrate the rig",
    ),
    "blurred": (
        "The photo is too blurred",
        "Check the camera focus and keep the film still while it is photographed",
    ),
    "glare": (
        "A reflection (glare) lies over the film",
        "Switch off or move the room light reflected in the film, or tilt the film slightly",
    ),
    "not_xray": (
        "This does not look like a chest X-ray film",
        "Use a greyscale chest radiograph",
    ),
    "too_small": (
        "The image is too small to analyse",
        "Use an image at least 128 pixels on its short side",
    ),
    "blank": (
        "The image is blank",
        "Check the file: it has (almost) no contrast",
    ),
}


def make_quality(
    flags: list[str],
    metrics: dict[str, float],
    *,
    notes: list[str] | None = None,
    checks: dict[str, tuple[float, float]] | None = None,
) -> Quality:
    """A verdict from refusal flags (the first one gives the text shown) and notes."""
    note_codes, measured = tuple(notes or ()), dict(checks or {})
    if not flags:
        return Quality(True, None, None, (), metrics, note_codes, measured)
    reason, advice = MESSAGES[flags[0]]
    return Quality(False, reason, advice, tuple(flags), metrics, note_codes, measured)
