"""Release and compare the photo-tuned classifier (issue 17).

``release_photo_model``: export the fine-tuned weights (float32 + full-int8 TFLite through
``export.export``, int8 calibrated on training films, half digital and half generator-A photo
crops), choose the threshold by Youden's J on val digital + val generator-A crops pooled (int8
model, product runtime), and fit the OOD reference on int8 features of training films: digital
AND developed photo crops of both generators; its threshold is a high percentile (99.5th by
default) of the val distances (digital + A + B crops).

``compare``: shipped vs new on the holdout patients (``photo_eval``), one process, same crops.

Model outputs are cached per (manifest sha256, data set) in ``work`` so a rerun after a crash
does not recompute them.

What this module does not do: train (``photo_tune``) or change the kiosk's default model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.lab.train.data import Sample, load_grey, read_split_csv
from kiosk.lab.train.evaluate import synthetic_non_xrays
from kiosk.lab.train.export import FindingInfo, export
from kiosk.lab.train.photo_data import load_crops, split_samples
from kiosk.lab.train.photo_eval import (
    PairedDiff,
    SetReport,
    interleaved_latency,
    labels_and_patients,
    render_tables,
    set_report,
    sheets_and_empties,
    val_threshold,
)
from kiosk.lab.train.release import ModelOutputs, _ood_entry, run_model, update_manifest
from kiosk.model.manifest import Manifest
from kiosk.model.ood import OodDetector
from kiosk.stats import auroc_or_nan, patient_bootstrap_auroc

logger = logging.getLogger(__name__)

THRESHOLD_RULE = (
    "Youden's J (max sensitivity + specificity - 1) on the validation split, digital films and "
    "generator-A photo crops pooled, int8 model"
)


def cached_outputs(manifest: Path, name: str, images: np.ndarray, work: Path) -> ModelOutputs:
    """``run_model`` with an on-disk cache keyed by the model file's sha256 and ``name``."""
    man = Manifest.load(manifest)
    path = Path(work) / f"{man.sha256[:12]}-{name}.npz"
    if path.exists():
        with np.load(path) as z:
            return ModelOutputs(z["logits"], z["probabilities"], z["features"], z["ms"])
    t0 = time.time()
    out = run_model(manifest, images)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        logits=out.logits,
        probabilities=out.probabilities,
        features=out.features,
        ms=out.inference_ms,
    )
    logger.info("%s on %s: %d images in %.0f s", man.id, name, len(images), time.time() - t0)
    return out


def _sets(
    samples: list[Sample], cache: Path, split: str, gens: tuple[str, ...], partial: bool = False
) -> tuple[list[Sample], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Images of one split: digital plus each generator's crops; and per-set ``ok`` masks
    (``partial``: films whose crop is not cached yet are marked not ok)."""
    items = split_samples(samples, split)
    images = {"digital": load_grey(items, 224)}
    ok = {"digital": np.ones(len(items), bool)}
    for g in gens:
        images[f"photo-{g}"], ok[f"photo-{g}"] = load_crops(
            cache, g, split, len(items), partial=partial
        )
    return items, images, ok


def release_photo_model(
    state_path: Path,
    models_dir: Path,
    model_id: str,
    split_csv: Path,
    data: Path,
    cache: Path,
    work: Path,
    *,
    ood_train_per_kind: int = 1500,
    ood_components: int = 32,
    ood_percentile: float = 99.5,
    version: str = "1.0.0",
    calibration_count: int = 300,
    provenance: dict[str, Any] | None = None,
    licence: str = "",
    reuse_export: bool = False,
) -> dict[str, Any]:
    """Export + threshold + OOD reference; returns what was chosen and measured.

    ``reuse_export``: keep the TFLite files and manifests already in ``models_dir`` (from an
    earlier call with the same weights) and redo only the threshold and the OOD reference.
    """
    t0 = time.time()
    samples = read_split_csv(split_csv, data)
    rng = np.random.default_rng(0)
    # the OOD fit takes a sample of each kind: generator B's train crops may be partial
    train, train_imgs, train_ok = _sets(samples, cache, "train", ("A", "B"), partial=True)
    half = calibration_count // 2
    pick = np.sort(rng.choice(len(train), calibration_count, replace=False))
    calib = [train_imgs["digital"][i] for i in pick[:half]] + [
        train_imgs["photo-A"][i] for i in pick[half:] if train_ok["photo-A"][i]
    ]
    prov = dict(provenance or {})
    prov["threshold_rule"] = THRESHOLD_RULE
    prov["int8_calibration"] = (
        f"{len(calib)} training-split images (seed 0): {half} digital, "
        f"{len(calib) - half} generator-A photo crops"
    )
    if reuse_export:
        int8_manifest = Path(models_dir) / f"{model_id}.json"
        f32_manifest = Path(models_dir) / f"{model_id}-f32.json"
        port: dict[str, Any] = {"reused": True}
    else:
        result = export(
            state_path,
            models_dir,
            model_id,
            [FindingInfo("pneumonia", "Pneumonia", 0.5)],
            calib,
            provenance=prov,
            licence=licence,
            card=f"{model_id}.md",
            version=version,
        )
        int8_manifest, f32_manifest = result.int8_manifest, result.f32_manifest
        port = asdict(result.port)
        logger.info("exported in %.0f s (port check %s)", time.time() - t0, result.port)
    man = int8_manifest
    val, val_imgs, val_ok = _sets(samples, cache, "val", ("A", "B"))
    y_val, _ = labels_and_patients(val)
    val_out = {k: cached_outputs(man, f"val-{k}", v[val_ok[k]], work) for k, v in val_imgs.items()}
    threshold = val_threshold(
        [y_val, y_val[val_ok["photo-A"]]], [val_out["digital"], val_out["photo-A"]]
    )
    feats = []
    used: dict[str, int] = {}
    for kind, imgs in train_imgs.items():
        keep = np.flatnonzero(train_ok[kind])
        if not len(keep):
            continue
        keep = np.sort(rng.choice(keep, min(ood_train_per_kind, len(keep)), replace=False))
        feats.append(cached_outputs(man, f"train{len(keep)}-{kind}", imgs[keep], work).features)
        used[kind] = len(keep)
    val_feats = np.concatenate([o.features for o in val_out.values()])
    det = OodDetector.fit(np.concatenate(feats), val_feats, ood_components, ood_percentile)
    ood_path = Path(models_dir) / f"{model_id}.ood.npz"
    det.save(ood_path)
    entry = _ood_entry(ood_path, det, ood_components, ood_percentile)
    entry["fitted_on"] = (
        "int8 features of training-split films ("
        + ", ".join(f"{n} {k}" for k, n in used.items())
        + "; photo crops developed with true corners); threshold: "
        f"{ood_percentile:g}th percentile of the validation split's distances (digital + "
        "generator A + generator B crops)"
    )
    update_manifest(man, [threshold], entry)
    update_manifest(f32_manifest, [threshold], {})
    flagged = {
        k: float(np.mean(det.distances(o.features) > det.threshold)) for k, o in val_out.items()
    }
    return {
        "threshold": threshold,
        "ood_threshold": det.threshold,
        "ood_val_flagged": flagged,
        "ood_fit_images": used,
        "port_check": port,
        "int8_bytes": (Path(models_dir) / Manifest.load(int8_manifest).file).stat().st_size,
        "f32_bytes": (Path(models_dir) / Manifest.load(f32_manifest).file).stat().st_size,
        "seconds": round(time.time() - t0, 1),
    }


def compare(
    manifests: dict[str, Path],
    split_csv: Path,
    data: Path,
    cache: Path,
    work: Path,
    *,
    resamples: int = 2000,
    extra_ood: int = 100,
) -> tuple[str, dict[str, Any]]:
    """Shipped vs new (the first two of ``manifests``, by label) on the holdout patients."""
    samples = read_split_csv(split_csv, data)
    hold, hold_imgs, hold_ok = _sets(samples, cache, "holdout", ("A", "B"))
    val, val_imgs, val_ok = _sets(samples, cache, "val", ("A",))
    y_hold, pat_hold = labels_and_patients(hold)
    y_val, _ = labels_and_patients(val)
    others = sheets_and_empties(extra_ood)
    others["synthetic"] = np.array(synthetic_non_xrays(200))
    reports: list[SetReport] = []
    probs: dict[str, dict[str, np.ndarray]] = {}
    ood: dict[str, dict[str, float]] = {}
    for label, man_path in manifests.items():
        man = Manifest.load(man_path)
        vo = {
            k: cached_outputs(man_path, f"val-{k}", v[val_ok[k]], work) for k, v in val_imgs.items()
        }
        t_val = val_threshold([y_val, y_val[val_ok["photo-A"]]], [vo["digital"], vo["photo-A"]])
        det = OodDetector.load(man_path.parent / man.ood["file"]) if man.ood.get("file") else None
        ood[label] = {}
        for kind, imgs in hold_imgs.items():
            ok = hold_ok[kind]
            out = cached_outputs(man_path, f"holdout-{kind}", imgs[ok], work)
            probs.setdefault(kind, {})[label] = out.probabilities[:, 0]
            pats = [p for p, k in zip(pat_hold, ok, strict=True) if k]
            boot = patient_bootstrap_auroc(y_hold[ok], [out.probabilities[:, 0]], pats, resamples)
            reports.append(
                set_report(
                    label,
                    f"holdout {kind}",
                    y_hold[ok],
                    out,
                    pats,
                    man.findings[0].threshold,
                    t_val,
                    boot[:, 0],
                )
            )
            if det is not None:
                ood[label][f"holdout {kind}"] = float(
                    np.mean(det.distances(out.features) > det.threshold)
                )
        if det is not None:
            for kind, imgs in others.items():
                out = cached_outputs(man_path, f"ood-{kind}{len(imgs)}", imgs, work)
                ood[label][kind] = float(np.mean(det.distances(out.features) > det.threshold))
    diffs: list[PairedDiff] = []
    labels = list(manifests)
    if len(labels) >= 2:
        for kind in hold_imgs:
            ok = hold_ok[kind]
            pats = [p for p, k in zip(pat_hold, ok, strict=True) if k]
            a, b = probs[kind][labels[0]], probs[kind][labels[1]]
            boot = patient_bootstrap_auroc(y_hold[ok], [a, b], pats, resamples)
            d = boot[:, 1] - boot[:, 0]
            point = auroc_or_nan(y_hold[ok], b) - auroc_or_nan(y_hold[ok], a)
            lo, hi = np.quantile(d, [0.025, 0.975])
            diffs.append(PairedDiff(f"holdout {kind}", point, (float(lo), float(hi))))
    latency = interleaved_latency(manifests, hold_imgs["digital"][0])
    text = render_tables(reports, diffs, ood)
    text += "\nInterleaved latency (median of 200 alternating runs, kiosk runtime, 2 threads): "
    text += ", ".join(f"{k} {v:.2f} ms" for k, v in latency.items()) + "\n"
    record = {
        "latency_ms_interleaved": latency,
        "reports": [asdict(r) for r in reports],
        "paired_differences": [asdict(d) for d in diffs],
        "ood": ood,
        "failed_crops": {k: int((~v).sum()) for k, v in hold_ok.items()},
        "manifests": {k: str(v) for k, v in manifests.items()},
        "sha256": {
            k: hashlib.sha256(Path(v).read_bytes()).hexdigest() for k, v in manifests.items()
        },
    }
    (Path(work) / "compare.json").write_text(json.dumps(record, indent=2) + "\n")
    (Path(work) / "compare.md").write_text(text)
    return text, record
