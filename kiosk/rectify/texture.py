"""Find the film's image area by its texture, whatever surrounds it.

The transmittance detector (``locate.detect_film``) needs lit lightbox around the film. On a
real lightbox a 35 x 43 cm film covers its whole bay: what surrounds it may be the dark
housing, a second (empty, bright) bay, or a clipped white margin. What every chest film has is
*texture*: ribs, lungs, mediastinum; the panel, the housing, the room and clear or black margins
are smooth. So: local standard deviation of the grey work copy, closed into one region, thin
bands (edges between smooth areas) opened away, the largest region's outline fitted with four
lines. The quad found is the radiograph's image area (the margins are smooth), which is what
the model reads.

What this module does not do: refine the corners to sub-pixel (there is no sharp edge to
refine against when the surround is as dark as a black margin) or judge the film.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.imaging.geometry import line_from_points, quad_from_lines
from kiosk.rectify.locate import Detection, component_quad
from kiosk.rectify.refine import sample_bilinear

TEXTURE_WINDOW_PX = 7  # at work resolution (~480 px long side)
TEXTURE_MIN_STD = 3.0  # 8-bit grey levels: film content; sensor noise is averaged below it
# a step between two smooth areas (panel to housing, a film's sheet edge) gives a far larger
# local deviation than anatomy at this scale: such bands are edges, not film
TEXTURE_MAX_STD = 45.0
TEXTURE_MIN_AREA = 0.02  # of the frame: a small film far away still counts
# film sizes run from 18 x 24 to 35 x 43 cm, portrait or landscape: sides' ratio 0.7-1.43,
# with slack for perspective and for an image area narrower than its sheet
TEXTURE_ASPECT = (0.55, 1.8)


def texture_mask(small_rgb: np.ndarray) -> np.ndarray:
    """Bool mask of textured pixels of the work copy (RGB uint8), one region per film."""
    # blurred a little first: pixel noise and JPEG blocks are not texture
    grey: np.ndarray = cv2.GaussianBlur(
        cv2.cvtColor(small_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32), (3, 3), 0
    )
    k = (TEXTURE_WINDOW_PX, TEXTURE_WINDOW_PX)
    mean = cv2.blur(grey, k)
    var = np.maximum(cv2.blur(grey * grey, k) - mean * mean, 0.0)
    std = np.sqrt(var)
    textured: np.ndarray = ((std > TEXTURE_MIN_STD) & (std < TEXTURE_MAX_STD)).astype(np.uint8)
    # the flanks of an edge band survive the upper limit as thin strips: open them away
    # first, then close the holes anatomy leaves (a smooth lung field)
    textured = cv2.morphologyEx(textured, cv2.MORPH_OPEN, np.ones((9, 9), np.uint8))
    textured = cv2.morphologyEx(textured, cv2.MORPH_CLOSE, np.ones((15, 15), np.uint8))
    return textured.astype(bool)


def detect_by_texture(small_rgb: np.ndarray) -> Detection | None:
    """The largest textured, filled quadrilateral of the work copy, or None."""
    h, w = small_rgb.shape[:2]
    mask = texture_mask(small_rgb).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    if n <= 1:
        return None
    order = [int(i) + 1 for i in np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:3]]
    for i in order:
        if stats[i, cv2.CC_STAT_AREA] < TEXTURE_MIN_AREA * h * w:
            break
        region = (labels == i).astype(np.uint8)
        # fill holes (a smooth lung field, glare): the outline is what matters
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        filled = np.zeros_like(region)
        cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
        det = component_quad(filled.astype(bool), (h, w))
        if det is not None and _film_shaped(det.quad_work):
            grey = cv2.GaussianBlur(cv2.cvtColor(small_rgb, cv2.COLOR_RGB2GRAY), (5, 5), 0)
            quad = snap_to_edges(grey.astype(np.float32), det.quad_work)
            return Detection(quad, det.fill, abs(float(cv2.contourArea(quad))) / (h * w))
    return None


SNAP_OUT = 0.35  # how far outwards a side may move, as a share of the quad's size
SNAP_IN = 0.06  # ... and inwards
SNAP_MIN_COS = 0.985  # at most ~10 degrees between a side and the edge it snaps to


def snap_to_edges(grey: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Move each side of a texture quad out to the film's edge.

    Texture stops short of the film's edge where anatomy is smooth (the abdomen, a dark
    lung) and at clear margins. Along profiles across each side, the outermost strong step
    (at least half the profile's largest) within the search range is a point of the edge: the
    sheet's edge against the housing for clear and grey margins, the image area's edge for a
    black margin (which the dark housing hides). A robust line through the points is the side.
    The quad is kept when the result is implausible.
    """
    centre = quad.mean(axis=0)
    size = float(np.sqrt(max(abs(cv2.contourArea(quad.astype(np.float32))), 1.0)))
    offsets = np.arange(-SNAP_IN * size, SNAP_OUT * size, 1.0, dtype=np.float32)
    lines: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(4):
        a, b = quad[i].astype(np.float64), quad[(i + 1) % 4].astype(np.float64)
        along = b - a
        normal = np.array([along[1], -along[0]]) / max(float(np.linalg.norm(along)), 1e-6)
        if np.dot(normal, (a + b) / 2 - centre) < 0:
            normal = -normal  # outwards
        t = np.linspace(0.15, 0.85, 15)[:, None]
        base = a + along * t  # (15, 2)
        pts = base[:, None, :] + normal[None, None, :] * offsets[None, :, None]
        prof = sample_bilinear(grey, pts[..., 0], pts[..., 1])
        step = np.abs(np.diff(prof, axis=1))
        peak = step.max(axis=1, keepdims=True)
        big = step >= np.maximum(0.5 * peak, 4.0)  # grey levels per pixel
        best = step.shape[1] - 1 - np.argmax(big[:, ::-1], axis=1)  # the outermost
        strong = big.any(axis=1)
        found = pts[np.arange(len(best)), best][strong]
        line = line_from_points(found.astype(np.float64)) if len(found) >= 6 else None
        unit = along / max(float(np.linalg.norm(along)), 1e-6)
        # a side moves outwards roughly parallel to itself; anything else is another edge
        if line is None or abs(float(np.dot(line[0], unit))) < SNAP_MIN_COS:
            lines.append((unit, a))
        else:
            lines.append(line)
    snapped = quad_from_lines(lines).astype(np.float32)
    area, old = abs(cv2.contourArea(snapped)), abs(cv2.contourArea(quad.astype(np.float32)))
    if not (0.9 * old <= area <= 2.0 * old) or not _film_shaped(snapped):
        return quad.astype(np.float32)
    return snapped


def _film_shaped(quad: np.ndarray) -> bool:
    """A film's sides keep the ratios of film sizes; a strip of texture (part of a film
    running out of the frame, a ruler, text) does not."""
    tl, tr, br, bl = quad.astype(np.float64)
    width = float(np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    height = float(np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    ratio = width / max(height, 1e-6)
    return TEXTURE_ASPECT[0] <= ratio <= TEXTURE_ASPECT[1]
