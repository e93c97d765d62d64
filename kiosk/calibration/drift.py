"""The site loop's checks: has calibration drifted, and is a refit worth proposing?

:func:`calibration_drift` compares recent confirmed cases with the calibration set (ECE with a
bootstrap interval, and a two-sample KS test of the raw scores); :func:`should_propose_refit`
counts confirmed cases. Both are pure: they never refit, store or activate anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kiosk.stats import as_binary, as_probs, as_scores, ece, ece_ci, refuse

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


def ks_two_sample(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and asymptotic p-value (numpy only).

    The p-value uses the Kolmogorov distribution with Stephens' small-sample correction; it is
    approximate for very small samples and does not handle ties specially.
    """
    x = np.sort(as_scores(a, "a"))
    w = np.sort(as_scores(b, "b"))
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
    p = as_probs(probs_recent, "probs_recent")
    y = as_binary(labels_recent, p.size, "labels_recent")
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
        raise refuse("case counts cannot be negative")
    if positives + negatives > n_confirmed_since_last:
        raise refuse(
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
