"""Trained PyTorch weights -> verified Keras port -> float32 and full-integer int8 TFLite.

The port is checked numerically against PyTorch on the same inputs before anything is
converted; a port that drifts raises instead of shipping. The int8 model is fully integer
(int8 input and outputs, ``TFLITE_BUILTINS_INT8`` only) and calibrated on training images
prepared exactly as the kiosk prepares a film. Output tensors are identified after conversion
by their shapes as the LiteRT interpreter reports them, and the manifest names them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.errors import ModelError
from kiosk.lab.train.trainer import MEAN, STD
from kiosk.model.manifest import InputSpec, Manifest
from kiosk.model.preprocess import prepare
from kiosk.model.runtime import file_sha256

logger = logging.getLogger(__name__)

PORT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class PortCheck:
    """Largest absolute PyTorch-vs-Keras differences over the check inputs."""

    inputs: int
    max_abs_logits: float
    max_abs_features: float
    max_abs_cam_identity: float


@dataclass(frozen=True)
class ExportResult:
    """The files an export wrote and the port check it passed."""

    int8_tflite: Path
    f32_tflite: Path
    int8_manifest: Path
    f32_manifest: Path
    port: PortCheck


@dataclass(frozen=True)
class FindingInfo:
    """A finding as the manifest names it."""

    code: str
    label: str
    threshold: float = 0.5


def input_spec(size: int) -> InputSpec:
    """The classifier's input contract: RGB, stretched, ``(pixel - 127) / 128``."""
    return InputSpec(size, size, "rgb", (MEAN,) * 3, (STD,) * 3, "stretch")


def load_state(path: Path) -> dict[str, np.ndarray]:
    """A saved ``state_dict`` (``.pt``) as float32 numpy arrays."""
    import torch

    from kiosk.lab.train.effnet_keras import torch_state_to_numpy

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise ModelError(
            f"cannot read weights {path}: {exc}", "re-run `kiosk model train`"
        ) from exc
    return torch_state_to_numpy(state)


def torch_model(state: dict[str, np.ndarray]) -> Any:
    """The PyTorch model in eval mode with ``state`` loaded."""
    import torch

    from kiosk.lab.train.effnet_torch import EfficientNetLite0

    model = EfficientNetLite0(int(state["_fc.weight"].shape[0]))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    return model.eval()


def check_port(state: dict[str, np.ndarray], keras_model: Any, inputs: np.ndarray) -> PortCheck:
    """Compare PyTorch and Keras outputs on float NHWC ``inputs``; raise if they drift."""
    import torch

    model = torch_model(state)
    bias = state["_fc.bias"]
    d_logit = d_feat = d_cam = 0.0
    for x in inputs:
        with torch.no_grad():
            lo, fe, _ = model(torch.from_numpy(x[None].transpose(0, 3, 1, 2).copy()))
        k_lo, k_fe, k_cam = (np.asarray(t) for t in keras_model(x[None], training=False))
        d_logit = max(d_logit, float(np.abs(k_lo - lo.numpy()).max()))
        d_feat = max(d_feat, float(np.abs(k_fe - fe.numpy()).max()))
        d_cam = max(d_cam, float(np.abs(k_cam.mean(axis=(1, 2)) + bias - k_lo).max()))
    check = PortCheck(len(inputs), d_logit, d_feat, d_cam)
    logger.info("port check: %s", check)
    if max(d_logit, d_feat, d_cam) > PORT_TOLERANCE:
        raise ModelError(
            f"the Keras port differs from PyTorch by {check} (tolerance {PORT_TOLERANCE})",
            "the Keras architecture no longer matches effnet_torch.py: fix it before exporting",
        )
    return check


def _converter(keras_model: Any, size: int) -> Any:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(keras_model)


def convert(keras_model: Any, size: int, representative: np.ndarray | None) -> bytes:
    """Float32 TFLite when ``representative`` is None, else full-integer int8."""
    import tensorflow as tf

    conv = _converter(keras_model, size)
    if representative is not None:
        reps = representative

        def gen() -> Iterator[list[np.ndarray]]:
            for x in reps:
                yield [x[None].astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def output_names(tflite_path: Path, num_classes: int, size: int) -> dict[str, str]:
    """Map roles to output tensor names by shape, as the LiteRT interpreter reports them."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite_path))
    h = w = -(-size // 32)
    want = {
        "logits": (1, num_classes),
        "features": (1, 1280),
        "cam": (1, h, w, num_classes),
    }
    names: dict[str, str] = {}
    for d in interp.get_output_details():
        shape = tuple(int(v) for v in d["shape"])
        for role, expected in want.items():
            if shape == expected and role not in names:
                names[role] = str(d["name"])
                break
    if set(names) != set(want):
        shapes = [tuple(d["shape"]) for d in interp.get_output_details()]
        raise ModelError(f"{tflite_path.name}: output shapes {shapes} do not match {want}")
    return names


def prepared_inputs(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """uint8 images -> float NHWC (N, size, size, 3) exactly as the kiosk prepares them."""
    spec = input_spec(size)
    return np.concatenate([prepare(img, spec) for img in images]).astype(np.float32)


def export(
    state_path: Path,
    out_dir: Path,
    model_id: str,
    findings: Sequence[FindingInfo],
    calibration_images: Sequence[np.ndarray],
    *,
    image_size: int = 224,
    version: str = "1.0.0",
    provenance: dict[str, Any] | None = None,
    licence: str = "",
    card: str | None = None,
    ood: dict[str, Any] | None = None,
) -> ExportResult:
    """Write ``<id>-int8.tflite`` + ``<id>.json`` and ``<id>-f32.tflite`` + ``<id>-f32.json``."""
    from kiosk.lab.train.effnet_keras import build_keras

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(state_path)
    num_classes = int(state["_fc.weight"].shape[0])
    if num_classes != len(findings):
        raise ModelError(
            f"weights {state_path.name} have {num_classes} outputs but {len(findings)} findings "
            "were given",
            "pass one finding per model output",
        )
    keras_model = build_keras(state, image_size)
    reps = prepared_inputs(calibration_images, image_size)
    rng = np.random.default_rng(0)
    check_inputs = np.concatenate(
        [reps[:3], rng.uniform(-1, 1, (2, image_size, image_size, 3)).astype(np.float32)]
    )
    port = check_port(state, keras_model, check_inputs)

    written: dict[str, tuple[Path, Path]] = {}
    for quant, suffix, mid in (("float32", "f32", f"{model_id}-f32"), ("int8", "int8", model_id)):
        blob = convert(keras_model, image_size, reps if quant == "int8" else None)
        tfl = out_dir / f"{model_id}-{suffix}.tflite"
        tfl.write_bytes(blob)
        names = output_names(tfl, num_classes, image_size)
        raw: dict[str, Any] = {
            "id": mid,
            "version": version,
            "kind": "classifier",
            "file": tfl.name,
            "sha256": file_sha256(tfl),
            "quantization": quant,
            "input": {
                "size": [image_size, image_size],
                "colour": "rgb",
                "mean": [MEAN] * 3,
                "std": [STD] * 3,
                "resize": "stretch",
            },
            "outputs": {role: {"name": n} for role, n in names.items()},
            "head": "sigmoid",
            "findings": [
                {"code": f.code, "label": f.label, "threshold": round(f.threshold, 4)}
                for f in findings
            ],
            "provenance": provenance or {},
            "licence": licence,
        }
        if ood:
            raw["ood"] = ood
        if card:
            raw["card"] = card
        manifest_path = out_dir / (f"{model_id}.json" if quant == "int8" else f"{mid}.json")
        Manifest.from_dict(raw, manifest_path).write()
        written[quant] = (tfl, manifest_path)
        logger.info("wrote %s (%d bytes), outputs %s", tfl.name, len(blob), names)
    return ExportResult(
        written["int8"][0], written["float32"][0], written["int8"][1], written["float32"][1], port
    )
