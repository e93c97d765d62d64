"""The quality gate's thresholds and the checks for digital (non-photo) input.

What this module does not do: locate or warp the film.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.rectify.photometry import colourfulness
from kiosk.rectify.result import Quality, make_quality

SHARP_MAX = 0.0045  # edge blur sigma / film diagonal above which the photo is "blurred"
GLARE_MAX = 0.02  # fraction of the film interior brighter than clear film
GLARE_RING_T = 1.15  # lightbox brighter than its model by this factor: a reflection
GLARE_RING_MAX = 0.05  # fraction of the lightbox ring around the film showing glare
CLIPPED_MAX = 0.01  # fraction of the film interior at the sensor's ceiling
DARK_LIGHTBOX = 0.06  # linear lightbox level below which the photo is under-exposed
COLOURFUL_MAX = 12.0  # Hasler-Suesstrunk colourfulness of a (white-balanced) film


def check_digital(image: np.ndarray) -> Quality:
    """Gate for a digital (non-photo) image: too small, blank, or not an X-ray (colourful)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if grey.dtype != np.uint8:
        g = grey.astype(np.float32)
        g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6) * 255
        grey = g.astype(np.uint8)
    h, w = grey.shape
    sub = grey[:: max(1, h // 512), :: max(1, w // 512)]
    p1, p99 = (float(v) for v in np.percentile(sub, [1, 99]))
    metrics = {
        "height": float(h),
        "width": float(w),
        "contrast": p99 - p1,
        "std": float(sub.std()),
        "colourfulness": 0.0,
    }
    flags: list[str] = []
    if min(h, w) < 128:
        flags.append("too_small")
    if sub.std() < 3.0:
        flags.append("blank")
    if image.ndim == 3:
        rgb = image if image.dtype == np.uint8 else cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
        metrics["colourfulness"] = colourfulness(rgb[:: max(1, h // 256), :: max(1, w // 256)])
    aspect = max(h, w) / max(1, min(h, w))
    metrics["aspect"] = aspect
    if "blank" not in flags and (
        metrics["colourfulness"] > COLOURFUL_MAX or p99 - p1 < 40 or aspect > 2.5
    ):
        flags.append("not_xray")
    return make_quality(flags, metrics)


def looks_like_photo(image: np.ndarray) -> bool:
    """True for a camera photo of a film on a lightbox, False for a digital X-ray.

    A digital radiograph is exactly grey and usually dark at its borders; a lightbox photo has
    colour noise and a colour cast, and bright lightbox around the film.
    """
    if image.ndim == 2 or image.shape[2] == 1:
        return False
    h, w = image.shape[:2]
    sub = image[:: max(1, h // 256), :: max(1, w // 256)].astype(np.int16)
    chroma = float(np.mean(np.abs(sub[..., 0] - sub[..., 1]) + np.abs(sub[..., 2] - sub[..., 1])))
    if chroma < 1.0:
        return False
    grey = sub.mean(axis=2)
    bh, bw = max(1, grey.shape[0] // 12), max(1, grey.shape[1] // 12)
    border = np.concatenate(
        [grey[:bh].ravel(), grey[-bh:].ravel(), grey[:, :bw].ravel(), grey[:, -bw:].ravel()]
    )
    centre = grey[
        grey.shape[0] // 4 : -grey.shape[0] // 4, grey.shape[1] // 4 : -grey.shape[1] // 4
    ]
    bright_border = float(np.percentile(border, 75)) > max(120.0, float(np.median(centre)) + 30)
    return bright_border or chroma > 6.0
