"""Corners to a fraction of a pixel: edge profiles across each side at full resolution.

Along short profiles across each side, the first crossing (from the outside in) of the level
half-way between lightbox and clear film gives the film edge; robust line fits; corners are
line intersections.

What this module does not do: decide whether there is a film (``locate``).
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.imaging.colour import linear_luminance
from kiosk.imaging.geometry import line_from_points, quad_from_lines, side_axes

MIN_SIDE_FRACTION = 0.3  # of a side's profiles showing a lightbox -> film edge


def sample_bilinear(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` at float coordinates (any matching shapes)."""
    return cv2.remap(
        image,
        xs.astype(np.float32),
        ys.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def sample_across(
    photo: np.ndarray,
    base: np.ndarray,
    d: np.ndarray,
    nrm: np.ndarray,
    offs: np.ndarray,
    steps: np.ndarray,
) -> np.ndarray:
    """Profiles across a side: ``photo`` sampled at ``base + off * d + step * nrm`` for each
    base point (n, 2), offset along the side and step across it; rows ordered base point
    then offset, (n * len(offs), len(steps)) plus the photo's channels."""
    pos = (
        base[:, None, None, :]
        + offs[None, :, None, None] * d[None, None, None, :]
        + steps[None, None, :, None] * nrm[None, None, None, :]
    )
    n_s = len(steps)
    return sample_bilinear(photo, pos[..., 0].reshape(-1, n_s), pos[..., 1].reshape(-1, n_s))


def first_crossing(prof: np.ndarray, level: float) -> np.ndarray:
    """Fractional index where each row first drops below ``level`` (NaN: never, or at once)."""
    below = prof < level
    q = below.argmax(axis=1)
    valid = below.any(axis=1) & (q > 0)
    qi = np.clip(q, 1, prof.shape[1] - 1)
    rows = np.arange(prof.shape[0])
    p0, p1 = prof[rows, qi - 1], prof[rows, qi]
    frac = (p0 - level) / np.maximum(p0 - p1, 1e-6)
    return np.where(valid, qi - 1 + frac, np.nan)


def refine_corners(
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
        d, nrm = side_axes(a, b, centre)
        ts = np.linspace(0.08, 0.92, n_pts)
        base = a[None, :] + (b - a)[None, :] * ts[:, None]  # (n, 2)
        # three parallel profiles 1 px apart along the side, averaged against noise; ordered
        # outside -> inside
        rgb = sample_across(photo, base, d, nrm, np.array([-1.0, 0.0, 1.0]), steps[::-1])
        lum = linear_luminance(rgb).reshape(n_pts, 3, -1).mean(axis=1)  # (n, s)
        outer = base + nrm * half
        expected = sample_bilinear(
            lightbox_work,
            (outer[:, 0:1] + 0.5) * work_scale - 0.5,
            (outer[:, 1:2] + 0.5) * work_scale - 0.5,
        ).ravel()
        k = max(2, len(steps) // 6)
        out_level = np.median(lum[:, :k], axis=1)
        ok = (out_level >= 0.6 * expected) & (out_level > 1e-4)  # not occluded, on the panel
        prof = lum / np.maximum(out_level, 1e-4)[:, None]
        mid = first_crossing(prof, threshold)
        ok &= ~np.isnan(mid)
        # signed distance along the outward normal of the 50% point (samples are 0.5 px apart)
        s_out = steps[-1] - 0.5 * mid[ok]
        edge_pts = base[ok] + nrm[None, :] * s_out[:, None]
        # blur: distance between the 75% and 25% points of the step
        hi = first_crossing(prof[ok], 1.0 - 0.25 * (1 - clear_t))
        lo = first_crossing(prof[ok], 1.0 - 0.75 * (1 - clear_t))
        w = (lo - hi) * 0.5
        widths.extend(w[~np.isnan(w)].tolist())
        used += len(edge_pts)
        min_side_fraction = min(min_side_fraction, len(edge_pts) / n_pts)
        line = line_from_points(edge_pts) if len(edge_pts) >= 8 else None
        if line is None:
            line = (d, a)  # keep the coarse side
        lines.append(line)
    corners = quad_from_lines(lines)
    # 25-75% width of a Gaussian-blurred step is 1.35 sigma
    sigma = float(np.median(widths)) / 1.349 if widths else float("nan")
    return corners, sigma, used, min_side_fraction
