"""Turn trained weights into a shippable release: TFLite pair, thresholds, OOD reference.

Steps, in order: export the float32 and int8 TFLite files (port verified), run the *int8*
model through the product runtime over the validation split to choose each finding's default
threshold (Youden's J: the point maximising sensitivity + specificity - 1), run it over the
training split to fit the OOD reference (PCA + Mahalanobis on pooled features, threshold at a
high percentile of validation distances), and write both into the manifests. The holdout
split is not touched here: it is only for :mod:`kiosk.model.train.evaluate`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.lab.train.data import Sample, load_grey, read_split_csv
from kiosk.lab.train.export import ExportResult, FindingInfo, export
from kiosk.model.manifest import Manifest
from kiosk.model.ood import OodDetector
from kiosk.stats import youden_threshold

logger = logging.getLogger(__name__)

THRESHOLD_RULE = (
    "Youden's J (max sensitivity + specificity - 1) on the validation split, int8 model"
)


@dataclass(frozen=True)
class ModelOutputs:
    """Outputs of one model over a list of images, as the kiosk computes them."""

    logits: np.ndarray  # (N, C)
    probabilities: np.ndarray  # (N, C)
    features: np.ndarray  # (N, D)
    inference_ms: np.ndarray  # (N,)


@dataclass(frozen=True)
class ReleaseResult:
    """What :func:`build_release` wrote and chose."""

    export: ExportResult
    thresholds: tuple[float, ...]
    ood_path: Path
    ood_threshold: float
    ood_val_flagged: float


def run_model(manifest_path: Path, images: np.ndarray, threads: int = 2) -> ModelOutputs:
    """Run a shipped model over uint8 images with the product classifier."""
    from kiosk.model.classifier import Classifier

    clf = Classifier.from_manifest(Path(manifest_path), threads=threads)
    logits, probs, feats, ms = [], [], [], []
    for img in images:
        p = clf.predict(img)
        logits.append(p.logits)
        probs.append(p.probabilities)
        feats.append(p.features if p.features is not None else np.zeros(0))
        ms.append(p.timings_ms["inference"])
    return ModelOutputs(np.array(logits), np.array(probs), np.array(feats), np.array(ms))


def labels_of(samples: Sequence[Sample]) -> np.ndarray:
    """(N, C) 0/1 labels of samples."""
    return np.array([s.labels for s in samples], dtype=np.float64)


def update_manifest(path: Path, thresholds: Sequence[float], ood: dict[str, Any]) -> None:
    """Rewrite a manifest with new finding thresholds and OOD reference (validated)."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    for finding, t in zip(raw["findings"], thresholds, strict=True):
        finding["threshold"] = round(float(t), 4)
    raw["ood"] = ood
    Manifest.from_dict(raw, Path(path)).write()


def build_release(
    state_path: Path,
    split_csv: Path,
    data_root: Path,
    out_dir: Path,
    model_id: str,
    findings: Sequence[tuple[str, str]],
    *,
    image_size: int = 224,
    calibration_count: int = 300,
    ood_components: int = 32,
    ood_percentile: float = 99.5,
    threads: int = 2,
    seed: int = 0,
    provenance: dict[str, Any] | None = None,
    licence: str = "",
    card: str | None = None,
) -> ReleaseResult:
    """Export, choose thresholds on val, fit OOD on train; returns what was chosen."""
    t0 = time.time()
    samples = read_split_csv(split_csv, data_root)
    train = [s for s in samples if s.split == "train"]
    val = [s for s in samples if s.split == "val"]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(train), size=min(calibration_count, len(train)), replace=False)
    calib = load_grey([train[i] for i in sorted(pick)], image_size)
    prov = dict(provenance or {})
    prov["threshold_rule"] = THRESHOLD_RULE
    prov["int8_calibration"] = f"{len(calib)} training-split images (seed {seed})"
    result = export(
        state_path,
        out_dir,
        model_id,
        [FindingInfo(code, label, 0.5) for code, label in findings],
        list(calib),
        image_size=image_size,
        provenance=prov,
        licence=licence,
        card=card,
    )
    logger.info("exported in %.0f s", time.time() - t0)

    val_out = run_model(result.int8_manifest, load_grey(val, image_size), threads)
    y_val = labels_of(val)
    thresholds = []
    for c in range(y_val.shape[1]):
        col = y_val[:, c]
        both = 0 < col.sum() < len(col)
        thresholds.append(youden_threshold(col, val_out.probabilities[:, c]) if both else 0.5)
    train_out = run_model(result.int8_manifest, load_grey(train, image_size), threads)
    ood_components = min(ood_components, len(train) - 1)
    det = OodDetector.fit(train_out.features, val_out.features, ood_components, ood_percentile)
    ood_path = Path(out_dir) / f"{model_id}.ood.npz"
    det.save(ood_path)
    flagged = float(np.mean(det.distances(val_out.features) > det.threshold))
    ood = _ood_entry(ood_path, det, ood_components, ood_percentile)
    update_manifest(result.int8_manifest, thresholds, ood)
    # The float32 model has slightly different features: it keeps the int8 thresholds for a
    # like-for-like comparison but gets no OOD reference of its own.
    update_manifest(result.f32_manifest, thresholds, {})
    logger.info(
        "release built in %.0f s: thresholds %s, OOD threshold %.2f",
        time.time() - t0,
        thresholds,
        det.threshold,
    )
    return ReleaseResult(result, tuple(thresholds), ood_path, det.threshold, flagged)


def refit_ood(
    manifest_path: Path,
    split_csv: Path,
    data_root: Path,
    *,
    components: int = 32,
    percentile: float = 99.5,
    threads: int = 2,
) -> tuple[Path, float, float]:
    """Refit only the OOD reference of a built release; returns (path, threshold, val flagged)."""
    man = Manifest.load(manifest_path)
    samples = read_split_csv(split_csv, data_root)
    train = [s for s in samples if s.split == "train"]
    val = [s for s in samples if s.split == "val"]
    size = man.input.height
    train_out = run_model(manifest_path, load_grey(train, size), threads)
    val_out = run_model(manifest_path, load_grey(val, size), threads)
    det = OodDetector.fit(
        train_out.features, val_out.features, min(components, len(train) - 1), percentile
    )
    ood_path = manifest_path.parent / f"{man.id}.ood.npz"
    det.save(ood_path)
    flagged = float(np.mean(det.distances(val_out.features) > det.threshold))
    update_manifest(
        manifest_path,
        [f.threshold for f in man.findings],
        _ood_entry(ood_path, det, components, percentile),
    )
    return ood_path, det.threshold, flagged


def _ood_entry(path: Path, det: OodDetector, components: int, percentile: float) -> dict[str, Any]:
    return {
        "file": path.name,
        # `kiosk model install` checks the reference against this before using it.
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "threshold": round(det.threshold, 4),
        "components": components,
        "percentile": percentile,
        "fitted_on": "int8 features of the training split; threshold from the validation split",
    }
