"""What the quality gate measures of a developed film and of the lightbox around it.

On the developed film: the lung region's clipped, crushed and glare shares, the density range,
the count of similar bright regions (a CT/MR sheet). Around it, at work resolution: how the
film's hue varies (a radiograph's is smooth under any light), glare on the panel around it and
how much lit panel is in view.

What this module does not do: judge (``gates`` compares with the limits) or find the film.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.rectify.develop import Developed
from kiosk.rectify.gates import BLACK_LEVEL, CLIP_LEVEL, GLARE_RING_T, lung_region
from kiosk.rectify.light import Light
from kiosk.rectify.photometry import colour_variation
from kiosk.rectify.sheet import similar_regions
from kiosk.rectify.warp import upright


def film_measurements(film: Developed, glare_t: float, *, lightbox_seen: bool) -> dict[str, float]:
    """What the gate measures on the developed film: the lung region's clipped, crushed and
    glare (transmittance above ``glare_t``) shares, the density range."""
    rows, cols = lung_region(film.shortest.shape)
    short = film.shortest[rows, cols][::2, ::2]
    long_ = film.longest[rows, cols][::2, ::2]
    t_rows, t_cols = lung_region(film.transmittance.shape)
    lung_t = film.transmittance[t_rows, t_cols]
    return {
        "lung_clipped_fraction": float((short >= CLIP_LEVEL).mean()),
        "lung_crushed_fraction": float((long_ <= BLACK_LEVEL).mean()),
        # film transmits at most what its clear base does: brighter is a reflection
        "lung_glare_fraction": float((lung_t > glare_t).mean()) if lightbox_seen else float("nan"),
        "contrast": film.d_hi - film.d_lo,
        "similar_regions": float(similar_regions(film.grey)),
        "density_min": film.d_lo,
        "density_max": film.d_hi,
    }


def colour_and_surround(light: Light, corners: np.ndarray) -> dict[str, float]:
    """How the film's hue varies (``photometry.colour_variation``: a radiograph's is smooth
    under any light) and glare on the lightbox around it (a note, not a refusal)."""
    wh, ww = light.work_hw
    film_w = np.zeros((wh, ww), np.uint8)
    cv2.fillConvexPoly(film_w, np.round(light.to_work(corners)).astype(np.int32), 1)
    ring = (cv2.dilate(film_w, np.ones((31, 31), np.uint8)) > 0) & ~(
        cv2.dilate(film_w, np.ones((7, 7), np.uint8)) > 0
    )
    ring &= light.lit
    glare_ring = float((light.trans[ring] > GLARE_RING_T).mean()) if ring.any() else 0.0
    film_px = max(1, int(film_w.sum()))
    detail, field = colour_variation(_film_rgb(light, corners))
    return {
        "glare_ring_fraction": glare_ring,
        "colour_detail": detail,
        "colour_field": field,
        "lightbox_visible_ratio": float((light.lit & (film_w == 0)).sum()) / film_px,
    }


def _film_rgb(light: Light, corners: np.ndarray) -> np.ndarray:
    """The film's colour picture at work resolution, warped upright (its inner 90 %: the
    sheet's edge and what lies beyond it stay out)."""
    quad = light.to_work(corners).astype(np.float32)
    centre = quad.mean(axis=0)
    return upright(light.small, centre + (quad - centre) * 0.9, min_side=8)
