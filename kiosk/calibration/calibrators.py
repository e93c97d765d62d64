"""Per-finding calibrators: what maps one model's logit (and features) to a probability.

* :class:`TemperatureScaler`: one T > 0 on logits (Guo et al. 2017);
* :class:`PlattScaler`: ``a * logit + b``;
* :class:`IsotonicCalibrator`: pool-adjacent-violators, only with at least
  :data:`MIN_ISOTONIC_CASES` labelled cases;
* :class:`RefitHead`: an L2-regularised logistic regression re-fitted on the model's
  penultimate features, which can also recover ranking lost to the photo domain (its L2 chosen
  by cross-validation, :func:`refit_cv`).

Each fits, predicts and serialises its parameters; :func:`calibrator_from_params` rebuilds one
from stored parameters. Choosing a method per finding and measuring it is
:mod:`kiosk.calibration.fitting`'s job; nothing here touches files or the database.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from kiosk.calibration.folds import stratified_folds
from kiosk.calibration.optim import golden_min, lbfgs_logistic, logistic_loss, newton_logistic
from kiosk.stats import FloatArray, as_binary, as_scores, nll_terms, refuse, sigmoid

logger = logging.getLogger(__name__)

MIN_ISOTONIC_CASES = 1000
"""Isotonic regression overfits below about a thousand cases (scikit-learn's calibration docs)."""
PROB_EPS = 1e-6
"""Isotonic outputs are kept inside [PROB_EPS, 1 - PROB_EPS] so log-loss stays finite."""
TEMPERATURE_BOUNDS = (0.05, 20.0)
PLATT_L2 = 1e-4
"""Tiny L2 (per case) on Platt's a and b: finite parameters even when the classes separate."""
REFIT_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
"""L2 strengths (per case, on standardised features) tried by the refit head's CV."""


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
    z = as_scores(logits, "logits")
    y = as_binary(labels, z.size)
    if y.sum() == 0 or y.sum() == y.size:
        raise refuse("a calibrator needs both positive and negative cases")
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
        log_t = golden_min(lambda lt: logistic_loss(z / math.exp(lt), y), lo, hi)
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
            raise refuse(f"temperature must be finite and > 0, got {t}")
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
        w = newton_logistic(X, y, np.full(2, PLATT_L2))
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
            raise refuse(f"Platt parameters must be finite, got a={a}, b={b}")
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
            raise refuse(
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
            raise refuse("isotonic calibrator used before fit", "fit it or load its params")
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
            raise refuse("isotonic knots must be non-empty, equally long and non-decreasing")
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
            fold_ids = stratified_folds(y, folds, seed)
            l2, _ = refit_cv(z, y, f, fold_ids)
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
        w = lbfgs_logistic(Xs, y, l2, w0=w0)
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
            raise refuse("refit head used before fit", "fit it or load its params")
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
            raise refuse("refit head params have inconsistent sizes or non-positive scales")
        return cls(
            coef=coef,
            intercept=float(params["intercept"]),
            mean=mean,
            scale=scale,
            l2=float(params["l2"]),
        )


def refit_cv(
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
    scores = {l2: float(np.mean(nll_terms(p, y))) for l2, p in oof.items()}
    best = min(scores, key=lambda k: (scores[k], -k))
    logger.debug("refit head CV NLL by l2: %s", scores)
    return best, oof[best]


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
        raise refuse(f"unknown calibration method {method!r}", f"use one of {sorted(CALIBRATORS)}")
    try:
        return cls.from_params(params)
    except (KeyError, TypeError, ValueError) as exc:
        raise refuse(
            f"stored {method} parameters are malformed: {exc}", "refit the calibration"
        ) from exc


def _check_features(
    features: npt.ArrayLike | None, n: int, expected_dim: int | None = None
) -> FloatArray:
    if features is None:
        raise refuse(
            "the refit head needs the model's penultimate features, none were given",
            "pass features (the model's pooled feature vector) or use a monotone method",
        )
    f = np.asarray(features, dtype=np.float64)
    if f.ndim == 1 and n == 1:
        f = f.reshape(1, -1)
    if f.ndim != 2 or f.shape[0] != n:
        raise refuse(f"features must have shape ({n}, D), got {f.shape}")
    if expected_dim is not None and f.shape[1] != expected_dim:
        raise refuse(
            f"features have {f.shape[1]} dimensions, the refit head expects {expected_dim}",
            "use the features of the model this calibration was fitted for",
        )
    if not np.all(np.isfinite(f)):
        raise refuse("features contain NaN or infinite values")
    return f
