"""One radiograph, or a sheet of many small images (a CT or MR film)?

A chest film is one picture: where it is brighter than its surroundings (a local threshold,
so that a glare band across the film does not merge everything), it makes a few ragged
regions. A CT or MR film sheet is a grid of a dozen or more slices, each a compact bright
oval on black, separated by black gutters: it falls into many compact regions *of about the
same size*. ``similar_regions`` counts them: the bright regions (holes filled) covering at
least ``MIN_REGION`` of the image, filling at least ``MIN_FILL`` of their bounding box, whose
area is within a factor ``SIZE_FACTOR`` of their median. The limit the gate applies is chosen
from data (docs/rectify.md): no film of the holdout, digital or developed from a photo by
either scene generator, reaches 3; 84 of 100 of generator B's sheets reach 4.

What this module does not do: decide (``gates`` compares with the limit), or find the film.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.imaging.resize import shrink

MIN_REGION = 0.01  # of the image's area: smaller bright specks (text, markers) do not count
WORK_LONG_SIDE = 256  # px: the image is looked at this size
MIN_FILL = 0.65  # of its bounding box a region fills to count (an oval fills 0.79)
SIZE_FACTOR = 1.5  # regions within this factor of the median area are "the same size"
LOCAL_WINDOW = 0.25  # of the long side: the neighbourhood a pixel must be brighter than
LOCAL_MARGIN = 8  # grey levels above the neighbourhood's mean that make a pixel "bright"


def similar_regions(grey: np.ndarray) -> int:
    """How many compact bright regions of about the same size the image falls into."""
    h, w = grey.shape[:2]
    scale = WORK_LONG_SIDE / max(h, w)
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    small = shrink(grey, size)
    block = int(WORK_LONG_SIDE * LOCAL_WINDOW) | 1
    bright = cv2.adaptiveThreshold(
        small, 1, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, -LOCAL_MARGIN
    )
    # an opening breaks the thin bright bridges (labels, a ruler) between slices
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # each region with its holes filled (a slice drawn as a bright ring counts as its oval)
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    total = float(bright.size)
    areas = np.array([cv2.contourArea(c) / total for c in contours])
    boxes = np.array([np.prod(cv2.boundingRect(c)[2:]) / total for c in contours])
    # a slice is a compact blob; the pieces a radiograph's ribs and soft tissue make are ragged
    big = areas[(areas >= MIN_REGION) & (areas >= MIN_FILL * boxes)] if len(contours) else areas
    if not len(big):
        return 0
    median = float(np.median(big))
    return int(((big >= median / SIZE_FACTOR) & (big <= median * SIZE_FACTOR)).sum())
