"""Evaluate shipped models the way the kiosk runs them, and render the model card's numbers.

Both TFLite files go through :class:`kiosk.model.classifier.Classifier` (the product runtime:
sha256 check, preprocessing, (de)quantisation), on the validation and the patient-disjoint
holdout split named in the committed split CSV. Reported per model and split: AUROC with a
bootstrap 95% CI, sensitivity/specificity at the manifest threshold, ECE (15 equal-mass bins),
Brier; int8-vs-float32 agreement; OOD flag rates on validation X-rays and on synthetic
non-X-ray images; file sizes and median inference latency.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kiosk.lab.train.data import SPLITS, load_grey, read_split_csv
from kiosk.lab.train.release import ModelOutputs, labels_of, run_model
from kiosk.model.manifest import Manifest
from kiosk.model.ood import OodDetector
from kiosk.stats import BinaryReport, binary_report
from kiosk.stats import auroc_or_nan as auroc

logger = logging.getLogger(__name__)

CARD_BEGIN = "<!-- metrics:begin (written by `kiosk model evaluate --update-card`) -->"
CARD_END = "<!-- metrics:end -->"


@dataclass(frozen=True)
class ModelEval:
    """One model's metrics per split and finding, size and latency."""

    model_id: str
    quantization: str
    file_name: str
    file_bytes: int
    latency_ms_median: float
    reports: dict[str, dict[str, BinaryReport]]


@dataclass(frozen=True)
class Agreement:
    """int8 vs float32 on one split and finding."""

    split: str
    code: str
    auroc_diff: float
    max_abs_prob_diff: float
    decision_agreement: float


@dataclass
class EvaluationReport:
    """Everything the model card states, as measured."""

    models: list[ModelEval]
    agreement: list[Agreement]
    counts: dict[str, dict[str, int]]
    ood: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)


def synthetic_non_xrays(n: int, size: int = 224, seed: int = 0) -> list[np.ndarray]:
    """RGB uint8 images that are clearly not chest X-rays, cycling through five kinds.

    Colour noise, colour gradients, checkerboards, rendered text, and smooth "natural"
    textures (low-pass filtered colour noise).
    """
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        elif kind == 1:
            a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            t = np.linspace(0, 1, size)[None, :, None]
            if rng.random() < 0.5:
                t = t.transpose(1, 0, 2)
            img = (a + (b - a) * t + np.zeros((size, size, 1))).astype(np.uint8)
        elif kind == 2:
            cell = int(rng.integers(8, 48))
            yy, xx = np.mgrid[0:size, 0:size] // cell
            board = ((yy + xx) % 2).astype(bool)
            c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            img = np.where(board[..., None], c1, c2).astype(np.uint8)
        elif kind == 3:
            img = np.full((size, size, 3), rng.integers(180, 256), np.uint8)
            for line in range(int(rng.integers(4, 10))):
                words = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(4, 12))))
                y = 20 + line * int(size / 10)
                cv2.putText(
                    img,
                    words,
                    (5, y),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    float(rng.uniform(0.4, 0.9)),
                    (0, 0, 0),
                    1,
                    cv2.LINE_AA,
                )
        else:
            noise = rng.normal(0, 1, (size, size, 3)).astype(np.float32)
            smooth = cv2.GaussianBlur(noise, (0, 0), float(rng.uniform(3, 12)))
            smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-6)
            base = rng.uniform(0, 1, 3) * 0.6 + 0.2
            img = np.clip((smooth * 0.6 + base * 0.4) * 255, 0, 255).astype(np.uint8)
        out.append(img)
    return out


def _agreement(
    split: str, code: str, y: np.ndarray, a: np.ndarray, b: np.ndarray, threshold: float
) -> Agreement:
    return Agreement(
        split,
        code,
        auroc(y, a) - auroc(y, b),
        float(np.abs(a - b).max()),
        float(np.mean((a >= threshold) == (b >= threshold))),
    )


def evaluate(
    models_dir: Path,
    model_id: str,
    data_root: Path,
    *,
    resamples: int = 2000,
    threads: int = 2,
    synthetic: int = 200,
) -> EvaluationReport:
    """Evaluate ``<id>.json`` (int8) and ``<id>-f32.json`` on the val and holdout splits."""
    from kiosk.lab.train.trainer import environment

    models_dir = Path(models_dir)
    split_csv = models_dir / f"{model_id}.split.csv"
    samples = read_split_csv(split_csv, data_root)
    manifests = [models_dir / f"{model_id}.json", models_dir / f"{model_id}-f32.json"]
    counts = {
        sp: {
            "images": sum(s.split == sp for s in samples),
            "patients": len({s.patient for s in samples if s.split == sp}),
        }
        for sp in SPLITS
    }
    outputs: dict[str, dict[str, ModelOutputs]] = {}
    labels: dict[str, np.ndarray] = {}
    evals: list[ModelEval] = []
    for sp in ("val", "holdout"):
        subset = [s for s in samples if s.split == sp]
        labels[sp] = labels_of(subset)
        images = load_grey(subset, 224)
        for mpath in manifests:
            outputs.setdefault(str(mpath), {})[sp] = run_model(mpath, images, threads)
            logger.info("ran %s on %d %s images", mpath.name, len(images), sp)
    for mpath in manifests:
        man = Manifest.load(mpath)
        reports: dict[str, dict[str, BinaryReport]] = {}
        lat: list[np.ndarray] = []
        for sp in ("val", "holdout"):
            out = outputs[str(mpath)][sp]
            lat.append(out.inference_ms)
            reports[sp] = {
                f.code: binary_report(
                    labels[sp][:, c], out.probabilities[:, c], f.threshold, resamples
                )
                for c, f in enumerate(man.findings)
            }
        evals.append(
            ModelEval(
                man.id,
                man.quantization,
                man.file,
                man.model_path.stat().st_size,
                float(np.median(np.concatenate(lat))),
                reports,
            )
        )
    int8_man = Manifest.load(manifests[0])
    agreement = [
        _agreement(
            sp,
            f.code,
            labels[sp][:, c],
            outputs[str(manifests[0])][sp].probabilities[:, c],
            outputs[str(manifests[1])][sp].probabilities[:, c],
            f.threshold,
        )
        for sp in ("val", "holdout")
        for c, f in enumerate(int8_man.findings)
    ]
    ood: dict[str, float] = {}
    if int8_man.ood.get("file"):
        det = OodDetector.load(models_dir / int8_man.ood["file"])
        for sp in ("val", "holdout"):
            ood[f"{sp}_xrays_flagged"] = float(
                np.mean(det.distances(outputs[str(manifests[0])][sp].features) > det.threshold)
            )
        synth = run_model(manifests[0], np.array(synthetic_non_xrays(synthetic)), threads)
        flagged = det.distances(synth.features) > det.threshold
        ood["synthetic_flagged"] = float(np.mean(flagged))
        for k, name in enumerate(("colour_noise", "gradient", "checkerboard", "text", "texture")):
            ood[f"synthetic_{name}_flagged"] = float(np.mean(flagged[k::5]))
        ood["threshold"] = det.threshold
    return EvaluationReport(evals, agreement, counts, ood, environment())


def render_markdown(report: EvaluationReport) -> str:
    """The card's metrics section as Markdown tables."""
    machine = report.environment.get("machine", {})
    lines = [
        f"Measured by `kiosk model evaluate` on {machine.get('cores', '?')}-core "
        f"{machine.get('arch', '?')} ({machine.get('cpu', '?')}), no GPU, through the kiosk "
        "runtime (LiteRT). Data: the committed patient split of the Kermany train set: "
        + ", ".join(
            f"{sp} {c['images']} images / {c['patients']} patients"
            for sp, c in report.counts.items()
        )
        + ". AUROC CI: 2000 bootstrap resamples of images.",
        "",
        "| model | split | finding | n (pos) | AUROC [95% CI] | threshold | sensitivity "
        "| specificity | ECE (15 eq-mass) | Brier |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report.models:
        for sp, per in m.reports.items():
            for code, r in per.items():
                lines.append(
                    f"| {m.quantization} | {sp} | {code} | {r.n} ({r.n_positive}) | {r.auroc:.4f} "
                    f"[{r.auroc_ci[0]:.4f}, {r.auroc_ci[1]:.4f}] | {r.threshold:.4f} | "
                    f"{r.sensitivity:.3f} | {r.specificity:.3f} | {r.ece:.4f} | {r.brier:.4f} |"
                )
    lines += [
        "",
        "| int8 vs float32 | finding | AUROC diff (int8 - f32) | max abs prob diff "
        "| decision agreement |",
        "|---|---|---|---|---|",
    ]
    for a in report.agreement:
        lines.append(
            f"| {a.split} | {a.code} | {a.auroc_diff:+.4f} | {a.max_abs_prob_diff:.4f} "
            f"| {a.decision_agreement:.4f} |"
        )
    lines += [
        "",
        "| model | file | size | median inference (kiosk runtime, 2 threads) |",
        "|---|---|---|---|",
    ]
    for m in report.models:
        lines.append(
            f"| {m.model_id} | `{m.file_name}` | {m.file_bytes / 1e6:.2f} MB "
            f"| {m.latency_ms_median:.2f} ms |"
        )
    if report.ood:
        o = report.ood
        lines += [
            "",
            f"OOD gate (threshold {o['threshold']:.2f}): flags {o['val_xrays_flagged']:.1%} of "
            f"val X-rays, {o['holdout_xrays_flagged']:.1%} of holdout X-rays and "
            f"{o['synthetic_flagged']:.1%} of 200 synthetic non-X-ray images (colour noise "
            f"{o['synthetic_colour_noise_flagged']:.0%}, "
            f"gradients {o['synthetic_gradient_flagged']:.0%}, "
            f"checkerboards {o['synthetic_checkerboard_flagged']:.0%}, "
            f"text {o['synthetic_text_flagged']:.0%}, "
            f"smooth textures {o['synthetic_texture_flagged']:.0%}).",
        ]
    return "\n".join(lines) + "\n"


def render_side_by_side(reports: dict[str, EvaluationReport]) -> str:
    """One row per model, split and finding: the int8 metrics of several models together."""
    lines = [
        "| model id | split | finding | AUROC [95% CI] | sensitivity | specificity | ECE | "
        "int8 size | median ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model_id, report in reports.items():
        for m in report.models:
            if m.quantization != "int8":
                continue
            for sp, per in m.reports.items():
                for code, r in per.items():
                    lines.append(
                        f"| {model_id} | {sp} | {code} | {r.auroc:.4f} [{r.auroc_ci[0]:.4f}, "
                        f"{r.auroc_ci[1]:.4f}] | {r.sensitivity:.3f} | {r.specificity:.3f} | "
                        f"{r.ece:.4f} | {m.file_bytes / 1e6:.2f} MB | {m.latency_ms_median:.2f} |"
                    )
    return "\n".join(lines) + "\n"


def update_card(card: Path, markdown: str) -> None:
    """Replace the metrics section of a model card (between the markers) with ``markdown``."""
    text = Path(card).read_text(encoding="utf-8")
    pattern = re.compile(re.escape(CARD_BEGIN) + r".*?" + re.escape(CARD_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{card} has no metrics markers; add {CARD_BEGIN} ... {CARD_END}")
    Path(card).write_text(
        pattern.sub(lambda _: f"{CARD_BEGIN}\n{markdown}{CARD_END}", text), encoding="utf-8"
    )
