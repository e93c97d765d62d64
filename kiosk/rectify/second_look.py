"""Second looks, when the first look at the whole frame found no film: where to look
(around the lit panel, ``zoom_box``; at each other bay of the lightbox, ``bay_boxes``), the
frames cut to that region (``crop_capture``) and what the look found there as a result for the
whole frame (``in_whole_frame``).

What this module does not do: look (``rectifier`` runs its one look on the crop).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from kiosk.capture.bracket import FilmCapture
from kiosk.imaging.colour import recolour
from kiosk.rectify.gates import judge_photo
from kiosk.rectify.light import Light
from kiosk.rectify.photometry import bright_mask
from kiosk.rectify.result import RectifyResult

# a second, closer look when nothing was found: around the bright regions (each at least this
# share of the frame), grown by this share of their box's long side, if that box covers at
# most this share of the frame (docs/rectify.md)
ZOOM_MIN_BRIGHT = 0.002
ZOOM_PAD = 0.4
ZOOM_MAX_AREA = 0.75
BAY_MIN_OF_LARGEST = 0.25  # a bright region this share of the largest is another bay
BAY_PAD = 0.03  # of the bay's long side, around it for its own look


def in_whole_frame(
    zoomed: RectifyResult,
    box: tuple[int, int, int, int],
    result: RectifyResult,
    note: str,
) -> RectifyResult | None:
    """The look at the frames' region ``box`` (frame pixels) as a result for the whole frame
    (``metrics[note]`` = 1); None when it is no better answer than the first look's
    ``result``."""
    by_texture = result.quality.metrics.get("located_by_texture", 0.0) > 0
    if zoomed.corners is None:
        return None
    # a film the closer look found but that is too small to read: say so, not "no film"
    too_small = zoomed.quality.flags[:1] == ("film_too_small",) and not by_texture
    if zoomed.status != "ok" and (not too_small or result.status == "ok"):
        return None  # (a film the first look read is not refused by the closer one)
    if (by_texture or result.status == "ok") and zoomed.quality.metrics.get(
        "located_by_texture", 0.0
    ) > 0:
        return None  # (a texture find replaces no other find, unless the closer look saw edges)
    metrics = dict(zoomed.quality.metrics)
    metrics[note] = 1.0
    timings = {k: v + result.timings_ms.get(k, 0.0) for k, v in zoomed.timings_ms.items()}
    x0, y0 = box[0], box[1]
    corners = (zoomed.corners + np.array([x0, y0], np.float32)).astype(np.float32)
    quality = judge_photo(metrics)
    return RectifyResult("ok" if quality.ok else "rejected", corners, zoomed.film, quality, timings)


def bay_boxes(light: Light) -> list[tuple[int, int, int, int]]:
    """Frame pixels (x0, y0, x1, y1) around each bright region but the largest that is at
    least ``BAY_MIN_OF_LARGEST`` of it (the other bays of a lightbox), largest first, grown
    by ``BAY_PAD`` of its long side (less than the divider between bays, so the crop's
    largest bright region is that bay)."""
    lum = light.lum
    h, w = lum.shape
    n, _labels, stats, _ = cv2.connectedComponentsWithStats(bright_mask(lum), connectivity=8)
    if n <= 2:
        return []
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = 1 + np.argsort(-areas)
    boxes = []
    for i in order[1:]:
        if stats[i, cv2.CC_STAT_AREA] < max(
            BAY_MIN_OF_LARGEST * areas.max(), ZOOM_MIN_BRIGHT * h * w
        ):
            break
        x, y = int(stats[i, cv2.CC_STAT_LEFT]), int(stats[i, cv2.CC_STAT_TOP])
        bw, bh = int(stats[i, cv2.CC_STAT_WIDTH]), int(stats[i, cv2.CC_STAT_HEIGHT])
        pad = BAY_PAD * max(bw, bh)
        boxes.append(_frame_box(light, (x - pad, y - pad, x + bw + pad, y + bh + pad)))
    return boxes


def zoom_box(light: Light) -> tuple[int, int, int, int] | None:
    """Frame pixels (x0, y0, x1, y1) around the lit panel where a second, closer look pays:
    the bounding box of the bright regions, grown by ``ZOOM_PAD`` of its long side; None when
    that covers more than ``ZOOM_MAX_AREA`` of the frame (no closer than the first look)."""
    lum = light.lum
    h, w = lum.shape
    n, _labels, stats, _ = cv2.connectedComponentsWithStats(bright_mask(lum), connectivity=8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= ZOOM_MIN_BRIGHT * h * w]
    if not keep:
        return None
    x0 = min(int(stats[i, cv2.CC_STAT_LEFT]) for i in keep)
    y0 = min(int(stats[i, cv2.CC_STAT_TOP]) for i in keep)
    x1 = max(int(stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH]) for i in keep)
    y1 = max(int(stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT]) for i in keep)
    pad = ZOOM_PAD * max(x1 - x0, y1 - y0)
    bx0, by0 = max(0.0, x0 - pad), max(0.0, y0 - pad)
    bx1, by1 = min(float(w), x1 + pad), min(float(h), y1 + pad)
    if (bx1 - bx0) * (by1 - by0) > ZOOM_MAX_AREA * h * w:
        return None
    return _frame_box(light, (bx0, by0, bx1, by1))


def _frame_box(light: Light, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """A work-resolution box (x0, y0, x1, y1) as whole frame pixels covering it, inside the
    frame."""
    h, w = light.work_hw
    s = 1.0 / light.scale
    x0, y0, x1, y1 = box
    return (
        max(0, int(x0 * s)),
        max(0, int(y0 * s)),
        min(round(w * s), math.ceil(x1 * s)),
        min(round(h * s), math.ceil(y1 * s)),
    )


def crop_capture(capture: FilmCapture, box: tuple[int, int, int, int]) -> FilmCapture:
    """The frames' region ``box`` (x0, y0, x1, y1); a grey base frame with a colour preview
    gets its colour back at full size (``recolour``): the closer look needs colour detail."""
    x0, y0, x1, y1 = box
    frames = [np.ascontiguousarray(f[y0:y1, x0:x1]) for f in capture.frames]
    base = capture.base_index
    preview = capture.preview
    if preview is not None and frames[base].ndim == 2:
        ph, pw = preview.shape[:2]
        k = max(1, round(capture.base.shape[1] / pw))  # the preview's box factor
        part = preview[
            int(y0 // k) : min(ph, math.ceil(y1 / k)), int(x0 // k) : min(pw, math.ceil(x1 / k))
        ]
        frames[base] = recolour(frames[base], part)
    return FilmCapture(
        tuple(frames), capture.exposures, dict(capture.metadata), capture.captured_at
    )
