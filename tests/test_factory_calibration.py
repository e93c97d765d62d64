"""The factory calibration command's parts: rendering with true corners, fitting, the shipped
record (kind, label, model), and keeping the model's positive/negative calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kiosk.calibration.factory import load_factory
from kiosk.camera.scene import phantom_chest
from kiosk.lab.factory_calibration import fit_factory, pick_films, render_and_develop
from kiosk.lab.train.data import Sample
from kiosk.model.manifest import Manifest
from kiosk.stats import sigmoid


@pytest.mark.parametrize("generator", ["A", "B"])
def test_both_generators_render_a_developed_grey_film(generator: str) -> None:
    rng = np.random.default_rng(1)
    film = render_and_develop(phantom_chest(rng, (512, 512)), generator, rng, (270, 480))
    assert film.dtype == np.uint8 and film.ndim == 2 and min(film.shape) > 50
    assert film.std() > 5  # an image, not a flat field


def test_films_come_only_from_the_splits_asked_for() -> None:
    samples = [
        Sample(Path(f"{s}{i}.png"), f"{s}{i}", f"p{i}", (1.0,), (1.0,), split=s)
        for s in ("train", "val", "holdout")
        for i in range(10)
    ]
    picked = pick_films(samples, ("train", "val"), 8, seed=0)
    assert len(picked) == 8 and {s.split for s in picked} == {"train", "val"}
    assert pick_films(samples, ("train", "val"), 8, seed=0) == picked


def test_factory_fit_keeps_the_models_calls(bundled_manifest: Path) -> None:
    manifest = Manifest.load(bundled_manifest)
    rng = np.random.default_rng(2)
    z = rng.normal(0.0, 2.5, 400)
    y = (rng.random(400) < sigmoid(0.9 * z + 1.5)).astype(float)
    rows = [
        {"logits": [float(v)], "label": float(t), "features": None}
        for v, t in zip(z, y, strict=True)
    ]
    record = fit_factory(rows, manifest, method="auto", with_features=False, notes="t", n_boot=50)
    assert record.kind == "factory" and record.label == "factory (photographed films, rendered)"
    assert record.thresholds["pneumonia"]["rule"] == "manifest"
    raw_t = manifest.findings[0].threshold
    new = rng.normal(0.0, 2.5, 1000)
    calibrated = record.apply(new[:, None], model_sha256=manifest.sha256)[:, 0]
    assert np.array_equal(calibrated >= record.threshold("pneumonia"), sigmoid(new) >= raw_t)


def test_the_shipped_factory_record_belongs_to_the_bundled_model(bundled_manifest: Path) -> None:
    manifest = Manifest.load(bundled_manifest)
    record = load_factory(manifest)
    assert record is not None and record.kind == "factory"
    assert record.model_sha256 == manifest.sha256
    assert record.data["used"] >= 1000 and "generator A" in record.data["summary"]
    raw = json.loads(bundled_manifest.read_text())
    assert raw["calibration"]["file"] == "cxr-pneumonia-effl0.factory-calibration.json"
