"""Fitting a calibration record on a labelled site set: validation, choice, measurement.

:func:`fit_calibration` validates the labelled set, deals stratified folds, predicts each
candidate calibrator out of fold, picks a method per finding (``auto``: cross-validated NLL,
the simplest within one standard error of the best, and says why), measures before/after
metrics on the held-out predictions, chooses an operating threshold and returns a
:class:`~kiosk.calibration.records.CalibrationRecord`. It does not store or activate the
record (the workflow and the store do).

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
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from kiosk.calibration.calibrators import (
    CALIBRATORS,
    MIN_ISOTONIC_CASES,
    IsotonicCalibrator,
    RefitHead,
    refit_cv,
)
from kiosk.calibration.folds import stratified_folds
from kiosk.calibration.records import SHA_RE, CalibrationRecord
from kiosk.stats import (
    FloatArray,
    ThresholdRule,
    auroc,
    auroc_unchecked,
    bootstrap_ci,
    brier,
    choose_threshold,
    ece,
    nll,
    nll_terms,
    refuse,
    sensitivity_specificity,
    sigmoid,
)

logger = logging.getLogger(__name__)

Method = Literal["auto", "temperature", "platt", "isotonic", "refit"]
MIN_LABELLED_CASES = 30
"""Fewest labelled cases per finding that :func:`fit_calibration` accepts."""
MIN_MINORITY_CASES = 5
"""Fewest cases of the rarer class (positives or negatives) per finding for k-fold evaluation."""
AUTO_ORDER = ("temperature", "platt", "isotonic", "refit")
"""Simplest first: ``auto`` keeps the simplest method within one standard error of the best."""
_CODE_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


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
            refit_cache["cv"] = refit_cv(z, y, f, fold_ids)
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


def _json_float(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


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
    lo, hi = bootstrap_ci(auroc_unchecked, probs, y, n_boot=n_boot, seed=seed)
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


def _choose_auto(
    code: str,
    candidates: dict[str, FloatArray],
    y: FloatArray,
    raw_nll: float,
    skipped: list[str],
) -> tuple[str, str]:
    """Simplest candidate within one standard error of the best CV NLL, and a sentence why."""
    losses = {m: nll_terms(p, y) for m, p in candidates.items()}
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
    n_by: dict[str, int] = {}
    pos_by: dict[str, int] = {}
    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    reasons: dict[str, str] = {}
    for j, code in enumerate(codes):
        rows = ~np.isnan(y_all[:, j])
        z, y = z_all[rows, j], y_all[rows, j]
        f = None if f_all is None else f_all[rows]
        k = _check_finding(code, y, folds)
        fold_ids = stratified_folds(y, k, seed)
        fold_note = f" ({k} folds: only {int(min(y.sum(), y.size - y.sum()))} of the rarer class)"
        if method == "isotonic" and z.size < MIN_ISOTONIC_CASES:
            raise refuse(
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
