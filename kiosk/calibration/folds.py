"""Stratified k-fold assignment for cross-validating calibrators.

Deterministic for a seed; it only deals cases to folds and fits nothing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kiosk.stats import FloatArray


def stratified_folds(y: FloatArray, folds: int, seed: int) -> npt.NDArray[np.intp]:
    """Fold index per case; each class is shuffled and dealt round-robin over the folds."""
    rng = np.random.default_rng(seed)
    out = np.empty(y.size, dtype=np.intp)
    offset = 0
    for cls in (1.0, 0.0):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(idx.size)]
        out[idx] = (np.arange(idx.size) + offset) % folds
        offset += idx.size
    return out
