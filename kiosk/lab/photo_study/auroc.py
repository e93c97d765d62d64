"""AUROC with stratified bootstrap 95% CIs (and the percentages and quantiles of the summary)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiosk.stats import auroc_unchecked, bootstrap_ci


def n_boot() -> int:
    """Bootstrap resamples: the package's ``N_BOOT``, read when called so that setting it on
    ``kiosk.lab.photo_study`` (as the tests do) takes effect everywhere."""
    from kiosk.lab import photo_study

    return photo_study.N_BOOT


def _pct(x: float, n: int) -> float | None:
    return 100.0 * x / n if n else None


def _q(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def auroc_ci(scores: list[float], labels: list[int], seed: int = 0) -> dict[str, Any]:
    """AUROC with a stratified bootstrap 95% CI; None when a class is missing."""
    y = np.asarray(labels, np.float64)
    s = np.asarray(scores, np.float64)
    n_pos = int(y.sum())
    out: dict[str, Any] = {"n": int(y.size), "n_pos": n_pos, "auroc": None, "ci95": None}
    if n_pos == 0 or n_pos == y.size:
        return out
    out["auroc"] = auroc_unchecked(s, y)
    out["ci95"] = list(bootstrap_ci(auroc_unchecked, s, y, n_boot=n_boot(), seed=seed))
    return out


def paired_diff_ci(
    photo: list[float], digital: list[float], labels: list[int], seed: int = 0
) -> dict[str, Any]:
    """AUROC(photo) - AUROC(digital) on the same films, with a paired stratified bootstrap."""
    y = np.asarray(labels, np.float64)
    a, b = np.asarray(photo, np.float64), np.asarray(digital, np.float64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return {"diff": None, "ci95": None}

    def diff(idx: np.ndarray, yy: np.ndarray) -> float:
        i = idx.astype(np.intp)
        return auroc_unchecked(a[i], yy) - auroc_unchecked(b[i], yy)

    index = np.arange(y.size, dtype=np.float64)
    return {
        "diff": diff(index, y),
        "ci95": list(bootstrap_ci(diff, index, y, n_boot=n_boot(), seed=seed)),
    }
