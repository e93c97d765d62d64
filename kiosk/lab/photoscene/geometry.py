"""Geometry: the pinhole camera's plane -> pixel homography, film rectangles, warping."""

from __future__ import annotations

import math

import cv2
import numpy as np

from kiosk.lab.photoscene.spec import SceneSpec


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _focal_rel(hfov_deg: float, aspect: float) -> float:
    """Focal length in units of the frame height."""
    return (aspect / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)


def _homography_from(pose: dict[str, float], aspect: float, h: int, w: int) -> np.ndarray:
    """Plane (cm) -> pixel homography of a pinhole camera aimed so the subject lands as asked."""
    f = _focal_rel(pose["hfov_deg"], aspect) * h
    k = np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    r = (
        _rz(math.radians(pose["rot_deg"]))
        @ _rx(math.radians(pose["pitch_deg"]))
        @ _ry(math.radians(pose["yaw_deg"]))
    )
    # The ray through the wanted pixel must hit the subject centre at the depth that gives
    # the wanted size: depth = f * size / projected size.
    ray_cam = np.linalg.solve(
        k, np.array([pose["center_x"] * w - 0.5, pose["center_y"] * h - 0.5, 1.0])
    )
    ray_world = r.T @ ray_cam
    depth = _focal_rel(pose["hfov_deg"], aspect) * pose["subject_h_cm"] / pose["subject_frac"]
    centre = np.array([pose["aim_x_cm"], pose["aim_y_cm"], 0.0]) - depth * ray_world
    hm = k @ np.column_stack([r[:, 0], r[:, 1], -r @ centre])
    return hm / hm[2, 2]


def _spec_homography(spec: SceneSpec, h: int, w: int) -> np.ndarray:
    pose = {
        "hfov_deg": spec.hfov_deg,
        "rot_deg": spec.rot_deg,
        "pitch_deg": spec.pitch_deg,
        "yaw_deg": spec.yaw_deg,
        "center_x": spec.center_x,
        "center_y": spec.center_y,
        "subject_h_cm": spec.subject_h_cm,
        "subject_frac": spec.subject_frac,
        "aim_x_cm": spec.aim_x_cm,
        "aim_y_cm": spec.aim_y_cm,
    }
    return _homography_from(pose, spec.aspect, h, w)


def _project(hm: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply a homography to (N, 2) points; also return the homogeneous scale (>0 = in front)."""
    p = np.asarray(pts, np.float64)
    q = np.column_stack([p, np.ones(len(p))]) @ hm.T
    return q[:, :2] / q[:, 2:3], q[:, 2]


def _film_rect_plane(
    centre: tuple[float, float], fw: float, fh: float, rot_deg: float, rect: tuple[float, ...]
) -> np.ndarray:
    """Plane coordinates of a film-local rectangle (u0, v0, u1, v1) as TL, TR, BR, BL."""
    u0, v0, u1, v1 = rect
    local = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]]) - [fw / 2.0, fh / 2.0]
    a = math.radians(rot_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return local @ rot.T + np.asarray(centre)


def _film_to_plane(spec: SceneSpec) -> np.ndarray:
    """3x3 affine matrix film-local cm (u from the left edge, v from the top) -> plane cm."""
    a = math.radians(spec.film_rot_deg)
    c, s = math.cos(a), math.sin(a)
    tx = spec.film_x_cm - (c * spec.film_w_cm / 2 - s * spec.film_h_cm / 2)
    ty = spec.film_y_cm - (s * spec.film_w_cm / 2 + c * spec.film_h_cm / 2)
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def _order_clockwise(pts: np.ndarray) -> np.ndarray:
    """TL, TR, BR, BL as seen: clockwise (y down) starting at the top-left-most corner."""
    c = pts.mean(axis=0)
    ang = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0])
    ordered = pts[np.argsort(ang)]
    start = int(np.argmin(ordered[:, 0] + ordered[:, 1]))
    return np.roll(ordered, -start, axis=0).astype(np.float32)


def _local_scale(hm: np.ndarray, pts: np.ndarray) -> float:
    """Largest pixels-per-cm of the homography over the given plane points."""
    best = 0.0
    for x, y in np.asarray(pts, np.float64):
        q = hm @ np.array([x, y, 1.0])
        jac = (hm[:2, :2] * q[2] - np.outer(q[:2], hm[2, :2])) / (q[2] ** 2)
        best = max(best, float(np.linalg.norm(jac, 2)))
    return best


def _image_area_cm(spec: SceneSpec) -> tuple[float, float, float, float]:
    fw, fh = spec.film_w_cm, spec.film_h_cm
    return (
        spec.margin_left * fw,
        spec.margin_top * fh,
        fw - spec.margin_right * fw,
        fh - spec.margin_bottom * fh,
    )


def _warp(
    planes: list[np.ndarray], m: np.ndarray, w: int, h: int, borders: tuple[float, ...]
) -> list[np.ndarray]:
    """Warp single-channel float canvases into the photo.

    One warp per plane: cv2's single-channel path is fast and this avoids the merge/split
    copies (and fresh-page faults) an interleaved canvas would cost.
    """
    return [
        np.asarray(
            cv2.warpPerspective(
                p, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=b
            ),
            np.float32,
        )
        for p, b in zip(planes, borders, strict=True)
    ]
