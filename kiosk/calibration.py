"""Calibration of the classifier's findings for photographed films: maths, metrics and records.

A model trained on digital chest X-rays is miscalibrated (and loses some ranking) on photographs
of films (Kuo et al., npj Digital Medicine 4:25, 2021). A small labelled set of photos from the
site brings it back. This module holds everything numeric about that, with numpy only (it runs
on the Raspberry Pi; no scikit-learn, no scipy):

* per-finding calibrators: :class:`TemperatureScaler` (one T > 0 on logits, Guo et al. 2017),
  :class:`PlattScaler` (``a * logit + b``), :class:`IsotonicCalibrator` (pool-adjacent-violators,
  only with at least :data:`MIN_ISOTONIC_CASES` labelled cases) and :class:`RefitHead` (an
  L2-regularised logistic regression re-fitted on the model's penultimate features, which can
  also recover ranking lost to the photo domain);
* :func:`fit_calibration`, which validates the labelled set, picks a method per finding
  (``auto``: cross-validated NLL, and says why), measures before/after metrics on held-out
  folds and chooses an operating threshold, returning a :class:`CalibrationRecord`;
* metrics: :func:`ece`, :func:`brier`, :func:`nll`, :func:`auroc`, :func:`bootstrap_ci`,
  :func:`ece_ci`, :func:`sensitivity_specificity`, :func:`choose_threshold`,
  :func:`reliability_bins`;
* site-loop helpers: :func:`calibration_drift` and :func:`should_propose_refit`.

Storing records, activating one and wiring it into the pipeline is done elsewhere (store, CLI,
pipeline); this module never touches files or the database.

Example::

    record = fit_calibration(logits, labels, ["pneumonia"], model_id="cxr-pneumonia-effl0",
                             model_sha256=manifest.sha256, created_by="tech@site")
    probs = record.apply(prediction.logits, prediction.features, model_sha256=manifest.sha256)
"""

from __future__ import annotations

import logging
import math
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt

from kiosk.errors import CalibrationError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
Method = Literal["auto", "temperature", "platt", "isotonic", "refit"]
ThresholdRule = Literal["sensitivity", "youden"]

RECORD_SCHEMA_VERSION = 1
MIN_LABELLED_CASES = 30
"""Fewest labelled cases per finding that :func:`fit_calibration` accepts."""
MIN_MINORITY_CASES = 5
"""Fewest cases of the rarer class (positives or negatives) per finding for k-fold evaluation."""
MIN_ISOTONIC_CASES = 1000
"""Isotonic regression overfits below about a thousand cases (scikit-learn's calibration docs)."""
PROB_EPS = 1e-6
"""Isotonic outputs are kept inside [PROB_EPS, 1 - PROB_EPS] so log-loss stays finite."""
NLL_CLIP = 1e-15
TEMPERATURE_BOUNDS = (0.05, 20.0)
PLATT_L2 = 1e-4
"""Tiny L2 (per case) on Platt's a and b: finite parameters even when the classes separate."""
REFIT_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
"""L2 strengths (per case, on standardised features) tried by the refit head's CV."""
AUTO_ORDER = ("temperature", "platt", "isotonic", "refit")
"""Simplest first: ``auto`` keeps the simplest method within one standard error of the best."""
DRIFT_ECE_THRESHOLD = 0.05
"""Calibration drift is flagged when the ECE 95% CI lower bound exceeds this."""
DRIFT_MIN_CASES_PER_BIN = 30
"""Drift ECE uses fewer than 15 bins when there are few confirmed cases (ECE is biased up)."""
DRIFT_KS_ALPHA = 0.01
DRIFT_KS_MIN_STATISTIC = 0.1
"""A score shift must be both significant (p < alpha) and large enough to matter."""
REFIT_MIN_CONFIRMED = 200
REFIT_MIN_POSITIVES = 20
REFIT_MIN_NEGATIVES = 20

_CODE_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def _refuse(message: str, fix: str | None = None) -> CalibrationError:
    """Log a refusal and return the error to raise (the caller raises it)."""
    logger.warning("calibration refused: %s", message)
    return CalibrationError(message, fix)


# --------------------------------------------------------------------------------------------
# Small numeric helpers and metric functions
# --------------------------------------------------------------------------------------------


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


def _as_probs(probs: npt.ArrayLike, name: str = "probs") -> FloatArray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1:
        raise _refuse(f"{name} must be a 1-D array, got shape {p.shape}")
    if p.size == 0:
        raise _refuse(f"{name} is empty", "pass at least one case")
    if not np.all(np.isfinite(p)) or np.any(p < 0.0) or np.any(p > 1.0):
        raise _refuse(f"{name} must be finite probabilities in [0, 1]")
    return p


def _as_scores(scores: npt.ArrayLike, name: str = "scores") -> FloatArray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise _refuse(f"{name} must be a 1-D array, got shape {s.shape}")
    if s.size == 0:
        raise _refuse(f"{name} is empty", "pass at least one case")
    if not np.all(np.isfinite(s)):
        raise _refuse(f"{name} contains NaN or infinite values")
    return s


def _as_binary(labels: npt.ArrayLike, n: int, name: str = "labels") -> FloatArray:
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != (n,):
        raise _refuse(f"{name} must have shape ({n},) to match the scores, got {y.shape}")
    if not np.all((y == 0.0) | (y == 1.0)):
        raise _refuse(f"{name} must be 0 or 1")
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
    p = _as_probs(probs)
    y = _as_binary(labels, p.size)
    if bins < 1:
        raise _refuse(f"bins must be >= 1, got {bins}")
    groups: list[npt.NDArray[np.intp]]
    if strategy == "mass":
        groups = _equal_mass_groups(np.argsort(p, kind="stable"), bins)
    elif strategy == "width":
        idx = np.minimum((p * bins).astype(np.intp), bins - 1)
        groups = [np.flatnonzero(idx == b) for b in range(bins)]
        groups = [g for g in groups if g.size]
    else:
        raise _refuse(f"unknown binning strategy {strategy!r}", "use 'mass' or 'width'")
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
        p = _as_probs(probs)
        return _ece_mass(p, _as_binary(labels, p.size), bins)
    rb = reliability_bins(probs, labels, bins, strategy)
    total = sum(b.count for b in rb)
    return float(sum(b.count * abs(b.mean_predicted - b.observed_rate) for b in rb) / total)


def brier(probs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean squared difference between probability and 0/1 outcome; no decomposition."""
    p = _as_probs(probs)
    y = _as_binary(labels, p.size)
    return float(np.mean((p - y) ** 2))


def nll(probs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean negative log-likelihood (log-loss, natural log), probabilities clipped to 1e-15."""
    p = np.clip(_as_probs(probs), NLL_CLIP, 1.0 - NLL_CLIP)
    y = _as_binary(labels, p.size)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def _nll_terms(probs: FloatArray, y: FloatArray) -> FloatArray:
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
    s = _as_scores(scores)
    y = _as_binary(labels, s.size)
    n_pos = int(y.sum())
    n_neg = s.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise _refuse(
            f"AUROC needs both classes, got {n_pos} positives and {n_neg} negatives",
            "include positive and negative cases",
        )
    return _auroc_unchecked(s, y)


def _auroc_unchecked(s: FloatArray, y: FloatArray) -> float:
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
    s = _as_scores(scores)
    y = _as_binary(labels, s.size)
    if n_boot < 10:
        raise _refuse(f"n_boot must be >= 10, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise _refuse(f"alpha must be in (0, 1), got {alpha}")
    pos = np.flatnonzero(y == 1.0)
    neg = np.flatnonzero(y == 0.0)
    if needs_both_classes and (pos.size == 0 or neg.size == 0):
        raise _refuse("bootstrap of this metric needs both classes in the data")
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
        raise _refuse(
            f"only {len(values)} of {n_boot} bootstrap resamples had both classes",
            "use stratified=True or label more cases of the rarer class",
        )
    lo, hi = np.quantile(np.asarray(values), [alpha / 2.0, 1.0 - alpha / 2.0])
    if kind == "basic":
        est = float(fn(s, y))
        return float(2.0 * est - hi), float(2.0 * est - lo)
    if kind != "percentile":
        raise _refuse(f"unknown bootstrap interval kind {kind!r}", "use percentile or basic")
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
        _as_probs(probs),
        labels,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
        stratified=False,
        needs_both_classes=False,
        kind="basic",
    )
    return max(0.0, lo), max(0.0, hi)


def sensitivity_specificity(
    probs: npt.ArrayLike, labels: npt.ArrayLike, threshold: float
) -> tuple[float, float]:
    """Sensitivity and specificity when a case is called positive at ``prob >= threshold``.

    Raises CalibrationError when a class is missing (one of the two is undefined).
    """
    p = _as_scores(probs, "probs")
    y = _as_binary(labels, p.size)
    n_pos = int(y.sum())
    n_neg = p.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise _refuse(
            f"sensitivity and specificity need both classes, got {n_pos} positives, "
            f"{n_neg} negatives"
        )
    called = p >= threshold
    sens = float(np.sum(called & (y == 1.0)) / n_pos)
    spec = float(np.sum(~called & (y == 0.0)) / n_neg)
    return sens, spec


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
    p = _as_scores(probs, "probs")
    y = _as_binary(labels, p.size)
    pos = np.sort(p[y == 1.0])[::-1]
    neg = p[y == 0.0]
    if pos.size == 0 or neg.size == 0:
        raise _refuse("choosing a threshold needs both positive and negative cases")
    if rule == "sensitivity":
        if not 0.0 < target_sensitivity <= 1.0:
            raise _refuse(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
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
    raise _refuse(f"unknown threshold rule {rule!r}", "use 'sensitivity' or 'youden'")


# --------------------------------------------------------------------------------------------
# Optimisers (numpy only)
# --------------------------------------------------------------------------------------------


def _logistic_loss(eta: FloatArray, y: FloatArray) -> float:
    return float(np.mean(np.logaddexp(0.0, eta) - y * eta))


def _golden_min(f: Callable[[float], float], lo: float, hi: float, tol: float = 1e-7) -> float:
    """Minimise a unimodal function on [lo, hi] by golden-section search."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c = b - ratio * (b - a)
    d = a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    best = (a + b) / 2.0
    ends = [(f(lo), lo), (f(best), best), (f(hi), hi)]
    return min(ends)[1]


def _newton_logistic(
    X: FloatArray, y: FloatArray, l2: FloatArray, max_iter: int = 100, tol: float = 1e-10
) -> FloatArray:
    """L2-penalised logistic regression by damped Newton (IRLS); for a handful of columns."""
    n, p = X.shape
    w = np.zeros(p)

    def objective(v: FloatArray) -> float:
        return _logistic_loss(X @ v, y) + 0.5 * float(np.sum(l2 * v * v))

    f = objective(w)
    for _ in range(max_iter):
        mu = sigmoid(X @ w)
        grad = X.T @ (mu - y) / n + l2 * w
        hess = (X.T * (mu * (1.0 - mu))) @ X / n + np.diag(l2) + 1e-12 * np.eye(p)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            w_new = w - t * step
            f_new = objective(w_new)
            if f_new <= f - 1e-4 * t * float(grad @ step) or t < 1e-10:
                break
            t *= 0.5
        converged = abs(f - f_new) < tol
        w, f = w_new, f_new
        if converged or float(np.max(np.abs(t * step))) < 1e-12:
            break
    return w


def _lbfgs_logistic(
    X: FloatArray,
    y: FloatArray,
    l2: float,
    w0: FloatArray | None = None,
    max_iter: int = 500,
    memory: int = 10,
    gtol: float = 1e-6,
) -> FloatArray:
    """L2-penalised logistic regression (intercept last, unpenalised) by L-BFGS.

    Costs O(n * D) per iteration, so it suits 1280-d features where a Newton step would not.
    """
    n, p = X.shape
    pen = np.full(p, l2)
    pen[-1] = 0.0

    def fg(v: FloatArray) -> tuple[float, FloatArray]:
        eta = X @ v
        f = _logistic_loss(eta, y) + 0.5 * float(np.sum(pen * v * v))
        g = X.T @ (sigmoid(eta) - y) / n + pen * v
        return f, g

    w = np.zeros(p) if w0 is None else w0.copy()
    f, g = fg(w)
    s_hist: list[FloatArray] = []
    y_hist: list[FloatArray] = []
    for _ in range(max_iter):
        if float(np.max(np.abs(g))) < gtol:
            break
        q = g.copy()
        coefs: list[tuple[float, float]] = []
        for s_k, y_k in zip(reversed(s_hist), reversed(y_hist), strict=True):
            rho = 1.0 / float(y_k @ s_k)
            a = rho * float(s_k @ q)
            q -= a * y_k
            coefs.append((rho, a))
        if s_hist:
            gamma = float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1])
        else:
            gamma = 1.0 / max(1.0, float(np.linalg.norm(g)))
        r = gamma * q
        for (s_k, y_k), (rho, a) in zip(
            zip(s_hist, y_hist, strict=True), reversed(coefs), strict=True
        ):
            b = rho * float(y_k @ r)
            r += (a - b) * s_k
        d = -r
        gd = float(g @ d)
        if gd >= 0.0:
            d, gd = -g, -float(g @ g)
            s_hist.clear()
            y_hist.clear()
        t = 1.0
        while True:
            w_new = w + t * d
            f_new, g_new = fg(w_new)
            if f_new <= f + 1e-4 * t * gd:
                break
            t *= 0.5
            if t < 1e-12:
                return w
        s_k, y_k = w_new - w, g_new - g
        if float(s_k @ y_k) > 1e-12:
            s_hist.append(s_k)
            y_hist.append(y_k)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        done = abs(f - f_new) < 1e-12 * max(1.0, abs(f))
        w, f, g = w_new, f_new, g_new
        if done:
            break
    return w


# --------------------------------------------------------------------------------------------
# Calibrators
# --------------------------------------------------------------------------------------------


class Calibrator(Protocol):
    """What every per-finding calibrator offers (fit, predict, serialise)."""

    method: ClassVar[str]
    needs_features: ClassVar[bool]

    def fit(
        self, logits: FloatArray, labels: FloatArray, features: FloatArray | None = None
    ) -> Calibrator: ...

    def predict_proba(
        self, logits: FloatArray, features: FloatArray | None = None
    ) -> FloatArray: ...

    def to_params(self) -> dict[str, Any]: ...


def _check_fit_inputs(
    logits: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    z = _as_scores(logits, "logits")
    y = _as_binary(labels, z.size)
    if y.sum() == 0 or y.sum() == y.size:
        raise _refuse("a calibrator needs both positive and negative cases")
    return z, y


@dataclass
class TemperatureScaler:
    """Temperature scaling: probability = sigmoid(logit / T) with one T > 0 (Guo et al. 2017).

    Keeps the ranking (AUROC unchanged) and the 0.5 point; cannot fix a shifted base rate.
    """

    temperature: float = 1.0
    method: ClassVar[str] = "temperature"
    needs_features: ClassVar[bool] = False

    def fit(
        self, logits: npt.ArrayLike, labels: npt.ArrayLike, features: FloatArray | None = None
    ) -> TemperatureScaler:
        """Set T to the minimiser of the mean NLL on [0.05, 20] (bounded golden section).

        The NLL is convex in 1/T, so the 1-D search finds the global optimum inside the bounds;
        a T at a bound (e.g. logits anti-correlated with labels) is kept and logged.
        """
        z, y = _check_fit_inputs(logits, labels)
        lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
        log_t = _golden_min(lambda lt: _logistic_loss(z / math.exp(lt), y), lo, hi)
        self.temperature = float(math.exp(log_t))
        if abs(log_t - lo) < 1e-6 or abs(log_t - hi) < 1e-6:
            logger.warning("temperature hit its bound: T=%.3f", self.temperature)
        return self

    def predict_proba(
        self, logits: npt.ArrayLike, features: FloatArray | None = None
    ) -> FloatArray:
        """Calibrated probabilities for logits (any shape); ignores features, never refits."""
        return sigmoid(np.asarray(logits, dtype=np.float64) / self.temperature)

    def to_params(self) -> dict[str, Any]:
        """JSON-safe parameters; the method name is stored next to them by the record, not here."""
        return {"temperature": float(self.temperature)}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TemperatureScaler:
        """Rebuild from :meth:`to_params`; raises CalibrationError on bad values."""
        t = float(params["temperature"])
        if not math.isfinite(t) or t <= 0:
            raise _refuse(f"temperature must be finite and > 0, got {t}")
        return cls(temperature=t)


@dataclass
class PlattScaler:
    """Platt scaling: probability = sigmoid(a * logit + b), a logistic regression on the logit.

    Fitted by Newton's method with a tiny L2 (:data:`PLATT_L2`) so a and b stay finite when the
    classes separate. Monotone when a > 0; it does not change AUROC unless a < 0.
    """

    a: float = 1.0
    b: float = 0.0
    method: ClassVar[str] = "platt"
    needs_features: ClassVar[bool] = False

    def fit(
        self, logits: npt.ArrayLike, labels: npt.ArrayLike, features: FloatArray | None = None
    ) -> PlattScaler:
        """Fit a and b by penalised maximum likelihood; features are ignored."""
        z, y = _check_fit_inputs(logits, labels)
        X = np.column_stack([z, np.ones_like(z)])
        w = _newton_logistic(X, y, np.full(2, PLATT_L2))
        self.a, self.b = float(w[0]), float(w[1])
        return self

    def predict_proba(
        self, logits: npt.ArrayLike, features: FloatArray | None = None
    ) -> FloatArray:
        """Calibrated probabilities for logits (any shape); ignores features, never refits."""
        return sigmoid(self.a * np.asarray(logits, dtype=np.float64) + self.b)

    def to_params(self) -> dict[str, Any]:
        """JSON-safe parameters; the method name is stored next to them by the record, not here."""
        return {"a": float(self.a), "b": float(self.b)}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PlattScaler:
        """Rebuild from :meth:`to_params`; raises CalibrationError on bad values."""
        a, b = float(params["a"]), float(params["b"])
        if not (math.isfinite(a) and math.isfinite(b)):
            raise _refuse(f"Platt parameters must be finite, got a={a}, b={b}")
        return cls(a=a, b=b)


@dataclass
class IsotonicCalibrator:
    """Isotonic regression of the label on the logit (pool-adjacent-violators).

    Prediction interpolates linearly between knots and is flat beyond the end knots; outputs
    are kept in [PROB_EPS, 1 - PROB_EPS]. Non-decreasing, so AUROC can only drop (ties).
    ``fit`` refuses fewer than :data:`MIN_ISOTONIC_CASES` cases unless ``min_cases`` is lowered
    (which only cross-validation inside :func:`fit_calibration` does for its folds).
    """

    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    method: ClassVar[str] = "isotonic"
    needs_features: ClassVar[bool] = False

    def fit(
        self,
        logits: npt.ArrayLike,
        labels: npt.ArrayLike,
        features: FloatArray | None = None,
        *,
        min_cases: int = MIN_ISOTONIC_CASES,
    ) -> IsotonicCalibrator:
        """Fit the non-decreasing step function that minimises squared error (PAV)."""
        z, lab = _check_fit_inputs(logits, labels)
        if z.size < min_cases:
            raise _refuse(
                f"isotonic calibration needs at least {min_cases} labelled cases, got {z.size}",
                "use method 'platt' or 'temperature' (or 'auto'), or label more cases",
            )
        xs, inverse, counts = np.unique(z, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse.reshape(-1), weights=lab, minlength=xs.size)
        # Blocks of pooled points: value (weighted mean), weight, first and last x index.
        vals: list[float] = []
        wts: list[float] = []
        firsts: list[int] = []
        lasts: list[int] = []
        for i in range(xs.size):
            vals.append(sums[i] / counts[i])
            wts.append(float(counts[i]))
            firsts.append(i)
            lasts.append(i)
            while len(vals) > 1 and vals[-2] >= vals[-1]:
                w = wts[-2] + wts[-1]
                v = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w
                last = lasts[-1]
                del vals[-1], wts[-1], firsts[-1], lasts[-1]
                vals[-1], wts[-1], lasts[-1] = v, w, last
        kx: list[float] = []
        ky: list[float] = []
        for v, i0, i1 in zip(vals, firsts, lasts, strict=True):
            kx.append(float(xs[i0]))
            ky.append(float(v))
            if i1 != i0:
                kx.append(float(xs[i1]))
                ky.append(float(v))
        self.x, self.y = tuple(kx), tuple(ky)
        return self

    def predict_proba(
        self, logits: npt.ArrayLike, features: FloatArray | None = None
    ) -> FloatArray:
        """Calibrated probabilities by interpolation between knots; features are ignored."""
        if not self.x:
            raise _refuse("isotonic calibrator used before fit", "fit it or load its params")
        out = np.interp(np.asarray(logits, dtype=np.float64), self.x, self.y)
        return np.clip(out, PROB_EPS, 1.0 - PROB_EPS)

    def to_params(self) -> dict[str, Any]:
        """JSON-safe parameters (the knots); the method name is not included."""
        return {"x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> IsotonicCalibrator:
        """Rebuild from :meth:`to_params`; raises CalibrationError on bad knots."""
        x = tuple(float(v) for v in params["x"])
        y = tuple(float(v) for v in params["y"])
        if not x or len(x) != len(y) or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise _refuse("isotonic knots must be non-empty, equally long and non-decreasing")
        return cls(x=x, y=y)


def _design(logits: FloatArray, features: FloatArray) -> FloatArray:
    return np.column_stack([features, logits])


@dataclass
class RefitHead:
    """A re-fitted final layer: L2 logistic regression on standardised penultimate features.

    The model's own logit is appended as one more column, so the head starts from what the
    trained layer knew. The L2 strength is chosen by k-fold cross-validated NLL over
    :data:`REFIT_L2_GRID` unless given. Unlike the monotone maps it can recover ranking (AUROC)
    lost to the photo domain; it needs the features at prediction time.
    """

    coef: tuple[float, ...] = ()
    intercept: float = 0.0
    mean: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()
    l2: float = 0.0
    method: ClassVar[str] = "refit"
    needs_features: ClassVar[bool] = True

    def fit(
        self,
        logits: npt.ArrayLike,
        labels: npt.ArrayLike,
        features: npt.ArrayLike | None = None,
        *,
        l2: float | None = None,
        folds: int = 5,
        seed: int = 0,
    ) -> RefitHead:
        """Fit on (features, logit); choose ``l2`` by stratified k-fold CV NLL when None."""
        z, y = _check_fit_inputs(logits, labels)
        f = _check_features(features, z.size)
        if l2 is None:
            fold_ids = _stratified_folds(y, folds, seed)
            l2, _ = _refit_cv(z, y, f, fold_ids)
        self._fit_fixed(z, y, f, float(l2))
        return self

    def _fit_fixed(
        self, z: FloatArray, y: FloatArray, f: FloatArray, l2: float, w0: FloatArray | None = None
    ) -> FloatArray:
        X = _design(z, f)
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale < 1e-12] = 1.0
        Xs = np.column_stack([(X - mean) / scale, np.ones(z.size)])
        w = _lbfgs_logistic(Xs, y, l2, w0=w0)
        self.coef = tuple(float(v) for v in w[:-1])
        self.intercept = float(w[-1])
        self.mean = tuple(float(v) for v in mean)
        self.scale = tuple(float(v) for v in scale)
        self.l2 = float(l2)
        return w

    def predict_proba(
        self, logits: npt.ArrayLike, features: npt.ArrayLike | None = None
    ) -> FloatArray:
        """Probabilities from features (n, D) and logits (n,); raises if features are absent."""
        if not self.coef:
            raise _refuse("refit head used before fit", "fit it or load its params")
        z = np.asarray(logits, dtype=np.float64).reshape(-1)
        f = _check_features(features, z.size, expected_dim=len(self.coef) - 1)
        X = (_design(z, f) - np.asarray(self.mean)) / np.asarray(self.scale)
        return sigmoid(X @ np.asarray(self.coef) + self.intercept)

    def to_params(self) -> dict[str, Any]:
        """JSON-safe weights (standardised space), mean, scale and l2; no training data is kept."""
        return {
            "coef": list(self.coef),
            "intercept": float(self.intercept),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "l2": float(self.l2),
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RefitHead:
        """Rebuild from :meth:`to_params`; raises CalibrationError on inconsistent sizes."""
        coef = tuple(float(v) for v in params["coef"])
        mean = tuple(float(v) for v in params["mean"])
        scale = tuple(float(v) for v in params["scale"])
        if not coef or len(coef) != len(mean) or len(coef) != len(scale) or min(scale) <= 0:
            raise _refuse("refit head params have inconsistent sizes or non-positive scales")
        return cls(
            coef=coef,
            intercept=float(params["intercept"]),
            mean=mean,
            scale=scale,
            l2=float(params["l2"]),
        )


CALIBRATORS: dict[str, Any] = {
    "temperature": TemperatureScaler,
    "platt": PlattScaler,
    "isotonic": IsotonicCalibrator,
    "refit": RefitHead,
}


def calibrator_from_params(method: str, params: Mapping[str, Any]) -> Calibrator:
    """Rebuild a calibrator of ``method`` from its stored params; does not refit anything."""
    cls = CALIBRATORS.get(method)
    if cls is None:
        raise _refuse(f"unknown calibration method {method!r}", f"use one of {sorted(CALIBRATORS)}")
    try:
        return cls.from_params(params)
    except (KeyError, TypeError, ValueError) as exc:
        raise _refuse(
            f"stored {method} parameters are malformed: {exc}", "refit the calibration"
        ) from exc


def _check_features(
    features: npt.ArrayLike | None, n: int, expected_dim: int | None = None
) -> FloatArray:
    if features is None:
        raise _refuse(
            "the refit head needs the model's penultimate features, none were given",
            "pass features (the model's pooled feature vector) or use a monotone method",
        )
    f = np.asarray(features, dtype=np.float64)
    if f.ndim == 1 and n == 1:
        f = f.reshape(1, -1)
    if f.ndim != 2 or f.shape[0] != n:
        raise _refuse(f"features must have shape ({n}, D), got {f.shape}")
    if expected_dim is not None and f.shape[1] != expected_dim:
        raise _refuse(
            f"features have {f.shape[1]} dimensions, the refit head expects {expected_dim}",
            "use the features of the model this calibration was fitted for",
        )
    if not np.all(np.isfinite(f)):
        raise _refuse("features contain NaN or infinite values")
    return f


# --------------------------------------------------------------------------------------------
# Cross-validation
# --------------------------------------------------------------------------------------------


def _stratified_folds(y: FloatArray, folds: int, seed: int) -> npt.NDArray[np.intp]:
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


def _refit_cv(
    z: FloatArray, y: FloatArray, f: FloatArray, fold_ids: npt.NDArray[np.intp]
) -> tuple[float, FloatArray]:
    """Choose the refit head's L2 by CV NLL; return it and its out-of-fold probabilities.

    The returned predictions come from the same folds that chose the L2, so their NLL is a
    little optimistic (a 5-point grid keeps that small).
    """
    oof = {l2: np.empty(z.size) for l2 in REFIT_L2_GRID}
    for k in np.unique(fold_ids):
        train, test = fold_ids != k, fold_ids == k
        head = RefitHead()
        w0: FloatArray | None = None
        for l2 in sorted(REFIT_L2_GRID, reverse=True):  # strong to weak: warm starts
            w0 = head._fit_fixed(z[train], y[train], f[train], l2, w0)
            oof[l2][test] = head.predict_proba(z[test], f[test])
    scores = {l2: float(np.mean(_nll_terms(p, y))) for l2, p in oof.items()}
    best = min(scores, key=lambda k: (scores[k], -k))
    logger.debug("refit head CV NLL by l2: %s", scores)
    return best, oof[best]


def _oof_predict(
    method: str,
    z: FloatArray,
    y: FloatArray,
    f: FloatArray | None,
    fold_ids: npt.NDArray[np.intp],
    refit_cache: dict[str, tuple[float, FloatArray]],
) -> FloatArray:
    if method == "refit":
        assert f is not None
        if "cv" not in refit_cache:
            refit_cache["cv"] = _refit_cv(z, y, f, fold_ids)
        return refit_cache["cv"][1]
    out = np.empty(z.size)
    for k in np.unique(fold_ids):
        train, test = fold_ids != k, fold_ids == k
        cal: Any
        if method == "isotonic":
            cal = IsotonicCalibrator().fit(z[train], y[train], min_cases=0)
        else:
            cal = CALIBRATORS[method]().fit(z[train], y[train])
        out[test] = cal.predict_proba(z[test])
    return out


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def _json_float(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


@dataclass
class CalibrationRecord:
    """A fitted, versioned calibration for one model (by sha256), one entry per finding code.

    ``methods[code]`` names the calibrator, ``params[code]`` its parameters,
    ``thresholds[code]`` is ``{"value": float, "rule": "sensitivity"|"youden",
    "target_sensitivity": float|None}`` on the calibrated probability, ``n``/``positives``
    the labelled cases used, ``metrics[code]`` is ``{"before": {...}, "after": {...}}`` with keys
    ``ece, brier, nll, auroc, auroc_ci_low, auroc_ci_high, threshold, sensitivity, specificity,
    n, positives`` ("after": out-of-fold predictions of the chosen calibrator; "before": raw
    sigmoid(logit) of the same cases, its threshold chosen by the same rule), ``reasons[code]``
    a sentence saying why the method was chosen. The stored threshold was chosen on out-of-fold
    predictions and is applied to the final calibrator (fitted on all cases), so its sensitivity
    on new cases is close to, not guaranteed at, the target. Storing and activating records is
    not done here.
    """

    id: str
    model_id: str
    model_sha256: str
    codes: list[str]
    methods: dict[str, str]
    params: dict[str, dict[str, Any]]
    thresholds: dict[str, dict[str, Any]]
    n: dict[str, int]
    positives: dict[str, int]
    metrics: dict[str, dict[str, dict[str, Any]]]
    reasons: dict[str, str]
    created_by: str
    created_at: str
    notes: str = ""
    schema_version: int = RECORD_SCHEMA_VERSION
    _cache: dict[str, Calibrator] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; ``from_dict(json.loads(json.dumps(d)))`` gives an equal record."""
        return {
            "schema_version": self.schema_version,
            "id": self.id,
            "model_id": self.model_id,
            "model_sha256": self.model_sha256,
            "codes": list(self.codes),
            "methods": dict(self.methods),
            "params": {c: dict(p) for c, p in self.params.items()},
            "thresholds": {c: dict(t) for c, t in self.thresholds.items()},
            "n": dict(self.n),
            "positives": dict(self.positives),
            "metrics": {
                c: {side: dict(m) for side, m in sides.items()} for c, sides in self.metrics.items()
            },
            "reasons": dict(self.reasons),
            "created_by": self.created_by,
            "created_at": self.created_at,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationRecord:
        """Rebuild and validate a record from :meth:`to_dict` output; raises CalibrationError."""
        version = data.get("schema_version")
        if version != RECORD_SCHEMA_VERSION:
            raise _refuse(
                f"calibration record schema_version {version!r} is not supported "
                f"(expected {RECORD_SCHEMA_VERSION})",
                "refit the calibration with this version of the kiosk",
            )
        try:
            record = cls(
                id=str(data["id"]),
                model_id=str(data["model_id"]),
                model_sha256=str(data["model_sha256"]),
                codes=[str(c) for c in data["codes"]],
                methods={str(k): str(v) for k, v in data["methods"].items()},
                params={str(k): dict(v) for k, v in data["params"].items()},
                thresholds={str(k): dict(v) for k, v in data["thresholds"].items()},
                n={str(k): int(v) for k, v in data["n"].items()},
                positives={str(k): int(v) for k, v in data["positives"].items()},
                metrics={
                    str(k): {str(s): dict(m) for s, m in v.items()}
                    for k, v in data["metrics"].items()
                },
                reasons={str(k): str(v) for k, v in data["reasons"].items()},
                created_by=str(data["created_by"]),
                created_at=str(data["created_at"]),
                notes=str(data.get("notes", "")),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise _refuse(
                f"calibration record is malformed: {exc!r}", "refit or restore the record"
            ) from exc
        if not _SHA_RE.match(record.model_sha256):
            raise _refuse(
                f"calibration record {record.id} has an invalid model_sha256 "
                f"{record.model_sha256!r}",
                "refit or restore the record",
            )
        for code in record.codes:
            for part in ("methods", "params", "thresholds"):
                if code not in getattr(record, part):
                    raise _refuse(f"calibration record {record.id} has no {part} for {code!r}")
            value = record.thresholds[code].get("value")
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise _refuse(
                    f"calibration record {record.id} has an invalid threshold {value!r} "
                    f"for {code!r}",
                    "refit or restore the record",
                )
            calibrator_from_params(record.methods[code], record.params[code])
        return record

    def calibrator(self, code: str) -> Calibrator:
        """The calibrator for one finding code, rebuilt from params once and cached; never refit."""
        if code not in self.methods:
            raise _refuse(
                f"calibration {self.id} has no finding {code!r}", f"known: {', '.join(self.codes)}"
            )
        if code not in self._cache:
            self._cache[code] = calibrator_from_params(self.methods[code], self.params[code])
        return self._cache[code]

    def threshold(self, code: str) -> float:
        """Operating threshold on the calibrated probability for ``code``; not for raw scores."""
        if code not in self.thresholds:
            raise _refuse(
                f"calibration {self.id} has no threshold for {code!r}",
                f"known: {', '.join(self.codes)}",
            )
        return float(self.thresholds[code]["value"])

    @property
    def needs_features(self) -> bool:
        """True when some finding uses the refit head (apply then needs features)."""
        return any(m == "refit" for m in self.methods.values())

    def apply(
        self,
        logits: npt.ArrayLike,
        features: npt.ArrayLike | None = None,
        *,
        model_sha256: str,
        codes: Sequence[str] | None = None,
    ) -> FloatArray:
        """Calibrated probabilities for logits (C,) or (n, C).

        The columns of ``logits`` stand for ``codes`` (default: the record's own ``codes``, in
        its order); pass the model's finding codes so a record fitted with columns in another
        order is still applied to the right finding. Raises CalibrationError when
        ``model_sha256`` is not the model this record was fitted for, when a code has no
        calibration in this record, when a refit finding needs features that are absent, or on
        bad shapes/values. Does not threshold (see :meth:`threshold`).
        """
        if model_sha256.lower() != self.model_sha256.lower():
            raise _refuse(
                f"calibration {self.id} belongs to model {self.model_id} "
                f"(sha256 {self.model_sha256[:12]}…), not to the model with sha256 "
                f"{model_sha256[:12]}…",
                "fit a calibration for this model (kiosk calibrate) or run without one",
            )
        columns = list(self.codes if codes is None else codes)
        missing = [c for c in columns if c not in self.methods]
        if missing:
            raise _refuse(
                f"calibration {self.id} has no calibration for findings {missing} "
                f"(it covers {self.codes})",
                "fit a calibration with labels for every finding of the model",
            )
        z = np.asarray(logits, dtype=np.float64)
        single = z.ndim == 1
        z2 = z.reshape(1, -1) if single else z
        c = len(columns)
        if z2.ndim != 2 or z2.shape[1] != c:
            raise _refuse(
                f"logits must have shape ({c},) or (n, {c}) for findings {columns}, got {z.shape}"
            )
        if not np.all(np.isfinite(z2)):
            raise _refuse("logits contain NaN or infinite values", "check the model output")
        f2: FloatArray | None = None
        if features is not None:
            f = np.asarray(features, dtype=np.float64)
            f2 = f.reshape(1, -1) if f.ndim == 1 else f
        out = np.empty_like(z2)
        for j, code in enumerate(columns):
            cal = self.calibrator(code)
            if cal.needs_features and f2 is None:
                raise _refuse(
                    f"finding {code!r} uses a refit head that needs the model's features, "
                    "none were given",
                    "pass the classifier's pooled features to apply()",
                )
            out[:, j] = cal.predict_proba(z2[:, j], f2)
        return out[0] if single else out


# --------------------------------------------------------------------------------------------
# Fitting a record
# --------------------------------------------------------------------------------------------


def _metric_summary(
    probs: FloatArray,
    y: FloatArray,
    rule: ThresholdRule,
    target_sensitivity: float,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    thr = choose_threshold(probs, y, rule, target_sensitivity)
    sens, spec = sensitivity_specificity(probs, y, thr)
    lo, hi = bootstrap_ci(_auroc_unchecked, probs, y, n_boot=n_boot, seed=seed)
    return {
        "ece": _json_float(ece(probs, y, 15)),
        "brier": _json_float(brier(probs, y)),
        "nll": _json_float(nll(probs, y)),
        "auroc": _json_float(auroc(probs, y)),
        "auroc_ci_low": _json_float(lo),
        "auroc_ci_high": _json_float(hi),
        "threshold": _json_float(thr),
        "sensitivity": _json_float(sens),
        "specificity": _json_float(spec),
        "n": int(y.size),
        "positives": int(y.sum()),
    }


def _validate_inputs(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    codes: Sequence[str],
    features: npt.ArrayLike | None,
    known_codes: Sequence[str] | None,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    codes = list(codes)
    if not codes:
        raise _refuse("no finding codes given", "pass the codes the logits' columns stand for")
    bad = [c for c in codes if not isinstance(c, str) or not _CODE_RE.match(c)]
    if bad:
        raise _refuse(f"invalid finding codes {bad}", "codes are lower-case like 'pneumonia'")
    if len(set(codes)) != len(codes):
        raise _refuse(f"duplicate finding codes in {codes}")
    if known_codes is not None:
        unknown = [c for c in codes if c not in set(known_codes)]
        if unknown:
            raise _refuse(
                f"unknown finding codes {unknown}; the model knows {list(known_codes)}",
                "fix the column names of the labels file",
            )
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if z.ndim == 1 and len(codes) == 1:
        z = z.reshape(-1, 1)
    if y.ndim == 1 and len(codes) == 1:
        y = y.reshape(-1, 1)
    if z.ndim != 2 or z.shape[1] != len(codes):
        raise _refuse(f"logits must have shape (n, {len(codes)}) for {codes}, got {z.shape}")
    if y.shape != z.shape:
        raise _refuse(f"labels shape {y.shape} does not match logits shape {z.shape}")
    if not np.all(np.isfinite(z)):
        rows = np.flatnonzero(~np.all(np.isfinite(z), axis=1))[:5].tolist()
        raise _refuse(
            f"logits contain NaN or infinite values (rows {rows})",
            "check the model output for those images and drop or re-run them",
        )
    y = np.where(y == -1.0, np.nan, y)
    ok = np.isnan(y) | (y == 0.0) | (y == 1.0)
    if not np.all(ok):
        bad_vals = np.unique(y[~ok])[:5].tolist()
        raise _refuse(
            f"labels must be 0, 1 or missing (NaN or -1), found {bad_vals}", "fix the labels file"
        )
    f: FloatArray | None = None
    if features is not None:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] != z.shape[0]:
            raise _refuse(f"features must have shape ({z.shape[0]}, D), got {f.shape}")
        if not np.all(np.isfinite(f)):
            raise _refuse("features contain NaN or infinite values")
    return z, y, f


def _check_finding(code: str, y: FloatArray, folds: int) -> int:
    """Refuse unusable label sets; return the number of folds to use for this finding."""
    n = y.size
    pos = int(y.sum())
    neg = n - pos
    if n < MIN_LABELLED_CASES:
        raise _refuse(
            f"finding {code!r} has {n} labelled cases, at least {MIN_LABELLED_CASES} are needed",
            "label more photos from this site for this finding",
        )
    if pos == 0:
        raise _refuse(f"finding {code!r} has no positive cases among {n} labelled", "add positives")
    if neg == 0:
        raise _refuse(f"finding {code!r} has no negative cases among {n} labelled", "add negatives")
    minority = min(pos, neg)
    if minority < MIN_MINORITY_CASES:
        raise _refuse(
            f"finding {code!r} has only {minority} "
            f"{'positive' if pos < neg else 'negative'} cases; cross-validation needs at least "
            f"{MIN_MINORITY_CASES}",
            "label more cases of the rarer class",
        )
    if folds < 2:
        raise _refuse(f"folds must be >= 2, got {folds}")
    used = min(folds, minority)
    if used < folds:
        logger.info(
            "finding %s: %d folds instead of %d (minority class %d)", code, used, folds, minority
        )
    return used


def _choose_auto(
    code: str,
    candidates: dict[str, FloatArray],
    y: FloatArray,
    raw_nll: float,
    skipped: list[str],
) -> tuple[str, str]:
    """Simplest candidate within one standard error of the best CV NLL, and a sentence why."""
    losses = {m: _nll_terms(p, y) for m, p in candidates.items()}
    means = {m: float(v.mean()) for m, v in losses.items()}
    best = min(means, key=lambda m: means[m])
    chosen = best
    se_note = ""
    for m in (m for m in AUTO_ORDER if m in losses):
        if m == best:
            break
        diff = losses[m] - losses[best]
        se = float(diff.std(ddof=1) / math.sqrt(diff.size))
        if means[m] - means[best] <= se:
            chosen = m
            se_note = f" (within one standard error, {se:.4f}, of {best}; the simpler is kept)"
            break
    others = ", ".join(f"{m} {means[m]:.4f}" for m in AUTO_ORDER if m in means and m != chosen)
    reason = (
        f"{chosen}: CV NLL {means[chosen]:.4f} vs {others}{se_note}; uncalibrated {raw_nll:.4f}"
    )
    if skipped:
        reason += "; " + "; ".join(skipped)
    logger.info("finding %s: %s", code, reason)
    return chosen, reason


def _new_record_id(now: datetime) -> str:
    return f"cal-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def fit_calibration(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    codes: Sequence[str],
    *,
    features: npt.ArrayLike | None = None,
    method: Method = "auto",
    target_sensitivity: float = 0.90,
    threshold_rule: ThresholdRule = "sensitivity",
    folds: int = 5,
    seed: int = 0,
    model_id: str,
    model_sha256: str,
    created_by: str,
    known_codes: Sequence[str] | None = None,
    n_boot: int = 2000,
    notes: str = "",
) -> CalibrationRecord:
    """Fit one calibrator per finding on a labelled site set and return a record.

    ``logits`` and ``labels`` are (n, C); a label is 0, 1, or NaN/-1 for "not labelled for this
    finding" (each finding uses only its labelled rows). ``method="auto"`` compares temperature,
    Platt, isotonic (only with >= :data:`MIN_ISOTONIC_CASES` cases) and the refit head (only
    when ``features`` (n, D) are given) by stratified k-fold cross-validated NLL and keeps the
    simplest within one standard error of the best. Metrics "after" are computed on out-of-fold
    predictions of the chosen method, "before" on sigmoid(logit) of the same cases; the operating
    threshold is chosen on the out-of-fold predictions by ``threshold_rule``. ``known_codes``
    (the model's finding codes), when given, rejects unknown codes.

    Raises CalibrationError (saying what to do) on bad shapes, NaN/inf logits, unknown or
    duplicate codes, fewer than :data:`MIN_LABELLED_CASES` labelled cases, no positives or no
    negatives, fewer than :data:`MIN_MINORITY_CASES` of the rarer class, or an isotonic/refit
    request without enough cases/features. Does not store or activate the record.
    """
    if not _SHA_RE.match(model_sha256.lower()):
        raise _refuse(
            f"model_sha256 must be 64 hex digits, got {model_sha256!r}",
            "pass the sha256 from the model's manifest",
        )
    if method not in ("auto", *CALIBRATORS):
        raise _refuse(
            f"unknown method {method!r}", "use auto, temperature, platt, isotonic or refit"
        )
    if threshold_rule not in ("sensitivity", "youden"):
        raise _refuse(f"unknown threshold rule {threshold_rule!r}", "use sensitivity or youden")
    z_all, y_all, f_all = _validate_inputs(logits, labels, codes, features, known_codes)
    if method == "refit" and f_all is None:
        raise _refuse(
            "method 'refit' needs the model's penultimate features", "pass features or use auto"
        )
    codes = list(codes)
    now = datetime.now(UTC).replace(microsecond=0)
    methods: dict[str, str] = {}
    params: dict[str, dict[str, Any]] = {}
    thresholds: dict[str, dict[str, Any]] = {}
    n_by: dict[str, int] = {}
    pos_by: dict[str, int] = {}
    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    reasons: dict[str, str] = {}
    for j, code in enumerate(codes):
        rows = ~np.isnan(y_all[:, j])
        z, y = z_all[rows, j], y_all[rows, j]
        f = None if f_all is None else f_all[rows]
        k = _check_finding(code, y, folds)
        fold_ids = _stratified_folds(y, k, seed)
        fold_note = f" ({k} folds: only {int(min(y.sum(), y.size - y.sum()))} of the rarer class)"
        if method == "isotonic" and z.size < MIN_ISOTONIC_CASES:
            raise _refuse(
                f"isotonic calibration of {code!r} needs at least {MIN_ISOTONIC_CASES} labelled "
                f"cases, got {z.size}",
                "use --method platt, temperature or auto, or label more cases",
            )
        raw = sigmoid(z)
        refit_cache: dict[str, tuple[float, FloatArray]] = {}
        if method == "auto":
            skipped: list[str] = []
            cands = ["temperature", "platt"]
            if z.size >= MIN_ISOTONIC_CASES:
                cands.append("isotonic")
            else:
                skipped.append(f"isotonic skipped (n={z.size} < {MIN_ISOTONIC_CASES})")
            if f is not None:
                cands.append("refit")
            else:
                skipped.append("refit skipped (no features)")
            oof_by = {m: _oof_predict(m, z, y, f, fold_ids, refit_cache) for m in cands}
            chosen, reason = _choose_auto(code, oof_by, y, nll(raw, y), skipped)
            oof = oof_by[chosen]
        else:
            chosen = method
            oof = _oof_predict(chosen, z, y, f, fold_ids, refit_cache)
            reason = (
                f"{chosen}: requested; CV NLL {nll(oof, y):.4f} vs uncalibrated {nll(raw, y):.4f}"
            )
        if k < folds:
            reason += fold_note
        cal: Any
        if chosen == "refit":
            assert f is not None
            best_l2 = refit_cache["cv"][0]
            cal = RefitHead().fit(z, y, f, l2=best_l2)
            reason += f"; refit L2 {best_l2:g} chosen by CV"
        else:
            cal = CALIBRATORS[chosen]().fit(z, y)
        before = _metric_summary(raw, y, threshold_rule, target_sensitivity, n_boot, seed)
        after = _metric_summary(oof, y, threshold_rule, target_sensitivity, n_boot, seed)
        methods[code] = chosen
        params[code] = cal.to_params()
        thresholds[code] = {
            "value": after["threshold"],
            "rule": threshold_rule,
            "target_sensitivity": target_sensitivity if threshold_rule == "sensitivity" else None,
        }
        n_by[code] = int(y.size)
        pos_by[code] = int(y.sum())
        metrics[code] = {"before": before, "after": after}
        reasons[code] = reason
    record = CalibrationRecord(
        id=_new_record_id(now),
        model_id=model_id,
        model_sha256=model_sha256.lower(),
        codes=codes,
        methods=methods,
        params=params,
        thresholds=thresholds,
        n=n_by,
        positives=pos_by,
        metrics=metrics,
        reasons=reasons,
        created_by=created_by,
        created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        notes=notes,
    )
    logger.info("fitted calibration %s for model %s: %s", record.id, model_id, methods)
    return record


# --------------------------------------------------------------------------------------------
# Site loop: drift and refit proposals
# --------------------------------------------------------------------------------------------


def ks_two_sample(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and asymptotic p-value (numpy only).

    The p-value uses the Kolmogorov distribution with Stephens' small-sample correction; it is
    approximate for very small samples and does not handle ties specially.
    """
    x = np.sort(_as_scores(a, "a"))
    w = np.sort(_as_scores(b, "b"))
    grid = np.concatenate([x, w])
    cdf_x = np.searchsorted(x, grid, side="right") / x.size
    cdf_w = np.searchsorted(w, grid, side="right") / w.size
    d = float(np.max(np.abs(cdf_x - cdf_w)))
    en = math.sqrt(x.size * w.size / (x.size + w.size))
    lam = (en + 0.12 + 0.11 / en) * d
    if lam < 0.2:
        return d, 1.0
    j = np.arange(1, 101)
    p = 2.0 * float(np.sum((-1.0) ** (j - 1) * np.exp(-2.0 * (j * lam) ** 2)))
    return d, float(min(1.0, max(0.0, p)))


@dataclass(frozen=True)
class DriftReport:
    """Whether one finding's calibration and score distribution still hold at the site."""

    n: int
    positives: int
    bins: int
    ece: float
    ece_ci: tuple[float, float]
    predicted_rate: float
    observed_rate: float
    ks_statistic: float
    ks_pvalue: float
    n_baseline: int
    calibration_flag: bool
    shift_flag: bool
    reasons: tuple[str, ...]

    @property
    def flagged(self) -> bool:
        """True when either calibration drift or a score shift was found."""
        return self.calibration_flag or self.shift_flag

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field plus ``flagged``; nothing is recomputed."""
        return {
            "n": self.n,
            "positives": self.positives,
            "bins": self.bins,
            "ece": self.ece,
            "ece_ci": list(self.ece_ci),
            "predicted_rate": self.predicted_rate,
            "observed_rate": self.observed_rate,
            "ks_statistic": self.ks_statistic,
            "ks_pvalue": self.ks_pvalue,
            "n_baseline": self.n_baseline,
            "calibration_flag": self.calibration_flag,
            "shift_flag": self.shift_flag,
            "flagged": self.flagged,
            "reasons": list(self.reasons),
        }


def calibration_drift(
    probs_recent: npt.ArrayLike,
    labels_recent: npt.ArrayLike,
    raw_recent: npt.ArrayLike,
    raw_baseline: npt.ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ece_threshold: float = DRIFT_ECE_THRESHOLD,
) -> DriftReport:
    """Check one finding for drift: calibration on confirmed recent cases and score shift.

    ``probs_recent``/``labels_recent`` are calibrated probabilities and confirmed labels of
    recent cases; ``raw_recent``/``raw_baseline`` raw scores (any one monotone scale, e.g.
    logits) of recent cases and of the calibration set. Calibration drift is flagged when the
    lower bound of the ECE 95% bootstrap CI exceeds ``ece_threshold`` (equal-mass bins, at most
    15 and at least :data:`DRIFT_MIN_CASES_PER_BIN` cases each); a shift when the two-sample KS
    p-value is below :data:`DRIFT_KS_ALPHA` and the statistic at least
    :data:`DRIFT_KS_MIN_STATISTIC`. Pure: does not refit or store anything.
    """
    p = _as_probs(probs_recent, "probs_recent")
    y = _as_binary(labels_recent, p.size, "labels_recent")
    bins = max(1, min(15, p.size // DRIFT_MIN_CASES_PER_BIN))
    e = ece(p, y, bins)
    lo, hi = ece_ci(p, y, bins=bins, n_boot=n_boot, seed=seed)
    d, pval = ks_two_sample(raw_recent, raw_baseline)
    n_base = int(np.asarray(raw_baseline).size)
    reasons: list[str] = []
    cal_flag = lo > ece_threshold
    if cal_flag:
        reasons.append(
            f"calibration drift: ECE {e:.3f} (95% CI {lo:.3f}-{hi:.3f}, {bins} bins, n={p.size}) "
            f"exceeds {ece_threshold:.2f}; predicted positive rate {p.mean():.3f} vs observed "
            f"{y.mean():.3f}"
        )
    shift_flag = pval < DRIFT_KS_ALPHA and d >= DRIFT_KS_MIN_STATISTIC
    if shift_flag:
        reasons.append(
            f"score distribution shift: KS {d:.3f} (p={pval:.2g}) between {p.size} recent and "
            f"{n_base} baseline cases; check camera, lighting and film handling"
        )
    if not reasons:
        reasons.append(
            f"no drift: ECE {e:.3f} (95% CI {lo:.3f}-{hi:.3f}), KS {d:.3f} (p={pval:.2g})"
        )
    return DriftReport(
        n=int(p.size),
        positives=int(y.sum()),
        bins=bins,
        ece=e,
        ece_ci=(lo, hi),
        predicted_rate=float(p.mean()),
        observed_rate=float(y.mean()),
        ks_statistic=d,
        ks_pvalue=pval,
        n_baseline=n_base,
        calibration_flag=bool(cal_flag),
        shift_flag=bool(shift_flag),
        reasons=tuple(reasons),
    )


def should_propose_refit(
    n_confirmed_since_last: int, positives: int, negatives: int
) -> tuple[bool, str]:
    """Whether enough confirmed cases arrived since the last calibration to propose a refit.

    Needs :data:`REFIT_MIN_CONFIRMED` cases with at least :data:`REFIT_MIN_POSITIVES` positives
    and :data:`REFIT_MIN_NEGATIVES` negatives. Only proposes; never fits anything.
    """
    if min(n_confirmed_since_last, positives, negatives) < 0:
        raise _refuse("case counts cannot be negative")
    if positives + negatives > n_confirmed_since_last:
        raise _refuse(
            f"positives ({positives}) + negatives ({negatives}) exceed the confirmed cases "
            f"({n_confirmed_since_last})"
        )
    missing: list[str] = []
    if n_confirmed_since_last < REFIT_MIN_CONFIRMED:
        missing.append(f"{n_confirmed_since_last}/{REFIT_MIN_CONFIRMED} confirmed cases")
    if positives < REFIT_MIN_POSITIVES:
        missing.append(f"{positives}/{REFIT_MIN_POSITIVES} positives")
    if negatives < REFIT_MIN_NEGATIVES:
        missing.append(f"{negatives}/{REFIT_MIN_NEGATIVES} negatives")
    if missing:
        return False, "not yet: " + ", ".join(missing)
    return True, (
        f"{n_confirmed_since_last} confirmed cases ({positives} positive, {negatives} negative) "
        "since the last calibration: a refit can be proposed"
    )
