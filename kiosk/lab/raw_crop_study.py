"""Issue 17's protocol: perfect crops of photographed films through ``analyze --input digital``.

``python -m kiosk.lab.raw_crop_study --generator A|B [--out DIR]`` renders one photo of every
holdout film of the model's split with the scene the photo-crop cache uses for it (seed 17,
same generator, split and index: ``kiosk.lab.train.photo_data``), cuts the film sheet out of
the photo with its *true* corners (a perspective warp, no density recovery: what a perfect
rectifier's corners and a plain crop hand over) and runs each crop through the product's
digital path (``Pipeline.analyze_image(..., input_kind="digital")``: the digital gate, the
classifier, the "not a chest X-ray" reference), as ``kiosk analyze --input digital`` would.

Reported: how many crops each gate refused and why; AUROC of the crops against AUROC of the
same films' digital originals (paired, 95 % CI resampling patients), on every film and on
the films whose photos the scene calls legible (generator B's truth: lung region clipped and
crushed <= 2 %, glare <= 0.1). ``--out DIR`` also writes the crops as PNG with labels.csv.

What this module does not do: develop the photo (``rectify.develop`` is what the kiosk does;
``finetune_photos compare`` scores those crops), or tune anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kiosk.lab.film_photos import GENERATORS, PHOTO_SIZE, render_film_photo
from kiosk.lab.photo_study.summary import is_legible
from kiosk.lab.train.data import SPLITS, Sample, read_split_csv
from kiosk.lab.train.photo_data import CACHE_SEED, scene_rng, split_samples
from kiosk.model.classifier import Classifier
from kiosk.model.manifest import Manifest
from kiosk.model.ood import OodDetector
from kiosk.pipeline import Pipeline
from kiosk.rectify.warp import upright
from kiosk.stats import auroc_or_nan, patient_bootstrap_auroc

logger = logging.getLogger(__name__)

# the digital gate's measurements reported per set (how their limits were chosen)
GATE_METRICS = ("colour_detail", "colour_field", "similar_regions", "colourfulness")

MODELS = Path(__file__).resolve().parents[2] / "models"


def _model_split(manifest_path: Path, data: Path, split: str) -> list[Sample]:
    """The films of ``split`` in the model's own patient split (``{id}.split.csv`` beside it)."""
    man = Manifest.load(manifest_path)
    return split_samples(
        read_split_csv(manifest_path.with_name(f"{man.id}.split.csv"), data), split
    )


def _digital_pipeline(manifest_path: Path) -> Pipeline:
    """The product's pipeline on the model with its "not a chest X-ray" reference, nothing
    stored: what ``kiosk analyze --input digital`` runs."""
    classifier = Classifier.from_manifest(manifest_path, threads=2)
    ood_file = classifier.manifest.ood.get("file")
    ood = OodDetector.load(manifest_path.parent / str(ood_file)) if ood_file else None
    return Pipeline(classifier, device_id="raw-crop-study", ood=ood)


def _render(
    sample: Sample, generator: str, index: int, split: str = "holdout"
) -> tuple[np.ndarray, dict[str, float]]:
    """The cache's photo of ``sample`` (same scene) cut out with its true corners, and the
    scene's truth about the lungs (generator B only)."""
    digital = cv2.imread(str(sample.path), cv2.IMREAD_GRAYSCALE)
    if digital is None:
        raise OSError(f"cannot read {sample.path}")
    rng = scene_rng(CACHE_SEED, generator, split, index)
    shot = render_film_photo(digital, generator, rng, PHOTO_SIZE)
    assert shot.corners is not None
    return upright(shot.image, shot.corners), shot.truth


def _auroc_pair(
    y: np.ndarray, crop: np.ndarray, digital: np.ndarray, patients: list[str]
) -> dict[str, Any]:
    boot = patient_bootstrap_auroc(y, [crop, digital], patients)
    diff = boot[:, 0] - boot[:, 1]
    return {
        "n": len(y),
        "crop_auroc": round(auroc_or_nan(y, crop), 4),
        "digital_auroc": round(auroc_or_nan(y, digital), 4),
        "crop_minus_digital": round(auroc_or_nan(y, crop) - auroc_or_nan(y, digital), 4),
        "difference_ci95": [round(float(v), 4) for v in np.percentile(diff, [2.5, 97.5])],
    }


def run(generator: str, manifest_path: Path, data: Path, out: Path | None) -> dict[str, Any]:
    """Render, crop and analyse every holdout film of the model's split; returns the report."""
    t0 = time.time()
    items = _model_split(manifest_path, data, "holdout")
    pipeline = _digital_pipeline(manifest_path)
    man = pipeline.classifier.manifest
    rows: list[dict[str, Any]] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for index, sample in enumerate(items):
        crop, truth = _render(sample, generator, index)
        result = pipeline.analyze_image(crop, source=sample.name, input_kind="digital", store=False)
        digital = cv2.imread(str(sample.path), cv2.IMREAD_GRAYSCALE)
        if digital is None:
            raise OSError(f"cannot read {sample.path}")
        reference = pipeline.analyze_image(
            digital, source=sample.name, input_kind="digital", store=False
        )
        rows.append(
            {
                "label": int(sample.labels[-1]),
                "patient": sample.patient,
                "status": result.status,
                "flags": list(result.quality.get("flags", [])),
                "crop": result.findings[-1].raw if result.findings else None,
                "digital": reference.findings[-1].raw if reference.findings else None,
                "legible": is_legible(truth),
                "gate": _gate_metrics(result.quality),
            }
        )
        if out is not None:
            cv2.imwrite(str(out / f"{index:04d}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        if (index + 1) % 100 == 0:
            logger.info(
                "%s: %d/%d crops, %.0f s", generator, index + 1, len(items), time.time() - t0
            )
    if out is not None:
        with (out / "labels.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "label"])
            writer.writerows([f"{i:04d}.png", r["label"]] for i, r in enumerate(rows))
    refused: dict[str, int] = {}
    for r in rows:
        for flag in r["flags"] if r["status"] != "ok" else []:
            refused[flag] = refused.get(flag, 0) + 1
    scored = [r for r in rows if r["crop"] is not None and r["digital"] is not None]
    report: dict[str, Any] = {
        "generator": generator,
        "model": {"id": man.id, "version": man.version, "sha256": man.sha256},
        "crops": len(rows),
        "accepted": sum(r["status"] == "ok" for r in rows),
        "refused_by_flag": refused,
        "not_xray_share": round(sum("not_xray" in r["flags"] for r in rows) / len(rows), 4),
        "seconds": round(time.time() - t0, 1),
    }
    report["gate_metrics"] = _spread([r["gate"] for r in rows], (50, 99, 100))
    subsets = [("all", scored)]
    if generator == "B":  # only generator B's scenes say which photos are legible
        subsets.append(("legible", [r for r in scored if r["legible"]]))
    for name, subset in subsets:
        if len(subset) < 20:
            continue
        y = np.array([r["label"] for r in subset])
        report[f"auroc_{name}"] = _auroc_pair(
            y,
            np.array([r["crop"] for r in subset]),
            np.array([r["digital"] for r in subset]),
            [r["patient"] for r in subset],
        )
    return report


def _gate_metrics(quality: dict[str, Any]) -> dict[str, float]:
    metrics = quality.get("metrics", {})
    return {k: float(metrics[k]) for k in GATE_METRICS if k in metrics}


def _spread(rows: list[dict[str, float]], percentiles: tuple[float, ...]) -> dict[str, Any]:
    """Per gate measurement, its percentiles over the rows that have it."""
    out: dict[str, Any] = {}
    for key in GATE_METRICS:
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = {f"p{p:g}": round(float(np.percentile(values, p)), 4) for p in percentiles}
    return out


def non_xrays(manifest_path: Path, n: int = 100) -> dict[str, Any]:
    """What the digital path refuses of what is not a chest film: ``n`` CT/MR sheets and ``n``
    empty lightboxes photographed by generator B and cut out (``photo_eval``, seed 5: the
    sets ``ood_sweep`` scores), and ``2 n`` synthetic non-X-rays; per set, the share refused
    and by which gate."""
    from kiosk.lab.train.evaluate import synthetic_non_xrays
    from kiosk.lab.train.photo_eval import sheets_and_empties

    t0 = time.time()
    pipeline = _digital_pipeline(manifest_path)
    man = pipeline.classifier.manifest
    sets = dict(sheets_and_empties(n))
    sets["synthetic"] = np.stack(synthetic_non_xrays(2 * n, 224, 0))
    report: dict[str, Any] = {"model": man.id, "sha256": man.sha256}
    for name, images in sets.items():
        refused = 0
        by: dict[str, int] = {}
        gates: list[dict[str, float]] = []
        for image in images:
            result = pipeline.analyze_image(image, source=name, input_kind="digital", store=False)
            gates.append(_gate_metrics(result.quality))
            if result.status != "ok":
                refused += 1
                # the OOD distance is measured only once the image gate let the picture through
                reached_model = "ood_distance" in result.quality.get("metrics", {})
                gate = "ood" if reached_model else ",".join(result.quality.get("flags", []))
                by[gate] = by.get(gate, 0) + 1
        report[name] = {
            "n": len(images),
            "refused": round(refused / len(images), 4),
            "by": by,
            "gate_metrics": _spread(gates, (0, 50, 100)),
        }
    report["seconds"] = round(time.time() - t0, 1)
    return report


def region_counts(manifest_path: Path, data: Path, cache: Path, n: int = 100) -> dict[str, Any]:
    """``sheet.similar_regions`` over the holdout films (digital, and the developed crops of
    both generators in the photo-crop ``cache``), ``n`` developed CT/MR sheets and empty
    lightboxes (``photo_eval``, seed 5): how many images of each set reach each count."""
    from kiosk.lab.train.data import load_grey
    from kiosk.lab.train.photo_data import load_crops
    from kiosk.lab.train.photo_eval import sheets_and_empties
    from kiosk.rectify.sheet import similar_regions

    items = _model_split(manifest_path, data, "holdout")
    sets: dict[str, list[np.ndarray]] = {"digital": list(load_grey(items, 512))}
    for g in GENERATORS:
        crops, ok = load_crops(cache, g, "holdout", len(items))
        sets[f"developed-{g}"] = [c for c, k in zip(crops, ok, strict=True) if k]
    sets.update({k: list(v) for k, v in sheets_and_empties(n).items()})
    report: dict[str, Any] = {}
    for name, images in sets.items():
        counts = np.bincount([similar_regions(im) for im in images])
        report[name] = {"n": len(images), "images_per_count": counts.tolist()}
    return report


def crop_features(
    generator: str, split: str, n: int | None, manifest_path: Path, data: Path, work: Path
) -> Path:
    """Features of the true crops of ``n`` films of ``split`` (all when None; a seeded sample
    otherwise), grey and 224 px as the crop cache's, cached in ``work`` like the developed
    crops' (``{sha12}-{split}[n]-raw-{generator}.npz``) for the OOD reference."""
    from kiosk.lab.train.photo_release import cached_outputs

    man = Manifest.load(manifest_path)
    items = _model_split(manifest_path, data, split)
    picks = np.arange(len(items))
    if n is not None and n < len(items):
        picks = np.sort(np.random.default_rng(0).choice(len(items), n, replace=False))
    name = f"{split}{'' if n is None else len(picks)}-raw-{generator}"
    out = Path(work) / f"{man.sha256[:12]}-{name}.npz"
    if out.exists():
        return out
    crops = np.zeros((len(picks), 224, 224), np.uint8)
    t0 = time.time()
    for k, i in enumerate(picks):
        crop, _ = _render(items[int(i)], generator, int(i), split)
        crops[k] = cv2.resize(
            cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), (224, 224), interpolation=cv2.INTER_AREA
        )
        if (k + 1) % 250 == 0:
            logger.info(
                "%s %s: %d/%d crops, %.0f s", generator, split, k + 1, len(picks), time.time() - t0
            )
    cached_outputs(manifest_path, name, crops, work)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kiosk.lab.raw_crop_study", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("study", help="the protocol: crops through the digital path")
    st.add_argument("--out", type=Path, default=None, help="also write the crops here")
    st.add_argument("--json", type=Path, default=None, help="write the report here too")
    ft = sub.add_parser("features", help="cache the crops' int8 features (for the OOD fit)")
    ft.add_argument("--split", choices=SPLITS, required=True)
    ft.add_argument("--n", type=int, default=None, help="a seeded sample of the split")
    ft.add_argument("--work", type=Path, default=Path("/work/cache/photo-eval"))
    ot = sub.add_parser("others", help="CT/MR sheets, empty lightboxes, synthetic pictures")
    ot.add_argument("--json", type=Path, default=None, help="write the report here too")
    rg = sub.add_parser("regions", help="the sheet check's count on films, sheets, empties")
    rg.add_argument("--cache", type=Path, default=Path("/work/cache/photocrops-v2"))
    for p in (st, ft):
        p.add_argument("--generator", choices=GENERATORS, required=True)
    for p in (st, ft, ot, rg):
        p.add_argument("--model", type=Path, default=MODELS / "cxr-pneumonia-effl0-photo.json")
        p.add_argument("--data", type=Path, default=Path("../shared/data/kermany-train"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.cmd == "regions":
        print(json.dumps(region_counts(args.model, args.data, args.cache)))
        return 0
    if args.cmd == "features":
        path = crop_features(args.generator, args.split, args.n, args.model, args.data, args.work)
        print(path)
        return 0
    if args.cmd == "others":
        report = non_xrays(args.model)
    else:
        report = run(args.generator, args.model, args.data, args.out)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
