"""The one home of the numbers that judge a binary finding, numpy only (it runs on the Pi).

AUROC (Mann-Whitney, ties count one half), ECE (15 equal-mass bins by default, the project's
reporting convention), Brier, NLL, bootstrap intervals, reliability bins, sensitivity and
specificity, operating thresholds, and the numerically stable sigmoid and logit.

Two families of signatures live here. The calibration ones (:func:`auroc`, :func:`ece`,
:func:`brier`, ...) take ``(scores, labels)``, check their inputs and raise
:class:`~kiosk.errors.CalibrationError` saying what was wrong. The model-card ones at the end
(:func:`auroc_or_nan`, :func:`ece_equal_mass`, :func:`sens_spec`, :func:`youden_threshold`,
:func:`binary_report`) keep the training code's conventions: labels first, NaN instead of an
error for a single class. Both share the formulas above them; none is written twice.

This module fits nothing, reads no files and imports no stage of the kiosk.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from kiosk.errors import CalibrationError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
ThresholdRule = Literal["sensitivity", "youden"]

NLL_CLIP = 1e-15


def refuse(message: str, fix: str | None = None) -> CalibrationError:
    """Log a refusal and return the error to raise (the caller raises it)."""
    logger.warning("calibration refused: %s", message)
    return CalibrationError(message, fix)


def sigmoid(x: npt.ArrayLike) -> FloatArray:
    """Logistic function, numerically stable for large |x|; does not validate finiteness."""
    z = np.asarray(x, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def logit(p: npt.ArrayLike, eps: float = NLL_CLIP) -> FloatArray:
    """Log-odds of probabilities clipped to [eps, 1 - eps]; does not reject p outside [0, 1]."""
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(q) - np.log1p(-q)


def as_probs(probs: npt.ArrayLike, name: str = "probs") -> FloatArray:
    """``probs`` as a 1-D float array; raises unless non-empty, finite and inside [0, 1]."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1:
        raise refuse(f"{name} must be a 1-D array, got shape {p.shape}")
    if p.size == 0:
        raise refuse(f"{name} is empty", "pass at least one case")
    if not np.all(np.isfinite(p)) or np.any(p < 0.0) or np.any(p > 1.0):
        raise refuse(f"{name} must be finite probabilities in [0, 1]")
    return p


def as_scores(scores: npt.ArrayLike, name: str = "scores") -> FloatArray:
    """``scores`` as a 1-D float array; raises unless non-empty and finite (any scale)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise refuse(f"{name} must be a 1-D array, got shape {s.shape}")
    if s.size == 0:
        raise refuse(f"{name} is empty", "pass at least one case")
    if not np.all(np.isfinite(s)):
        raise refuse(f"{name} contains NaN or infinite values")
    return s


def as_binary(labels: npt.ArrayLike, n: int, name: str = "labels") -> FloatArray:
    """``labels`` as ``n`` floats; raises unless every one is 0 or 1."""
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != (n,):
        raise refuse(f"{name} must have shape ({n},) to match the scores, got {y.shape}")
    if not np.all((y == 0.0) | (y == 1.0)):
        raise refuse(f"{name} must be 0 or 1")
    return y


def _equal_mass_groups(order: npt.NDArray[np.intp], bins: int) -> list[npt.NDArray[np.intp]]:
    return [g for g in np.array_split(order, min(bins, order.size)) if g.size]


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram: where its predictions lie and what was observed."""

    lower: float
    upper: float
    mean_predicted: float
    observed_rate: float
    count: int


def reliability_bins(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    bins: int = 15,
    strategy: Literal["mass", "width"] = "mass",
) -> list[ReliabilityBin]:
    """Group cases into bins and return mean prediction, observed rate and count per bin.

    ``mass`` makes bins of (nearly) equal size from the sorted predictions; ``width`` uses
    equal-width bins on [0, 1] and omits empty ones. Does not smooth or interpolate anything.
    """
    p = as_probs(probs)
    y = as_binary(labels, p.size)
    if bins < 1:
        raise refuse(f"bins must be >= 1, got {bins}")
    groups: list[npt.NDArray[np.intp]]
    if strategy == "mass":
        groups = _equal_mass_groups(np.argsort(p, kind="stable"), bins)
    elif strategy == "width":
        idx = np.minimum((p * bins).astype(np.intp), bins - 1)
        groups = [np.flatnonzero(idx == b) for b in range(bins)]
        groups = [g for g in groups if g.size]
    else:
        raise refuse(f"unknown binning strategy {strategy!r}", "use 'mass' or 'width'")
    return [
        ReliabilityBin(
            lower=float(p[g].min()),
            upper=float(p[g].max()),
            mean_predicted=float(p[g].mean()),
            observed_rate=float(y[g].mean()),
            count=int(g.size),
        )
        for g in groups
    ]


def _mass_bin_starts(n: int, bins: int) -> npt.NDArray[np.intp]:
    k = min(bins, n)
    sizes = np.full(k, n // k, dtype=np.intp)
    sizes[: n % k] += 1
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)


def _ece_mass(p: FloatArray, y: FloatArray, bins: int) -> float:
    """Equal-mass ECE without input checks (used inside bootstrap loops)."""
    order = np.argsort(p, kind="stable")
    starts = _mass_bin_starts(p.size, bins)
    gap = np.add.reduceat(p[order], starts) - np.add.reduceat(y[order], starts)
    return float(np.sum(np.abs(gap)) / p.size)


def _ece_from_bins(rb: list[ReliabilityBin]) -> float:
    """Count-weighted mean |mean predicted - observed| over already computed bins."""
    total = sum(b.count for b in rb)
    return float(sum(b.count * abs(b.mean_predicted - b.observed_rate) for b in rb) / total)


def ece(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    bins: int = 15,
    strategy: Literal["mass", "width"] = "mass",
) -> float:
    """Expected calibration error: count-weighted mean |mean predicted - observed| over bins.

    Default: 15 equal-mass bins (the project's reporting convention). Not debiased: with few
    cases per bin it overestimates the miscalibration.
    """
    if strategy == "mass" and bins >= 1:
        p = as_probs(probs)
        return _ece_mass(p, as_binary(labels, p.size), bins)
    return _ece_from_bins(reliability_bins(probs, labels, bins, strategy))


def brier(probs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean squared difference between probability and 0/1 outcome; no decomposition."""
    p = as_probs(probs)
    y = as_binary(labels, p.size)
    return float(np.mean((p - y) ** 2))


def nll(probs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean negative log-likelihood (log-loss, natural log), probabilities clipped to 1e-15."""
    p = np.clip(as_probs(probs), NLL_CLIP, 1.0 - NLL_CLIP)
    y = as_binary(labels, p.size)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def nll_terms(probs: FloatArray, y: FloatArray) -> FloatArray:
    """Per-case negative log-likelihood (probabilities clipped to 1e-15); no input checks."""
    p = np.clip(probs, NLL_CLIP, 1.0 - NLL_CLIP)
    return np.asarray(-(y * np.log(p) + (1.0 - y) * np.log1p(-p)), dtype=np.float64)


def _midranks(values: FloatArray) -> FloatArray:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg = ends - (counts - 1) / 2.0
    return np.asarray(avg[inverse.reshape(-1)], dtype=np.float64)


def auroc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Area under the ROC curve by the Mann-Whitney U statistic; ties count one half.

    Any monotone score works (logits or probabilities). Raises CalibrationError when only one
    class is present; does not compute a confidence interval (see :func:`bootstrap_ci`).
    """
    s = as_scores(scores)
    y = as_binary(labels, s.size)
    n_pos = int(y.sum())
    n_neg = s.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise refuse(
            f"AUROC needs both classes, got {n_pos} positives and {n_neg} negatives",
            "include positive and negative cases",
        )
    return auroc_unchecked(s, y)


def auroc_unchecked(s: FloatArray, y: FloatArray) -> float:
    """:func:`auroc` without input checks, for bootstrap loops; needs both classes in ``y``."""
    n_pos = float(y.sum())
    n_neg = y.size - n_pos
    u = float(_midranks(s)[y == 1.0].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def bootstrap_ci(
    fn: Callable[[FloatArray, FloatArray], float],
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    *,
    stratified: bool = True,
    needs_both_classes: bool = True,
    kind: Literal["percentile", "basic"] = "percentile",
) -> tuple[float, float]:
    """Bootstrap (1 - alpha) interval of ``fn(scores, labels)``.

    ``percentile`` takes the quantiles of the resampled values; ``basic`` reflects them around
    the estimate (2 * estimate - quantiles), which corrects a metric biased upward on resamples
    (such as ECE).
    ``stratified`` resamples positives and negatives separately (class counts fixed); otherwise
    cases are resampled together and, when ``needs_both_classes``, resamples with a single class
    are skipped. Deterministic for a given seed. Not BCa.
    """
    s = as_scores(scores)
    y = as_binary(labels, s.size)
    if n_boot < 10:
        raise refuse(f"n_boot must be >= 10, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise refuse(f"alpha must be in (0, 1), got {alpha}")
    pos = np.flatnonzero(y == 1.0)
    neg = np.flatnonzero(y == 0.0)
    if needs_both_classes and (pos.size == 0 or neg.size == 0):
        raise refuse("bootstrap of this metric needs both classes in the data")
    rng = np.random.default_rng(seed)
    values: list[float] = []
    for _ in range(n_boot):
        if stratified:
            parts = [g[rng.integers(0, g.size, g.size)] for g in (pos, neg) if g.size]
            idx = np.concatenate(parts)
        else:
            idx = rng.integers(0, s.size, s.size)
            if needs_both_classes:
                k = y[idx].sum()
                if k == 0 or k == idx.size:
                    continue
        values.append(float(fn(s[idx], y[idx])))
    if len(values) < n_boot // 2:
        raise refuse(
            f"only {len(values)} of {n_boot} bootstrap resamples had both classes",
            "use stratified=True or label more cases of the rarer class",
        )
    lo, hi = np.quantile(np.asarray(values), [alpha / 2.0, 1.0 - alpha / 2.0])
    if kind == "basic":
        est = float(fn(s, y))
        return float(2.0 * est - hi), float(2.0 * est - lo)
    if kind != "percentile":
        raise refuse(f"unknown bootstrap interval kind {kind!r}", "use percentile or basic")
    return float(lo), float(hi)


def ece_ci(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    bins: int = 15,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Bootstrap (1 - alpha) interval of equal-mass ECE; works with a single class present.

    Resamples cases together (not stratified) and uses the basic (reflected) interval, clipped
    at 0, because ECE on resamples is biased upward; the point estimate itself is not debiased.
    """
    lo, hi = bootstrap_ci(
        lambda p, y: _ece_mass(p, y, bins),
        as_probs(probs),
        labels,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
        stratified=False,
        needs_both_classes=False,
        kind="basic",
    )
    return max(0.0, lo), max(0.0, hi)


def _rates(called: npt.NDArray[np.bool_], positive: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """Sensitivity and specificity of ``called``; a missing class gives 0.0, not an error."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    sens = float((called & positive).sum() / max(n_pos, 1))
    spec = float((~called & ~positive).sum() / max(n_neg, 1))
    return sens, spec


def sensitivity_specificity(
    probs: npt.ArrayLike, labels: npt.ArrayLike, threshold: float
) -> tuple[float, float]:
    """Sensitivity and specificity when a case is called positive at ``prob >= threshold``.

    Raises CalibrationError when a class is missing (one of the two is undefined).
    """
    p = as_scores(probs, "probs")
    y = as_binary(labels, p.size)
    n_pos = int(y.sum())
    n_neg = p.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise refuse(
            f"sensitivity and specificity need both classes, got {n_pos} positives, "
            f"{n_neg} negatives"
        )
    return _rates(p >= threshold, y == 1.0)


def choose_threshold(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    rule: ThresholdRule = "sensitivity",
    target_sensitivity: float = 0.90,
) -> float:
    """Operating threshold (positive when ``prob >= threshold``) from labelled predictions.

    ``sensitivity``: the highest threshold whose sensitivity on these cases is at least
    ``target_sensitivity``. ``youden``: the threshold maximising sensitivity + specificity - 1
    (the highest one on ties). Pass out-of-fold predictions; this does not cross-validate itself.
    """
    p = as_scores(probs, "probs")
    y = as_binary(labels, p.size)
    pos = np.sort(p[y == 1.0])[::-1]
    neg = p[y == 0.0]
    if pos.size == 0 or neg.size == 0:
        raise refuse("choosing a threshold needs both positive and negative cases")
    if rule == "sensitivity":
        if not 0.0 < target_sensitivity <= 1.0:
            raise refuse(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
        k = max(1, math.ceil(target_sensitivity * pos.size - 1e-9))
        return float(pos[k - 1])
    if rule == "youden":
        candidates = np.unique(p)
        neg_sorted = np.sort(neg)
        pos_sorted = pos[::-1]
        sens = 1.0 - np.searchsorted(pos_sorted, candidates, side="left") / pos.size
        spec = np.searchsorted(neg_sorted, candidates, side="left") / neg.size
        j = sens + spec - 1.0
        best = np.flatnonzero(j >= j.max() - 1e-12)
        return float(candidates[best[-1]])
    raise refuse(f"unknown threshold rule {rule!r}", "use 'sensitivity' or 'youden'")


# --------------------------------------------------------------------------------------------
# Model-card metrics (labels first, NaN for a single class), as training and evaluation use them
# --------------------------------------------------------------------------------------------


def auroc_or_nan(y: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """AUROC of ``score`` for labels ``y`` (truthy = positive); NaN when ``y`` has one class.

    Same statistic as :func:`auroc`, without its input checks: for training loops that
    average over findings and skip the undefined ones.
    """
    positive = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == positive.size:
        return float("nan")
    return auroc_unchecked(s, positive.astype(np.float64))


def ece_equal_mass(y: npt.ArrayLike, prob: npt.ArrayLike, bins: int = 15) -> float:
    """Expected calibration error with ``bins`` equal-mass bins, labels first.

    Sums per bin as :func:`reliability_bins` reports them; :func:`ece` sums per case and can
    differ from this in the last bits.
    """
    return _ece_from_bins(reliability_bins(prob, np.asarray(y, dtype=np.float64), bins, "mass"))


def sens_spec(y: npt.ArrayLike, prob: npt.ArrayLike, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of ``prob >= threshold``; 0.0 for a class that is absent."""
    return _rates(np.asarray(prob) >= threshold, np.asarray(y).astype(bool))


def youden_threshold(y: npt.ArrayLike, prob: npt.ArrayLike) -> float:
    """The probability threshold maximising sensitivity + specificity - 1 (the model card's).

    Returned as the midpoint between the chosen score and the next lower one, so the rule is
    not sitting exactly on one image's score, and kept inside [1e-4, 1 - 1e-4]; the lowest
    threshold wins a tie. Not :func:`choose_threshold`'s ``youden`` rule, which returns the
    highest tied score itself (a calibration record's convention).
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
    y: npt.ArrayLike, prob: npt.ArrayLike, threshold: float, resamples: int = 2000, seed: int = 0
) -> BinaryReport:
    """All the model-card metrics for one finding.

    The AUROC interval is the 95% percentile bootstrap over images (resampled together, not by
    class; resamples with one class are skipped): :func:`bootstrap_ci` with
    ``stratified=False``.
    """
    positive = np.asarray(y).astype(bool)
    p = np.asarray(prob, dtype=np.float64)
    labels = positive.astype(np.float64)
    se, sp = sens_spec(positive, p, threshold)
    return BinaryReport(
        n=int(positive.size),
        n_positive=int(positive.sum()),
        auroc=auroc_or_nan(positive, p),
        auroc_ci=bootstrap_ci(
            auroc_unchecked, p, labels, n_boot=resamples, seed=seed, stratified=False
        ),
        threshold=threshold,
        sensitivity=se,
        specificity=sp,
        ece=ece_equal_mass(labels, p),
        brier=brier(p, labels),
    )


def _patient_groups(patients: Sequence[str]) -> list[np.ndarray]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(patients):
        groups[p].append(i)
    return [np.asarray(v) for _, v in sorted(groups.items())]


def patient_bootstrap_auroc(
    y: np.ndarray,
    scores: Sequence[np.ndarray],
    patients: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """AUROC of each score vector on ``n_boot`` resamples of patients (with replacement).

    Returns (n_boot_kept, len(scores)); the same resamples for every score vector, so
    differences between columns are paired. Resamples with one class are skipped.
    """
    groups = _patient_groups(patients)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(groups), len(groups))
        idx = np.concatenate([groups[g] for g in pick])
        yy = y[idx]
        if yy.min() == yy.max():
            continue
        out.append([auroc_or_nan(yy, s[idx]) for s in scores])
    return np.asarray(out)
