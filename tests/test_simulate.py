"""The simulator puts the film where its corners say, with physically sensible photometry."""

from __future__ import annotations

import itertools
from dataclasses import replace

import cv2
import numpy as np
import pytest

from kiosk.camera.scene import (
    SceneParams,
    characteristic_density,
    phantom_chest,
    random_params,
    render,
    render_empty,
)

SIZE = (270, 480)


def _film_mask(corners: np.ndarray, size: tuple[int, int], shrink: float = 0.0) -> np.ndarray:
    c = corners.mean(axis=0)
    pts = c + (corners - c) * (1.0 - shrink)
    mask = np.zeros(size, np.uint8)
    cv2.fillConvexPoly(mask, np.round(pts).astype(np.int32), 1)
    return mask.astype(bool)


def _grey(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_film_is_where_the_corners_say(seed: int) -> None:
    rng = np.random.default_rng(seed)
    params = replace(random_params(rng, difficulty=0.5), glare_strength=0.0, second_film=False)
    r = render(phantom_chest(rng, (256, 256)), params, rng, size=SIZE)
    assert r.image.shape == (*SIZE, 3) and r.image.dtype == np.uint8
    assert r.corners is not None and r.corners.shape == (4, 2) and r.corners.dtype == np.float32
    grey = _grey(r.image)
    inside = _film_mask(r.corners, SIZE, shrink=0.15)
    # a ring just outside the film: lightbox, which must be brighter than the film interior
    outer = _film_mask(r.corners, SIZE, shrink=-0.06) & ~_film_mask(r.corners, SIZE, shrink=-0.01)
    assert grey[inside].mean() < grey[outer].mean() - 20
    # clockwise from top-left
    tl, tr, br, bl = r.corners
    assert tl[0] < tr[0] and bl[0] < br[0] and tl[1] < bl[1] and tr[1] < br[1]


def test_exposure_scaling_is_monotone() -> None:
    digital = phantom_chest(np.random.default_rng(5), (128, 128))
    means = []
    for scale in (0.25, 0.5, 1.0, 2.0):
        p = replace(SceneParams(), exposure_scale=scale, jpeg_quality=0)
        means.append(float(render(digital, p, np.random.default_rng(7), SIZE).image.mean()))
    assert all(a < b for a, b in itertools.pairwise(means)), means


def test_no_film_has_no_corners_and_is_smooth() -> None:
    r = render(None, SceneParams(), np.random.default_rng(0), SIZE)
    assert r.corners is None
    empty = render_empty(SceneParams(), np.random.default_rng(0), SIZE)
    assert empty.shape == (*SIZE, 3)
    centre = _grey(empty)[SIZE[0] // 4 : 3 * SIZE[0] // 4, SIZE[1] // 4 : 3 * SIZE[1] // 4]
    assert centre.mean() > 150  # a lit panel, well exposed


def test_same_seed_same_image_different_seed_different_noise() -> None:
    digital = phantom_chest(np.random.default_rng(1), (128, 128))
    p = random_params(np.random.default_rng(3))
    a = render(digital, p, np.random.default_rng(9), SIZE)
    b = render(digital, p, np.random.default_rng(9), SIZE)
    c = render(digital, p, np.random.default_rng(10), SIZE)
    assert np.array_equal(a.image, b.image)
    assert a.corners is not None and b.corners is not None
    assert np.array_equal(a.corners, b.corners)
    assert not np.array_equal(a.image, c.image)
    assert random_params(np.random.default_rng(4)) == random_params(np.random.default_rng(4))


def test_characteristic_curve_bone_is_clear_and_air_is_dense() -> None:
    p = SceneParams()
    d = characteristic_density(np.linspace(0, 1, 11, dtype=np.float32), p)
    assert d[0] == pytest.approx(p.max_density, abs=1e-4)  # black digital (air) = dense film
    assert d[-1] == pytest.approx(p.base_fog_density, abs=1e-4)  # bone = clear film
    assert np.all(np.diff(d) < 0)


def test_clear_margin_is_nearly_as_bright_as_the_lightbox() -> None:
    p = replace(SceneParams(), margin_frac=(0.1, 0.1, 0.1, 0.1), vignetting=0.0, edge_falloff=0.0)
    digital = np.zeros((200, 160), np.uint8)  # all air: a black film inside its margin
    r = render(digital, p, np.random.default_rng(0), SIZE)
    assert r.corners is not None
    grey = _grey(r.image)
    tl, tr, _br, bl = r.corners
    margin_pt = (tl + bl) / 2 + (tr - tl) * 0.04  # in the left margin
    x, y = int(margin_pt[0]), int(margin_pt[1])
    lightbox = float(grey[y, max(0, int(tl[0]) - 12)])
    margin = float(grey[y, x])
    centre = float(grey[int(r.corners[:, 1].mean()), int(r.corners[:, 0].mean())])
    assert 0.7 * lightbox < margin < lightbox
    assert centre < 0.2 * lightbox


def test_optional_content_changes_the_picture() -> None:
    digital = phantom_chest(np.random.default_rng(2), (128, 128))
    base = replace(SceneParams(), jpeg_quality=0)
    plain = render(digital, base, np.random.default_rng(0), SIZE).image
    for change in (
        {"clip": True},
        {"fingers": True},
        {"second_film": True},
        {"glare_strength": 0.4},
    ):
        other = render(digital, replace(base, **change), np.random.default_rng(0), SIZE).image
        diff = np.abs(other.astype(int) - plain.astype(int)).mean()
        assert diff > 0.2, change


def test_cut_off_film_has_corners_outside_the_frame() -> None:
    p = replace(SceneParams(), film_offset=(0.45, 0.0))
    r = render(phantom_chest(np.random.default_rng(0), (64, 64)), p, np.random.default_rng(0), SIZE)
    assert r.corners is not None and r.corners[:, 0].max() > SIZE[1]


def test_phantom_has_chest_like_structure() -> None:
    img = phantom_chest(np.random.default_rng(0), (256, 256))
    assert img.shape == (256, 256) and img.dtype == np.uint8
    lungs = img[90:150, 40:80].mean()
    spine = img[90:150, 122:134].mean()
    assert spine > lungs + 40  # bone bright, air dark
    assert not np.array_equal(img, phantom_chest(np.random.default_rng(1), (256, 256)))
