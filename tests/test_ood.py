"""The OOD gate: numpy-only detector, and the bundled reference against non-X-ray images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kiosk.errors import ModelError
from kiosk.model.ood import OodDetector

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
MANIFEST = MODELS / "cxr-pneumonia-effl0.json"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kermany-train"


def _features(n: int, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = rng.normal(0, 1, (n, 8))
    mixing = np.random.default_rng(99).normal(0, 1, (8, 64))
    return latent @ mixing + rng.normal(0, 0.1, (n, 64)) + shift


def test_threshold_is_the_validation_percentile() -> None:
    det = OodDetector.fit(_features(2000), _features(1000, seed=1), components=8, percentile=99.0)
    flagged_val = np.mean(det.distances(_features(1000, seed=1)) > det.threshold)
    assert flagged_val == pytest.approx(0.01, abs=0.002)
    fresh = np.mean(det.distances(_features(3000, seed=2)) > det.threshold)
    assert fresh < 0.03, "fresh in-distribution data should rarely be flagged"
    assert np.mean(det.distances(_features(200, shift=3.0, seed=3)) > det.threshold) > 0.95


def test_single_vector_api_and_round_trip(tmp_path: Path) -> None:
    det = OodDetector.fit(_features(500), _features(200, seed=1), components=8)
    far = _features(1, shift=10.0, seed=5)[0]
    near = _features(1, seed=6)[0]
    assert det.is_ood(far) and not det.is_ood(near)
    assert det.distance(far) > det.distance(near)
    path = det.save(tmp_path / "ref.npz")
    back = OodDetector.load(path)
    assert back.threshold == pytest.approx(det.threshold)
    assert back.distance(far) == pytest.approx(det.distance(far), rel=1e-4)


def test_errors_say_what_is_wrong(tmp_path: Path) -> None:
    det = OodDetector.fit(_features(100), _features(50, seed=1), components=4)
    with pytest.raises(ModelError, match=r"expected \(64,\)"):
        det.distance(np.zeros(10))
    with pytest.raises(ModelError, match="does not exist"):
        OodDetector.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="not a valid reference"):
        OodDetector.load(bad)
    with pytest.raises(ModelError, match="more than"):
        OodDetector.fit(_features(5), _features(5), components=8)


def _bundled() -> tuple[object, OodDetector]:
    if not MANIFEST.is_file():
        pytest.skip("bundled model not built yet (models/cxr-pneumonia-effl0.json missing)")
    from kiosk.model.classifier import Classifier
    from kiosk.model.manifest import Manifest

    man = Manifest.load(MANIFEST)
    return Classifier.from_manifest(MANIFEST), OodDetector.load(MODELS / man.ood["file"])


def test_bundled_reference_flags_synthetic_non_xrays() -> None:
    clf, det = _bundled()
    from kiosk.lab.train.evaluate import synthetic_non_xrays

    images = synthetic_non_xrays(50, seed=7)
    flagged = [det.is_ood(clf.predict(img).features) for img in images]  # type: ignore[attr-defined]
    assert np.mean(flagged) >= 0.9, f"only {np.mean(flagged):.0%} of non-X-rays flagged"


def test_bundled_reference_passes_real_xrays() -> None:
    if not DATA.is_dir():
        pytest.skip(f"Kermany training data not found at {DATA}")
    clf, det = _bundled()
    from kiosk.lab.train.data import load_grey, read_split_csv

    val = [
        s
        for s in read_split_csv(MODELS / "cxr-pneumonia-effl0.split.csv", DATA)
        if s.split == "val"
    ][:120]
    flagged = [det.is_ood(clf.predict(img).features) for img in load_grey(val, 224)]  # type: ignore[attr-defined]
    assert np.mean(flagged) <= 0.03, f"{np.mean(flagged):.1%} of real val X-rays flagged"
