"""Photo of a film on the lightbox -> the film as the model expects it, with a quality verdict.

Steps (``rectify``):

1. **Lightbox model** on a copy with a long side of 640 px, in linear light (inverse sRGB):
   the rig reference's flat field scaled to this photo's exposure, or, without one, a robust
   smooth polynomial surface fitted to the visible lightbox. ``T = L / L_lightbox`` is the
   transmittance: ~1 on the lightbox, ~0.55-0.75 on the clear film margin, lower inside.
2. **Film quad, coarse**: the largest rectangular region with ``T`` below the lightbox level
   inside the lit panel; four robust line fits to its outline (a clip or fingers on an edge
   are outliers).
3. **Refinement at full resolution**: along short profiles across each side, the first
   crossing (from the outside in) of the level half-way between lightbox and clear film gives
   the film edge to a fraction of a pixel; robust line fits; corners are line intersections.
4. **Warp** to the canonical view (aspect from the quad), **density**
   ``D = -log10(I / I_lightbox)``, crop the clear margins, map density linearly to grey with
   robust percentiles (low density = bone = bright).
5. **Quality gate**: no film, cut off, blurred, glare, under/over-exposed, not an X-ray.

Orientation is what the camera sees: the film is clipped upright, the top of the photo is the
top of the film; nothing is rotated by content.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from kiosk.errors import ImageError, ModelError
from kiosk.rig import RigReference, fit_smooth_surface, srgb_lut_linear

logger = logging.getLogger(__name__)

WORK_LONG_SIDE_PX = 480  # detection resolution
FIT_LONG_SIDE_PX = 112  # resolution of the smooth lightbox model
OUTPUT_LONG_SIDE_PX = 1024  # cap on the rectified film's long side
LIGHTBOX_FIT_DEGREES = (2, 4)  # smooth models of the box tried without a reference
_FILM_T = 0.83  # transmittance below which a lit pixel is "film" (clear film is <= ~0.75)
_LIT_IN_REFERENCE = 0.3  # flat-field level (99th pct = 1) above which the box is lit
_MIN_FILM_AREA = 0.04  # of the frame
_MIN_FILL = 0.80  # component area / fitted quad area: a film is a filled quadrilateral
_BORDER_PX = 2  # at work resolution: touching the frame means cut off
_MIN_SIDE_FRACTION = 0.3  # of a side's profiles showing a lightbox -> film edge
_SHARP_MAX = 0.0045  # edge blur sigma / film diagonal above which the photo is "blurred"
_GLARE_MAX = 0.02  # fraction of the film interior brighter than clear film
_GLARE_RING_T = 1.15  # lightbox brighter than its model by this factor: a reflection
_GLARE_RING_MAX = 0.05  # fraction of the lightbox ring around the film showing glare
_CLIPPED_MAX = 0.01  # fraction of the film interior at the sensor's ceiling
_DARK_LIGHTBOX = 0.06  # linear lightbox level below which the photo is under-exposed
_COLOURFUL_MAX = 12.0  # Hasler-Suesstrunk colourfulness of a (white-balanced) film
METHODS = ("auto", "classical", "learned", "combined")
# what "auto" means: the best method on the benchmark in docs/rectify.md
AUTO_METHOD = "classical"
LOCALISER_MANIFEST = Path(__file__).resolve().parents[1] / "models" / "film-localiser.json"

_LUT = srgb_lut_linear()
_LOG_LUT = np.log10(np.maximum(_LUT, 1e-4)).astype(np.float32)  # log10 of linear value


@dataclass(frozen=True)
class Quality:
    """Verdict on one photo (or digital image): machine flags plus human text."""

    ok: bool
    reason: str | None  # human text for a rejection
    advice: str | None  # what to do about it
    flags: tuple[str, ...]  # machine codes: no_film, cut_off, blurred, glare, ...
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RectifyResult:
    """What ``rectify`` found: the film quad, the rectified film and the verdict."""

    status: Literal["ok", "rejected"]
    corners: np.ndarray | None  # (4, 2) float32 in input pixels, TL TR BR BL
    film: np.ndarray | None  # grey uint8, approximates the digital image (bone bright)
    quality: Quality
    timings_ms: dict[str, float]


# Order matters: the first flag present gives the reason shown to the user.
_MESSAGES: dict[str, tuple[str, str]] = {
    "no_film": (
        "No film found on the lightbox",
        "Clip the film in the middle of the lightbox, fully inside the frame",
    ),
    "cut_off": (
        "The film is cut off by the edge of the picture",
        "Move the film to the middle of the lightbox so all four edges are visible",
    ),
    "overexposed": (
        "The photo is over-exposed: the film's clear parts are pure white",
        "Lower the camera exposure or recalibrate the rig",
    ),
    "underexposed": (
        "The photo is too dark to measure the film",
        "Switch the lightbox on, or raise the camera exposure and recalibrate the rig",
    ),
    "blurred": (
        "The photo is too blurred",
        "Check the camera focus and keep the film still while it is photographed",
    ),
    "glare": (
        "A reflection (glare) lies over the film",
        "Switch off or move the room light reflected in the film, or tilt the film slightly",
    ),
    "not_xray": (
        "This does not look like a chest X-ray film",
        "Use a greyscale chest radiograph",
    ),
    "too_small": (
        "The image is too small to analyse",
        "Use an image at least 128 pixels on its short side",
    ),
    "blank": (
        "The image is blank",
        "Check the file: it has (almost) no contrast",
    ),
}


def _quality(flags: list[str], metrics: dict[str, float]) -> Quality:
    if not flags:
        return Quality(True, None, None, (), metrics)
    reason, advice = _MESSAGES[flags[0]]
    return Quality(False, reason, advice, tuple(flags), metrics)


# --------------------------------------------------------------------------- photometry


def _shrink(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Downscale to ``size_wh``: Gaussian pyramid halvings (cheap, anti-aliased) while more
    than twice too big, then area averaging for the rest."""
    while image.shape[1] >= 2 * size_wh[0] and image.shape[0] >= 2 * size_wh[1]:
        image = cv2.pyrDown(image)
    if (image.shape[1], image.shape[0]) == size_wh:
        return image
    return cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA)


def _linear_luminance(rgb: np.ndarray) -> np.ndarray:
    lin = _LUT[rgb]
    return lin[..., 0] * 0.2126 + lin[..., 1] * 0.7152 + lin[..., 2] * 0.0722


def _colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness of an RGB uint8 image (0 = grey)."""
    f = rgb.reshape(-1, 3).astype(np.float32)
    rg = f[:, 0] - f[:, 1]
    yb = 0.5 * (f[:, 0] + f[:, 1]) - f[:, 2]
    return float(
        math.hypot(float(rg.std()), float(yb.std()))
        + 0.3 * math.hypot(float(rg.mean()), float(yb.mean()))
    )


def _lit_mask(lum: np.ndarray) -> np.ndarray:
    """The lit panel at work resolution without a reference: the convex hull of the largest
    bright region (the panel is convex; the film inside it is a hole that fills)."""
    h, w = lum.shape
    mask = np.zeros((h, w), np.uint8)
    bright = (lum > 0.4 * float(np.percentile(lum, 99.5))).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=4)
    if n <= 1:
        return np.ones((h, w), bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    contours, _ = cv2.findContours(
        (labels == biggest).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    cv2.fillConvexPoly(mask, cv2.convexHull(np.concatenate(contours)), 1)
    return mask.astype(bool)


def _dominant_level(values: np.ndarray) -> float:
    """The most common value among bright pixels: the lightbox, not the (narrower) clear film
    margins nor a glare band, which spread over many levels."""
    if values.size == 0:
        return 1.0
    hist, edges = np.histogram(np.log(np.maximum(values, 1e-6)), bins=60)
    hist = np.convolve(hist, np.ones(3), mode="same")
    peak = int(np.argmax(hist))
    centre = float(np.exp((edges[peak] + edges[peak + 1]) / 2))
    near = values[(values > centre * 0.93) & (values < centre * 1.07)]
    return float(np.median(near)) if near.size else centre


def _lightbox_model(
    lum: np.ndarray, lit: np.ndarray, reference: RigReference | None
) -> tuple[np.ndarray, str]:
    """Linear lightbox luminance at every work pixel, and which model produced it."""
    h, w = lum.shape
    if reference is not None:
        flat = reference.flat_field_at((h, w))
        ratio = (lum / np.maximum(flat, 1e-4))[lit & (flat > 0.2)]
        if ratio.size == 0:
            ratio = (lum / np.maximum(flat, 1e-4)).ravel()
        gain = _dominant_level(ratio[ratio > 0.5 * float(np.percentile(ratio, 99.5))])
        return (flat * gain).astype(np.float32), "reference"
    fs = max(h, w) / FIT_LONG_SIDE_PX
    small = (max(8, round(w / fs)), max(8, round(h / fs)))
    lum_s = cv2.resize(lum, small, interpolation=cv2.INTER_AREA)
    lit_s = cv2.resize(lit.astype(np.uint8), small, interpolation=cv2.INTER_NEAREST) > 0
    # start from pixels near the panel's most common level (not the brightest: glare), then
    # let the robust fit take in the dimmer and brighter parts of the panel that agree with it
    level = _dominant_level(lum_s[lit_s] if lit_s.any() else lum_s.ravel())
    cand = lit_s & (lum_s > 0.8 * level) & (lum_s < 1.2 * level)
    # a high degree follows strong fall-off but can swing inside the film's hole; keep the
    # degree whose surface explains the most lit pixels as lightbox (|T - 1| < 8%)
    best, best_score = None, -1.0
    for degree in LIGHTBOX_FIT_DEGREES:
        surf = fit_smooth_surface(
            lum_s, cand, degree=degree, iterations=4, keep_ratio=0.9, upper_ratio=1.1
        )
        surf = np.maximum(surf, 0.05 * level)
        score = float((np.abs(lum_s / surf - 1.0) < 0.08)[lit_s].mean())
        if score > best_score + 0.01:
            best, best_score = surf, score
    assert best is not None
    surface = best
    return cv2.resize(surface, (w, h), interpolation=cv2.INTER_LINEAR), "smooth"


# --------------------------------------------------------------------------- geometry


def _line_from_points(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Robust line through points: (unit direction, point). None when too few points."""
    if len(pts) < 4:
        return None
    vx, vy, x0, y0 = cv2.fitLine(pts.astype(np.float32), cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
    d = np.array([vx, vy], np.float64)
    p0 = np.array([x0, y0], np.float64)
    for _ in range(2):
        normal = np.array([-d[1], d[0]])
        res = np.abs((pts - p0) @ normal)
        tol = max(1.0, 3.0 * 1.4826 * float(np.median(res)))
        keep = pts[res <= tol]
        if len(keep) < 4:
            break
        vx, vy, x0, y0 = cv2.fitLine(keep.astype(np.float32), cv2.DIST_L2, 0, 0.01, 0.01).ravel()
        d = np.array([vx, vy], np.float64)
        p0 = np.array([x0, y0], np.float64)
    return d, p0


def _intersect(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    (d1, p1), (d2, p2) = a, b
    m = np.array([d1, -d2]).T
    if abs(np.linalg.det(m)) < 1e-9:
        return (p1 + p2) / 2
    t = np.linalg.solve(m, p2 - p1)
    return p1 + t[0] * d1


def _quad_from_lines(lines: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    top, right, bottom, left = lines
    return np.array(
        [
            _intersect(left, top),
            _intersect(top, right),
            _intersect(right, bottom),
            _intersect(bottom, left),
        ],
        np.float32,
    )


def _dominant_lines(
    pts: np.ndarray, n_lines: int, tol: float, rng: np.random.Generator, iters: int = 200
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """RANSAC: the ``n_lines`` straight runs of an outline with most points within ``tol``.

    Film edges are long straight runs; a clip, fingers or a stray blob are curved or short.
    Returns (direction, point, inlier count) per line, strongest first.
    """
    out: list[tuple[np.ndarray, np.ndarray, int]] = []
    remaining = pts
    for _ in range(n_lines):
        n = len(remaining)
        if n < 20:
            break
        i = rng.integers(0, n, iters)
        j = rng.integers(0, n, iters)
        d = remaining[j] - remaining[i]
        length = np.hypot(d[:, 0], d[:, 1])
        ok = length > 10
        if not ok.any():
            break
        i, d, length = i[ok], d[ok], length[ok]
        normals = np.stack([-d[:, 1], d[:, 0]], axis=1) / length[:, None]
        offsets = (normals * remaining[i]).sum(axis=1)
        dist = np.abs(remaining @ normals.T - offsets[None, :])  # (n, iters)
        counts = (dist < tol).sum(axis=0)
        best = int(np.argmax(counts))
        inl = dist[:, best] < tol
        line = _line_from_points(remaining[inl])
        if line is None:
            break
        dvec, p0 = line
        nrm = np.array([-dvec[1], dvec[0]])
        res = np.abs((remaining - p0) @ nrm)
        inl = res < tol
        out.append((dvec, p0, int(inl.sum())))
        remaining = remaining[res >= 2.5 * tol]
    return out


def _quad_from_contour(contour: np.ndarray) -> np.ndarray | None:
    """A quadrilateral fitted to an outline: the two strongest near-horizontal and the two
    strongest near-vertical straight runs, intersected."""
    pts = contour.reshape(-1, 2).astype(np.float64)
    if len(pts) > 1200:
        pts = pts[:: len(pts) // 600]
    rng = np.random.default_rng(0)  # deterministic: same photo, same corners
    lines = _dominant_lines(pts, 6, 1.5, rng, iters=150)
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
    return _quad_from_lines([(ln[0], ln[1]) for ln in (top, right, bottom, left)])


@dataclass(frozen=True)
class _Detection:
    quad_work: np.ndarray  # (4, 2) at work resolution
    fill: float
    area_fraction: float


def _detect_film(trans: np.ndarray, lit: np.ndarray) -> _Detection | None:
    h, w = trans.shape
    dark = ((trans < _FILM_T) & lit).astype(np.uint8)
    # opening breaks thin bridges (a second film, a finger) between dark regions
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((7, 7), np.uint8))
    _n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=4)
    order = [int(i) + 1 for i in np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:4]]
    big = [i for i in order if stats[i, cv2.CC_STAT_AREA] >= _MIN_FILM_AREA * h * w / 3]
    found: list[_Detection] = []
    for i in big:
        if stats[i, cv2.CC_STAT_AREA] < _MIN_FILM_AREA * h * w:
            continue
        det = _component_quad(labels == i, (h, w))
        if det is not None:
            found.append(det)
    films = [d for d in found if d.fill >= _MIN_FILL]
    # a film wholly in view beats a larger one running out of the frame (a second film)
    inside = [d for d in films if not _quad_cut_off(d.quad_work, (h, w))]
    if inside:
        return inside[0]
    # a glare band across the film splits it in two: try the union of two large pieces
    for a_i, b_i in itertools.combinations(big[:3], 2):
        det = _component_quad((labels == a_i) | (labels == b_i), (h, w))
        if det is not None and det.fill >= 0.85 and not _quad_cut_off(det.quad_work, (h, w)):
            return det
    if films:
        return films[0]
    return found[0] if found else None


def _component_quad(mask: np.ndarray, size: tuple[int, int]) -> _Detection | None:
    """Quadrilateral of one dark region (or a union of two) and how well it fills it."""
    h, w = size
    comp = mask.astype(np.uint8)
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    contour = np.concatenate(contours) if len(contours) > 1 else contours[0]
    quad = _quad_from_contour(contour)
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
    return _Detection(quad, fill, quad_area / (h * w))


def _clear_film_level(trans: np.ndarray, quad: np.ndarray) -> float:
    """Transmittance of the clear film margin: the plateau just inside the quad's sides."""
    centre = quad.mean(axis=0)
    levels = []
    for inset in (1.5, 2.5, 3.5):
        pts = []
        for i in range(4):
            a, b = quad[i], quad[(i + 1) % 4]
            t = np.linspace(0.15, 0.85, 40)[:, None]
            edge = a + (b - a) * t
            to_c = centre - edge
            pts.append(edge + to_c / np.linalg.norm(to_c, axis=1, keepdims=True) * inset)
        p = np.concatenate(pts).astype(np.float32)
        vals = _sample(trans.astype(np.float32), p[:, :1], p[:, 1:])
        levels.append(float(np.median(vals)))
    return float(np.clip(max(levels), 0.4, 0.85))


def _quad_cut_off(quad: np.ndarray, size: tuple[int, int]) -> bool:
    """A film runs out of the frame when a corner is outside it or a whole side lies on a
    frame edge (the frame, not the film's edge, bounds the dark region there)."""
    h, w = size
    tol = _BORDER_PX + 0.5
    x, y = quad[:, 0], quad[:, 1]
    if (x < -0.5).any() or (y < -0.5).any() or (x > w - 0.5).any() or (y > h - 0.5).any():
        return True
    for i in range(4):
        a, b = quad[i], quad[(i + 1) % 4]
        for axis, limit in ((0, 0.0), (0, w - 1.0), (1, 0.0), (1, h - 1.0)):
            if abs(a[axis] - limit) <= tol and abs(b[axis] - limit) <= tol:
                return True
    return False


def _sample(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` at float coordinates (any matching shapes)."""
    return cv2.remap(
        image,
        xs.astype(np.float32),
        ys.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _first_crossing(prof: np.ndarray, level: float) -> np.ndarray:
    """Fractional index where each row first drops below ``level`` (NaN: never, or at once)."""
    below = prof < level
    q = below.argmax(axis=1)
    valid = below.any(axis=1) & (q > 0)
    qi = np.clip(q, 1, prof.shape[1] - 1)
    rows = np.arange(prof.shape[0])
    p0, p1 = prof[rows, qi - 1], prof[rows, qi]
    frac = (p0 - level) / np.maximum(p0 - p1, 1e-6)
    return np.where(valid, qi - 1 + frac, np.nan)


def _refine(
    photo: np.ndarray,
    quad: np.ndarray,
    lightbox_work: np.ndarray,
    work_scale: float,
    clear_t: float,
    half: float = 0.0,
) -> tuple[np.ndarray, float, int, float]:
    """Sub-pixel film edges along profiles across each side, at full resolution.

    Returns (corners, median edge blur sigma in px, number of edge points used, the smallest
    fraction of a side's profiles that saw lightbox -> clear film: low when the film runs off
    the lit panel or the frame there).
    """
    n_pts = 48
    half = max(half, 8.0, 3.0 / work_scale + 4.0)  # px either side of the coarse side
    steps = np.arange(-half, half + 0.01, 0.5)  # outside (+) to inside (-)
    threshold = (1.0 + clear_t) / 2.0
    lines: list[tuple[np.ndarray, np.ndarray]] = []
    widths: list[float] = []
    used = 0
    min_side_fraction = 1.0
    centre = quad.mean(axis=0)
    for i in range(4):
        a, b = quad[i].astype(np.float64), quad[(i + 1) % 4].astype(np.float64)
        d = (b - a) / max(np.linalg.norm(b - a), 1e-6)
        nrm = np.array([d[1], -d[0]])  # outward for a clockwise (on screen) quad
        if (a + b) / 2 @ nrm < centre @ nrm:
            nrm = -nrm
        ts = np.linspace(0.08, 0.92, n_pts)
        base = a[None, :] + (b - a)[None, :] * ts[:, None]  # (n, 2)
        # three parallel profiles 1 px apart along the side, averaged against noise
        offs = np.array([-1.0, 0.0, 1.0])
        pos = (
            base[:, None, None, :]
            + offs[None, :, None, None] * d[None, None, None, :]
            + steps[None, None, ::-1, None] * nrm[None, None, None, :]
        )  # (n, 3, s, 2), ordered outside -> inside
        xs, ys = pos[..., 0].reshape(n_pts * 3, -1), pos[..., 1].reshape(n_pts * 3, -1)
        rgb = _sample(photo, xs, ys)
        lum = _linear_luminance(rgb).reshape(n_pts, 3, -1).mean(axis=1)  # (n, s)
        outer = base + nrm * half
        expected = _sample(
            lightbox_work,
            (outer[:, 0:1] + 0.5) * work_scale - 0.5,
            (outer[:, 1:2] + 0.5) * work_scale - 0.5,
        ).ravel()
        k = max(2, len(steps) // 6)
        out_level = np.median(lum[:, :k], axis=1)
        ok = (out_level >= 0.6 * expected) & (out_level > 1e-4)  # not occluded, on the panel
        prof = lum / np.maximum(out_level, 1e-4)[:, None]
        mid = _first_crossing(prof, threshold)
        ok &= ~np.isnan(mid)
        # signed distance along the outward normal of the 50% point (samples are 0.5 px apart)
        s_out = steps[-1] - 0.5 * mid[ok]
        edge_pts = base[ok] + nrm[None, :] * s_out[:, None]
        # blur: distance between the 75% and 25% points of the step
        hi = _first_crossing(prof[ok], 1.0 - 0.25 * (1 - clear_t))
        lo = _first_crossing(prof[ok], 1.0 - 0.75 * (1 - clear_t))
        w = (lo - hi) * 0.5
        widths.extend(w[~np.isnan(w)].tolist())
        used += len(edge_pts)
        min_side_fraction = min(min_side_fraction, len(edge_pts) / n_pts)
        line = _line_from_points(edge_pts) if len(edge_pts) >= 8 else None
        if line is None:
            line = (d, a)  # keep the coarse side
        lines.append(line)
    corners = _quad_from_lines(lines)
    # 25-75% width of a Gaussian-blurred step is 1.35 sigma
    sigma = float(np.median(widths)) / 1.349 if widths else float("nan")
    return corners, sigma, used, min_side_fraction


# --------------------------------------------------------------------------- film


def _warp_film(
    photo: np.ndarray, corners: np.ndarray, log_lightbox_work: np.ndarray, work_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical view of the film: (grey uint8 in camera encoding, log10 lightbox luminance).

    The grey photo is the sRGB-encoded luminance of a (near-neutral) film; the lightbox model
    is warped with the same geometry so that the film's density is a difference of logs.
    """
    tl, tr, br, bl = corners.astype(np.float64)
    fw = float(np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    fh = float(np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    s = min(1.0, OUTPUT_LONG_SIDE_PX / max(fw, fh))
    ow, oh = max(16, round(fw * s)), max(16, round(fh * s))
    x0 = max(0, int(np.floor(corners[:, 0].min())) - 2)
    y0 = max(0, int(np.floor(corners[:, 1].min())) - 2)
    x1 = min(photo.shape[1], int(np.ceil(corners[:, 0].max())) + 3)
    y1 = min(photo.shape[0], int(np.ceil(corners[:, 1].max())) + 3)
    roi = photo[y0:y1, x0:x1]
    src_corners = (corners - [x0, y0]).astype(np.float32)
    if s < 0.66:
        # shrink the film's bounding box first so the perspective warp does not alias
        f = s * 1.25
        rw, rh = max(2, round((x1 - x0) * f)), max(2, round((y1 - y0) * f))
        roi = _shrink(roi, (rw, rh))
    src_img = cv2.cvtColor(roi, cv2.COLOR_RGB2GRAY)
    if s < 0.66:
        fx, fy = rw / (x1 - x0), rh / (y1 - y0)
        src_corners = ((src_corners + 0.5) * [fx, fy] - 0.5).astype(np.float32)
    dst = np.array([[0, 0], [ow, 0], [ow, oh], [0, oh]], np.float32) - 0.5
    m_src = cv2.getPerspectiveTransform(src_corners, dst)
    film = cv2.warpPerspective(src_img, m_src, (ow, oh), flags=cv2.INTER_LINEAR)
    m_full = cv2.getPerspectiveTransform(corners.astype(np.float32), dst)
    off = 0.5 / work_scale - 0.5
    to_full = np.array([[1 / work_scale, 0, off], [0, 1 / work_scale, off], [0, 0, 1]])
    lb = cv2.warpPerspective(
        log_lightbox_work,
        m_full @ to_full,
        (ow, oh),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return film, lb


def _crop_margins(density: np.ndarray, base_d: float) -> tuple[int, int, int, int]:
    """Rows/columns of clear film (density near base+fog) at each side: (top, bottom, left,
    right) counts to cut. A row is margin when most of it is clear film."""
    h, w = density.shape
    clear = density < base_d + 0.12
    row_frac = clear[:, w // 10 : w - w // 10].mean(axis=1)
    col_frac = clear[h // 10 : h - h // 10, :].mean(axis=0)

    def run(frac: np.ndarray, limit: int) -> int:
        k = 0
        while k < limit and frac[k] > 0.7:
            k += 1
        return k

    top = run(row_frac, h // 5)
    bottom = run(row_frac[::-1], h // 5)
    left = run(col_frac, w // 5)
    right = run(col_frac[::-1], w // 5)
    # a pixel more: the edge of the image area is blurred into the margin
    pad = max(1, round(0.004 * max(h, w)))
    return (
        top + pad if top else 0,
        bottom + pad if bottom else 0,
        left + pad if left else 0,
        right + pad if right else 0,
    )


# --------------------------------------------------------------------------- public API


def rectify(
    photo: np.ndarray, reference: RigReference | None = None, *, method: str = "auto"
) -> RectifyResult:
    """Find the film in a lightbox photo (RGB uint8), rectify it and judge its quality.

    ``reference`` (the empty lightbox at this exposure) makes the density measurement exact;
    without it the lightbox is estimated from what is visible around the film.
    ``method``: "classical" (lightbox model + dark region + line fits), "learned" (the int8
    localiser's mask), "combined" (classical; the localiser's quad when the classical detector
    finds nothing) or "auto" (``AUTO_METHOD``, the best on the benchmark). Every method
    refines the corners at full resolution with the same edge profiles.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown rectify method {method!r}; use one of {', '.join(METHODS)}")
    if method == "auto":
        method = AUTO_METHOD if AUTO_METHOD == "classical" or _localiser() else "classical"
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise ImageError(
            f"Expected an RGB uint8 photo (H, W, 3), got {photo.dtype} {photo.shape}",
            "Decode the file with kiosk.imageio before calling rectify",
        )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    H, W = photo.shape[:2]
    if reference is not None:
        rh, rw = reference.image_size
        if abs(rh / rw - H / W) > 0.02:
            logger.warning(
                "Rig reference is %dx%d but the photo is %dx%d: ignoring the reference",
                rw,
                rh,
                W,
                H,
            )
            reference = None
    work_scale = WORK_LONG_SIDE_PX / max(H, W)
    ww, wh = max(16, round(W * work_scale)), max(16, round(H * work_scale))
    work_scale_x = ww / W  # exact scale actually used
    small = _shrink(photo, (ww, wh))
    lum = _linear_luminance(small)
    if reference is not None:
        lit = reference.flat_field_at((wh, ww)) > _LIT_IN_REFERENCE
    else:
        lit = _lit_mask(lum)
    lightbox, model_kind = _lightbox_model(lum, lit, reference)
    trans = lum / np.maximum(lightbox, 1e-5)
    det = _detect_film(trans, lit) if method != "learned" else None
    learned: _Detection | None = None
    if method in ("learned", "combined"):
        model = _localiser()
        if model is None:
            raise ModelError(
                f"The film localiser {LOCALISER_MANIFEST} is not installed",
                "Use rectify method 'classical', or train it with kiosk.localiser_train",
            )
        learned = _learned_detection(model, photo, (wh, ww))
        metrics_learned = 1.0
    else:
        metrics_learned = 0.0
    learned_half = 0.0
    if learned is not None and (det is None or det.fill < _MIN_FILL):
        # the classical detector found nothing: take the localiser's quad
        det = learned
        learned_half = 1.5 * W / _LOCALISER_MASK_W + 4.0
    timings["detect_ms"] = (time.perf_counter() - t0) * 1000
    lit_sub = lit[::3, ::3]
    box_px = lit_sub & (np.abs(trans[::3, ::3] - 1.0) < 0.1)
    lum_sub = lum[::3, ::3]
    lightbox_level = float(np.median(lum_sub[box_px])) if box_px.any() else float(lum_sub.max())
    clipped_lb = (
        float((small[::3, ::3][lit_sub].max(axis=-1) >= 250).mean()) if lit_sub.any() else 0.0
    )
    metrics: dict[str, float] = {
        "lightbox_linear": lightbox_level,
        "lightbox_clipped_fraction": clipped_lb,
        "reference_used": 1.0 if model_kind == "reference" else 0.0,
        "localiser_used": metrics_learned,
    }
    if det is None or det.fill < _MIN_FILL:
        none_flags = ["no_film"]
        if lightbox_level < _DARK_LIGHTBOX:
            none_flags = ["underexposed", "no_film"]
        metrics["film_area_fraction"] = 0.0 if det is None else det.area_fraction
        timings["total_ms"] = (time.perf_counter() - t0) * 1000
        return RectifyResult("rejected", None, None, _quality(none_flags, metrics), timings)
    # coarse quad in full-resolution pixels
    coarse = ((det.quad_work + 0.5) / work_scale_x - 0.5).astype(np.float32)
    clear_t = _clear_film_level(trans, det.quad_work)
    metrics["film_area_fraction"] = det.area_fraction
    metrics["clear_film_transmittance"] = clear_t
    t1 = time.perf_counter()
    cut_off = _quad_cut_off(det.quad_work, (wh, ww))
    if cut_off:
        corners = coarse
        sigma, used = float("nan"), 0
    else:
        corners, sigma, used, side_fraction = _refine(
            photo, coarse, lightbox, work_scale_x, clear_t, learned_half
        )
        metrics["edge_side_min_fraction"] = side_fraction
        if np.abs(corners - coarse).max() > max(4.0 / work_scale_x + 4, 2 * learned_half):
            logger.debug("Refinement moved a corner too far; keeping the coarse quad")
            corners = coarse
        cut_off = side_fraction < _MIN_SIDE_FRACTION or bool(
            (corners[:, 0] < 0).any()
            or (corners[:, 1] < 0).any()
            or (corners[:, 0] > W - 1).any()
            or (corners[:, 1] > H - 1).any()
        )
    timings["refine_ms"] = (time.perf_counter() - t1) * 1000
    diag = float(np.hypot(*(corners[2] - corners[0])))
    metrics["edge_points"] = float(used)
    metrics["edge_sigma_px"] = sigma
    metrics["sharpness"] = float(diag / sigma) if not math.isnan(sigma) and sigma > 0 else 0.0
    if cut_off:
        metrics["edge_sigma_px"] = 0.0
        timings["total_ms"] = (time.perf_counter() - t0) * 1000
        return RectifyResult("rejected", corners, None, _quality(["cut_off"], metrics), timings)
    t2 = time.perf_counter()
    log_lb_work = np.log10(np.maximum(lightbox, 1e-5)).astype(np.float32)
    film_u8, log_lb = _warp_film(photo, corners, log_lb_work, work_scale_x)
    timings["warp_ms"] = (time.perf_counter() - t2) * 1000
    t3 = time.perf_counter()
    # D = log10(I_lightbox) - log10(I): a table lookup plus a smooth field
    density = log_lb - np.take(_LOG_LUT, film_u8)
    t_film = np.power(np.float32(10.0), -density[::2, ::2])
    base_d = -math.log10(clear_t)
    top, bottom, left, right = _crop_margins(density[::2, ::2], base_d)
    top, bottom, left, right = 2 * top, 2 * bottom, 2 * left, 2 * right
    fh, fw = density.shape
    dens = density[top : fh - bottom, left : fw - right]
    film_c = film_u8[top : fh - bottom, left : fw - right]
    t_c = t_film[top // 2 : (fh - bottom) // 2, left // 2 : (fw - right) // 2]
    if dens.size < 64:
        dens, film_c, t_c = density, film_u8, t_film
    d_lo, d_hi = (float(v) for v in np.percentile(dens[::3, ::3], [0.5, 99.5]))
    grey = np.clip((d_hi - dens) * (255.0 / max(d_hi - d_lo, 1e-3)) + 0.5, 0, 255)
    grey = grey.astype(np.uint8)
    timings["photometry_ms"] = (time.perf_counter() - t3) * 1000
    # ---- quality (statistics on a subsample of the central film)
    ch, cw = dens.shape
    core = (slice(ch // 8, ch - ch // 8, 2), slice(cw // 8, cw - cw // 8, 2))
    th, tw = t_c.shape
    core_t = (slice(th // 8, th - th // 8), slice(tw // 8, tw - tw // 8))
    glare_fraction = float((t_c[core_t] > clear_t * 1.08).mean())
    clipped = float((film_c[core] >= 250).mean())
    # colour: from the work-resolution copy, inside the film, white-balanced on the lightbox
    film_w = np.zeros((wh, ww), np.uint8)
    quad_w = (corners + 0.5) * work_scale_x - 0.5
    cv2.fillConvexPoly(film_w, np.round(quad_w).astype(np.int32), 1)
    inner = cv2.erode(film_w, np.ones((9, 9), np.uint8)) > 0
    # glare is additive and spreads beyond the film: look for it on the lightbox around it
    ring = (cv2.dilate(film_w, np.ones((31, 31), np.uint8)) > 0) & ~(
        cv2.dilate(film_w, np.ones((7, 7), np.uint8)) > 0
    )
    ring &= lit
    glare_ring = float((trans[ring] > _GLARE_RING_T).mean()) if ring.any() else 0.0
    sub = (slice(None, None, 2), slice(None, None, 2))
    lin_small = _LUT[small[sub]]
    around = (lit & (film_w == 0) & (np.abs(trans - 1.0) < 0.1))[sub]
    within = inner[sub]
    lb_rgb = np.median(lin_small[around], axis=0) if around.any() else np.ones(3)
    wb = np.clip(lin_small[within] / np.maximum(lb_rgb, 1e-4) * lb_rgb.mean(), 0, 1)
    wb_srgb = (np.power(wb, 1 / 2.2) * 255).astype(np.uint8)
    metrics.update(
        {
            "glare_fraction": glare_fraction,
            "glare_ring_fraction": glare_ring,
            "clipped_fraction": clipped,
            "contrast": d_hi - d_lo,
            "density_min": d_lo,
            "density_max": d_hi,
            "colourfulness": _colourfulness(wb_srgb) if wb_srgb.size else 0.0,
            "edge_blur_fraction": 0.0 if math.isnan(sigma) else sigma / diag,
        }
    )
    flags: list[str] = []
    if clipped > _CLIPPED_MAX or clipped_lb > 0.5:
        flags.append("overexposed")
    if lightbox_level < _DARK_LIGHTBOX:
        flags.append("underexposed")
    if not math.isnan(sigma) and sigma / diag > _SHARP_MAX:
        flags.append("blurred")
    if glare_fraction > _GLARE_MAX or glare_ring > _GLARE_RING_MAX:
        flags.append("glare")
    if metrics["colourfulness"] > _COLOURFUL_MAX or d_hi - d_lo < 0.3:
        flags.append("not_xray")
    quality = _quality(flags, metrics)
    timings["total_ms"] = (time.perf_counter() - t0) * 1000
    status: Literal["ok", "rejected"] = "ok" if quality.ok else "rejected"
    return RectifyResult(status, corners.astype(np.float32), grey, quality, timings)


_LOCALISER_MASK_W = 128  # width of the localiser's output mask


@functools.lru_cache(maxsize=1)
def _localiser() -> Any:
    """The int8 film localiser (kiosk.model.runtime.TFLiteModel), or None if not shipped."""
    if not LOCALISER_MANIFEST.is_file():
        return None
    from kiosk.model.runtime import TFLiteModel

    return TFLiteModel.from_manifest(LOCALISER_MANIFEST, threads=2)


def _learned_detection(
    model: Any, photo: np.ndarray, work_hw: tuple[int, int]
) -> _Detection | None:
    """Film quad (work-resolution pixels) from the localiser's mask."""
    spec = model.manifest.input
    small = _shrink(photo, (spec.width, spec.height)).astype(np.float32)
    tensor = (small - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    prob = model.run(tensor[None])["mask"][0, ..., 0]
    mh, mw = prob.shape
    mask = (prob > 0.5).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    if n <= 1:
        return None
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[biggest, cv2.CC_STAT_AREA] < _MIN_FILM_AREA * mh * mw:
        return None
    det = _component_quad(labels == biggest, (mh, mw))
    if det is None:
        return None
    wh, ww = work_hw
    quad = (det.quad_work + 0.5) * np.array([ww / mw, wh / mh], np.float32) - 0.5
    return _Detection(quad.astype(np.float32), det.fill, det.area_fraction)


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
        metrics["colourfulness"] = _colourfulness(rgb[:: max(1, h // 256), :: max(1, w // 256)])
    aspect = max(h, w) / max(1, min(h, w))
    metrics["aspect"] = aspect
    if "blank" not in flags and (
        metrics["colourfulness"] > _COLOURFUL_MAX or p99 - p1 < 40 or aspect > 2.5
    ):
        flags.append("not_xray")
    return _quality(flags, metrics)


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
