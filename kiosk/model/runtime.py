"""The TFLite runtime: one interpreter per model per process, checked before it is trusted.

LiteRT (``ai-edge-litert``) is preferred; ``tflite-runtime`` is the fallback for installs that
still have it (it needs numpy < 2). The model file's sha256 must match its manifest before the
interpreter sees a byte of it, so a truncated download or a swapped file is refused with a
clear error instead of producing confident nonsense. Quantised tensors are converted with the
tensor's own scale and zero point: nothing here guesses.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.errors import ModelError
from kiosk.model.manifest import Manifest

logger = logging.getLogger(__name__)


def interpreter_class() -> tuple[Callable[..., Any], str]:
    """Return the Interpreter class of the installed runtime and its name, LiteRT first."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError:
        pass
    raise ModelError(
        "no TFLite runtime is installed",
        "pip install ai-edge-litert (or tflite-runtime on numpy < 2)",
    )


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorInfo:
    """What the runtime needs to know about one input or output tensor."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.dtype in (np.dtype(np.int8), np.dtype(np.uint8)) and self.scale > 0


def _tensor_info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(
        index=int(detail["index"]),
        name=str(detail["name"]),
        shape=tuple(int(v) for v in detail["shape"]),
        dtype=np.dtype(detail["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


def quantize(values: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """Float values to the tensor's dtype using its scale and zero point (clipped)."""
    if not tensor.quantized:
        return values.astype(tensor.dtype, copy=False)
    info = np.iinfo(tensor.dtype)
    q = np.round(values / tensor.scale + tensor.zero_point)
    return np.clip(q, info.min, info.max).astype(tensor.dtype)


def dequantize(values: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """Tensor values to float32 using its scale and zero point."""
    if not tensor.quantized:
        return values.astype(np.float32, copy=False)
    return ((values.astype(np.float32) - tensor.zero_point) * tensor.scale).astype(np.float32)


class TFLiteModel:
    """A verified model file with its interpreter, created once and reused.

    ``run`` is serialised with a lock: the TFLite interpreter is not re-entrant, and the
    appliance has one inference worker anyway. It does not resize or normalise images: see
    :mod:`kiosk.model.preprocess`.
    """

    def __init__(self, manifest: Manifest, *, threads: int = 2) -> None:
        self.manifest = manifest
        path = manifest.model_path
        if not path.is_file():
            raise ModelError(
                f"model file {path} is missing",
                "reinstall the model or check `model` in the config",
            )
        started = time.perf_counter()
        content = path.read_bytes()
        actual = hashlib.sha256(content).hexdigest()
        if actual != manifest.sha256:
            raise ModelError(
                f"model file {path} does not match its manifest "
                f"(sha256 {actual[:12]}… expected {manifest.sha256[:12]}…): "
                "it is corrupt, truncated or not the file the manifest describes",
                "reinstall the model, or roll back with `kiosk model rollback`",
            )
        interpreter_cls, self.runtime_name = interpreter_class()
        try:
            self._interpreter = interpreter_cls(model_content=content, num_threads=int(threads))
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(
                f"model file {path} cannot be loaded by {self.runtime_name}: {exc}",
                "reinstall the model; if it persists the file was built for another runtime",
            ) from exc
        self.threads = int(threads)
        self.load_ms = (time.perf_counter() - started) * 1000.0
        self._lock = threading.Lock()

        inputs = [_tensor_info(d) for d in self._interpreter.get_input_details()]
        if len(inputs) != 1:
            raise ModelError(f"model {manifest.id} has {len(inputs)} inputs; exactly one is used")
        self.input = inputs[0]
        spec = manifest.input
        expected = (1, spec.height, spec.width, spec.channels)
        if self.input.shape != expected:
            raise ModelError(
                f"model {manifest.id}: input tensor shape {self.input.shape} does not match "
                f"the manifest's {expected}",
                "fix input.size/colour in the manifest",
            )
        details = [_tensor_info(d) for d in self._interpreter.get_output_details()]
        self.outputs: dict[str, TensorInfo] = {}
        for role, out in manifest.outputs.items():
            found = None
            if out.name is not None:
                found = next((d for d in details if d.name == out.name), None)
            elif out.index is not None and out.index < len(details):
                found = details[out.index]
            if found is None:
                names = ", ".join(d.name for d in details)
                raise ModelError(
                    f"model {manifest.id}: output {role!r} ({out.name or out.index}) not found "
                    f"among the model's outputs ({names})",
                    "fix outputs in the manifest",
                )
            self.outputs[role] = found
        if "logits" in self.outputs and manifest.findings:
            width = self.outputs["logits"].shape[-1]
            if width != len(manifest.findings):
                raise ModelError(
                    f"model {manifest.id}: logits have {width} values but the manifest lists "
                    f"{len(manifest.findings)} findings",
                    "fix findings in the manifest",
                )
        logger.info(
            "loaded model %s %s (%s, %d threads) in %.0f ms",
            manifest.id,
            manifest.version,
            self.runtime_name,
            self.threads,
            self.load_ms,
        )

    @classmethod
    def from_manifest(cls, path: Path, *, threads: int = 2) -> TFLiteModel:
        return cls(Manifest.load(path), threads=threads)

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """Run one normalised float NHWC input tensor; return float outputs by role."""
        if tuple(tensor.shape) != self.input.shape:
            raise ModelError(
                f"input tensor shape {tuple(tensor.shape)} is not the model's {self.input.shape}"
            )
        with self._lock:
            self._interpreter.set_tensor(self.input.index, quantize(tensor, self.input))
            self._interpreter.invoke()
            return {
                role: dequantize(self._interpreter.get_tensor(info.index), info)
                for role, info in self.outputs.items()
            }
