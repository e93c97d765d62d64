"""Which sides of the true film sheet the photo shows: the truth the detector cannot beat.

A side of the sheet that lies over the unlit housing (a film hanging off its panel or over the
gap between two bays), or a clear margin against a clipped panel, makes no step in the photo:
nothing in the pixels says where the sheet ends there, so no detector can place that side
except by guessing. The study splits its IoU by this, so a shortfall can be told apart from
the information the photo lacks.

A side is *shown* when the median absolute difference of grey (the photo's sRGB luma, 0-255)
between ``OFFSET_PX`` outside and inside the true side, over ``N_POINTS`` points along its middle
80 %, is at least ``MIN_STEP``; "dark" when both sides of an unshown side are darker than
``DARK_LEVEL`` (over the housing), "bright" when both are brighter than ``BRIGHT_LEVEL``
(clipped). The split moves little between ``MIN_STEP`` 10 and 30 (docs/rectify.md).

What this module does not do: look at what the detector found (``records`` compares).
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.imaging.geometry import side_axes

OFFSET_PX = 3.0  # at 1280 px wide; scaled with the photo
N_POINTS = 40
MIN_STEP = 20.0  # grey levels
DARK_LEVEL = 80.0
BRIGHT_LEVEL = 180.0
REF_WIDTH = 1280


def side_steps(image: np.ndarray, corners: np.ndarray) -> list[tuple[float, float, float]]:
    """Per side of ``corners`` (TL, TR, BR, BL; frame px) of the RGB or grey uint8 ``image``:
    (median |inside - outside|, median outside, median inside) grey levels."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    h, w = grey.shape
    quad = np.asarray(corners, np.float64)
    centre = quad.mean(axis=0)
    off = OFFSET_PX * max(1.0, w / REF_WIDTH)
    ts = np.linspace(0.1, 0.9, N_POINTS)[:, None]

    def sample(p: np.ndarray) -> np.ndarray:
        x = np.clip(np.round(p[:, 0]).astype(int), 0, w - 1)
        y = np.clip(np.round(p[:, 1]).astype(int), 0, h - 1)
        return grey[y, x].astype(np.float64)

    out: list[tuple[float, float, float]] = []
    for i in range(4):
        a, b = quad[i], quad[(i + 1) % 4]
        _, nrm = side_axes(a, b, centre)
        pts = a + ts * (b - a)
        outside, inside = sample(pts + off * nrm), sample(pts - off * nrm)
        out.append(
            (
                float(np.median(np.abs(inside - outside))),
                float(np.median(outside)),
                float(np.median(inside)),
            )
        )
    return out


def outline_class(steps: list[tuple[float, float, float]], min_step: float = MIN_STEP) -> str:
    """The outline's class: "shown" (every side steps), else what hides the unshown sides:
    "dark" (over the
    housing), "bright" (clipped), "mixed" (both) or "faint" (neither: a low-contrast edge)."""
    kinds = set()
    for step, outside, inside in steps:
        if step >= min_step:
            continue
        if max(outside, inside) < DARK_LEVEL:
            kinds.add("dark")
        elif min(outside, inside) > BRIGHT_LEVEL:
            kinds.add("bright")
        else:
            kinds.add("faint")
    if not kinds:
        return "shown"
    return kinds.pop() if len(kinds) == 1 else "mixed"
