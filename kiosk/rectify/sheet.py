"""One radiograph, or a sheet of many small images (a CT or MR film)?

A chest film is one picture: thresholded at its own Otsu level, its bright parts (the body,
perhaps the arms, a label) make one to three regions of any sizes. A CT or MR film sheet is
a grid of a dozen or more slices, each a bright oval on black, separated by black gutters:
thresholded the same way it falls into many regions *of about the same size*.
``similar_regions`` counts them: the compact bright regions (filling at least ``MIN_FILL`` of
their bounding box) covering at least ``MIN_REGION`` of the image whose area is within a
factor 2 of their median. The limit the gate applies is chosen
from data (docs/rectify.md): no film of the holdout, digital or developed from a photo by
either scene generator, reaches 4; two thirds of generator B's sheets reach 5.

What this module does not do: decide (``gates`` compares with the limit), or find the film.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_REGION = 0.01  # of the image's area: smaller bright specks (text, markers) do not count
WORK_LONG_SIDE = 256  # px: the image is looked at this size
MIN_FILL = 0.5  # of its bounding box a region fills to count (compact, like a slice)


def similar_regions(grey: np.ndarray) -> int:
    """How many bright regions of about the same size the image falls into (uint8 grey)."""
    h, w = grey.shape[:2]
    scale = WORK_LONG_SIDE / max(h, w)
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    _level, bright = cv2.threshold(small, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # an opening breaks the thin bright bridges (labels, a ruler) between slices
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # each region with its holes filled (a slice drawn as a bright ring counts as its oval)
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    total = float(bright.size)
    areas = np.array([cv2.contourArea(c) / total for c in contours])
    boxes = np.array([np.prod(cv2.boundingRect(c)[2:]) / total for c in contours])
    # a slice is a compact blob (an oval fills ~0.79 of its box); the pieces a radiograph's
    # ribs and soft tissue break into are ragged
    big = areas[(areas >= MIN_REGION) & (areas >= MIN_FILL * boxes)] if len(contours) else areas
    if not len(big):
        return 0
    median = float(np.median(big))
    return int(((big >= median / 2) & (big <= median * 2)).sum())
