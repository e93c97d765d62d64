"""`kiosk calibrate` end to end: labelled photos -> record -> used by analyze -> rolled back."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from images import photo
from test_analyze_cli import lines, run_kiosk

from kiosk.app.appliance import load_classifier
from kiosk.config import load_config
from kiosk.imaging.encode import encode_jpeg
from kiosk.pipeline import Pipeline

pytestmark = pytest.mark.usefixtures("synthetic_films", "digital_model")

N_PHOTOS = 68
# the digital-only model ships a factory calibration for photographed films (the photo-tuned
# default does not need one), so the fallback to it after a rollback is tested with that model
MODEL = "cxr-pneumonia-effl0"


@pytest.fixture
def digital_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIOSK_MODEL", MODEL)


@dataclass(frozen=True)
class Scored:
    folder: Path
    accepted: list[str]
    logits: np.ndarray
    rejected: list[str]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Scored:
    """Simulated photos and the model's logits on those the rectifier accepts."""
    folder = tmp_path_factory.mktemp("labelled")
    config = load_config(
        env={"KIOSK_DATA_DIR": str(folder / "unused"), "KIOSK_OOD_GATE": "0", "KIOSK_MODEL": MODEL}
    )
    pipeline = Pipeline.from_config(config, load_classifier(config), None)
    accepted, logits, rejected = [], [], []
    for i in range(N_PHOTOS):
        name = f"p{i:02d}.jpg"
        (folder / name).write_bytes(encode_jpeg(photo(100 + i, 0.2).image))
        r = pipeline.analyze_file(folder / name, "photo", store=False)
        if r.status == "ok" and r.logits is not None:
            accepted.append(name)
            logits.append(float(r.logits[0]))
        else:
            rejected.append(name)
    assert len(accepted) >= 52, f"only {len(accepted)} simulated photos accepted"
    return Scored(folder, accepted, np.array(logits), rejected)


def _write_csv(scored: Scored, name: str, label_fn: Callable[[np.ndarray], np.ndarray]) -> Path:
    """Label the accepted photos; rejected ones stay in the CSV (the CLI must skip them)."""
    labels = label_fn(scored.logits)
    rows = ["path,pneumonia"]
    rows += [f"{n},{int(v)}" for n, v in zip(scored.accepted, labels, strict=True)]
    rows += [f"{n},0" for n in scored.rejected]
    csv = scored.folder / name
    csv.write_text("\n".join(rows) + "\n")
    return csv


def _noisy_labels(logits: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    z = (logits - np.median(logits)) / (np.std(logits) + 1e-9)
    return (rng.random(logits.size) < 1 / (1 + np.exp(-2 * z))).astype(int)


def test_calibrate_activate_use_and_roll_back(scored: Scored, data_dir: Path) -> None:
    csv = _write_csv(scored, "labels.csv", _noisy_labels)
    accepted = len(scored.accepted)
    proc = run_kiosk("calibrate", str(csv), "--method", "platt", "--activate", "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    summary = json.loads(proc.stdout)
    assert summary["used"] == accepted and summary["activated"] is True
    assert summary["refusals"] == [] and summary["labelled"] == N_PHOTOS
    assert len(summary["skipped"]) == N_PHOTOS - accepted
    assert sum(summary["skipped_by_reason"].values()) == N_PHOTOS - accepted
    metrics = summary["metrics"]["pneumonia"]
    for side in ("before", "after"):
        assert {"ece", "brier", "nll", "auroc", "specificity_ci_low"} <= set(metrics[side])
        assert metrics[side]["n"] == accepted
    assert summary["evaluation"]["scheme"] == "nested cross-validation"
    svg = Path(summary["diagram"])
    assert svg.is_file() and ET.parse(svg).getroot().tag.endswith("svg")
    assert (svg.with_suffix(".json")).is_file()

    first = scored.folder / scored.accepted[0]
    out = run_kiosk("analyze", "--json", "--input", "photo", str(first))
    (line,) = lines(out.stdout)
    assert line["calibrated"] is True
    assert line["calibration"]["id"] == summary["id"] and line["calibration"]["kind"] == "site"
    finding = line["findings"][0]
    threshold = summary["thresholds"]["pneumonia"]["value"]
    assert finding["threshold"] == pytest.approx(threshold, abs=1e-6)
    # --no-store applies the active calibration too (it used to show raw scores).
    unstored_out = run_kiosk("analyze", "--json", "--no-store", "--input", "photo", str(first))
    (unstored,) = lines(unstored_out.stdout)
    assert unstored["calibration"] == line["calibration"] and unstored["result_id"] is None
    assert unstored["findings"][0]["probability"] == pytest.approx(finding["probability"])
    # guessing the kind decodes the file in full colour, not as luma plus a preview (the photo
    # path's decode): the same calibration, a finding within an output quantum or two
    (guessed,) = lines(run_kiosk("analyze", "--json", "--no-store", str(first)).stdout)
    assert guessed["input"] == "photo" and guessed["calibration"] == line["calibration"]
    assert guessed["findings"][0]["raw"] == pytest.approx(finding["raw"], abs=0.02)

    back = run_kiosk("calibration", "rollback")
    assert back.returncode == 0 and "factory" in back.stdout
    (after,) = lines(run_kiosk("analyze", "--json", "--no-store", str(first)).stdout)
    assert after["calibrated"] is True and after["calibration"]["kind"] == "factory"
    assert after["calibration"]["label"] == "factory (photographed films, rendered)"


def test_too_few_labelled_photos_are_stored_but_not_activated(
    scored: Scored, data_dir: Path
) -> None:
    few = Scored(scored.folder, scored.accepted[:30], scored.logits[:30], [])
    csv = _write_csv(few, "few.csv", _noisy_labels)
    proc = run_kiosk("calibrate", str(csv), "--activate")
    assert proc.returncode == 3, proc.stderr
    assert "NOT ACTIVATED: pneumonia: 30 labelled cases; at least 50" in proc.stderr
    assert "30 of 30 labelled photos used" in proc.stdout
    assert "expected specificity" in proc.stdout
    listing = run_kiosk("calibration", "list").stdout
    (row,) = [r for r in listing.splitlines() if r.startswith("  cal-")]
    again = run_kiosk("calibration", "activate", row.split()[0])
    assert again.returncode == 2 and "was not activated" in again.stderr
    assert "* factory-" in listing  # still the shipped factory calibration


def test_refusals_are_clear(scored: Scored, data_dir: Path) -> None:
    unknown = scored.folder / "unknown.csv"
    unknown.write_text("path,cardiomegaly\np00.jpg,1\n")
    proc = run_kiosk("calibrate", str(unknown))
    assert proc.returncode == 2 and "not findings of this model" in proc.stderr
    all_negative = _write_csv(scored, "neg.csv", lambda z: np.zeros(z.size))
    proc = run_kiosk("calibrate", str(all_negative))
    assert proc.returncode == 2 and "positive" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr
