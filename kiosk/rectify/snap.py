"""A coarse quad's sides moved onto the straight edges the photo shows next to them.

The localiser's mask places a film to about half a mask cell (5-6 px at 1280 wide). Where
the film's edge shows in the photo (against the panel, a clipped lightbox, the housing, or a
clear margin against the radiograph), the side is moved onto it: along short profiles across
each side, the steepest step of the photo's brightness (gamma-encoded, so an edge over dark
housing counts as much as one over the panel); a straight line through most profiles' steps,
all of one sign, is the edge. A side whose profiles agree on no such line keeps its place.

Unlike ``refine``, this assumes nothing about the lightbox (no panel model, no clear-film
level): it serves quads placed where the panel model is not trusted.

What this module does not do: find the film (``locate``) or judge it (``gates``).
"""

from __future__ import annotations

import numpy as np

from kiosk.imaging.geometry import quad_from_lines, side_axes
from kiosk.rectify.refine import sample_across

N_PROFILES = 64  # across each side, spread over its middle 84 %
MIN_AGREE = 0.5  # share of a side's profiles whose step lies on the one line
TOL_PX = 1.5  # distance from the line within which a profile's step agrees (px at 1280)
MIN_STEP = 6.0  # grey levels (of 255) the step must rise over 2 px at 1280: not noise
REF_LONG_SIDE = 1280  # the photo size the pixel constants are for; larger photos scale them
MIN_STEP_OF_STRONGEST = 0.5  # the chosen line's median step against the side's strongest


def snap_sides(photo: np.ndarray, quad: np.ndarray, half: float) -> tuple[np.ndarray, int]:
    """``quad`` (TL, TR, BR, BL, frame px) with each side moved onto the straight step edge
    within ``half`` px of it, where the photo shows one; returns the corners and how many
    sides moved. The photo is RGB or grey uint8, at any size."""
    quad = np.asarray(quad, np.float64)
    centre = quad.mean(axis=0)
    # a 12 MP photo shows an edge over proportionally more pixels than a 1280-px one
    scale = max(1.0, max(photo.shape[:2]) / REF_LONG_SIDE)
    steps = np.arange(-half, half + 0.01, 0.5 * scale)  # inside (-) to outside (+)
    lines: list[tuple[np.ndarray, np.ndarray]] = []
    moved = 0
    for i in range(4):
        a, b = quad[i], quad[(i + 1) % 4]
        d, nrm = side_axes(a, b, centre)
        line = _side_edge(photo, a, b, d, nrm, steps, scale)
        if line is None:
            lines.append((d, a))
        else:
            lines.append(line)
            moved += 1
    return quad_from_lines(lines).astype(np.float32), moved


def snap_quad(photo: np.ndarray, quad: np.ndarray, half: float) -> tuple[np.ndarray, int]:
    """``snap_sides``, unless that moves a corner more than ``2 * half`` px or out of the
    photo (two sides snapped onto edges that are not the film's): then ``quad`` unchanged and
    -1 sides moved."""
    h, w = photo.shape[:2]
    snapped, moved = snap_sides(photo, quad, half)
    x, y = snapped[:, 0], snapped[:, 1]
    if (
        float(np.abs(snapped - quad).max()) > 2 * half
        or (x < -0.5).any()
        or (y < -0.5).any()
        or (x > w - 0.5).any()
        or (y > h - 0.5).any()
    ):
        return np.asarray(quad, np.float32), -1
    return snapped, moved


def _side_edge(
    photo: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    d: np.ndarray,
    nrm: np.ndarray,
    steps: np.ndarray,
    scale: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The straight step edge across the side ``a``-``b`` (direction, point), or None."""
    ts = np.linspace(0.08, 0.92, N_PROFILES)
    base = a[None, :] + (b - a)[None, :] * ts[:, None]
    offs = np.array([-scale, 0.0, scale])  # three parallel profiles, averaged against noise
    n_s = len(steps)
    # sampled from the photo as it is (a 12 MP frame is not converted whole)
    vals = sample_across(photo, base, d, nrm, offs, steps).astype(np.float32)
    if vals.ndim == 3:
        vals = vals.mean(axis=2)
    prof = vals.reshape(N_PROFILES, 3, n_s).mean(axis=1)
    # rise outward over 2 px (4 samples; at 1280): positive where it is brighter outside
    grad = np.zeros_like(prof)
    grad[:, 2:-2] = prof[:, 4:] - prof[:, :-4]
    best: tuple[int, np.ndarray, np.ndarray, float] | None = None
    strongest = float(np.abs(grad).max(axis=1).mean())
    for sign in (1.0, -1.0):
        g = sign * grad
        idx = g.argmax(axis=1)
        peak = g[np.arange(N_PROFILES), idx]
        strong = peak >= MIN_STEP
        if strong.sum() < MIN_AGREE * N_PROFILES:
            continue
        # sub-sample peak position (parabola through the peak and its neighbours)
        j = np.clip(idx, 1, n_s - 2)
        rows = np.arange(N_PROFILES)
        g0, g1, g2 = g[rows, j - 1], g[rows, j], g[rows, j + 1]
        den = g0 - 2 * g1 + g2
        frac = np.where(np.abs(den) > 1e-6, 0.5 * (g0 - g2) / np.where(den == 0, 1, den), 0.0)
        s = steps[j] + 0.5 * scale * np.clip(frac, -1, 1)
        t = ts * float(np.linalg.norm(b - a))
        fit = _line_1d(t[strong], s[strong], TOL_PX * scale)
        if fit is None:
            continue
        c0, c1 = fit
        agree = strong & (np.abs(s - (c0 + c1 * t)) <= TOL_PX * scale)
        n_agree = int(agree.sum())
        if n_agree < MIN_AGREE * N_PROFILES:
            continue
        if float(np.median(peak[agree])) < MIN_STEP_OF_STRONGEST * strongest:
            continue
        if best is None or n_agree > best[0]:
            p0 = a + nrm * c0
            p1 = b + nrm * (c0 + c1 * float(np.linalg.norm(b - a)))
            dd = (p1 - p0) / max(float(np.linalg.norm(p1 - p0)), 1e-6)
            best = (n_agree, dd, p0, float(np.median(peak[agree])))
    if best is None:
        return None
    return best[1], best[2]


def _line_1d(t: np.ndarray, s: np.ndarray, tol: float) -> tuple[float, float] | None:
    """s = c0 + c1 t through most points: the pair of points with most agreeing, refitted by
    least squares on those (deterministic: every pair of a thinned set is tried)."""
    n = len(t)
    if n < 4:
        return None
    pick = np.linspace(0, n - 1, min(n, 16)).astype(int)
    ti, si = t[pick], s[pick]
    i, j = np.triu_indices(len(pick), 1)
    dt = ti[j] - ti[i]
    ok = np.abs(dt) > 1e-6
    i, j, dt = i[ok], j[ok], dt[ok]
    c1 = (si[j] - si[i]) / dt
    c0 = si[i] - c1 * ti[i]
    res = np.abs(s[:, None] - (c0[None, :] + c1[None, :] * t[:, None]))
    counts = (res <= tol).sum(axis=0)
    k = int(np.argmax(counts))
    inl = res[:, k] <= tol
    if inl.sum() < 4:
        return None
    c1_fit, c0_fit = np.polyfit(t[inl], s[inl], 1)
    return float(c0_fit), float(c1_fit)
