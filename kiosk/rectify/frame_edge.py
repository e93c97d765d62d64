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

import cv2
import numpy as np

EDGE_BAND_PX = 3  # work pixels along the frame's edge that are looked at
NEAR_PX = 8  # work pixels: how far beyond the quad a frame edge still counts as "next to it"
INTERIOR_ERODE_PX = 9  # work pixels trimmed from the quad for the film's reference level


def edge_content(lum: np.ndarray, quad_work: np.ndarray) -> float:
    """Brightest light at the frame's edge next to the film, relative to the film's median
    (NaN when the quad is nowhere near an edge; inf when the quad has no interior)."""
    h, w = lum.shape
    quad = np.round(np.asarray(quad_work, np.float64)).astype(np.int32)
    film = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(film, quad, 1)
    kernel = np.ones((2 * INTERIOR_ERODE_PX + 1, 2 * INTERIOR_ERODE_PX + 1), np.uint8)
    interior = cv2.erode(film, kernel) > 0
    if not interior.any():
        return float("inf")
    reference = float(np.median(lum[interior]))
    if reference <= 0:
        return float("inf")
    near = cv2.dilate(film, np.ones((2 * NEAR_PX + 1, 2 * NEAR_PX + 1), np.uint8)) > 0
    b = EDGE_BAND_PX
    brightest = float("nan")
    for rows, cols in (
        (slice(0, b), slice(None)),
        (slice(h - b, h), slice(None)),
        (slice(None), slice(0, b)),
        (slice(None), slice(w - b, w)),
    ):
        values = lum[rows, cols][near[rows, cols]]
        if values.size >= b:  # one edge at a time: a short bright run is not averaged away
            value = float(np.percentile(values, 95))
            brightest = value if math.isnan(brightest) else max(brightest, value)
    return brightest / reference
