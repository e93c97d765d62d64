"""Where is the film? A coarse quad at work resolution, from transmittance or the localiser.

Classical: the largest filled, rectangular region darker than the lightbox inside the lit
panel, with four robust line fits to its outline (a clip or fingers on an edge are outliers).
Learned: the int8 localiser's mask (the model is handed in; this stage loads no model).

What this module does not do: refine corners at full resolution (``refine``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from kiosk.imaging.geometry import line_from_points, quad_from_lines
from kiosk.imaging.resize import shrink
from kiosk.rectify.frame_edge import FRAME_EDGES
from kiosk.rectify.refine import sample_bilinear


class MaskModel(Protocol):
    """The int8 film localiser as the caller hands it in (``kiosk.model.runtime.TFLiteModel``):
    ``manifest.input`` gives the input size and normalisation, ``run`` returns ``{"mask": ...}``."""

    @property
    def manifest(self) -> Any: ...

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]: ...


FILM_T = 0.83  # transmittance below which a lit pixel is "film" (clear film is <= ~0.75)
MIN_FILM_AREA = 0.04  # of the frame
MIN_FILL = 0.80  # component area / fitted quad area: a film is a filled quadrilateral
BORDER_PX = 2  # at work resolution: touching the frame means cut off
LOCALISER_MASK_W = 128  # width of the localiser's output mask
# mask cells along one frame edge that must be film for the film to run out there: a film
# near the edge but inside the frame blurs into at most a cell or two of the edge
MASK_EDGE_RUN = 4
EDGE_GAP_MIN_PX = 3.5  # work px: a quad this far inside an edge its mask touches lies next to it
# bare panel the localiser's mask may bleed onto: flat (5x5 deviation / mean) and bright
PANEL_OF_TOP = 0.85
PANEL_FLAT = 0.03
# of the mask left once bare panel is off, the share the new quad must hold: it is cut
# back to the film, not to a part of it split off by glare
KEPT_INSIDE_MIN = 0.95
RIGHT_ANGLE_TOL_DEG = 15.0  # a film's corners in a photo with <= 10 degrees tilt and roll


def dominant_lines(
    pts: np.ndarray, n_lines: int, tol: float, rng: np.random.Generator, iters: int = 200
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """RANSAC: the ``n_lines`` straight runs of an outline with most points within ``tol``.

    Film edges are long straight runs; a clip, fingers or a stray blob are curved or short.
    Returns (direction, point, inlier count) per line, strongest first.
    """
    out: list[tuple[np.ndarray, np.ndarray, int]] = []
    remaining = pts
    # a short outline (a small film on the localiser's 128-cell mask: about 80 points, its
    # short sides 15 cells) has fewer points left for its last sides, and shorter ones
    span = float(np.ptp(pts, axis=0).max()) if len(pts) else 0.0
    min_left = min(20, max(8, len(pts) // 10))
    min_pair = min(10.0, span / 5)
    for _ in range(n_lines):
        n = len(remaining)
        if n < min_left:
            break
        i = rng.integers(0, n, iters)
        j = rng.integers(0, n, iters)
        d = remaining[j] - remaining[i]
        length = np.hypot(d[:, 0], d[:, 1])
        ok = length > min_pair
        if not ok.any():
            break
        i, d, length = i[ok], d[ok], length[ok]
        normals = np.stack([-d[:, 1], d[:, 0]], axis=1) / length[:, None]
        offsets = (normals * remaining[i]).sum(axis=1)
        dist = np.abs(remaining @ normals.T - offsets[None, :])  # (n, iters)
        counts = (dist < tol).sum(axis=0)
        best = int(np.argmax(counts))
        inl = dist[:, best] < tol
        line = line_from_points(remaining[inl])
        if line is None:
            break
        dvec, p0 = line
        nrm = np.array([-dvec[1], dvec[0]])
        res = np.abs((remaining - p0) @ nrm)
        inl = res < tol
        out.append((dvec, p0, int(inl.sum())))
        remaining = remaining[res >= 2.5 * tol]
    return out


def quad_from_contour(contour: np.ndarray) -> np.ndarray | None:
    """A quadrilateral fitted to an outline: the two strongest near-horizontal and the two
    strongest near-vertical straight runs, intersected."""
    pts = contour.reshape(-1, 2).astype(np.float64)
    if len(pts) > 1200:
        pts = pts[:: len(pts) // 600]
    rng = np.random.default_rng(0)  # deterministic: same photo, same corners
    lines = dominant_lines(pts, 6, 1.5, rng, iters=150)
    horiz = [ln for ln in lines if abs(ln[0][0]) >= abs(ln[0][1])]
    vert = [ln for ln in lines if abs(ln[0][0]) < abs(ln[0][1])]
    if len(horiz) < 2 or len(vert) < 2:
        return None
    horiz = sorted(horiz, key=lambda ln: -ln[2])[:2]
    vert = sorted(vert, key=lambda ln: -ln[2])[:2]
    c = pts.mean(axis=0)

    def at(ln: tuple[np.ndarray, np.ndarray, int], axis: int) -> float:
        # coordinate ``axis`` of the line where it passes the outline's centre
        d, p0, _ = ln
        other = 1 - axis
        t = (c[other] - p0[other]) / d[other] if abs(d[other]) > 1e-9 else 0.0
        return float(p0[axis] + t * d[axis])

    top, bottom = sorted(horiz, key=lambda ln: at(ln, 1))
    left, right = sorted(vert, key=lambda ln: at(ln, 0))
    if abs(at(bottom, 1) - at(top, 1)) < 10 or abs(at(right, 0) - at(left, 0)) < 10:
        return None
    return quad_from_lines([(ln[0], ln[1]) for ln in (top, right, bottom, left)])


@dataclass(frozen=True)
class Detection:
    quad_work: np.ndarray  # (4, 2) at work resolution
    fill: float
    area_fraction: float
    # whether the film runs out of the frame, when the detector knows better than the quad
    # (the localiser's mask touching the frame's edge); None: judge the quad (quad_cut_off)
    cut_off: bool | None = None
    # the localiser's certainty (``mask_crispness``); 1.0 for the classical detectors
    crisp: float = 1.0
    # the longest run of mask cells along a frame edge that made ``cut_off`` true (0: none),
    # and the frame edges (``frame_edge.FRAME_EDGES``) where the mask runs out
    edge_run: int = 0
    out_edges: tuple[str, ...] = ()

    def runs_out(self, work_hw: tuple[int, int]) -> bool:
        """The film runs out of the frame (see ``cut_off``)."""
        return quad_cut_off(self.quad_work, work_hw) if self.cut_off is None else self.cut_off


def detect_film(trans: np.ndarray, lit: np.ndarray) -> Detection | None:
    h, w = trans.shape
    dark = ((trans < FILM_T) & lit).astype(np.uint8)
    # opening breaks thin bridges (a second film, a finger) between dark regions
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((7, 7), np.uint8))
    _n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=4)
    order = [int(i) + 1 for i in np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:4]]
    big = [i for i in order if stats[i, cv2.CC_STAT_AREA] >= MIN_FILM_AREA * h * w / 3]
    found: list[Detection] = []
    for i in big:
        if stats[i, cv2.CC_STAT_AREA] < MIN_FILM_AREA * h * w:
            continue
        det = component_quad(labels == i, (h, w))
        if det is not None:
            found.append(det)
    films = [d for d in found if d.fill >= MIN_FILL]
    # a film wholly in view beats a larger one running out of the frame (a second film)
    inside = [d for d in films if not quad_cut_off(d.quad_work, (h, w))]
    if inside:
        return inside[0]
    # a glare band across the film splits it in two: try the union of two large pieces
    for a_i, b_i in itertools.combinations(big[:3], 2):
        det = component_quad((labels == a_i) | (labels == b_i), (h, w))
        if det is not None and det.fill >= 0.85 and not quad_cut_off(det.quad_work, (h, w)):
            return det
    if films:
        return films[0]
    return found[0] if found else None


def component_quad(mask: np.ndarray, size: tuple[int, int]) -> Detection | None:
    """Quadrilateral of one dark region (or a union of two) and how well it fills it."""
    h, w = size
    comp = mask.astype(np.uint8)
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    contour = np.concatenate(contours) if len(contours) > 1 else contours[0]
    quad = quad_from_contour(contour)
    if quad is None:
        return None
    quad_area = abs(float(cv2.contourArea(quad)))
    area = float(comp.sum())
    # area inside the quad that the component fills (holes from glare do not count against)
    filled = np.zeros_like(comp)
    for c in contours:
        cv2.fillPoly(filled, [c], 1)
    fill = float(filled.sum()) / max(quad_area, 1.0)
    # the outline's fill, tolerating holes (glare) but not a sparse component
    fill = min(fill, area / max(quad_area, 1.0) + 0.2)
    return Detection(quad, fill, quad_area / (h * w))


def clear_film_level(trans: np.ndarray, quad: np.ndarray) -> float:
    """Transmittance of the clear film margin: the plateau just inside the quad's sides."""
    centre = quad.mean(axis=0)
    t = np.linspace(0.15, 0.85, 40)[:, None]
    edge = np.concatenate([quad[i] + (quad[(i + 1) % 4] - quad[i]) * t for i in range(4)])
    to_c = centre - edge
    inward = to_c / np.linalg.norm(to_c, axis=1, keepdims=True)
    # the three insets' points as three rows of one lookup
    p = np.stack([edge + inward * inset for inset in (1.5, 2.5, 3.5)]).astype(np.float32)
    vals = sample_bilinear(np.asarray(trans, np.float32), p[..., 0], p[..., 1])
    return float(np.clip(np.median(vals, axis=1).max(), 0.4, 0.85))


def quad_cut_off(quad: np.ndarray, size: tuple[int, int]) -> bool:
    """A film runs out of the frame when a corner is outside it or a whole side lies on a
    frame edge (the frame, not the film's edge, bounds the dark region there)."""
    h, w = size
    tol = BORDER_PX + 0.5
    x, y = quad[:, 0], quad[:, 1]
    if (x < -0.5).any() or (y < -0.5).any() or (x > w - 0.5).any() or (y > h - 0.5).any():
        return True
    for i in range(4):
        a, b = quad[i], quad[(i + 1) % 4]
        for axis, limit in ((0, 0.0), (0, w - 1.0), (1, 0.0), (1, h - 1.0)):
            if abs(a[axis] - limit) <= tol and abs(b[axis] - limit) <= tol:
                return True
    return False


def mask_crispness(prob: np.ndarray) -> float:
    """Share of the mask's cells away from the film's outline (more than two cells from it)
    that are clearly film or clearly not (p > 0.85 or p < 0.15). A scene like the localiser's
    training gives a crisp mask whatever the film's size; one unlike it, a hesitant grey one."""
    film = (prob > 0.5).astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    outline = cv2.dilate(film, k, iterations=2) != cv2.erode(film, k, iterations=2)
    away = ~outline
    if not away.any():
        return 0.0
    return float(((prob < 0.15) | (prob > 0.85))[away].mean())


def panel_reach(lum: np.ndarray, film: np.ndarray) -> np.ndarray:
    """The cells of the mask grid (``film``'s shape) that show bare panel joined to bare
    panel outside ``film``: flat light (local deviation <= ``PANEL_FLAT``) at least
    ``PANEL_OF_TOP`` of the brightest, over half of a cell. ``lum`` is the work copy's
    linear luminance. A film's clipped mediastinum is flat and bright too, but is walled off
    from the panel by the film's darker edge."""
    mh, mw = film.shape
    top = float(np.percentile(lum[::2, ::2], 99.5))
    mean = cv2.blur(lum, (5, 5))
    sq = cv2.blur(lum * lum, (5, 5))
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    flat = (lum >= PANEL_OF_TOP * top) & (std <= PANEL_FLAT * np.maximum(mean, 1e-6))
    cells = cv2.resize(flat.astype(np.float32), (mw, mh), interpolation=cv2.INTER_AREA) > 0.5
    _n, labels = cv2.connectedComponents(cells.astype(np.uint8), connectivity=4)
    outside = np.unique(labels[cells & ~film])
    return np.isin(labels, outside[outside > 0])


def _mask_region_quad(mask: np.ndarray) -> tuple[np.ndarray, Detection] | None:
    """The mask's largest region (if it is at least ``MIN_FILM_AREA``) and its quad."""
    mh, mw = mask.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    if n <= 1:
        return None
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[biggest, cv2.CC_STAT_AREA] < MIN_FILM_AREA * mh * mw:
        return None
    film = labels == biggest
    det = component_quad(film, (mh, mw))
    return None if det is None else (film, det)


def rectangular(quad: np.ndarray, tol_deg: float = RIGHT_ANGLE_TOL_DEG) -> bool:
    """Every corner of the quad within ``tol_deg`` of a right angle: a film photographed
    with up to 10 degrees of tilt and roll, not a quad fitted to a region cut in two."""
    q = np.asarray(quad, np.float64)
    for i in range(4):
        u = q[i - 1] - q[i]
        v = q[(i + 1) % 4] - q[i]
        c = float(u @ v) / max(float(np.linalg.norm(u) * np.linalg.norm(v)), 1e-9)
        if abs(np.degrees(np.arccos(np.clip(c, -1, 1))) - 90.0) > tol_deg:
            return False
    return True


def _inside_share(quad: np.ndarray, cells: np.ndarray) -> float:
    """The share of ``cells`` (a boolean mask grid) whose centres lie inside ``quad``."""
    drawn = np.zeros(cells.shape, np.uint8)
    cv2.fillPoly(drawn, [np.round(quad * 8).astype(np.int32)], 1, cv2.LINE_8, shift=3)
    return float((drawn > 0)[cells].mean()) if cells.any() else 0.0


def learned_detection(
    model: Any, photo: np.ndarray, work_hw: tuple[int, int], lum: np.ndarray | None = None
) -> Detection | None:
    """Film quad (work-resolution pixels) from the localiser's mask; the film runs out of the
    frame when its mask covers ``MASK_EDGE_RUN`` or more cells along an edge of the frame,
    unless the quad fitted to the mask keeps ``EDGE_GAP_MIN_PX`` to two cells from that edge:
    a film lying within a mask cell of the edge (the cells along it are partly film), whole.
    A quad farther from an edge its mask touches is not the whole film (the mask goes on to
    the edge beyond it): that runs out too. With the work copy's linear luminance ``lum``,
    bare panel the mask bled onto (``panel_reach``) is left out of the quad."""
    spec = model.manifest.input
    small = shrink(photo, (spec.width, spec.height)).astype(np.float32)
    tensor = (small - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    prob = model.run(tensor[None])["mask"][0, ..., 0]
    mh, mw = prob.shape
    mask = (prob > 0.5).astype(np.uint8)
    found = _mask_region_quad(mask)
    if found is None:
        return None
    film, det = found
    wh, ww = work_hw
    to_work = np.array([ww / mw, wh / mh], np.float32)
    quad = (det.quad_work + 0.5) * to_work - 0.5
    edges = (film[0], film[-1], film[:, 0], film[:, -1])  # top, bottom, left, right
    gaps = (
        float(quad[:, 1].min()),
        float(wh - 1 - quad[:, 1].max()),
        float(quad[:, 0].min()),
        float(ww - 1 - quad[:, 0].max()),
    )
    cell = ww / mw
    out = [
        (name, int(e.sum()))
        for name, e, gap in zip(FRAME_EDGES, edges, gaps, strict=True)
        if int(e.sum()) >= MASK_EDGE_RUN and not EDGE_GAP_MIN_PX <= gap <= 2 * cell
    ]
    out_runs = [run for _, run in out]
    runs_out = bool(out_runs)
    if lum is not None:
        # the mask bleeds onto bare panel next to the film: without it, if what is left is
        # still a filled, right-angled quad holding the rest. Only the quad is taken from
        # it: whether the film runs out of the frame stays the whole mask's answer (above)
        bare = panel_reach(lum, mask > 0) & (mask > 0)
        if bare.any():
            cleaned = cv2.morphologyEx(mask & ~bare, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
            other = _mask_region_quad(cleaned)
            if (
                other is not None
                and other[1].fill >= MIN_FILL
                and rectangular(other[1].quad_work)
                and _inside_share(other[1].quad_work, (mask > 0) & ~bare) >= KEPT_INSIDE_MIN
            ):
                det = other[1]
                quad = (det.quad_work + 0.5) * to_work - 0.5
    crisp = mask_crispness(prob)
    return Detection(
        quad.astype(np.float32),
        det.fill,
        det.area_fraction,
        runs_out,
        crisp,
        max(out_runs, default=0),
        tuple(name for name, _ in out),
    )
