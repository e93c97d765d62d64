"""Sweep the "not a chest X-ray" reference's size and threshold on cached model features.

``python -m kiosk.lab.ood_sweep --model models/cxr-pneumonia-effl0-photo.json`` reads the
int8 features that ``python -m kiosk.lab.train.finetune_photos release`` and ``compare``
cached in ``--work`` for that model (training films digital + A + B crops to fit, val to set
the threshold, holdout films and crops, CT/MR sheets, empty lightboxes and synthetic
non-X-rays to score) and prints, per number of PCA components and threshold percentile, the
share of each set the reference flags. This is how the shipped reference's 48 components and
99th percentile were chosen (model card).

What this module does not do: run the model (the cache must exist) or write a reference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kiosk.lab.train.finetune_photos import DEFAULT_WORK
from kiosk.model.manifest import Manifest
from kiosk.model.ood import OodDetector

KINDS = ("digital", "photo-A", "photo-B")
SCORED = (
    "holdout-digital",
    "holdout-photo-A",
    "holdout-photo-B",
    "ood-sheet100",
    "ood-empty100",
    "ood-synthetic200",
)


def _features(work: Path, prefix: str, name: str) -> np.ndarray:
    path = work / f"{prefix}-{name}.npz"
    if not path.is_file():
        raise SystemExit(f"{path} missing: run finetune_photos release and compare first")
    with np.load(path) as z:
        return np.asarray(z["features"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kiosk.lab.ood_sweep", description=__doc__)
    ap.add_argument("--model", type=Path, required=True, help="the int8 model's manifest")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--components", type=int, nargs="+", default=[16, 32, 48, 64, 96, 128])
    ap.add_argument("--percentiles", type=float, nargs="+", default=[98.0, 98.5, 99.0, 99.5])
    args = ap.parse_args(argv)
    prefix = Manifest.load(args.model).sha256[:12]
    train = np.concatenate([_features(args.work, prefix, f"train1500-{k}") for k in KINDS])
    val = np.concatenate([_features(args.work, prefix, f"val-{k}") for k in KINDS])
    scored = {name: _features(args.work, prefix, name) for name in SCORED}
    print("| components | percentile | " + " | ".join(SCORED) + " |")
    print("|---|---|" + "---|" * len(SCORED))
    for k in args.components:
        for pct in args.percentiles:
            det = OodDetector.fit(train, val, k, pct)
            shares = [float(np.mean(det.distances(f) > det.threshold)) for f in scored.values()]
            print(f"| {k} | {pct:g} | " + " | ".join(f"{100 * v:.1f} %" for v in shares) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
