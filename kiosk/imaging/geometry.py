"""Quadrilaterals in image pixels: corner order, lines, intersections, overlap.

Corners are always TL, TR, BR, BL: clockwise from top-left in image axes (x right, y down).

What this module does not do: find quads in images (rectify and capture do).
"""

from __future__ import annotations

import cv2
import numpy as np


def order_corners(pts: np.ndarray) -> np.ndarray:
    """Four points -> TL, TR, BR, BL (clockwise from top-left in image axes)."""
    pts = np.asarray(pts, np.float32).reshape(4, 2)
    c = pts.mean(axis=0)
    ang = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0])
    pts = pts[np.argsort(ang)]  # clockwise on screen starting near -pi (left)
    start = int(np.argmin(pts.sum(axis=1)))  # TL has the smallest x + y
    return np.roll(pts, -start, axis=0).astype(np.float32)


def line_from_points(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
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


def side_axes(a: np.ndarray, b: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unit direction from ``a`` to ``b`` and the unit normal pointing away from
    ``centre`` (outward from the quad whose side ``a``-``b`` is)."""
    d = (b - a) / max(np.linalg.norm(b - a), 1e-6)
    nrm = np.array([d[1], -d[0]])  # outward for a clockwise (on screen) quad
    if (a + b) / 2 @ nrm < centre @ nrm:
        nrm = -nrm
    return d, nrm


def intersect_lines(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    (d1, p1), (d2, p2) = a, b
    m = np.array([d1, -d2]).T
    if abs(np.linalg.det(m)) < 1e-9:
        return (p1 + p2) / 2
    t = np.linalg.solve(m, p2 - p1)
    return p1 + t[0] * d1


def quad_from_lines(lines: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    top, right, bottom, left = lines
    return np.array(
        [
            intersect_lines(left, top),
            intersect_lines(top, right),
            intersect_lines(right, bottom),
            intersect_lines(bottom, left),
        ],
        np.float32,
    )


def quad_iou(a: np.ndarray, b: np.ndarray, size: tuple[int, int]) -> float:
    """Intersection over union of two quadrilaterals rasterised at 1/8 px precision."""
    h, w = size
    pad = 8
    ma = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
    mb = np.zeros_like(ma)
    for quad, mask in ((a, ma), (b, mb)):
        pts = np.round((np.asarray(quad, np.float64) + pad) * 8).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, shift=3)
    inter = int(np.count_nonzero(ma & mb))
    union = int(np.count_nonzero(ma | mb))
    return inter / union if union else 0.0
