"""Downscaling without aliasing, cheaply: integer box averages first, then area resampling.

OpenCV's area interpolation has a fast path for integer factors (a plain k x k box average,
well under a millisecond per megapixel) and a slow general path; a 12 MP frame is first
box-averaged by the largest integer factor that keeps it at least as large as wanted, then
resampled the small remaining way. Dimensions that are not a multiple of that factor lose
their last (k - 1) rows or columns, a fraction of a pixel of the output.

What this module does not do: enlarge images, or keep the aspect ratio for you.
"""

from __future__ import annotations

import cv2
import numpy as np


def box_factor(size_wh: tuple[int, int], target_wh: tuple[int, int]) -> int:
    """The largest integer k with size / k still at least ``target`` on both axes (>= 1)."""
    return max(1, min(size_wh[0] // max(1, target_wh[0]), size_wh[1] // max(1, target_wh[1])))


def box_shrink(image: np.ndarray, k: int) -> np.ndarray:
    """k x k box average (integer factor), dropping the last rows/columns that do not fill a box."""
    if k <= 1:
        return image
    h, w = image.shape[0] // k * k, image.shape[1] // k * k
    return cv2.resize(image[:h, :w], (w // k, h // k), interpolation=cv2.INTER_AREA)


def shrink(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Downscale to ``size_wh`` (width, height): integer box average, then area resampling."""
    w, h = image.shape[1], image.shape[0]
    image = box_shrink(image, box_factor((w, h), size_wh))
    if (image.shape[1], image.shape[0]) == size_wh:
        return image
    return cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA)
