"""Model manifest and runtime: the real LiteRT interpreter on the bundled model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kiosk.errors import ModelError
from kiosk.model.classifier import Classifier
from kiosk.model.manifest import Manifest
from kiosk.model.preprocess import prepare
from kiosk.model.runtime import TFLiteModel, dequantize, quantize


def _copy_model(manifest_path: Path, dest: Path) -> Path:
    m = Manifest.load(manifest_path)
    shutil.copy(m.model_path, dest / m.file)
    shutil.copy(manifest_path, dest / manifest_path.name)
    return dest / manifest_path.name


def test_bundled_model_loads_and_predicts(bundled_manifest: Path) -> None:
    clf = Classifier.from_manifest(bundled_manifest, threads=2)
    rng = np.random.default_rng(0)
    pred = clf.predict(rng.integers(0, 256, (400, 300), dtype=np.uint8))
    n = len(clf.manifest.findings)
    assert pred.logits.shape == (n,)
    assert np.all((pred.probabilities > 0) & (pred.probabilities < 1))
    assert pred.cam is not None and pred.cam.shape[-1] == n
    assert pred.features is not None and pred.features.ndim == 1
    # Same input, same answer: the interpreter is reused, not re-created.
    again = clf.predict(rng.integers(0, 256, (400, 300), dtype=np.uint8))
    assert again.logits.shape == (n,)
    assert clf.model.runtime_name in ("ai-edge-litert", "tflite-runtime")


def test_corrupt_model_file_is_refused(bundled_manifest: Path, tmp_path: Path) -> None:
    manifest = _copy_model(bundled_manifest, tmp_path)
    model = Manifest.load(manifest).model_path
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its manifest"):
        TFLiteModel.from_manifest(manifest)


def test_truncated_model_file_is_refused(bundled_manifest: Path, tmp_path: Path) -> None:
    manifest = _copy_model(bundled_manifest, tmp_path)
    model = Manifest.load(manifest).model_path
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(ModelError, match="corrupt, truncated"):
        TFLiteModel.from_manifest(manifest)


def test_garbage_with_matching_hash_is_refused_by_the_runtime(
    bundled_manifest: Path, tmp_path: Path
) -> None:
    import hashlib

    manifest = _copy_model(bundled_manifest, tmp_path)
    raw = json.loads(manifest.read_text())
    garbage = b"not a flatbuffer" * 100
    (tmp_path / raw["file"]).write_bytes(garbage)
    raw["sha256"] = hashlib.sha256(garbage).hexdigest()
    manifest.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="cannot be loaded"):
        TFLiteModel.from_manifest(manifest)


def test_missing_model_and_manifest(bundled_manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        Manifest.load(tmp_path / "nope.json")
    manifest = _copy_model(bundled_manifest, tmp_path)
    Manifest.load(manifest).model_path.unlink()
    with pytest.raises(ModelError, match="missing"):
        TFLiteModel.from_manifest(manifest)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sha256", "xyz", "sha256"),
        ("kind", "detector", "kind"),
        ("file", "../evil.tflite", "plain file name"),
        ("findings", [{"code": "Bad Code"}], "lower-case"),
        ("findings", [{"code": "a", "threshold": 1.5}], "between 0 and 1"),
        ("outputs", {"scores": {"index": 0}}, "not one of"),
    ],
)
def test_manifest_validation_names_the_field(
    bundled_manifest: Path, field: str, value: object, message: str
) -> None:
    raw = json.loads(bundled_manifest.read_text())
    raw[field] = value
    with pytest.raises(ModelError, match=message):
        Manifest.from_dict(raw, bundled_manifest)


def test_findings_must_match_logit_width(bundled_manifest: Path, tmp_path: Path) -> None:
    manifest = _copy_model(bundled_manifest, tmp_path)
    raw = json.loads(manifest.read_text())
    raw["findings"] = raw["findings"] + [{"code": "extra_finding", "label": "Extra"}]
    manifest.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="logits have"):
        TFLiteModel.from_manifest(manifest)


def test_manifest_round_trip(bundled_manifest: Path, tmp_path: Path) -> None:
    m = Manifest.load(bundled_manifest)
    again = Manifest.from_dict(m.to_dict(), tmp_path / "x.json")
    assert again.to_dict() == m.to_dict()


def test_quantisation_uses_tensor_parameters(bundled_manifest: Path) -> None:
    model = TFLiteModel.from_manifest(bundled_manifest)
    tensor = model.input
    if not tensor.quantized:
        pytest.skip("bundled model input is float")
    info = np.iinfo(tensor.dtype)
    lo = (info.min - tensor.zero_point) * tensor.scale
    hi = (info.max - tensor.zero_point) * tensor.scale
    values = np.array([lo, 0.0, 0.37 * hi, hi], dtype=np.float32)
    q = quantize(values, tensor)
    assert q.dtype == tensor.dtype
    back = dequantize(q, tensor)
    assert np.max(np.abs(back - values)) <= tensor.scale / 2 + 1e-6
    # Out-of-range values clip to the integer range instead of wrapping around.
    big = quantize(np.array([1e6], dtype=np.float32), tensor)
    assert big[0] == np.iinfo(tensor.dtype).max


def test_prepare_policies(bundled_manifest: Path) -> None:
    from dataclasses import replace

    spec = Manifest.load(bundled_manifest).input
    img = np.zeros((100, 200), dtype=np.uint8)
    img[:, :100] = 255
    for policy in ("stretch", "letterbox", "crop"):
        t = prepare(img, replace(spec, resize=policy))
        assert t.shape == (1, spec.height, spec.width, spec.channels)
    stretched = prepare(img, replace(spec, resize="stretch"))
    # Stretch keeps the left half bright across the whole height.
    assert (
        stretched[0, :, : spec.width // 2 - 2].min() > stretched[0, :, spec.width // 2 + 2 :].max()
    )
