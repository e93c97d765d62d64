"""Method choice that cannot overfit, activation rules, and the one calibration workflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiosk.calibration import workflow
from kiosk.calibration.fitting import fit_calibration
from kiosk.calibration.selection import (
    MIN_ACTIVATION_CASES,
    MIN_ACTIVATION_PER_CLASS,
    activation_refusals,
)
from kiosk.calibration.workflow import LabelledCases, Skipped
from kiosk.errors import CalibrationError
from kiosk.model.manifest import Manifest
from kiosk.stats import ece, sigmoid
from kiosk.store import Store

SHA = "a" * 64
BUNDLED = Path(__file__).resolve().parents[1] / "models" / "cxr-pneumonia-effl0.json"


def _fit(z: np.ndarray, y: np.ndarray, **kw: Any) -> Any:
    kw.setdefault("n_boot", 100)
    return fit_calibration(
        z, y, ["pneumonia"], model_id="m", model_sha256=SHA, created_by="test", **kw
    )


def _site(rng: np.random.Generator, n: int, a: float, b: float) -> tuple[np.ndarray, ...]:
    """Logits of a model whose true probability is sigmoid(a * logit + b), and labels."""
    z = rng.normal(0.5, 2.5, n)
    y = (rng.random(n) < sigmoid(a * z + b)).astype(float)
    return z, y


def test_method_minimums_decide_the_candidates() -> None:
    rng = np.random.default_rng(1)
    z, y = _site(rng, 60, 0.8, 1.0)
    features = rng.normal(size=(60, 16))
    record = _fit(z, y, features=features)
    reason = record.reasons["pneumonia"]
    assert "refit skipped: needs at least 300 labelled cases (have 60)" in reason
    assert "isotonic skipped: needs at least 1000 labelled cases (have 60)" in reason
    assert record.methods["pneumonia"] in ("temperature", "platt")
    with pytest.raises(CalibrationError, match="at least 50 labelled cases"):
        _fit(z[:40], y[:40], method="platt")
    z3, y3 = _site(rng, 200, 0.8, 1.0)
    with pytest.raises(CalibrationError, match="refit needs at least 300"):
        _fit(z3, y3, features=rng.normal(size=(200, 16)), method="refit")


def test_small_set_with_many_features_never_gets_the_refit_head() -> None:
    """The issue's case: 37 photos and a 1,280-feature head. The head is not even tried."""
    rng = np.random.default_rng(2)
    z, y = _site(rng, 37, 1.0, 0.0)
    record = _fit(z, y, features=rng.normal(size=(37, 256)))
    assert record.methods["pneumonia"] == "temperature"
    assert "refit skipped" in record.reasons["pneumonia"]
    assert "nested CV (5 outer folds) chose temperature in 5" in record.reasons["pneumonia"]


@pytest.mark.parametrize(("a", "b"), [(1.0, 0.0), (0.8, 1.0), (0.5, 0.0), (1.6, 0.0)], ids=str)
def test_with_30_labelled_auto_refuses_or_does_not_worsen_held_out_ece(a: float, b: float) -> None:
    """Done-when of issue 14, on synthetic sites (calibrated, shifted, over- and under-
    confident): with 30 labelled cases `auto` either refuses, with a reason, or the held-out
    ECE on 20,000 new cases of the same site is no worse than without calibration."""
    rng = np.random.default_rng(3)
    z_new, y_new = _site(rng, 20_000, a, b)
    ece_none = ece(sigmoid(z_new), y_new)
    for _ in range(15):
        z, y = _site(rng, 30, a, b)
        try:
            record = _fit(z, y, features=rng.normal(size=(30, 64)))
        except CalibrationError as exc:
            assert exc.fix
            continue
        refusals = activation_refusals(record)
        if refusals:
            assert any(str(MIN_ACTIVATION_CASES) in r for r in refusals)
            continue
        after = record.apply(z_new[:, None], model_sha256=SHA).reshape(-1)
        assert ece(after, y_new) <= ece_none


def test_never_activated_when_worse_than_none_and_says_so_with_numbers() -> None:
    rng = np.random.default_rng(4)
    z, y = _site(rng, 300, 0.5, 1.0)
    record = _fit(z, y)
    assert activation_refusals(record) == []
    data = record.to_dict()
    after = data["metrics"]["pneumonia"]["after"]
    before = data["metrics"]["pneumonia"]["before"]
    after["nll"], after["ece"] = before["nll"] + 0.01, before["ece"] + 0.02
    worse = activation_refusals(type(record).from_dict(data))
    assert (
        f"held-out NLL {after['nll']:.4f} with this calibration vs {before['nll']:.4f}"
        in (worse[0])
    )
    assert any("held-out ECE" in w and "worse" in w for w in worse)
    data["positives"]["pneumonia"] = MIN_ACTIVATION_PER_CLASS - 1
    few = activation_refusals(type(record).from_dict(data))
    assert any(f"at least {MIN_ACTIVATION_PER_CLASS} of each" in f for f in few)


def test_no_evidence_of_help_is_a_refusal() -> None:
    """An already calibrated model: refitting cannot show a held-out gain beyond its noise."""
    rng = np.random.default_rng(5)
    z, y = _site(rng, 150, 1.0, 0.0)
    problems = activation_refusals(_fit(z, y))
    assert problems and any("NLL" in p for p in problems)


def test_skipped_cases_are_counted_by_reason() -> None:
    skipped = [Skipped(f"p{i}.jpg", "No film", "photo gate: no film") for i in range(120)]
    skipped += [Skipped(f"g{i}.jpg", "Glare", "photo gate: glare") for i in range(43)]
    cases = LabelledCases(
        logits=np.zeros((37, 1)),
        labels=np.zeros((37, 1)),
        features=None,
        skipped=skipped,
        source="labelled photos",
    )
    assert cases.summary == (
        "37 of 200 labelled photos used; 163 skipped: 120 photo gate: no film, 43 photo gate: glare"
    )
    assert cases.data()["skipped"] == {"photo gate: no film": 120, "photo gate: glare": 43}


def _cases(rng: np.random.Generator, n: int, a: float, b: float) -> LabelledCases:
    z, y = _site(rng, n, a, b)
    return LabelledCases(z[:, None], y[:, None], None, [Skipped("x.jpg", "glare", "glare")])


def test_workflow_stores_files_and_audit_and_refuses_to_activate_a_small_set(
    tmp_path: Path,
) -> None:
    manifest = Manifest.load(BUNDLED)
    store = Store(tmp_path / "kiosk.db")
    try:
        rng = np.random.default_rng(6)
        outcome = workflow.fit_and_save(
            store, tmp_path, manifest, _cases(rng, 30, 0.8, 1.0), activate=True, created_by="t"
        )
        assert not outcome.activated and outcome.refusals
        record = outcome.record
        assert store.active_calibration(manifest.sha256) is None
        stored = store.get_calibration(record.id)
        assert stored is not None and stored["data"]["used"] == 30
        assert stored["data"]["summary"] == "30 of 31 labelled cases used; 1 skipped: 1 glare"
        assert (tmp_path / "calibrations" / f"{record.id}.json").is_file()
        assert outcome.diagram == tmp_path / "calibrations" / f"{record.id}.svg"
        assert "after (held-out folds)" in outcome.diagram.read_text()
        actions = {row["action"]: row for row in store.audit_log()}
        assert json.loads(actions["calibration.stored"]["details"])["used"] == 30
        assert "calibration.activation_refused" in actions
        with pytest.raises(CalibrationError, match="was not activated: pneumonia: 30 labelled"):
            workflow.activate(store, record.id, manifest, actor="t")

        good = workflow.fit_and_save(
            store, tmp_path, manifest, _cases(rng, 300, 0.8, 1.0), activate=True
        )
        assert good.activated and not good.refusals
        active = store.active_calibration(manifest.sha256)
        assert active is not None and active["id"] == good.record.id
    finally:
        store.close()
