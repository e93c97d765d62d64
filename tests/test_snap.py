"""snap_sides: a coarse quad moved onto the straight edges the photo shows next to it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiosk.imaging.geometry import quad_iou
from kiosk.rectify.snap import snap_quad, snap_sides

TRUE = np.array([[402.3, 151.7], [871.6, 180.2], [846.1, 598.4], [371.9, 571.0]], np.float32)


def _photo(
    inside: int, outside: int, size: tuple[int, int] = (720, 1280), blur: float = 1.2
) -> np.ndarray:
    """A film (``inside`` grey level) on a background (``outside``), edges blurred, noisy."""
    h, w = size
    scale = w / 1280
    img = np.full((h * 4, w * 4), outside, np.uint8)
    cv2.fillPoly(img, [np.round(TRUE * scale * 4).astype(np.int32)], inside, cv2.LINE_AA)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    img = cv2.GaussianBlur(img, (0, 0), blur * scale).astype(np.float32)
    rng = np.random.default_rng(0)
    img += rng.normal(0, 2.0, img.shape)
    grey = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _off(quad: np.ndarray, shift: tuple[float, float, float, float]) -> np.ndarray:
    """``quad`` with each side (top, right, bottom, left) moved outward by ``shift`` px."""
    tl, tr, br, bl = quad.astype(np.float64)
    top, right, bottom, left = shift
    dx = np.array([1.0, 0.0])
    dy = np.array([0.0, 1.0])
    return np.array(
        [
            tl - top * dy - left * dx,
            tr - top * dy + right * dx,
            br + bottom * dy + right * dx,
            bl + bottom * dy - left * dx,
        ],
        np.float32,
    )


@pytest.mark.parametrize(("inside", "outside"), [(60, 235), (70, 25)])
def test_each_side_moves_onto_the_films_edge_whichever_side_is_brighter(
    inside: int, outside: int
) -> None:
    # a film darker than the panel, and a film brighter than the dark housing around it
    photo = _photo(inside, outside)
    coarse = _off(TRUE, (6.0, -5.0, 4.0, -7.0))
    assert quad_iou(coarse, TRUE, (720, 1280)) < 0.96
    snapped, moved = snap_sides(photo, coarse, 19.0)
    assert moved == 4
    assert np.abs(snapped - TRUE).max() < 0.6
    assert quad_iou(snapped, TRUE, (720, 1280)) > 0.995


def test_a_side_with_no_edge_keeps_its_place() -> None:
    # the film's bottom edge lost in a flat region: only three sides move
    photo = _photo(60, 235)
    photo[560:, :] = 60
    coarse = _off(TRUE, (5.0, 5.0, 5.0, 5.0))
    snapped, moved = snap_sides(photo, coarse, 19.0)
    assert moved == 3
    assert abs(float(snapped[0, 1]) - float(TRUE[0, 1])) < 0.6  # the top moved onto its edge
    # the bottom side stays where the coarse quad put it (5 px below the film's edge)
    bottom_mid = (snapped[2] + snapped[3]) / 2
    coarse_mid = (coarse[2] + coarse[3]) / 2
    assert abs(float(bottom_mid[1] - coarse_mid[1])) < 1.0


def test_a_flat_photo_or_noise_moves_nothing() -> None:
    rng = np.random.default_rng(1)
    flat = np.full((720, 1280, 3), 128, np.uint8)
    noisy = np.clip(128 + rng.normal(0, 6, (720, 1280, 3)), 0, 255).astype(np.uint8)
    for photo in (flat, noisy):
        snapped, moved = snap_sides(photo, TRUE, 19.0)
        assert moved == 0
        np.testing.assert_allclose(snapped, TRUE, atol=1e-3)


def test_a_12mp_photo_snaps_at_its_own_scale() -> None:
    size = (2592, 4608)
    scale = size[1] / 1280
    photo = _photo(60, 235, size=size)
    coarse = _off(TRUE * scale, (20.0, -15.0, 12.0, -22.0))
    snapped, moved = snap_sides(photo, coarse, 58.0)
    assert moved == 4
    assert quad_iou(snapped, TRUE * scale, size) > 0.995


def test_snap_quad_keeps_the_quad_when_a_snap_would_leave_the_photo() -> None:
    # a film running off the left of the photo at its top: its left edge, snapped and
    # extended to the top side, puts the top-left corner outside the photo
    h, w = 720, 1280
    img = np.full((h * 4, w * 4), 235, np.uint8)
    film = np.array([[-1.5, 100.0], [600.0, 100.0], [600.0, 650.0], [7.0, 650.0]])
    cv2.fillPoly(img, [np.round(film * 4).astype(np.int32)], 60, cv2.LINE_AA)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    photo = np.repeat(img[..., None], 3, axis=2)
    coarse = np.array([[6, 104], [596, 104], [596, 646], [10, 646]], np.float32)
    snapped, moved = snap_sides(photo, coarse, 19.0)
    assert moved == 4 and snapped[0, 0] < -0.5  # what the guard is for
    kept, moved = snap_quad(photo, coarse, 19.0)
    assert moved == -1
    np.testing.assert_array_equal(kept, coarse)
