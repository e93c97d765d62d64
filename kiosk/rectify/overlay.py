"""What the rectifier saw, drawn for a technician: `kiosk rectify PHOTO --debug DIR`.

The photo (shrunk to at most 1280 px wide) with the lit-panel mask tinted blue, the textured
(radiograph-like) regions tinted yellow, the found quad (green when accepted, red when
refused), the lung region, and one line per gate check: its measured value against its limit,
red where it refused the photo.

What this module does not do: decide anything; it redraws what ``rectify`` measured.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.capture.rig import RigReference
from kiosk.rectify.light import measure_light
from kiosk.rectify.result import RectifyResult
from kiosk.rectify.texture import texture_mask

OVERLAY_MAX_WIDTH_PX = 1280


def draw_overlay(
    photo: np.ndarray, result: RectifyResult, reference: RigReference | None = None
) -> np.ndarray:
    """RGB uint8 picture of the rectifier's view of ``photo`` and its verdict."""
    h, w = photo.shape[:2]
    scale = min(1.0, OVERLAY_MAX_WIDTH_PX / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    canvas = cv2.resize(photo, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    light = measure_light(photo, reference)
    lit = cv2.resize(light.lit.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    textured = cv2.resize(
        texture_mask(light.small).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST
    )
    canvas[lit] = canvas[lit] * 0.6 + np.array([40, 90, 255], np.float32) * 0.4
    tex = textured > 0
    canvas[tex] = canvas[tex] * 0.7 + np.array([255, 220, 0], np.float32) * 0.3
    out = np.clip(canvas, 0, 255).astype(np.uint8)
    ok = result.status == "ok"
    colour = (0, 200, 0) if ok else (230, 0, 0)
    if result.corners is not None:
        quad = ((result.corners + 0.5) * scale - 0.5).astype(np.int32)
        cv2.polylines(out, [quad], True, colour, 2, cv2.LINE_AA)
        centre = quad.mean(axis=0)
        lung = (centre + (quad - centre) * 0.6).astype(np.int32)
        cv2.polylines(out, [lung], True, (255, 255, 255), 1, cv2.LINE_AA)
    q = result.quality
    lines = [f"{result.status.upper()}: {q.reason or 'accepted'}"]
    for name, (value, limit) in q.checks.items():
        over = value < limit if name.endswith("_min") else value > limit  # ("_min": a minimum)
        lines.append(f"{'REFUSED ' if over else ''}{name} = {value:.4g} (limit {limit:.4g})")
    if q.notes:
        lines.append("notes: " + ", ".join(q.notes))
    y = 24
    for i, text in enumerate(lines):
        refused = (i == 0 and not ok) or text.startswith("REFUSED")
        cv2.putText(out, text, (12, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 4)
        cv2.putText(
            out,
            text,
            (12, y),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.55,
            (255, 80, 80) if refused else (255, 255, 255),
            1,
        )
        y += 22
    return out
