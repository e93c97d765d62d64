"""Choosing a calibration method without fooling ourselves, and the rules for activating one.

Three ideas, kept together because each depends on the previous one:

* **Minimums per method** (:data:`METHOD_MINIMUMS`): a method is a candidate only with enough
  labelled cases and enough of each class for its number of parameters. Temperature (1
  parameter) from 30 cases and 5 per class, Platt (2) from 50 and 10 per class, isotonic (a
  step function) from 1000 and 100 per class (scikit-learn's warning), the refit head (1,281
  weights on the pooled features) from 300 cases and 50 per class and only with features.
* **Nested cross-validation** (:func:`nested_estimate`): the choice itself (inner folds: each
  candidate's out-of-fold NLL, the simplest within one standard error of the best) is part of
  the procedure being measured, so it is repeated inside each outer training part and the
  chosen method is scored on the outer fold it never saw. The operating threshold is chosen
  the same way: on the inner out-of-fold predictions of the outer training part, scored on the
  outer fold. The pooled outer-fold predictions are what "after" metrics are computed on.
* **Activation rules** (:func:`activation_refusals`): a record is never activated when its
  held-out NLL or ECE is worse than no calibration on the same cases, when its held-out NLL
  gain is smaller than its own standard error (no evidence that it helps: with few cases a
  calibration that is worse in truth often looks a little better by chance), or when a finding
  has fewer than :data:`MIN_ACTIVATION_CASES` labelled cases or
  :data:`MIN_ACTIVATION_PER_CLASS` positives or negatives.

What this module does not do: build or store records (``fitting``, ``workflow``, the store).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kiosk.calibration.calibrators import CALIBRATORS, IsotonicCalibrator, refit_cv
from kiosk.calibration.folds import stratified_folds
from kiosk.stats import FloatArray, ThresholdRule, choose_threshold, nll_terms

if TYPE_CHECKING:
    from kiosk.calibration.records import CalibrationRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodMinimum:
    """Fewest labelled cases, and of each class, for a method to be fitted or chosen."""

    cases: int
    per_class: int
    needs_features: bool = False


METHOD_MINIMUMS: dict[str, MethodMinimum] = {
    "temperature": MethodMinimum(cases=30, per_class=5),
    "platt": MethodMinimum(cases=50, per_class=10),
    "isotonic": MethodMinimum(cases=1000, per_class=100),
    "refit": MethodMinimum(cases=300, per_class=50, needs_features=True),
}
AUTO_ORDER = ("temperature", "platt", "isotonic", "refit")
"""Simplest first: ``auto`` keeps the simplest method within one standard error of the best."""
MIN_ACTIVATION_CASES = 50
"""Fewest labelled cases per finding for a calibration to be activated: below that, 15-bin ECE
is measured on bins of one to three cases and a simulation (docs/calibration.md) showed
calibrations that look better on the held-out folds but are worse on new cases."""
MIN_ACTIVATION_PER_CLASS = 10
"""Fewest positives and negatives per finding for a calibration to be activated."""
OUTER_FOLDS = 5
INNER_FOLDS = 5


def method_problem(method: str, n: int, pos: int, neg: int, has_features: bool) -> str | None:
    """Why ``method`` may not be used on this labelled set (None when it may)."""
    need = METHOD_MINIMUMS[method]
    if need.needs_features and not has_features:
        return f"{method} needs the model's features (none given)"
    if n < need.cases:
        return f"{method} needs at least {need.cases} labelled cases (have {n})"
    if min(pos, neg) < need.per_class:
        return (
            f"{method} needs at least {need.per_class} positives and {need.per_class} negatives "
            f"(have {pos} and {neg})"
        )
    return None


def candidates_for(n: int, pos: int, neg: int, has_features: bool) -> tuple[list[str], list[str]]:
    """(methods ``auto`` may choose among, sentences saying why the others were skipped)."""
    chosen, skipped = [], []
    for method in AUTO_ORDER:
        problem = method_problem(method, n, pos, neg, has_features)
        if problem is None:
            chosen.append(method)
        else:
            skipped.append(f"{method} skipped: {problem.split(' ', 1)[1]}")
    return chosen, skipped


def oof_predict(
    method: str,
    z: FloatArray,
    y: FloatArray,
    f: FloatArray | None,
    fold_ids: npt.NDArray[np.intp],
) -> tuple[FloatArray, float | None]:
    """Out-of-fold probabilities of ``method`` (and the refit head's CV-chosen L2, else None)."""
    if method == "refit":
        assert f is not None
        l2, oof = refit_cv(z, y, f, fold_ids)
        return oof, l2
    out = np.empty(z.size)
    for k in np.unique(fold_ids):
        train, test = fold_ids != k, fold_ids == k
        cal: Any
        if method == "isotonic":
            cal = IsotonicCalibrator().fit(z[train], y[train], min_cases=0)
        else:
            cal = CALIBRATORS[method]().fit(z[train], y[train])
        out[test] = cal.predict_proba(z[test])
    return out, None


def one_se_choice(candidates: dict[str, FloatArray], y: FloatArray) -> tuple[str, str]:
    """The simplest candidate within one standard error of the best CV NLL, and a sentence."""
    losses = {m: nll_terms(p, y) for m, p in candidates.items()}
    means = {m: float(v.mean()) for m, v in losses.items()}
    best = min(means, key=lambda m: means[m])
    chosen, note = best, ""
    for m in (m for m in AUTO_ORDER if m in losses):
        if m == best:
            break
        diff = losses[m] - losses[best]
        se = float(diff.std(ddof=1) / math.sqrt(diff.size))
        if means[m] - means[best] <= se:
            chosen = m
            note = f" (within one standard error, {se:.4f}, of {best}; the simpler is kept)"
            break
    others = ", ".join(f"{m} {means[m]:.4f}" for m in AUTO_ORDER if m in means and m != chosen)
    vs = f" vs {others}" if others else ""
    return chosen, f"{chosen}: CV NLL {means[chosen]:.4f}{vs}{note}"


@dataclass
class Choice:
    """What the choice procedure made of one labelled set."""

    method: str
    oof: FloatArray  # inner out-of-fold probabilities of the chosen method
    reason: str
    refit_l2: float | None
    folds: int


def choose(
    method: str,
    candidates: list[str],
    z: FloatArray,
    y: FloatArray,
    f: FloatArray | None,
    folds: int,
    seed: int,
) -> Choice:
    """Run the choice on one labelled set: k-fold CV of each candidate (``auto``) or of the
    requested method; the folds are reduced to the size of the rarer class."""
    k = max(2, min(folds, int(y.sum()), int(y.size - y.sum())))
    fold_ids = stratified_folds(y, k, seed)
    if method != "auto":
        oof, l2 = oof_predict(method, z, y, f, fold_ids)
        return Choice(method, oof, f"{method}: requested", l2, k)
    results = {m: oof_predict(m, z, y, f, fold_ids) for m in candidates}
    chosen, reason = one_se_choice({m: r[0] for m, r in results.items()}, y)
    return Choice(chosen, results[chosen][0], reason, results[chosen][1], k)


def fit_chosen(choice: Choice, z: FloatArray, y: FloatArray, f: FloatArray | None) -> Any:
    """The chosen calibrator fitted on the whole set (the refit head with its CV-chosen L2)."""
    if choice.method == "refit":
        from kiosk.calibration.calibrators import RefitHead

        return RefitHead().fit(z, y, f, l2=choice.refit_l2)
    if choice.method == "isotonic":
        return IsotonicCalibrator().fit(z, y, min_cases=0)
    return CALIBRATORS[choice.method]().fit(z, y)


@dataclass
class NestedEstimate:
    """Outer-fold (held-out) results of the whole procedure: choice, fit and threshold."""

    probs: FloatArray  # calibrated probability of each case, from a fit that never saw it
    called: npt.NDArray[np.bool_]  # positive at the threshold chosen without this case
    raw_called: npt.NDArray[np.bool_]  # same, for raw probabilities (threshold chosen the same way)
    outer_folds: int
    chosen: list[str] = field(default_factory=list)  # method chosen in each outer fold

    def chosen_summary(self) -> str:
        counts = {m: self.chosen.count(m) for m in AUTO_ORDER if m in self.chosen}
        return ", ".join(f"{m} in {c}" for m, c in counts.items())


def nested_estimate(
    method: str,
    candidates: list[str],
    z: FloatArray,
    y: FloatArray,
    f: FloatArray | None,
    raw: FloatArray,
    *,
    rule: ThresholdRule,
    target_sensitivity: float,
    outer: int = OUTER_FOLDS,
    inner: int = INNER_FOLDS,
    seed: int = 0,
) -> NestedEstimate:
    """Held-out predictions and threshold decisions of the procedure, by nested k-fold CV.

    In each outer fold the procedure runs on the other folds only: :func:`choose` (inner
    folds), the chosen calibrator fitted on them, a threshold chosen by ``rule`` on their inner
    out-of-fold predictions; then the outer fold is predicted and called. ``raw`` (sigmoid of
    the logits) gets a threshold chosen the same way, so before and after compare like with
    like. Does not refit anything on all cases (the caller does that for the record).
    """
    k = max(2, min(outer, int(y.sum()), int(y.size - y.sum())))
    outer_ids = stratified_folds(y, k, seed + 7919)
    probs = np.empty(y.size)
    called = np.zeros(y.size, dtype=bool)
    raw_called = np.zeros(y.size, dtype=bool)
    chosen: list[str] = []
    for fold in range(k):
        train, test = outer_ids != fold, outer_ids == fold
        ft = None if f is None else f[train]
        choice = choose(method, candidates, z[train], y[train], ft, inner, seed + 1 + fold)
        cal = fit_chosen(choice, z[train], y[train], ft)
        probs[test] = cal.predict_proba(z[test], None if f is None else f[test])
        threshold = choose_threshold(choice.oof, y[train], rule, target_sensitivity)
        called[test] = probs[test] >= threshold
        raw_threshold = choose_threshold(raw[train], y[train], rule, target_sensitivity)
        raw_called[test] = raw[test] >= raw_threshold
        chosen.append(choice.method)
    return NestedEstimate(probs, called, raw_called, k, chosen)


def _worse(after: Any, before: Any) -> bool:
    if not isinstance(after, int | float) or not isinstance(before, int | float):
        return True
    if not (math.isfinite(after) and math.isfinite(before)):
        return True
    return float(after) > float(before)


def activation_refusals(record: CalibrationRecord) -> list[str]:
    """Why this record must not be activated, one sentence per problem (empty: it may be).

    Per finding: fewer than :data:`MIN_ACTIVATION_CASES` cases or
    :data:`MIN_ACTIVATION_PER_CLASS` positives or negatives, a held-out NLL or ECE worse than
    no calibration on the same cases, or a held-out NLL gain below its standard error (numbers
    included).
    """
    problems: list[str] = []
    for code in record.codes:
        n, pos = record.n.get(code, 0), record.positives.get(code, 0)
        neg = n - pos
        if n < MIN_ACTIVATION_CASES:
            problems.append(
                f"{code}: {n} labelled cases; at least {MIN_ACTIVATION_CASES} are needed to "
                "activate a calibration (with fewer its held-out error cannot be measured)"
            )
        if min(pos, neg) < MIN_ACTIVATION_PER_CLASS:
            problems.append(
                f"{code}: {pos} positives and {neg} negatives; at least "
                f"{MIN_ACTIVATION_PER_CLASS} of each are needed to activate a calibration"
            )
        metrics = record.metrics.get(code) or {}
        before, after = metrics.get("before") or {}, metrics.get("after") or {}
        for key, name in (("nll", "NLL"), ("ece", "ECE")):
            b, a = before.get(key), after.get(key)
            if _worse(a, b):
                shown_a = f"{a:.4f}" if isinstance(a, int | float) else "unknown"
                shown_b = f"{b:.4f}" if isinstance(b, int | float) else "unknown"
                problems.append(
                    f"{code}: held-out {name} {shown_a} with this calibration vs {shown_b} "
                    "without: it would make the probabilities worse"
                )
        gain, se = after.get("nll_gain"), after.get("nll_gain_se")
        if isinstance(gain, int | float) and isinstance(se, int | float) and 0 <= gain < se:
            problems.append(
                f"{code}: held-out NLL improves by only {gain:.4f}, less than its standard "
                f"error {se:.4f}: no evidence that it helps"
            )
    return problems
