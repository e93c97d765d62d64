"""Robust smooth 2-D surfaces: the lightbox's luminance field under a film, glare or hands.

What this module does not do: decide what is lightbox and what is not (callers give the mask).
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def _poly_basis(h: int, w: int, degree: int) -> np.ndarray:
    """2-D monomials up to ``degree`` on a [-1, 1] grid, one column per term (read-only)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    xn, yn = (xx / max(w - 1, 1)) * 2 - 1, (yy / max(h - 1, 1)) * 2 - 1
    terms = [xn**i * yn**j for i in range(degree + 1) for j in range(degree + 1 - i)]
    basis = np.stack([t.ravel() for t in terms], axis=1)
    basis.setflags(write=False)
    return basis


def fit_smooth_surface(
    values: np.ndarray,
    mask: np.ndarray,
    degree: int = 4,
    iterations: int = 3,
    keep_ratio: float = 0.9,
    upper_ratio: float | None = None,
) -> np.ndarray:
    """Robust 2-D polynomial fit of ``values`` over ``mask``, ignoring pixels darker than the fit.

    Dark things on a lightbox (a film, fingers) pull a plain least-squares fit down; every
    iteration drops the pixels below ``keep_ratio`` times the current fit (and, with
    ``upper_ratio``, those above it: glare on a lightbox photo). Returns the surface
    evaluated everywhere (float32, shape of ``values``).
    """
    h, w = values.shape
    basis = _poly_basis(h, w, degree)
    v = values.ravel().astype(np.float64)
    inside = mask.ravel()
    use = inside.copy()
    n_use = int(use.sum())
    surface = np.full(v.shape, float(np.median(v[use])) if n_use else 0.0, np.float32)
    ridge = 1e-6 * np.eye(basis.shape[1])
    gram = rhs = None
    for _ in range(iterations):
        if n_use < basis.shape[1] * 4:
            break
        if gram is None or rhs is None:
            b = basis[use]
            gram, rhs = b.T @ b, b.T @ v[use]
        # normal equations: a 15x15 solve, far cheaper than an SVD-based lstsq
        coef = np.linalg.solve(gram + ridge * n_use, rhs)
        surface = (basis @ coef).astype(np.float32)
        kept = inside & (v >= keep_ratio * surface)
        if upper_ratio is not None:
            kept &= v <= upper_ratio * surface
        changed = kept != use
        if not changed.any():  # converged: another round would fit the same pixels
            break
        # the next round's normal equations from this one's: add the pixels taken in, take
        # out those dropped (usually a few hundred of the thousands), instead of summing all again
        added, dropped = changed & kept, changed & use
        b_in, b_out = basis[added], basis[dropped]
        gram = gram + b_in.T @ b_in - b_out.T @ b_out
        rhs = rhs + b_in.T @ v[added] - b_out.T @ v[dropped]
        use, n_use = kept, int(kept.sum())
    return surface.reshape(h, w)
