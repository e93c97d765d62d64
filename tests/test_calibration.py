"""Tests for kiosk.stats and kiosk.calibration: metrics by hand, calibrators, records, drift."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from kiosk.calibration.calibrators import (
    MIN_ISOTONIC_CASES,
    REFIT_L2_GRID,
    IsotonicCalibrator,
    PlattScaler,
    TemperatureScaler,
)
from kiosk.calibration.drift import (
    DRIFT_ECE_THRESHOLD,
    DRIFT_KS_ALPHA,
    REFIT_MIN_POSITIVES,
    calibration_drift,
    ks_two_sample,
    should_propose_refit,
)
from kiosk.calibration.fitting import fit_calibration
from kiosk.calibration.records import CalibrationRecord
from kiosk.errors import CalibrationError
from kiosk.stats import (
    auroc,
    bootstrap_ci,
    brier,
    choose_threshold,
    ece,
    ece_ci,
    logit,
    nll,
    reliability_bins,
    sensitivity_specificity,
    sigmoid,
)

SHA_A = "a" * 64
SHA_B = "b" * 64


def _bernoulli(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    return (rng.random(p.shape) < p).astype(float)


def _fit(logits: np.ndarray, labels: np.ndarray, codes: list[str], **kw: Any) -> CalibrationRecord:
    kw.setdefault("n_boot", 200)
    return fit_calibration(
        logits, labels, codes, model_id="m", model_sha256=SHA_A, created_by="test", **kw
    )


# ---- metrics on hand-computed cases ------------------------------------------------------------


def test_sigmoid_and_logit_are_inverse_and_stable() -> None:
    x = np.array([-800.0, -3.0, 0.0, 2.0, 800.0])
    p = sigmoid(x)
    assert np.all(np.isfinite(p))
    assert p[0] == 0.0 and p[-1] == 1.0 and p[2] == 0.5
    assert logit(sigmoid(np.array([-3.0, 2.0]))) == pytest.approx([-3.0, 2.0])


def test_brier_nll_by_hand() -> None:
    p = np.array([0.9, 0.2, 0.6])
    y = np.array([1.0, 0.0, 0.0])
    assert brier(p, y) == pytest.approx((0.01 + 0.04 + 0.36) / 3)
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3
    assert nll(p, y) == pytest.approx(expected)


def test_ece_by_hand_mass_and_width() -> None:
    p = np.array([0.1, 0.2, 0.7, 0.9])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    # Two equal-mass bins: {0.1, 0.2} mean 0.15 vs 0.5; {0.7, 0.9} mean 0.8 vs 1.0.
    assert ece(p, y, bins=2) == pytest.approx(0.5 * 0.35 + 0.5 * 0.2)
    # Width bins of 0.5: the same groups here.
    assert ece(p, y, bins=2, strategy="width") == pytest.approx(0.275)
    # One bin: |mean p - mean y| = |0.475 - 0.75|.
    assert ece(p, y, bins=1) == pytest.approx(0.275)


def test_reliability_bins_counts_and_rates() -> None:
    p = np.linspace(0.05, 0.95, 30)
    y = (np.arange(30) % 3 == 0).astype(float)
    rb = reliability_bins(p, y, bins=3)
    assert [b.count for b in rb] == [10, 10, 10]
    assert rb[0].mean_predicted == pytest.approx(p[:10].mean())
    assert rb[1].observed_rate == pytest.approx(y[10:20].mean())
    assert rb[0].upper <= rb[1].lower


def test_auroc_by_hand_with_ties() -> None:
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # Pairs (pos, neg): (0.5 vs 0.5) tie = 0.5, (0.5 vs 0.2) = 1, (0.9 vs both) = 1 + 1.
    assert auroc([0.5, 0.9, 0.5, 0.2], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)
    assert auroc([0.3, 0.3, 0.3], [1, 0, 0]) == pytest.approx(0.5)
    assert auroc([0.9, 0.1], [0, 1]) == 0.0


def test_auroc_needs_both_classes() -> None:
    with pytest.raises(CalibrationError, match="both classes"):
        auroc([0.1, 0.2], [1, 1])


def test_sensitivity_specificity_by_hand() -> None:
    p = np.array([0.1, 0.4, 0.6, 0.8, 0.3])
    y = np.array([0, 1, 1, 1, 0])
    sens, spec = sensitivity_specificity(p, y, 0.5)
    assert sens == pytest.approx(2 / 3) and spec == 1.0
    sens, spec = sensitivity_specificity(p, y, 0.4)  # >= threshold is positive
    assert sens == 1.0 and spec == 1.0


def test_choose_threshold_rules() -> None:
    p = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.65, 0.05])
    y = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    # 10 positives; sensitivity 0.9 needs 9 of them: the 9th highest positive score.
    assert choose_threshold(p, y, "sensitivity", 0.9) == pytest.approx(0.2)
    assert choose_threshold(p, y, "sensitivity", 1.0) == pytest.approx(0.1)
    # Youden: threshold 0.1 gives sens 1, spec 0.5 (J 0.5), the best here.
    thr = choose_threshold(p, y, "youden")
    sens, spec = sensitivity_specificity(p, y, thr)
    assert sens + spec - 1 == pytest.approx(0.5)


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    rng = np.random.default_rng(5)
    s = rng.normal(size=300)
    y = _bernoulli(rng, sigmoid(1.5 * s))
    est = auroc(s, y)
    ci = bootstrap_ci(auroc, s, y, n_boot=400, seed=3)
    assert ci[0] < est < ci[1]
    assert ci == bootstrap_ci(auroc, s, y, n_boot=400, seed=3)
    assert ci != bootstrap_ci(auroc, s, y, n_boot=400, seed=4)
    plain = bootstrap_ci(auroc, s, y, n_boot=400, seed=3, stratified=False)
    assert plain[0] < est < plain[1]


def test_bootstrap_skips_single_class_resamples() -> None:
    s = np.arange(12, dtype=float)
    y = np.zeros(12)
    y[-1] = 1.0
    # About 1/e of plain resamples miss the single positive; they are skipped, not crashed on.
    lo, hi = bootstrap_ci(auroc, s, y, n_boot=200, seed=0, stratified=False)
    assert 0.0 <= lo <= hi <= 1.0


def test_ece_ci_brackets_ece_and_is_small_for_calibrated() -> None:
    rng = np.random.default_rng(11)
    p = rng.uniform(0.02, 0.98, 3000)
    y = _bernoulli(rng, p)
    lo, hi = ece_ci(p, y, n_boot=200)
    assert lo <= ece(p, y) <= hi
    assert hi < 0.06


def test_metric_inputs_validated() -> None:
    with pytest.raises(CalibrationError, match="probabilities"):
        brier([0.2, 1.3], [0, 1])
    with pytest.raises(CalibrationError, match="0 or 1"):
        nll([0.2, 0.3], [0, 2])
    with pytest.raises(CalibrationError, match="shape"):
        auroc([0.2, 0.3, 0.4], [0, 1])


# ---- calibrators --------------------------------------------------------------------------------


def test_perfectly_calibrated_input_stays_put() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 4000)
    y = _bernoulli(rng, sigmoid(z))
    assert TemperatureScaler().fit(z, y).temperature == pytest.approx(1.0, abs=0.08)
    platt = PlattScaler().fit(z, y)
    assert platt.a == pytest.approx(1.0, abs=0.08)
    assert platt.b == pytest.approx(0.0, abs=0.08)
    record = _fit(z, y, ["pneumonia"], method="platt")
    m = record.metrics["pneumonia"]
    assert m["before"]["ece"] < 0.03 and m["after"]["ece"] < 0.03


def test_temperature_recovered() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 4, 5000)
    y = _bernoulli(rng, sigmoid(z / 2.5))
    t = TemperatureScaler().fit(z, y).temperature
    assert t == pytest.approx(2.5, rel=0.1)
    # And it matters: NLL improves over the raw sigmoid.
    assert nll(TemperatureScaler(t).predict_proba(z), y) < nll(sigmoid(z), y)


def test_platt_recovers_a_and_b() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, 5000)
    y = _bernoulli(rng, sigmoid(0.6 * z - 1.2))
    platt = PlattScaler().fit(z, y)
    assert platt.a == pytest.approx(0.6, abs=0.06)
    assert platt.b == pytest.approx(-1.2, abs=0.1)


def test_platt_stays_finite_when_classes_separate() -> None:
    z = np.concatenate([np.linspace(-3, -1, 20), np.linspace(1, 3, 20)])
    y = (z > 0).astype(float)
    platt = PlattScaler().fit(z, y)
    assert math.isfinite(platt.a) and math.isfinite(platt.b) and platt.a > 1.0
    p = platt.predict_proba(z)
    assert np.all(p[y == 1] > 0.9) and np.all(p[y == 0] < 0.1)


def test_isotonic_is_monotone_and_refuses_small_sets() -> None:
    rng = np.random.default_rng(3)
    n = MIN_ISOTONIC_CASES
    z = rng.normal(0, 2, n)
    y = _bernoulli(rng, sigmoid(1.7 * z + 0.5))
    iso = IsotonicCalibrator().fit(z, y)
    grid = np.linspace(-8, 8, 500)
    pred = iso.predict_proba(grid)
    assert np.all(np.diff(pred) >= 0)
    assert pred[0] < 0.1 and pred[-1] > 0.9
    # Its fit is at least as good (in squared error) as the raw sigmoid on its own data.
    assert brier(iso.predict_proba(z), y) <= brier(sigmoid(z), y)
    with pytest.raises(CalibrationError, match=str(MIN_ISOTONIC_CASES)):
        IsotonicCalibrator().fit(z[: n - 1], y[: n - 1])
    with pytest.raises(CalibrationError, match="isotonic"):
        _fit(z[:500], y[:500], ["pneumonia"], method="isotonic")


def test_isotonic_pools_violators_by_hand() -> None:
    iso = IsotonicCalibrator().fit([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1], min_cases=0)
    # Points 2 and 3 pool to 0.5: knots (1, 0), (2, .5), (3, .5), (4, 1).
    assert iso.x == (1.0, 2.0, 3.0, 4.0)
    assert iso.y == pytest.approx((0.0, 0.5, 0.5, 1.0))
    assert iso.predict_proba([1.5])[0] == pytest.approx(0.25)


def _shifted_domain(
    rng: np.random.Generator, n: int, d: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features carry the signal; the photo-domain logit lost most of it."""
    x = rng.normal(size=(n, d))
    w = np.zeros(d)
    w[:6] = 0.9
    s = x @ w
    y = _bernoulli(rng, sigmoid(s))
    z = 0.4 * s + rng.normal(0, 3, n)
    return z, y, x


def test_refit_head_recovers_auroc() -> None:
    rng = np.random.default_rng(4)
    z, y, x = _shifted_domain(rng, 500, 48)
    record = _fit(z, y, ["effusion"], features=x, method="refit")
    before, after = record.metrics["effusion"]["before"], record.metrics["effusion"]["after"]
    assert after["auroc"] > before["auroc"] + 0.1
    assert after["auroc_ci_low"] > before["auroc"]
    assert after["nll"] < before["nll"]
    assert record.params["effusion"]["l2"] in REFIT_L2_GRID
    # Held-out check with fresh data from the same site.
    z2, y2, x2 = _shifted_domain(rng, 500, 48)
    probs = record.apply(z2[:, None], x2, model_sha256=SHA_A)[:, 0]
    assert auroc(probs, y2) > auroc(z2, y2) + 0.1
    one = record.apply(z2[:1], x2[0], model_sha256=SHA_A)  # one image: (C,) and (D,)
    assert one.shape == (1,) and one[0] == pytest.approx(probs[0])


def test_refit_needs_features() -> None:
    rng = np.random.default_rng(4)
    z, y, x = _shifted_domain(rng, 300, 8)
    with pytest.raises(CalibrationError, match="features"):
        _fit(z, y, ["effusion"], method="refit")
    record = _fit(z, y, ["effusion"], features=x, method="refit")
    assert record.needs_features
    with pytest.raises(CalibrationError, match="features"):
        record.apply(z[:3, None], None, model_sha256=SHA_A)
    with pytest.raises(CalibrationError, match="dimensions"):
        record.apply(z[:3, None], x[:3, :5], model_sha256=SHA_A)


# ---- fit_calibration ----------------------------------------------------------------------------


def test_auto_picks_temperature_and_says_why() -> None:
    rng = np.random.default_rng(6)
    z = rng.normal(0, 4, 900)
    y = _bernoulli(rng, sigmoid(z / 2.5))
    record = _fit(z, y, ["pneumonia"])
    assert record.methods["pneumonia"] == "temperature"
    reason = record.reasons["pneumonia"]
    assert reason.startswith("temperature: CV NLL")
    assert "platt" in reason
    assert f"isotonic skipped: needs at least {MIN_ISOTONIC_CASES} labelled cases (have 900)" in (
        reason
    )
    assert record.params["pneumonia"]["temperature"] == pytest.approx(2.5, rel=0.15)
    m = record.metrics["pneumonia"]
    assert m["after"]["ece"] < m["before"]["ece"]
    assert m["after"]["nll"] < m["before"]["nll"]


def test_auto_picks_platt_when_base_rate_shifted() -> None:
    rng = np.random.default_rng(7)
    z = rng.normal(0, 2, 900)
    y = _bernoulli(rng, sigmoid(0.8 * z - 1.5))
    record = _fit(z, y, ["pneumonia"])
    assert record.methods["pneumonia"] == "platt"
    assert "temperature" in record.reasons["pneumonia"]


def test_auto_considers_refit_only_with_features() -> None:
    rng = np.random.default_rng(8)
    z, y, x = _shifted_domain(rng, 400, 24)
    assert "refit skipped" in _fit(z, y, ["effusion"]).reasons["effusion"]
    record = _fit(z, y, ["effusion"], features=x)
    assert record.methods["effusion"] == "refit"
    assert "refit" in record.reasons["effusion"]


def test_threshold_is_scored_on_cases_it_was_not_chosen_on() -> None:
    """The reported sensitivity comes from outer folds whose threshold was chosen without them,
    so on small sets it falls below the target about as often as above (chosen and scored on
    the same predictions, it was never below); the interval covers the target."""
    below = 0
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        z = rng.normal(-1, 2, 80)
        y = _bernoulli(rng, sigmoid(z / 1.5))
        record = _fit(z, y, ["pneumonia"], target_sensitivity=0.9)
        after = record.metrics["pneumonia"]["after"]
        below += after["sensitivity"] < 0.9
        assert after["sensitivity_ci_low"] <= after["sensitivity"] <= after["sensitivity_ci_high"]
        assert after["specificity_ci_low"] <= after["specificity"] <= after["specificity_ci_high"]
        assert after["target_sensitivity"] == 0.9
        assert record.thresholds["pneumonia"] == {
            "value": after["threshold"],
            "rule": "sensitivity",
            "target_sensitivity": 0.9,
        }
        assert "outer fold" in record.evaluation["threshold"]
    assert below >= 1
    rng = np.random.default_rng(9)
    z = rng.normal(-1, 2, 600)
    y = _bernoulli(rng, sigmoid(z / 1.5))
    record = _fit(z, y, ["pneumonia"], target_sensitivity=0.8)
    after = record.metrics["pneumonia"]["after"]
    assert after["sensitivity_ci_low"] <= 0.8 <= after["sensitivity_ci_high"]
    youden = _fit(z, y, ["pneumonia"], threshold_rule="youden")
    assert youden.thresholds["pneumonia"]["rule"] == "youden"


def test_multiple_findings_with_missing_labels() -> None:
    rng = np.random.default_rng(10)
    n = 300
    z = rng.normal(0, 3, (n, 2))
    y = _bernoulli(rng, sigmoid(z / np.array([2.0, 1.0])))
    y[:100, 1] = np.nan
    y[100:150, 0] = -1
    record = _fit(z, y, ["pneumonia", "effusion"])
    assert record.n == {"pneumonia": 250, "effusion": 200}
    assert record.positives["effusion"] == int(np.nansum(y[100:, 1]))
    probs = record.apply(z, None, model_sha256=SHA_A)
    assert probs.shape == (n, 2)
    single = record.apply(z[0], None, model_sha256=SHA_A)
    assert single.shape == (2,) and single == pytest.approx(probs[0])
    swapped = record.apply(z[:, ::-1], None, model_sha256=SHA_A, codes=["effusion", "pneumonia"])
    assert np.array_equal(swapped, probs[:, ::-1])
    assert not np.allclose(probs[:, 0], probs[:, 1])
    with pytest.raises(CalibrationError, match="no calibration for findings"):
        record.apply(z, None, model_sha256=SHA_A, codes=["pneumonia", "nodule"])
    assert re.fullmatch(r"cal-\d{8}T\d{6}Z-[0-9a-f]{6}", record.id)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record.created_at)


def test_folds_reduced_for_rare_class() -> None:
    rng = np.random.default_rng(12)
    z = rng.normal(0, 1, 60)
    y = np.zeros(60)
    y[np.argsort(z)[-7:]] = 1.0  # 7 positives: 10 folds cannot all hold one, 7 can
    record = _fit(z, y, ["pneumonia"], folds=10)
    assert "7 folds" in record.reasons["pneumonia"]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda z, y: (z[:20], y[:20]), "at least 30"),
        (lambda z, y: (z, np.zeros_like(y)), "no positive"),
        (lambda z, y: (z, np.ones_like(y)), "no negative"),
        (lambda z, y: (z, np.where(np.arange(y.size) < 3, 1.0, 0.0)), "only 3 positive"),
        (lambda z, y: (np.where(np.arange(z.size) == 4, np.nan, z), y), "NaN"),
        (lambda z, y: (np.where(np.arange(z.size) == 4, np.inf, z), y), "infinite"),
        (lambda z, y: (z, y[:-1]), "shape"),
        (lambda z, y: (z, np.where(np.arange(y.size) == 0, 2.0, y)), "0, 1 or missing"),
    ],
)
def test_refusals(mutate: Callable[[np.ndarray, np.ndarray], tuple], match: str) -> None:
    rng = np.random.default_rng(13)
    z = rng.normal(0, 2, 100)
    y = _bernoulli(rng, sigmoid(z))
    z2, y2 = mutate(z, y)
    with pytest.raises(CalibrationError, match=match) as info:
        _fit(z2, y2, ["pneumonia"])
    assert info.value.fix or "shape" in match or "NaN" in match or "infinite" in match


def test_refusals_on_codes_and_sha() -> None:
    rng = np.random.default_rng(14)
    z = rng.normal(0, 2, (100, 2))
    y = _bernoulli(rng, sigmoid(z))
    with pytest.raises(CalibrationError, match="shape"):
        _fit(z, y, ["pneumonia"])
    with pytest.raises(CalibrationError, match="duplicate"):
        _fit(z, y, ["pneumonia", "pneumonia"])
    with pytest.raises(CalibrationError, match="unknown finding codes"):
        _fit(z, y, ["pneumonia", "nodule"], known_codes=["pneumonia", "effusion"])
    with pytest.raises(CalibrationError, match="sha256"):
        fit_calibration(
            z, y, ["pneumonia", "effusion"], model_id="m", model_sha256="xyz", created_by="t"
        )


# ---- records ------------------------------------------------------------------------------------


def test_record_refuses_other_model() -> None:
    rng = np.random.default_rng(15)
    z = rng.normal(0, 2, 200)
    record = _fit(z, _bernoulli(rng, sigmoid(z)), ["pneumonia"])
    record.apply(z[:1, None], model_sha256=SHA_A.upper())
    with pytest.raises(CalibrationError, match="not to the model") as info:
        record.apply(z[:1, None], model_sha256=SHA_B)
    assert info.value.fix is not None
    with pytest.raises(CalibrationError, match="shape"):
        record.apply(np.zeros(3), model_sha256=SHA_A)
    with pytest.raises(CalibrationError, match="no threshold"):
        record.threshold("nodule")


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic", "refit"])
def test_record_json_round_trip_gives_identical_predictions(method: str) -> None:
    rng = np.random.default_rng(16)
    n = {"isotonic": MIN_ISOTONIC_CASES, "refit": 300}.get(method, 200)
    z, y, x = _shifted_domain(rng, n, 12)
    record = _fit(z, y, ["effusion"], features=x, method=method, notes="site 3")
    data = json.loads(json.dumps(record.to_dict(), allow_nan=False))
    again = CalibrationRecord.from_dict(data)
    assert again == record
    assert again.to_dict() == record.to_dict()
    expected = record.apply(z[:, None], x, model_sha256=SHA_A)
    assert np.array_equal(again.apply(z[:, None], x, model_sha256=SHA_A), expected)
    assert again.methods["effusion"] == method


def test_from_dict_rejects_bad_records() -> None:
    rng = np.random.default_rng(17)
    z = rng.normal(0, 2, 100)
    data = _fit(z, _bernoulli(rng, sigmoid(z)), ["pneumonia"]).to_dict()
    with pytest.raises(CalibrationError, match="schema_version"):
        CalibrationRecord.from_dict({**data, "schema_version": 99})
    with pytest.raises(CalibrationError, match="malformed"):
        CalibrationRecord.from_dict({k: v for k, v in data.items() if k != "methods"})
    bad = json.loads(json.dumps(data))
    bad["params"]["pneumonia"] = {"temperature": -1.0}
    with pytest.raises(CalibrationError, match="temperature"):
        CalibrationRecord.from_dict(bad)
    with pytest.raises(CalibrationError, match="model_sha256"):
        CalibrationRecord.from_dict({**data, "model_sha256": "not-a-hash"})
    bad = json.loads(json.dumps(data))
    bad["thresholds"]["pneumonia"]["value"] = None
    with pytest.raises(CalibrationError, match="threshold"):
        CalibrationRecord.from_dict(bad)


# ---- site loop ----------------------------------------------------------------------------------


def test_drift_flags_shift_and_miscalibration_not_a_stable_site() -> None:
    rng = np.random.default_rng(18)
    baseline = rng.normal(0, 2, 2000)
    recent = rng.normal(0, 2, 400)
    p = sigmoid(recent)
    stable = calibration_drift(p, _bernoulli(rng, p), recent, baseline, n_boot=300)
    assert not stable.flagged
    assert stable.reasons[0].startswith("no drift")
    assert stable.ks_pvalue > DRIFT_KS_ALPHA
    assert json.loads(json.dumps(stable.to_dict()))["flagged"] is False

    shifted = rng.normal(1.2, 2, 400)
    ps = sigmoid(2.5 * shifted)  # over-confident on the shifted photos
    drift = calibration_drift(ps, _bernoulli(rng, sigmoid(shifted)), shifted, baseline)
    assert drift.shift_flag and drift.calibration_flag and drift.flagged
    assert drift.ks_pvalue < 1e-6
    assert drift.ece_ci[0] > DRIFT_ECE_THRESHOLD
    assert any("shift" in r for r in drift.reasons)
    assert any("calibration drift" in r for r in drift.reasons)


def test_ks_two_sample_by_hand() -> None:
    d, p = ks_two_sample([1.0, 2.0, 3.0], [1.5, 2.5, 3.5, 4.5])
    # ECDFs differ most at x=3 (1.0 vs 0.5) and x=1 (1/3 vs 0): D = 0.5.
    assert d == pytest.approx(0.5)
    assert 0.2 < p <= 1.0
    d_far, p_far = ks_two_sample(np.arange(50.0), np.arange(50.0) + 100)
    assert d_far == 1.0 and p_far < 1e-10


def test_should_propose_refit() -> None:
    ok, why = should_propose_refit(250, 40, 210)
    assert ok and "250" in why
    ok, why = should_propose_refit(250, 5, 245)
    assert not ok and f"5/{REFIT_MIN_POSITIVES} positives" in why
    ok, why = should_propose_refit(50, 25, 25)
    assert not ok and "confirmed" in why
    with pytest.raises(CalibrationError):
        should_propose_refit(10, 8, 8)
