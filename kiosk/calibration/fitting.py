"""Fitting a calibration record on a labelled set: validation, choice, honest measurement.

:func:`fit_calibration` validates the labelled set and, per finding, chooses a method
(``auto``: among the methods whose minimums the set meets, by cross-validated NLL, the
simplest within one standard error of the best), fits it on all cases and chooses the
operating threshold on its out-of-fold predictions. "After" metrics are NOT measured on the
predictions that made the choice: the whole procedure (choice, fit, threshold) is repeated in
nested cross-validation (:mod:`kiosk.calibration.selection`) and scored on outer folds it never
saw; "before" is sigmoid(logit) of the same cases. It returns a
:class:`~kiosk.calibration.records.CalibrationRecord`; :func:`fit_calibration_detailed` also
returns the held-out predictions (for the reliability diagram). Neither stores nor activates
anything (the workflow and the store do; :func:`~kiosk.calibration.selection.activation_refusals`
says whether a record may be activated).

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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from kiosk.calibration.calibrators import CALIBRATORS
from kiosk.calibration.records import SHA_RE, CalibrationRecord, Kind
from kiosk.calibration.selection import (
    INNER_FOLDS,
    METHOD_MINIMUMS,
    OUTER_FOLDS,
    candidates_for,
    choose,
    fit_chosen,
    method_problem,
    nested_estimate,
)
from kiosk.stats import (
    FloatArray,
    ThresholdRule,
    auroc,
    auroc_unchecked,
    bootstrap_ci,
    brier,
    choose_threshold,
    ece,
    ece_ci,
    nll,
    nll_terms,
    refuse,
    sigmoid,
)

logger = logging.getLogger(__name__)

Method = Literal["auto", "temperature", "platt", "isotonic", "refit"]
MIN_LABELLED_CASES = METHOD_MINIMUMS["temperature"].cases
"""Fewest labelled cases per finding that :func:`fit_calibration` accepts."""
MIN_MINORITY_CASES = METHOD_MINIMUMS["temperature"].per_class
"""Fewest cases of the rarer class (positives or negatives) per finding for k-fold evaluation."""
_CODE_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
BOOTSTRAP_NOTE = (
    "95% intervals: stratified bootstrap over the pooled outer-fold cases (thresholds fixed "
    "per fold)"
)


@dataclass(frozen=True)
class HeldOut:
    """One finding's labelled cases: raw and held-out calibrated probabilities, labels."""

    raw: FloatArray
    calibrated: FloatArray
    labels: FloatArray


@dataclass(frozen=True)
class FitResult:
    """A fitted record and, per finding, the held-out predictions its "after" metrics used."""

    record: CalibrationRecord
    held_out: dict[str, HeldOut]


def _json_float(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _rate_ci(
    called: npt.NDArray[np.bool_], y: FloatArray, positive: bool, n_boot: int, seed: int
) -> tuple[float, float]:
    """Sensitivity (``positive``) or specificity of fixed calls, stratified bootstrap CI."""

    def rate(c: FloatArray, labels: FloatArray) -> float:
        if positive:
            return float(c[labels == 1.0].mean())
        return float(1.0 - c[labels == 0.0].mean())

    return bootstrap_ci(rate, called.astype(np.float64), y, n_boot=n_boot, seed=seed)


def _metric_summary(
    probs: FloatArray,
    y: FloatArray,
    called: npt.NDArray[np.bool_],
    threshold: float,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Metrics of held-out probabilities; sensitivity/specificity of the held-out calls."""
    positive = y == 1.0
    sens = float(called[positive].mean())
    spec = float((~called[~positive]).mean())
    auc_lo, auc_hi = bootstrap_ci(auroc_unchecked, probs, y, n_boot=n_boot, seed=seed)
    ece_lo, ece_hi = ece_ci(probs, y, 15, n_boot=n_boot, seed=seed)
    sens_lo, sens_hi = _rate_ci(called, y, True, n_boot, seed)
    spec_lo, spec_hi = _rate_ci(called, y, False, n_boot, seed)
    return {
        "ece": _json_float(ece(probs, y, 15)),
        "ece_ci_low": _json_float(ece_lo),
        "ece_ci_high": _json_float(ece_hi),
        "brier": _json_float(brier(probs, y)),
        "nll": _json_float(nll(probs, y)),
        "auroc": _json_float(auroc(probs, y)),
        "auroc_ci_low": _json_float(auc_lo),
        "auroc_ci_high": _json_float(auc_hi),
        "threshold": _json_float(threshold),
        "sensitivity": _json_float(sens),
        "sensitivity_ci_low": _json_float(sens_lo),
        "sensitivity_ci_high": _json_float(sens_hi),
        "specificity": _json_float(spec),
        "specificity_ci_low": _json_float(spec_lo),
        "specificity_ci_high": _json_float(spec_hi),
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
        raise refuse("no finding codes given", "pass the codes the logits' columns stand for")
    bad = [c for c in codes if not isinstance(c, str) or not _CODE_RE.match(c)]
    if bad:
        raise refuse(f"invalid finding codes {bad}", "codes are lower-case like 'pneumonia'")
    if len(set(codes)) != len(codes):
        raise refuse(f"duplicate finding codes in {codes}")
    if known_codes is not None:
        unknown = [c for c in codes if c not in set(known_codes)]
        if unknown:
            raise refuse(
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
        raise refuse(f"logits must have shape (n, {len(codes)}) for {codes}, got {z.shape}")
    if y.shape != z.shape:
        raise refuse(f"labels shape {y.shape} does not match logits shape {z.shape}")
    if not np.all(np.isfinite(z)):
        rows = np.flatnonzero(~np.all(np.isfinite(z), axis=1))[:5].tolist()
        raise refuse(
            f"logits contain NaN or infinite values (rows {rows})",
            "check the model output for those images and drop or re-run them",
        )
    y = np.where(y == -1.0, np.nan, y)
    ok = np.isnan(y) | (y == 0.0) | (y == 1.0)
    if not np.all(ok):
        bad_vals = np.unique(y[~ok])[:5].tolist()
        raise refuse(
            f"labels must be 0, 1 or missing (NaN or -1), found {bad_vals}", "fix the labels file"
        )
    f: FloatArray | None = None
    if features is not None:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] != z.shape[0]:
            raise refuse(f"features must have shape ({z.shape[0]}, D), got {f.shape}")
        if not np.all(np.isfinite(f)):
            raise refuse("features contain NaN or infinite values")
    return z, y, f


def _check_finding(code: str, y: FloatArray, folds: int) -> int:
    """Refuse unusable label sets; return the number of folds to use for this finding."""
    n = y.size
    pos = int(y.sum())
    neg = n - pos
    if n < MIN_LABELLED_CASES:
        raise refuse(
            f"finding {code!r} has {n} labelled cases, at least {MIN_LABELLED_CASES} are needed",
            "label more photos from this site for this finding",
        )
    if pos == 0:
        raise refuse(f"finding {code!r} has no positive cases among {n} labelled", "add positives")
    if neg == 0:
        raise refuse(f"finding {code!r} has no negative cases among {n} labelled", "add negatives")
    minority = min(pos, neg)
    if minority < MIN_MINORITY_CASES:
        raise refuse(
            f"finding {code!r} has only {minority} "
            f"{'positive' if pos < neg else 'negative'} cases; cross-validation needs at least "
            f"{MIN_MINORITY_CASES}",
            "label more cases of the rarer class",
        )
    if folds < 2:
        raise refuse(f"folds must be >= 2, got {folds}")
    used = min(folds, minority)
    if used < folds:
        logger.info(
            "finding %s: %d folds instead of %d (minority class %d)", code, used, folds, minority
        )
    return used


def _new_record_id(now: datetime) -> str:
    return f"cal-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _new_factory_id(now: datetime, model_sha256: str) -> str:
    return f"factory-{model_sha256[:8]}-{now:%Y%m%d}"


def _fit_finding(
    code: str,
    z: FloatArray,
    y: FloatArray,
    f: FloatArray | None,
    *,
    method: Method,
    folds: int,
    seed: int,
    rule: ThresholdRule,
    target_sensitivity: float,
    n_boot: int,
) -> tuple[str, Any, float, dict[str, Any], str, FloatArray, int]:
    """(method, calibrator, threshold, metrics, reason, held-out probabilities, folds)."""
    k = _check_finding(code, y, folds)
    n, pos = int(y.size), int(y.sum())
    if method == "auto":
        candidates, skipped = candidates_for(n, pos, n - pos, f is not None)
    else:
        problem = method_problem(method, n, pos, n - pos, f is not None)
        if problem is not None:
            raise refuse(
                f"finding {code!r}: {problem}",
                "use --method auto (it only considers methods this set is large enough for), "
                "or label more cases",
            )
        candidates, skipped = [method], []
    raw = sigmoid(z)
    choice = choose(method, candidates, z, y, f, k, seed)
    calibrator = fit_chosen(choice, z, y, f)
    threshold = choose_threshold(choice.oof, y, rule, target_sensitivity)
    nested = nested_estimate(
        method,
        candidates,
        z,
        y,
        f,
        raw,
        rule=rule,
        target_sensitivity=target_sensitivity,
        outer=k,
        inner=k,
        seed=seed,
    )
    before = _metric_summary(
        raw, y, nested.raw_called, choose_threshold(raw, y, rule, target_sensitivity), n_boot, seed
    )
    after = _metric_summary(nested.probs, y, nested.called, threshold, n_boot, seed)
    after["target_sensitivity"] = target_sensitivity if rule == "sensitivity" else None
    gain = nll_terms(raw, y) - nll_terms(nested.probs, y)
    after["nll_gain"] = _json_float(float(gain.mean()))
    after["nll_gain_se"] = _json_float(float(gain.std(ddof=1) / math.sqrt(gain.size)))
    reason = f"{choice.reason}; uncalibrated NLL {nll(raw, y):.4f}"
    if skipped:
        reason += "; " + "; ".join(skipped)
    if choice.method == "refit":
        reason += f"; refit L2 {choice.refit_l2:g} chosen by CV"
    reason += (
        f"; nested CV ({nested.outer_folds} outer folds) chose {nested.chosen_summary()}: "
        f"held-out NLL {after['nll']:.4f} vs {before['nll']:.4f} uncalibrated, "
        f"ECE {after['ece']:.4f} vs {before['ece']:.4f}"
    )
    if k < folds:
        reason += f" ({k} folds: only {min(pos, n - pos)} of the rarer class)"
    logger.info("finding %s: %s", code, reason)
    return (
        choice.method,
        calibrator,
        threshold,
        {"before": before, "after": after},
        reason,
        (nested.probs),
        k,
    )


def fit_calibration_detailed(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    codes: Sequence[str],
    *,
    features: npt.ArrayLike | None = None,
    method: Method = "auto",
    target_sensitivity: float = 0.90,
    threshold_rule: ThresholdRule = "sensitivity",
    folds: int = OUTER_FOLDS,
    seed: int = 0,
    model_id: str,
    model_sha256: str,
    created_by: str,
    known_codes: Sequence[str] | None = None,
    n_boot: int = 2000,
    notes: str = "",
    kind: Kind = "site",
    data: dict[str, Any] | None = None,
) -> FitResult:
    """:func:`fit_calibration`, also returning each finding's held-out predictions."""
    if not SHA_RE.match(model_sha256.lower()):
        raise refuse(
            f"model_sha256 must be 64 hex digits, got {model_sha256!r}",
            "pass the sha256 from the model's manifest",
        )
    if method not in ("auto", *CALIBRATORS):
        raise refuse(
            f"unknown method {method!r}", "use auto, temperature, platt, isotonic or refit"
        )
    if threshold_rule not in ("sensitivity", "youden"):
        raise refuse(f"unknown threshold rule {threshold_rule!r}", "use sensitivity or youden")
    z_all, y_all, f_all = _validate_inputs(logits, labels, codes, features, known_codes)
    if method == "refit" and f_all is None:
        raise refuse(
            "method 'refit' needs the model's penultimate features", "pass features or use auto"
        )
    codes = list(codes)
    now = datetime.now(UTC).replace(microsecond=0)
    methods: dict[str, str] = {}
    params: dict[str, dict[str, Any]] = {}
    thresholds: dict[str, dict[str, Any]] = {}
    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    reasons: dict[str, str] = {}
    held_out: dict[str, HeldOut] = {}
    used_folds: dict[str, int] = {}
    for j, code in enumerate(codes):
        rows = ~np.isnan(y_all[:, j])
        z, y = z_all[rows, j], y_all[rows, j]
        f = None if f_all is None else f_all[rows]
        chosen, cal, thr, m, reason, probs, k = _fit_finding(
            code,
            z,
            y,
            f,
            method=method,
            folds=folds,
            seed=seed,
            rule=threshold_rule,
            target_sensitivity=target_sensitivity,
            n_boot=n_boot,
        )
        methods[code] = chosen
        params[code] = cal.to_params()
        thresholds[code] = {
            "value": float(thr),
            "rule": threshold_rule,
            "target_sensitivity": target_sensitivity if threshold_rule == "sensitivity" else None,
        }
        metrics[code] = m
        reasons[code] = reason
        held_out[code] = HeldOut(raw=sigmoid(z), calibrated=probs, labels=y)
        used_folds[code] = k
    record = CalibrationRecord(
        id=_new_factory_id(now, model_sha256) if kind == "factory" else _new_record_id(now),
        model_id=model_id,
        model_sha256=model_sha256.lower(),
        codes=codes,
        methods=methods,
        params=params,
        thresholds=thresholds,
        n={c: held_out[c].labels.size for c in codes},
        positives={c: int(held_out[c].labels.sum()) for c in codes},
        metrics=metrics,
        reasons=reasons,
        created_by=created_by,
        created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        notes=notes,
        kind=kind,
        data=dict(data or {}),
        evaluation={
            "scheme": "nested cross-validation",
            "folds": used_folds,
            "after": "outer-fold predictions of the whole procedure (method choice and fit on "
            "the other folds)",
            "threshold": "chosen on the inner out-of-fold predictions of each outer training "
            "part, sensitivity and specificity scored on the outer fold",
            "intervals": BOOTSTRAP_NOTE,
            "inner_folds_default": INNER_FOLDS,
        },
    )
    logger.info("fitted calibration %s for model %s: %s", record.id, model_id, methods)
    return FitResult(record=record, held_out=held_out)


def fit_calibration(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    codes: Sequence[str],
    *,
    features: npt.ArrayLike | None = None,
    method: Method = "auto",
    target_sensitivity: float = 0.90,
    threshold_rule: ThresholdRule = "sensitivity",
    folds: int = OUTER_FOLDS,
    seed: int = 0,
    model_id: str,
    model_sha256: str,
    created_by: str,
    known_codes: Sequence[str] | None = None,
    n_boot: int = 2000,
    notes: str = "",
    kind: Kind = "site",
    data: dict[str, Any] | None = None,
) -> CalibrationRecord:
    """Fit one calibrator per finding on a labelled set and return a record.

    ``logits`` and ``labels`` are (n, C); a label is 0, 1, or NaN/-1 for "not labelled for this
    finding" (each finding uses only its labelled rows). ``method="auto"`` compares the methods
    whose minimums (:data:`~kiosk.calibration.selection.METHOD_MINIMUMS`) the finding's set
    meets, by stratified k-fold cross-validated NLL, and keeps the simplest within one standard
    error of the best; the refit head also needs ``features`` (n, D). "After" metrics come from
    nested cross-validation (the choice repeated inside each outer training part), "before" is
    sigmoid(logit) of the same cases. The operating threshold is chosen by ``threshold_rule``
    on the chosen method's out-of-fold predictions; its sensitivity and specificity in the
    record were scored on outer folds with thresholds chosen without them, with bootstrap
    intervals. ``kind`` is "site" or "factory"; ``data`` (cases used and skipped) is stored as
    given.

    Raises CalibrationError (saying what to do) on bad shapes, NaN/inf logits, unknown or
    duplicate codes, fewer than :data:`MIN_LABELLED_CASES` labelled cases, no positives or no
    negatives, fewer than :data:`MIN_MINORITY_CASES` of the rarer class, or a requested method
    whose minimums the set does not meet. Does not store or activate the record.
    """
    return fit_calibration_detailed(
        logits,
        labels,
        codes,
        features=features,
        method=method,
        target_sensitivity=target_sensitivity,
        threshold_rule=threshold_rule,
        folds=folds,
        seed=seed,
        model_id=model_id,
        model_sha256=model_sha256,
        created_by=created_by,
        known_codes=known_codes,
        n_boot=n_boot,
        notes=notes,
        kind=kind,
        data=data,
    ).record
