"""The robust lightbox surface fit and the channel maximum, against plain recomputations."""

from __future__ import annotations

import numpy as np

from kiosk.imaging.colour import channel_max
from kiosk.imaging.surface import _poly_basis, fit_smooth_surface


def _panel(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A lightbox with fall-off, a dark film in the middle and a glare spot."""
    yy, xx = np.mgrid[0:63, 0:112] / 100.0
    values = 0.8 - 0.3 * (xx - 0.5) ** 2 - 0.2 * (yy - 0.3) ** 2 + rng.normal(0, 0.005, (63, 112))
    values[15:50, 35:80] *= 0.2  # the film
    values[5:10, 90:100] *= 1.6  # glare
    mask = np.ones(values.shape, bool)
    mask[:, :4] = False  # the housing
    return values, mask


def test_surface_follows_the_panel_and_ignores_film_and_glare() -> None:
    values, mask = _panel(np.random.default_rng(0))
    surface = fit_smooth_surface(values, mask, degree=2, iterations=4, upper_ratio=1.1)
    yy, xx = np.mgrid[0:63, 0:112] / 100.0
    truth = 0.8 - 0.3 * (xx - 0.5) ** 2 - 0.2 * (yy - 0.3) ** 2
    assert np.abs(surface - truth).max() < 0.01  # under the film and the glare too


def test_updated_normal_equations_give_a_fresh_fit_on_the_final_pixels() -> None:
    # each round updates the previous round's sums; the answer must be the plain least
    # squares fit on the pixels the last round kept
    values, mask = _panel(np.random.default_rng(1))
    for degree in (2, 4):
        surface = fit_smooth_surface(values, mask, degree=degree, iterations=6, upper_ratio=1.1)
        kept = mask & (values >= 0.9 * surface) & (values <= 1.1 * surface)
        basis = _poly_basis(63, 112, degree)
        b, v = basis[kept.ravel()], values.ravel()[kept.ravel()]
        coef = np.linalg.solve(b.T @ b + 1e-6 * len(b) * np.eye(b.shape[1]), b.T @ v)
        assert np.abs(surface - (basis @ coef).reshape(63, 112)).max() < 1e-5


def test_channel_max_is_the_maximum_over_channels() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (37, 41, 3), dtype=np.uint8)
    assert np.array_equal(channel_max(rgb), rgb.max(axis=-1))
    assert np.array_equal(channel_max(rgb[::3, ::2]), rgb[::3, ::2].max(axis=-1))
