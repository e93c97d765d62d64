"""Shipped vs photo-tuned classifier on digital films and developed photo crops (issue 17).

Every model runs through the product runtime (``kiosk.model.classifier.Classifier`` via
``release.run_model``), int8 TFLite, on the same images in one process: the holdout patients'
digital films and their photo crops from generator A and generator B (``photo_data`` cache),
plus the validation split (digital + generator A) for the operating point. Reported per model
and data set: AUROC with a 95% bootstrap CI that resamples *patients* (all images of a drawn
patient come along), ECE (15 equal-mass bins), sensitivity and specificity at (a) the
manifest threshold and (b) Youden's J chosen on val digital + val A photos pooled; and, paired
by patient, the AUROC difference (second model - first) with its CI.

The OOD part measures each model's "not a chest X-ray" gate on holdout digital films and photo
crops (should pass), on CT/MR sheets (generator B ``kind="sheet"`` developed with their true
corners), on empty lightboxes (generator B ``kind="empty"`` developed inside a central
film-sized quad, what a rectifier that wrongly found a film would hand over) and on the
synthetic non-X-rays of ``evaluate.synthetic_non_xrays`` (should be refused).

What this module does not do: train, export, or write manifests (``photo_release`` does).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kiosk.lab.train.data import Sample
from kiosk.lab.train.release import ModelOutputs
from kiosk.stats import (
    auroc_or_nan,
    ece_equal_mass,
    sens_spec,
    youden_threshold,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SetReport:
    """One model on one data set."""

    model: str
    data: str
    n: int
    n_positive: int
    patients: int
    auroc: float
    auroc_ci: tuple[float, float]
    ece: float
    threshold_manifest: float
    sens_manifest: float
    spec_manifest: float
    threshold_val: float
    sens_val: float
    spec_val: float
    latency_ms_median: float


@dataclass(frozen=True)
class PairedDiff:
    """AUROC(second) - AUROC(first) on one data set, patient-paired bootstrap CI."""

    data: str
    diff: float
    ci: tuple[float, float]


def set_report(
    model: str,
    data: str,
    y: np.ndarray,
    out: ModelOutputs,
    patients: Sequence[str],
    threshold_manifest: float,
    threshold_val: float,
    boot: np.ndarray,
) -> SetReport:
    """Metrics of one model on one data set (``boot``: its column of bootstrap AUROCs)."""
    p = out.probabilities[:, 0]
    se_m, sp_m = sens_spec(y, p, threshold_manifest)
    se_v, sp_v = sens_spec(y, p, threshold_val)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return SetReport(
        model,
        data,
        len(y),
        int(y.sum()),
        len(set(patients)),
        auroc_or_nan(y, p),
        (float(lo), float(hi)),
        ece_equal_mass(y, p, 15),
        threshold_manifest,
        se_m,
        sp_m,
        threshold_val,
        se_v,
        sp_v,
        float(np.median(out.inference_ms)),
    )


def val_threshold(y_parts: Sequence[np.ndarray], outs: Sequence[ModelOutputs]) -> float:
    """Youden's J on the pooled validation sets (digital + photo crops)."""
    y = np.concatenate(y_parts)
    p = np.concatenate([o.probabilities[:, 0] for o in outs])
    return float(youden_threshold(y, p))


def sheets_and_empties(n: int, seed: int = 5, size: int = 224) -> dict[str, np.ndarray]:
    """CT/MR sheet photos and empty-lightbox photos (generator B), developed to ``size``.

    Sheets use their true corners; empties a central quad of a film's shape (0.8 of the frame
    height, width/height 0.82), as a rectifier that wrongly found a film would develop them.
    """
    from kiosk.lab import photoscene
    from kiosk.lab.film_photos import PHOTO_SIZE
    from kiosk.rectify.develop import develop

    h, w = PHOTO_SIZE
    rng = np.random.default_rng(seed)
    fh = 0.8 * h
    fw = 0.82 * fh
    quad = np.array(
        [
            [w / 2 - fw / 2, h / 2 - fh / 2],
            [w / 2 + fw / 2, h / 2 - fh / 2],
            [w / 2 + fw / 2, h / 2 + fh / 2],
            [w / 2 - fw / 2, h / 2 + fh / 2],
        ],
        np.float32,
    )
    out: dict[str, list[np.ndarray]] = {"sheet": [], "empty": []}
    for kind in ("sheet", "empty"):
        while len(out[kind]) < n:
            spec = photoscene.sample_scene(rng, kind, aspect=w / h)
            photo = photoscene.render_photo(None, spec, rng, size=PHOTO_SIZE)
            corners = photo.corners if kind == "sheet" else quad
            if corners is None:
                continue
            try:
                grey = develop(photo.image, corners)
            except Exception:  # a scene the developer cannot handle: draw another
                logger.exception("could not develop a %s scene", kind)
                continue
            out[kind].append(cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA))
    return {k: np.stack(v) for k, v in out.items()}


def render_tables(
    reports: Sequence[SetReport], diffs: Sequence[PairedDiff], ood: dict[str, dict[str, float]]
) -> str:
    """Markdown tables: metrics side by side, paired differences, OOD flag rates."""
    lines = [
        "| model | data | n (pos) / patients | AUROC [95% CI, patient bootstrap] "
        "| ECE (15 eq-mass) | sens / spec at manifest threshold "
        "| sens / spec at val-chosen threshold | median ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        lines.append(
            f"| {r.model} | {r.data} | {r.n} ({r.n_positive}) / {r.patients} | {r.auroc:.4f} "
            f"[{r.auroc_ci[0]:.4f}, {r.auroc_ci[1]:.4f}] | {r.ece:.4f} | "
            f"{r.sens_manifest:.3f} / {r.spec_manifest:.3f} (t={r.threshold_manifest:.4f}) | "
            f"{r.sens_val:.3f} / {r.spec_val:.3f} (t={r.threshold_val:.4f}) | "
            f"{r.latency_ms_median:.1f} |"
        )
    if diffs:
        lines += ["", "| data | AUROC new - shipped [95% CI, paired by patient] |", "|---|---|"]
        for d in diffs:
            lines.append(f"| {d.data} | {d.diff:+.4f} [{d.ci[0]:+.4f}, {d.ci[1]:+.4f}] |")
    if ood:
        names = sorted({k for v in ood.values() for k in v})
        lines += [
            "",
            "| OOD gate: share flagged | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for model, rates in ood.items():
            lines.append(
                f"| {model} | "
                + " | ".join(f"{rates.get(k, float('nan')):.1%}" for k in names)
                + " |"
            )
    return "\n".join(lines) + "\n"


def labels_and_patients(samples: Sequence[Sample]) -> tuple[np.ndarray, list[str]]:
    """0/1 labels (first finding) and patient ids, in the order given."""
    return np.array([s.labels[0] for s in samples], np.float64), [s.patient for s in samples]


def interleaved_latency(
    manifests: dict[str, Path], image: np.ndarray, runs: int = 200, threads: int = 2
) -> dict[str, float]:
    """Median ``Classifier.predict`` inference ms per model, the models alternating run by run
    (after 10 warm-ups each), so a shared machine's load hits them alike."""
    from kiosk.model.classifier import Classifier

    clfs = {k: Classifier.from_manifest(v, threads=threads) for k, v in manifests.items()}
    for clf in clfs.values():
        for _ in range(10):
            clf.predict(image)
    times: dict[str, list[float]] = {k: [] for k in clfs}
    for _ in range(runs):
        for k, clf in clfs.items():
            times[k].append(clf.predict(image).timings_ms["inference"])
    return {k: float(np.median(v)) for k, v in times.items()}
