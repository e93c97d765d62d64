"""The SHIPPED classifier: files, manifest, tensors and int8-vs-float32 agreement.

Runs the real LiteRT interpreter on the committed files; needs neither torch nor TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk.model.manifest import Manifest
from kiosk.model.runtime import file_sha256, interpreter_class

MODELS = Path(__file__).resolve().parents[1] / "models"
INT8 = MODELS / "cxr-pneumonia-effl0.json"
F32 = MODELS / "cxr-pneumonia-effl0-f32.json"

pytestmark = pytest.mark.skipif(
    not INT8.is_file(), reason="bundled model not built yet (models/cxr-pneumonia-effl0.json)"
)


def _chest_like(seed: int, size: int = 224) -> np.ndarray:
    """A smooth synthetic grey image with two dark 'lung' fields; not from any data set."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 170 + 40 * rng.normal(0, 1, (size, size)).astype(np.float32) * 0.2
    for cx in (0.3 + rng.uniform(-0.03, 0.03), 0.7 + rng.uniform(-0.03, 0.03)):
        lung = np.exp(-(((xx - cx) / 0.13) ** 2 + ((yy - 0.5) / 0.28) ** 2))
        img -= 110 * lung * rng.uniform(0.7, 1.0)
    blurred = np.asarray(cv2.GaussianBlur(img, (0, 0), 2.0))
    return np.clip(blurred, 0, 255).astype(np.uint8)


def test_manifests_load_and_describe_the_finding() -> None:
    man = Manifest.load(INT8)
    assert man.id == "cxr-pneumonia-effl0" and man.kind == "classifier"
    assert man.quantization == "int8" and man.head == "sigmoid"
    assert [(f.code, f.label) for f in man.findings] == [("pneumonia", "Pneumonia")]
    assert 0.0 < man.findings[0].threshold < 1.0
    assert (man.input.height, man.input.width, man.input.colour) == (224, 224, "rgb")
    assert man.input.resize == "stretch"
    assert set(man.outputs) == {"logits", "features", "cam"}
    assert man.card and (MODELS / man.card).is_file()
    assert (MODELS / man.ood["file"]).is_file() and man.ood["threshold"] > 0
    f32 = Manifest.load(F32)
    assert f32.id == "cxr-pneumonia-effl0-f32" and f32.quantization == "float32"
    assert f32.findings == man.findings


def test_files_match_sha256_and_int8_is_small() -> None:
    for path in (INT8, F32):
        man = Manifest.load(path)
        assert file_sha256(man.model_path) == man.sha256, f"{man.file} does not match manifest"
    assert Manifest.load(INT8).model_path.stat().st_size < 5_000_000


def test_int8_tensors_are_quantised_sanely() -> None:
    man = Manifest.load(INT8)
    interp_cls, _ = interpreter_class()
    interp = interp_cls(model_path=str(man.model_path))
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    assert inp["dtype"] == np.int8 and tuple(inp["shape"]) == (1, 224, 224, 3)
    scale, zp = inp["quantization"]
    # (pixel - 127) / 128 spans about [-1, 1]: one int8 step is about 2/255.
    assert 0.005 < scale < 0.012 and -128 <= zp <= 127
    outs = {d["name"]: d for d in interp.get_output_details()}
    shapes = {"logits": (1, 1), "features": (1, 1280), "cam": (1, 7, 7, 1)}
    for role, spec in man.outputs.items():
        assert spec.name in outs, f"{role} tensor {spec.name} not in the model"
        d = outs[spec.name]
        assert tuple(d["shape"]) == shapes[role]
        assert d["dtype"] == np.int8
        s, z = d["quantization"]
        assert 0 < s < 1.0 and -128 <= z <= 127


def test_int8_and_float32_agree_and_cam_sums_to_logit() -> None:
    from kiosk.model.classifier import Classifier

    a = Classifier.from_manifest(INT8)
    b = Classifier.from_manifest(F32)
    gaps = []
    offsets_f32 = []
    for seed in range(6):
        img = _chest_like(seed, size=256 + 16 * seed)
        pa, pb = a.predict(img), b.predict(img)
        assert pa.cam is not None and pa.cam.shape == (7, 7, 1)
        assert pa.features is not None and pa.features.shape == (1280,)
        gaps.append(abs(float(pa.probabilities[0] - pb.probabilities[0])))
        assert pb.cam is not None
        offsets_f32.append(float(pb.logits[0] - pb.cam.mean()))
        # int8: the CAM identity holds up to quantisation of cam and logits.
        assert abs(float(pa.logits[0] - pa.cam.mean()) - offsets_f32[-1]) < 0.5
    assert max(gaps) < 0.1, f"int8 and float32 probabilities differ by up to {max(gaps):.3f}"
    # float32: logit - mean(cam) is the classifier bias, the same for every image.
    assert np.ptp(offsets_f32) < 1e-3
