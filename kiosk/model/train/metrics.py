"""Metrics for binary findings, numpy only: AUROC (+ bootstrap CI), ECE, Brier, thresholds.

AUROC is the Mann-Whitney statistic with ties counted half. ECE uses equal-mass bins (15 by
default, as the project reports it). Bootstrap resamples images with replacement and reports
the 2.5th and 97.5th percentiles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve; NaN when ``y`` holds a single class."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s), dtype=np.float64)
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2.0 + 1.0
        i = j + 1
    r = np.empty_like(ranks)
    r[order] = ranks
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def bootstrap_auroc_ci(
    y: np.ndarray, score: np.ndarray, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the AUROC (resampling images)."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    rng = np.random.default_rng(seed)
    values: list[float] = []
    n = len(y)
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        a = auroc(y[idx], score[idx])
        if not np.isnan(a):
            values.append(a)
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def ece_equal_mass(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error with ``bins`` equal-mass bins."""
    y = np.asarray(y, dtype=np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    order = np.argsort(prob, kind="mergesort")
    total = 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk):
            total += len(chunk) * abs(prob[chunk].mean() - y[chunk].mean())
    return float(total / len(y))


def brier(y: np.ndarray, prob: np.ndarray) -> float:
    """Mean squared error of the probability."""
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean((np.asarray(prob, dtype=np.float64) - y) ** 2))


def sens_spec(y: np.ndarray, prob: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of ``prob >= threshold``."""
    y = np.asarray(y).astype(bool)
    pos = np.asarray(prob) >= threshold
    return float((pos & y).sum() / max(y.sum(), 1)), float((~pos & ~y).sum() / max((~y).sum(), 1))


def youden_threshold(y: np.ndarray, prob: np.ndarray) -> float:
    """The probability threshold maximising sensitivity + specificity - 1.

    Returned as the midpoint between the chosen score and the next lower one, so the rule is
    not sitting exactly on one image's score.
    """
    y = np.asarray(y).astype(bool)
    p = np.unique(np.asarray(prob, dtype=np.float64))
    best, best_t = -1.0, 0.5
    for i, t in enumerate(p):
        se, sp = sens_spec(y, prob, float(t))
        if se + sp - 1 > best:
            best = se + sp - 1
            best_t = float((t + p[i - 1]) / 2) if i > 0 else float(t)
    return float(min(max(best_t, 1e-4), 1 - 1e-4))


@dataclass(frozen=True)
class BinaryReport:
    """Metrics of one finding on one data set."""

    n: int
    n_positive: int
    auroc: float
    auroc_ci: tuple[float, float]
    threshold: float
    sensitivity: float
    specificity: float
    ece: float
    brier: float


def binary_report(
    y: np.ndarray, prob: np.ndarray, threshold: float, resamples: int = 2000, seed: int = 0
) -> BinaryReport:
    """All the model-card metrics for one finding."""
    se, sp = sens_spec(y, prob, threshold)
    return BinaryReport(
        n=len(y),
        n_positive=int(np.asarray(y).astype(bool).sum()),
        auroc=auroc(y, prob),
        auroc_ci=bootstrap_auroc_ci(y, prob, resamples, seed),
        threshold=threshold,
        sensitivity=se,
        specificity=sp,
        ece=ece_equal_mass(y, prob),
        brier=brier(y, prob),
    )
