"""Does the radiograph itself reach the edge of the picture, or only its dark surround?

A film whose quadrilateral comes up to (or over) the frame's edge is not necessarily cut off:
a film hanging over the lightbox's dark housing, or with a black margin, has no visible sheet
edge on that side, so the quad found for it (by the localiser's mask or by texture) may run
into the housing and out of the frame while every part of the image a reader needs is in view.
What tells the two apart is what lies at the frame's edge: a film truly cut by the frame shows
its image (tissue, bone, the lit panel) right up to the edge; a film in view shows its dark
margin or the unlit housing there.

``edge_content`` measures, for the frame edges the quad comes near, the brightest light
(95th percentile of linear luminance) in a narrow band along that edge next to the quad,
relative to the median light inside the quad. A radiograph's tissue is at or above the film's
median; its margin, the air around the body and the unlit housing are an order of magnitude
darker. The threshold on it is chosen from data (docs/rectify.md).

What this module does not do: decide (the rectifier compares with the threshold), or look at
frame edges far from the film.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import cv2
import numpy as np

from kiosk.imaging.geometry import side_axes

EDGE_BAND_PX = 3  # work pixels along the frame's edge that are looked at
NEAR_PX = 8  # work pixels: how far beyond the quad a frame edge still counts as "next to it"
# (when the localiser's mask reaches the frame's edge beyond its quad, as far as the mask may
# bleed over a dark surround: 6 of its cells at 480 work px across)
MASK_REACH_PX = 24
INTERIOR_ERODE_PX = 9  # work pixels trimmed from the quad for the film's reference level


FRAME_EDGES = ("top", "bottom", "left", "right")


def edge_content(lum: np.ndarray, quad_work: np.ndarray, reach: Collection[str] = ()) -> float:
    """Brightest light at the frame's edge next to the film (within ``NEAR_PX``; within
    ``MASK_REACH_PX`` for the edges named in ``reach``, of ``FRAME_EDGES``), relative to the
    film's median (NaN when the quad is nowhere near an edge; inf when the quad has no
    interior)."""
    h, w = lum.shape
    film, reference = _film_and_level(lum, quad_work)
    if reference <= 0:
        return float("inf")
    near = cv2.dilate(film, np.ones((2 * NEAR_PX + 1, 2 * NEAR_PX + 1), np.uint8)) > 0
    far = near
    if reach:
        far = cv2.dilate(film, np.ones((2 * MASK_REACH_PX + 1,) * 2, np.uint8)) > 0
    b = EDGE_BAND_PX
    brightest = float("nan")
    bands = (
        (slice(0, b), slice(None)),
        (slice(h - b, h), slice(None)),
        (slice(None), slice(0, b)),
        (slice(None), slice(w - b, w)),
    )
    for edge, (rows, cols) in zip(FRAME_EDGES, bands, strict=True):
        values = lum[rows, cols][(far if edge in reach else near)[rows, cols]]
        if values.size >= b:  # one edge at a time: a short bright run is not averaged away
            value = float(np.percentile(values, 95))
            brightest = value if math.isnan(brightest) else max(brightest, value)
    return brightest / reference


UNLIT_BAND_PX = (2, 12)  # work pixels beyond a side: the band that says "lit panel" or not
UNLIT_SIDE_MAX = 0.5  # a side is unlit beyond when less of that band than this is bright


def beyond_unlit_sides(lum: np.ndarray, bright: np.ndarray, quad_work: np.ndarray) -> float:
    """For a quad inside the frame: the brightest light at the frame's edge straight beyond
    each side that has no lit panel next to it, relative to the film's median (as
    ``edge_content``); NaN when every side has lit panel beyond it.

    A side with lit panel beyond it is where the film ends: a film continuing there would be
    seen. A side with the dark housing beyond it may hide more film, out to the frame's edge;
    whether it does is what lies at that edge (dim image: the film runs on; dark: in view).
    ``bright``: the lit panel and what is as bright (``photometry.bright_mask``).
    """
    h, w = lum.shape
    quad = np.asarray(quad_work, np.float64)
    film, reference = _film_and_level(lum, quad_work)
    if reference <= 0:
        return float("inf")
    frame_band = np.zeros((h, w), bool)
    b = EDGE_BAND_PX
    frame_band[:b], frame_band[-b:], frame_band[:, :b], frame_band[:, -b:] = True, True, True, True
    centre = quad.mean(axis=0)
    near, far = UNLIT_BAND_PX
    brightest = float("nan")
    for i in range(4):
        a, c = quad[i], quad[(i + 1) % 4]
        if float(np.hypot(*(c - a))) < 1:
            continue
        _, n = side_axes(a, c, centre)
        band = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(band, _poly(a + n * near, c + n * near, c + n * far, a + n * far), 1)
        inside = band > 0
        if not inside.any() or float(bright[inside].mean()) >= UNLIT_SIDE_MAX:
            continue  # lit panel beyond this side (or the side is on the frame's edge)
        swept = np.zeros((h, w), np.uint8)
        reach = float(h + w)
        cv2.fillConvexPoly(swept, _poly(a, c, c + n * reach, a + n * reach), 1)
        values = lum[(swept > 0) & frame_band & (film == 0)]
        if values.size >= b:
            value = float(np.percentile(values, 95))
            brightest = value if math.isnan(brightest) else max(brightest, value)
    return brightest / reference


def _film_and_level(lum: np.ndarray, quad_work: np.ndarray) -> tuple[np.ndarray, float]:
    """The quad's mask (uint8) and the film's median light inside it, away from its edges
    (0 when the quad has no such interior)."""
    film = np.zeros(lum.shape, np.uint8)
    cv2.fillConvexPoly(film, np.round(np.asarray(quad_work, np.float64)).astype(np.int32), 1)
    kernel = np.ones((2 * INTERIOR_ERODE_PX + 1, 2 * INTERIOR_ERODE_PX + 1), np.uint8)
    interior = cv2.erode(film, kernel) > 0
    return film, float(np.median(lum[interior])) if interior.any() else 0.0


def _poly(*points: np.ndarray) -> np.ndarray:
    return np.round(np.array(points)).astype(np.int32)
