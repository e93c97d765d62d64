"""A still's small colour copy, made by the camera alongside it (picamera2's "lores" stream).

The rectifier finds the film on a 480-px work copy of the base frame. Shrinking a 12 MP RGB
frame to it reads 36 MB per capture; the Pi's ISP scales
the same frame into a second, small buffer for free. A still may therefore carry
``Still.preview``: the same view at ``lores_size`` (a 2x, 4x or 8x reduction, at least
``LORES_LONG_SIDE_PX`` on the long side). Backends without a scaler box-average the frame
(``box_preview``) so every backend hands the pipeline the same thing.

Because the copy replaces the frame for locating the film and modelling the lightbox, it is
checked before use (``preview_agrees``): a lores stream with another colour range, crop or
orientation than the main stream would move every density measured against it. A copy that
disagrees is dropped and the frame is shrunk as before.

What this module does not do: configure the camera (``picamera2``), or use the copy
(``rectify.light``).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from kiosk.imaging.decode import preview_factor
from kiosk.imaging.resize import box_shrink

logger = logging.getLogger(__name__)

LORES_LONG_SIDE_PX = 480  # at least the rectifier's work resolution (rectify.light)
# how far the copy may differ from the frame it claims to show (grey levels, median over
# sampled rows; box average vs the ISP's scaler differ by a level or two away from edges)
AGREE_MEDIAN_LEVELS = 4.0
AGREE_ROWS = 8  # rows of the copy compared with the frame
AGREE_ASPECT_TOLERANCE = 0.02


def lores_size(still_wh: tuple[int, int]) -> tuple[int, int]:
    """The copy's (width, height) for a still of ``still_wh``: the largest of 8, 4, 2 that
    keeps the long side at least ``LORES_LONG_SIDE_PX``, even dimensions (YUV 4:2:0);
    the still's own size when no reduction does."""
    w, h = still_wh
    k = preview_factor(still_wh, LORES_LONG_SIDE_PX)  # (the JPEG decoder's choice, the same)
    if k == 1:
        return w, h
    return (w // k) // 2 * 2, (h // k) // 2 * 2


def box_preview(image: np.ndarray) -> np.ndarray:
    """The copy a camera without a scaler makes: an integer box average to ``lores_size``."""
    h, w = image.shape[:2]
    lw, lh = lores_size((w, h))
    k = max(1, w // lw)
    small = box_shrink(image, k)
    return np.ascontiguousarray(small[:lh, :lw])


def yuv420_to_rgb(array: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """picamera2's "YUV420" array (rows: height of Y, then U and V at half size, two half rows
    per array row; the array may be wider than the image: the stride) as RGB uint8.

    Full-range BT.601 (JPEG's YCbCr, libcamera's sYCC, the still configuration's colour
    space): the same numbers a JPEG of the main stream would decode to.
    """
    w, h = size_wh
    stride = array.shape[1]
    if array.ndim != 2 or array.shape[0] < h * 3 // 2 or stride < w or w % 2 or h % 2:
        raise ValueError(f"not a {w}x{h} YUV420 array: shape {array.shape}")
    y = array[:h, :w]
    # U then V, each (h/2) x (stride/2) bytes, packed two half rows per array row
    flat = np.ascontiguousarray(array[h : h * 3 // 2]).reshape(-1)
    plane = (h // 2) * (stride // 2)
    u = flat[:plane].reshape(h // 2, stride // 2)[:, : w // 2]
    v = flat[plane : 2 * plane].reshape(h // 2, stride // 2)[:, : w // 2]
    up = cv2.resize(np.dstack([v, u]), (w, h), interpolation=cv2.INTER_LINEAR)
    ycrcb = np.dstack([y, up])
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)


def preview_agrees(frame: np.ndarray, preview: np.ndarray) -> bool:
    """True when ``preview`` shows ``frame``'s view at its size: the same aspect ratio, and a
    few of its rows equal to the frame's rows averaged over each preview pixel's footprint
    (grey, median absolute difference within ``AGREE_MEDIAN_LEVELS``). Reads about 1/30 of
    the frame. A disagreement is logged with what differed."""
    fh, fw = frame.shape[:2]
    ph, pw = preview.shape[:2]
    if preview.ndim != 3 or ph < AGREE_ROWS or pw < 2:
        logger.warning("The camera's preview copy is not a colour image: ignoring it")
        return False
    if abs((fw / fh) / (pw / ph) - 1.0) > AGREE_ASPECT_TOLERANCE:
        logger.warning(
            "The camera's preview copy is %dx%d but the still %dx%d: ignoring it", pw, ph, fw, fh
        )
        return False
    scale = fh / ph
    diffs = []
    for r in np.linspace(0, ph - 1, AGREE_ROWS + 2)[1:-1].round().astype(int).tolist():
        y0 = round(r * scale)
        strip = frame[y0 : max(round((r + 1) * scale), y0 + 1)]
        row = cv2.resize(strip, (pw, 1), interpolation=cv2.INTER_AREA)
        a = row.reshape(pw, -1).astype(np.float32).mean(axis=1)
        b = preview[r].reshape(pw, -1).astype(np.float32).mean(axis=1)
        diffs.append(np.abs(a - b))
    median = float(np.median(np.concatenate(diffs)))
    if median > AGREE_MEDIAN_LEVELS:
        logger.warning(
            "The camera's preview copy differs from the still by %.1f grey levels (median; "
            "limit %.0f): ignoring it. Check the lores stream's colour space and crop",
            median,
            AGREE_MEDIAN_LEVELS,
        )
        return False
    return True
