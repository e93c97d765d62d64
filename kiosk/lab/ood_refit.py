"""Refit the "not a chest X-ray" reference on digital films *and* photographed ones.

The shipped reference was fitted on features of digital X-rays only, so a rectified photo of
an in-domain film (a little blur, a different characteristic curve, JPEG) often lands outside
it. Here the reference is fitted on features of the train split's films as digital images and
as photographs rendered by scene generator A (``kiosk.camera.scene``) and developed through the
kiosk's own rectifier (its corners when it accepts the photo, the true corners otherwise: what
a perfect rectifier would hand the model); the threshold is the 99.5th percentile of the val
split's distances (digital and photographed alike). It is then checked on what it never saw:
the holdout films digital and photographed by generator A *and* by generator B
(``kiosk.lab.photoscene``, written independently), and on things that must stay refused:
CT/MR sheets and empty lightboxes of generator B, synthetic non-X-rays.

    python -m kiosk.lab.ood_refit --model models/cxr-pneumonia-effl0.json \
        --n-train 500 --n-val 250 --n-test 200 --out models/cxr-pneumonia-effl0.ood.npz

Writes the reference and a JSON report next to it (``.report.json``); with
``--update-manifest`` also the manifest's ``ood`` entry (file, sha256, threshold, fit).

What this module does not do: change the model, or run on the kiosk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kiosk.config import KERMANY_DIR
from kiosk.lab.film_photos import PHOTO_SIZE, FilmPhoto, render_film_photo
from kiosk.lab.train.data import Sample, read_split_csv
from kiosk.lab.train.evaluate import synthetic_non_xrays
from kiosk.model.classifier import Classifier
from kiosk.model.ood import OodDetector
from kiosk.rectify.develop import develop
from kiosk.rectify.rectifier import rectify

logger = logging.getLogger(__name__)


def _features(classifier: Classifier, image: np.ndarray) -> np.ndarray:
    features = classifier.predict(image).features
    if features is None:
        raise SystemExit("the model has no feature output: cannot fit an OOD reference")
    return np.asarray(features, np.float64).ravel()


def _developed(photo: FilmPhoto) -> np.ndarray:
    """What the model gets from a photo: the rectifier's film when it accepts the photo, else
    the film developed at its true corners (a perfect rectifier), else the photo in grey."""
    found = rectify(photo.image)
    if found.status == "ok" and found.film is not None:
        return found.film
    if photo.corners is None:
        return cv2.cvtColor(photo.image, cv2.COLOR_RGB2GRAY)  # empty: what the model would get
    return develop(photo.image, photo.corners)


def _photo_a(digital: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _developed(render_film_photo(digital, "A", rng, PHOTO_SIZE))


def _photo_b(digital: np.ndarray | None, kind: str, rng: np.random.Generator) -> np.ndarray:
    return _developed(render_film_photo(digital, "B", rng, PHOTO_SIZE, kind))


def _grey(sample: Sample) -> np.ndarray:
    image = cv2.imread(str(sample.path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise SystemExit(f"cannot read {sample.path}")
    return image


def _split(samples: list[Sample], name: str, n: int, rng: np.random.Generator) -> list[Sample]:
    chosen = [s for s in samples if s.split == name]
    order = rng.permutation(len(chosen))[:n]
    return [chosen[i] for i in order]


def refit(
    manifest: Path,
    data_dir: Path,
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int,
    generators: str = "a",
) -> tuple[OodDetector, dict[str, Any]]:
    """Fit the reference and measure it; returns the detector and the report."""
    classifier = Classifier.from_manifest(manifest, threads=2)
    split_csv = manifest.parent / f"{classifier.manifest.id}.split.csv"
    samples = read_split_csv(split_csv, data_dir)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()

    def features_of(group: list[Sample], photos: bool) -> np.ndarray:
        rows = []
        for i, sample in enumerate(group):
            digital = _grey(sample)
            rows.append(_features(classifier, digital))
            if photos and "a" in generators:
                rows.append(_features(classifier, _photo_a(digital, rng)))
            if photos and "b" in generators:
                rows.append(_features(classifier, _photo_b(digital, "film", rng)))
            if i % 100 == 0:
                logger.info("%d/%d films, %.0f s", i, len(group), time.perf_counter() - t0)
        return np.stack(rows)

    train = features_of(_split(samples, "train", n_train, rng), photos=True)
    val = features_of(_split(samples, "val", n_val, rng), photos=True)
    old_file = classifier.manifest.ood.get("file")
    old = OodDetector.load(manifest.parent / str(old_file)) if old_file else None
    detector = OodDetector.fit(train, val, components=32, percentile=99.5)

    test = _split(samples, "holdout", n_test, rng)
    groups: dict[str, list[np.ndarray]] = {"digital": [], "photo_a": [], "photo_b": []}
    for sample in test:
        digital = _grey(sample)
        groups["digital"].append(_features(classifier, digital))
        groups["photo_a"].append(_features(classifier, _photo_a(digital, rng)))
        groups["photo_b"].append(_features(classifier, _photo_b(digital, "film", rng)))
    n_other = max(20, n_test // 5)
    groups["sheet_b"] = [
        _features(classifier, _photo_b(None, "sheet", rng)) for _ in range(n_other)
    ]
    groups["empty_b"] = [
        _features(classifier, _photo_b(None, "empty", rng)) for _ in range(n_other)
    ]
    groups["non_xray"] = [_features(classifier, im) for im in synthetic_non_xrays(n_other)]
    report: dict[str, Any] = {
        "model": classifier.manifest.id,
        "fit": f"train split: {n_train} films, digital + a photo by each of generators "
        f"{'+'.join(generators.upper())}; threshold: p99.5 of {n_val} val films (digital + "
        f"photos), seed {seed}",
        "threshold": detector.threshold,
        "seconds": round(time.perf_counter() - t0, 1),
        "flagged": {},
    }
    for name, rows in groups.items():
        feats = np.stack(rows)
        new_rate = float(np.mean(detector.distances(feats) > detector.threshold))
        entry = {"n": len(rows), "new": round(new_rate, 4)}
        if old is not None:
            entry["old"] = round(float(np.mean(old.distances(feats) > old.threshold)), 4)
        report["flagged"][name] = entry
    return detector, report


def _update_manifest(manifest: Path, out: Path, detector: OodDetector, fit: str) -> None:
    data = json.loads(manifest.read_text())
    ood = dict(data.get("ood") or {})
    ood["file"] = out.name
    ood["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    ood["threshold"] = detector.threshold
    ood["fit"] = fit
    data["ood"] = ood
    manifest.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Command line: refit, report, write the reference and update the manifest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/cxr-pneumonia-effl0.json"))
    parser.add_argument("--data", type=Path, default=KERMANY_DIR)
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-val", type=int, default=250)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--generators", default="a", help="scene generators of the fit's photos: a, b or ab"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--dry-run", action="store_true", help="report only; write nothing")
    parser.add_argument(
        "--update-manifest", action="store_true", help="point the model's manifest at --out"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    detector, report = refit(
        args.model, args.data, args.n_train, args.n_val, args.n_test, args.seed, args.generators
    )
    print(json.dumps(report, indent=2))
    if not args.dry_run:
        out = args.out or args.model.parent / f"{report['model']}.ood.npz"
        detector.save(out)
        out.with_suffix(".report.json").write_text(json.dumps(report, indent=2) + "\n")
        if args.update_manifest:
            _update_manifest(args.model, out, detector, str(report["fit"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
