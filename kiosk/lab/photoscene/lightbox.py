"""The lightbox: panel (tubes, fall-off, tint), housing and wall, and its plane canvas."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from kiosk.lab.photoscene.spec import SceneSpec

_PANEL_REFLECTANCE = 0.7  # white acrylic diffuser


def _tint(kelvin: float) -> np.ndarray:
    """Linear RGB gains (G = 1) of a black body (Tanner Helland's fit, then linearised)."""
    t = kelvin / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = (
        99.4708025861 * math.log(t) - 161.1195681661
        if t <= 66
        else 288.1221695283 * (t - 60) ** -0.0755148492
    )
    b = 255.0 if t >= 66 else 138.5177312231 * math.log(t - 10) - 305.0447927307
    rgb = np.clip(np.array([r, g, b]), 1.0, 255.0) / 255.0
    lin = rgb**2.2
    return (lin / lin[1]).astype(np.float64)


def _coverage_1d(centres: np.ndarray, half: float, lo: float, hi: float) -> np.ndarray:
    """Fraction of each pixel [c - half, c + half] covered by the interval [lo, hi]."""
    a = np.maximum(centres - half, lo)
    b = np.minimum(centres + half, hi)
    return np.clip((b - a) / (2 * half), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class _Canvas:
    x0: float  # plane cm of the canvas' left edge
    y0: float
    res: float  # px per cm
    nw: int
    nh: int

    def to_plane(self) -> np.ndarray:
        r = self.res
        return np.array(
            [[1 / r, 0.0, self.x0 + 0.5 / r], [0.0, 1 / r, self.y0 + 0.5 / r], [0, 0, 1]]
        )

    def px(self, pts: np.ndarray) -> np.ndarray:
        return (np.asarray(pts, np.float64) - [self.x0, self.y0]) * self.res - 0.5


def _poly(img: np.ndarray, pts: np.ndarray, value: float) -> None:
    """Fill a convex polygon given in (sub)pixel centres, 1/16 px precision."""
    cv2.fillConvexPoly(img, np.round(pts * 16).astype(np.int32), float(value), cv2.LINE_8, 4)


def _disc(img: np.ndarray, centre: np.ndarray, radius: float, value: float) -> None:
    c = (round(float(centre[0]) * 16), round(float(centre[1]) * 16))
    cv2.circle(img, c, max(1, round(radius * 16)), float(value), -1, cv2.LINE_8, 4)


def _lightbox_rects(
    spec: SceneSpec,
) -> tuple[list[tuple[float, float, float, float]], tuple[float, ...]]:
    total = spec.bays * spec.bay_w_cm + (spec.bays - 1) * spec.divider_cm
    bays = []
    for i in range(spec.bays):
        x0 = -total / 2 + i * (spec.bay_w_cm + spec.divider_cm)
        bays.append((x0, -spec.bay_h_cm / 2, x0 + spec.bay_w_cm, spec.bay_h_cm / 2))
    hs = spec.housing_cm
    housing = (-total / 2 - hs, -spec.bay_h_cm / 2 - hs, total / 2 + hs, spec.bay_h_cm / 2 + hs)
    return bays, housing


def _box_slices(cx: np.ndarray, cy: np.ndarray) -> tuple[slice, slice] | None:
    """Row/column slices of the non-zero part of separable 1-D coverages."""
    ix, iy = np.nonzero(cx)[0], np.nonzero(cy)[0]
    if len(ix) == 0 or len(iy) == 0:
        return None
    return slice(int(iy[0]), int(iy[-1]) + 1), slice(int(ix[0]), int(ix[-1]) + 1)


def _lightbox_canvas(
    spec: SceneSpec, cv: _Canvas
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Panel luminance, reflectance under room light, overlay transmission, overlay reflectance.

    Everything is separable per rectangle (exact pixel coverage of the edges), so it is built
    from 1-D profiles with outer products on the covered slice only.
    """
    xs = cv.x0 + (np.arange(cv.nw) + 0.5) / cv.res
    ys = cv.y0 + (np.arange(cv.nh) + 0.5) / cv.res
    half = 0.5 / cv.res
    bays, housing = _lightbox_rects(spec)
    lum = np.zeros((cv.nh, cv.nw), np.float32)
    refl = np.full((cv.nh, cv.nw), spec.wall_reflectance, np.float32)
    hx = _coverage_1d(xs, half, housing[0], housing[2])
    hy = _coverage_1d(ys, half, housing[1], housing[3])
    sl = _box_slices(hx, hy)
    if sl is not None:
        refl[sl] += np.outer(
            hy[sl[0]] * np.float32(spec.housing_reflectance - spec.wall_reflectance), hx[sl[1]]
        )
    for i, (bx0, by0, bx1, by1) in enumerate(bays):
        cx = _coverage_1d(xs, half, bx0, bx1)
        cy = _coverage_1d(ys, half, by0, by1)
        sl = _box_slices(cx, cy)
        if sl is None:
            continue
        bu = (xs[sl[1]] - (bx0 + bx1) / 2) / ((bx1 - bx0) / 2)
        bv = (ys[sl[0]] - (by0 + by1) / 2) / ((by1 - by0) / 2)
        # Vertical tubes behind the diffuser: Gaussian stripes across x, mean-normalised.
        pitch = 2.0 / spec.tubes
        tube_u = -1.0 + pitch * (np.arange(spec.tubes) + 0.5 + spec.tube_phase)
        stripes = np.exp(-0.5 * ((bu[:, None] - tube_u[None, :]) / (0.3 * pitch)) ** 2).sum(axis=1)
        band = 1.0 + spec.banding * (stripes / max(float(stripes.mean()), 1e-6) - 1.0)
        # Light escapes less near the walls of the box: smooth fall-off to the edges.
        gain = spec.panel_cd_m2 * (spec.bay2_gain if i == 1 else 1.0)
        fx = ((1.0 - spec.falloff * np.abs(bu) ** 3) * band * cx[sl[1]]).astype(np.float32)
        fy = (gain * (1.0 - spec.falloff * np.abs(bv) ** 3) * cy[sl[0]]).astype(np.float32)
        lum[sl] += np.outer(fy, fx)
        refl[sl] += np.outer(
            cy[sl[0]] * np.float32(_PANEL_REFLECTANCE - spec.housing_reflectance), cx[sl[1]]
        )
    tau = np.ones((cv.nh, cv.nw), np.float32)
    orefl = np.zeros((cv.nh, cv.nw), np.float32)
    return lum, refl, tau, orefl
