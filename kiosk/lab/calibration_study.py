"""The recalibration study: digital vs photographed films, and what recalibration recovers.

For every image of the held-back splits (val + holdout; never training images) the study
runs the shipped model on the digital image, then renders the same image as a photograph of a
film on a lightbox with the physically based simulator (random rig, exposure and placement),
rectifies it with the product's rectifier (without a rig reference by default, the harder
case; ``--rig`` adds an empty-lightbox reference per photo, as on a set-up kiosk) and runs the
model on the result. Patients are split in two: a pool from which
``n`` labelled photos are drawn to fit each calibrator, and a test half on which everything is
measured. Draws are repeated with different seeds; means and standard deviations are reported.

    python -m kiosk.lab.calibration_study --data ../shared/data/kermany-train \\
        --split models/cxr-pneumonia-effl0.split.csv --out docs/calibration-study.json

Per-image model outputs are cached (``--cache``), so the fitting part can be re-run quickly.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.calibration.fitting import fit_calibration
from kiosk.camera import scene
from kiosk.capture.rig import RigReference
from kiosk.errors import CalibrationError
from kiosk.imaging.decode import read_image
from kiosk.model.classifier import Classifier
from kiosk.rectify.rectifier import rectify
from kiosk.stats import auroc, bootstrap_ci, brier, ece, sigmoid

logger = logging.getLogger(__name__)

PHOTO_SIZE = (720, 1280)
METHODS = ("temperature", "platt", "refit", "auto")
SIZES = (50, 100, 200, 400)


def _rig_for(params: scene.SceneParams, rng: np.random.Generator) -> RigReference:
    frames = [scene.render_empty(params, rng, size=PHOTO_SIZE) for _ in range(2)]
    return RigReference.from_empty_frames(frames, {"exposure_scale": params.exposure_scale})


def collect(
    classifier: Classifier,
    paths: list[Path],
    labels: np.ndarray,
    patients: list[str],
    *,
    seed: int,
    difficulty: tuple[float, float],
    with_rig: bool = False,
) -> dict[str, Any]:
    """Model outputs on the digital image and on a simulated photo of it, per image."""
    rng = np.random.default_rng(seed)
    digital_logit: list[float] = []
    photo_logit: list[float] = []
    photo_features: list[np.ndarray | None] = []
    ok: list[bool] = []
    reasons: dict[str, int] = {}
    started = time.perf_counter()
    for i, path in enumerate(paths):
        image = read_image(path).pixels
        grey = image if image.ndim == 2 else image.mean(axis=2).astype(np.uint8)
        digital_logit.append(float(classifier.predict(grey).logits[0]))
        params = scene.random_params(rng, difficulty=float(rng.uniform(*difficulty)))
        rendering = scene.render(grey, params, rng, size=PHOTO_SIZE)
        rig = None
        if with_rig:
            try:
                rig = _rig_for(params, rng)
            except Exception:  # a rig that cannot be set up: rectify without a reference
                rig = None
        result = rectify(rendering.image, rig)
        if result.status != "ok" or result.film is None:
            reason = result.quality.flags[0] if result.quality.flags else "rejected"
            reasons[reason] = reasons.get(reason, 0) + 1
            photo_logit.append(np.nan)
            photo_features.append(None)
            ok.append(False)
        else:
            prediction = classifier.predict(result.film)
            photo_logit.append(float(prediction.logits[0]))
            photo_features.append(prediction.features)
            ok.append(True)
        if (i + 1) % 100 == 0:
            logger.warning(
                "%d/%d images (%.0f s)", i + 1, len(paths), time.perf_counter() - started
            )
    dim = next(f.shape[0] for f in photo_features if f is not None)
    feats = np.stack([f if f is not None else np.full(dim, np.nan) for f in photo_features])
    return {
        "digital_logit": np.asarray(digital_logit),
        "photo_logit": np.asarray(photo_logit),
        "photo_features": feats.astype(np.float32),
        "photo_ok": np.asarray(ok),
        "labels": labels.astype(np.float64),
        "patients": np.asarray(patients),
        "rejections": json.dumps(reasons),
    }


def _metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    lo, hi = bootstrap_ci(auroc, probs, y, n_boot=1000, seed=0)
    return {
        "auroc": auroc(probs, y),
        "auroc_ci": [lo, hi],  # type: ignore[dict-item]
        "ece": ece(probs, y, bins=15),
        "brier": brier(probs, y),
        "n": int(y.size),
        "positives": int(y.sum()),
    }


def analyse(data: dict[str, Any], *, repeats: int, seed: int) -> dict[str, Any]:
    """Fit each calibrator on n labelled photos from one patient half, test on the other."""
    ok = data["photo_ok"].astype(bool)
    y_all = data["labels"]
    patients = data["patients"]
    rng = np.random.default_rng(seed)
    unique = np.unique(patients)
    rng.shuffle(unique)
    test_patients = set(unique[: unique.size // 2])
    is_test = np.array([p in test_patients for p in patients])
    test = is_test & ok
    pool = np.flatnonzero(~is_test & ok)
    y_test = y_all[test]
    out: dict[str, Any] = {
        "images": int(y_all.size),
        "photos_rejected": int((~ok).sum()),
        "rejections": json.loads(str(data["rejections"])),
        "test_images": int(test.sum()),
        "pool_images": int(pool.size),
        "digital_test": _metrics(sigmoid(data["digital_logit"][test]), y_test),
        "photo_test_uncalibrated": _metrics(sigmoid(data["photo_logit"][test]), y_test),
        "recalibrated": {},
    }
    sha = "0" * 64
    for n in SIZES:
        if n > pool.size:
            continue
        for method in METHODS:
            scores: dict[str, list[float]] = {"ece": [], "auroc": [], "brier": []}
            chosen: list[str] = []
            for r in range(repeats):
                pick = np.random.default_rng(seed + 1000 * r + n).choice(pool, n, replace=False)
                try:
                    record = fit_calibration(
                        data["photo_logit"][pick, None],
                        y_all[pick, None],
                        ["pneumonia"],
                        features=data["photo_features"][pick],
                        method=method,  # type: ignore[arg-type]
                        model_id="study",
                        model_sha256=sha,
                        created_by="study",
                        n_boot=200,
                    )
                except CalibrationError as exc:
                    logger.warning("n=%d %s repeat %d: %s", n, method, r, exc)
                    continue
                probs = record.apply(
                    data["photo_logit"][test, None],
                    data["photo_features"][test],
                    model_sha256=sha,
                ).reshape(-1)
                scores["ece"].append(ece(probs, y_test, bins=15))
                scores["auroc"].append(auroc(probs, y_test))
                scores["brier"].append(brier(probs, y_test))
                chosen.append(record.methods["pneumonia"])
            if not scores["ece"]:
                continue
            out["recalibrated"][f"{method}@{n}"] = {
                "n_labelled": n,
                "method": method,
                "repeats": len(scores["ece"]),
                **{f"{k}_mean": float(np.mean(v)) for k, v in scores.items()},
                **{f"{k}_sd": float(np.std(v)) for k, v in scores.items()},
                "chosen": sorted(set(chosen)),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    from kiosk.lab.train.data import read_split_csv

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="kermany-train folder")
    parser.add_argument("--split", type=Path, required=True, help="the model's split CSV")
    parser.add_argument("--manifest", type=Path, default=Path("models/cxr-pneumonia-effl0.json"))
    parser.add_argument("--splits", default="val,holdout", help="never 'train'")
    parser.add_argument("--limit", type=int, default=0, help="use only this many images")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rig", action="store_true", help="rectify with an empty-lightbox reference per photo"
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/kiosk-calibration-study.npz"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    wanted = {s.strip() for s in args.splits.split(",")}
    if "train" in wanted:
        parser.error("the study must not use training images")
    samples = [s for s in read_split_csv(args.split, args.data) if s.split in wanted]
    if args.limit:
        samples = samples[: args.limit]
    classifier = Classifier.from_manifest(args.manifest, threads=2)
    started = time.perf_counter()
    if args.cache.is_file():
        data = dict(np.load(args.cache, allow_pickle=False))
        logger.warning("using cached model outputs from %s", args.cache)
    else:
        data = collect(
            classifier,
            [s.path for s in samples],
            np.array([s.labels[0] for s in samples]),
            [s.patient for s in samples],
            seed=args.seed,
            difficulty=(0.1, 0.9),
            with_rig=args.rig,
        )
        np.savez(args.cache, **data)
    report = analyse(data, repeats=args.repeats, seed=args.seed)
    report["model"] = {"id": classifier.manifest.id, "sha256": classifier.manifest.sha256}
    report["splits"] = sorted(wanted)
    report["photo_size"] = list(PHOTO_SIZE)
    report["rig_reference"] = bool(args.rig)
    report["machine"] = f"{platform.machine()}, python {platform.python_version()}"
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
