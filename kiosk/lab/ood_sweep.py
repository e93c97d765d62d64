"""Sweep the "not a chest X-ray" reference's size and threshold on cached model features.

``python -m kiosk.lab.ood_sweep --model models/cxr-pneumonia-effl0-photo.json`` reads the
int8 features that ``python -m kiosk.lab.train.finetune_photos release`` and ``compare``
cached in ``--work`` for that model (training films digital + A + B crops to fit, val to set
the threshold, holdout films and crops, CT/MR sheets, empty lightboxes and synthetic
non-X-rays to score) and prints, per number of PCA components and threshold percentile, the
share of each set the reference flags. This is how the shipped reference's 48 components and
99th percentile were chosen (model card).

``--kinds`` names the kinds of training/val images the reference is fitted on: ``digital``,
``photo-A``/``photo-B`` (developed crops) and ``raw-A``/``raw-B`` (plain true crops of the same
photos, cached by ``python -m kiosk.lab.raw_crop_study features``; what ``kiosk analyze
--input digital`` is handed when someone crops a photo of a film). ``--write K P`` fits that
one reference and writes it next to the model with the manifest's ``ood`` entry.

What this module does not do: run the model (the cache must exist).
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
RAW_SCORED = ("holdout-raw-A", "holdout-raw-B")


def _features(work: Path, prefix: str, name: str) -> np.ndarray:
    path = work / f"{prefix}-{name}.npz"
    if not path.is_file():
        raise SystemExit(
            f"{path} missing: run finetune_photos release and compare (and, for raw kinds, "
            "raw_crop_study features) first"
        )
    with np.load(path) as z:
        return np.asarray(z["features"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kiosk.lab.ood_sweep", description=__doc__)
    ap.add_argument("--model", type=Path, required=True, help="the int8 model's manifest")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--components", type=int, nargs="+", default=[16, 32, 48, 64, 96, 128])
    ap.add_argument("--percentiles", type=float, nargs="+", default=[98.0, 98.5, 99.0, 99.5])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), help="what the fit sees")
    ap.add_argument(
        "--write",
        nargs=2,
        metavar=("COMPONENTS", "PERCENTILE"),
        default=None,
        help="write this reference next to the model and into its manifest",
    )
    args = ap.parse_args(argv)
    prefix = Manifest.load(args.model).sha256[:12]
    train = np.concatenate([_features(args.work, prefix, f"train1500-{k}") for k in args.kinds])
    val = np.concatenate([_features(args.work, prefix, f"val-{k}") for k in args.kinds])
    names = list(SCORED) + [n for n in RAW_SCORED if (args.work / f"{prefix}-{n}.npz").is_file()]
    scored = {name: _features(args.work, prefix, name) for name in names}
    if args.write is not None:
        return _write(args.model, train, val, int(args.write[0]), float(args.write[1]), args.kinds)
    print("| components | percentile | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for k in args.components:
        for pct in args.percentiles:
            det = OodDetector.fit(train, val, k, pct)
            shares = [float(np.mean(det.distances(f) > det.threshold)) for f in scored.values()]
            print(f"| {k} | {pct:g} | " + " | ".join(f"{100 * v:.1f} %" for v in shares) + " |")
    return 0


def _write(
    manifest: Path,
    train: np.ndarray,
    val: np.ndarray,
    components: int,
    percentile: float,
    kinds: list[str],
) -> int:
    """Fit one reference, save it beside the model and rewrite the manifest's ``ood`` entry."""
    from kiosk.lab.train.release import _ood_entry, update_manifest

    man = Manifest.load(manifest)
    det = OodDetector.fit(train, val, components, percentile)
    path = manifest.parent / f"{man.id}.ood.npz"
    det.save(path)
    entry = _ood_entry(path, det, components, percentile)
    entry["fitted_on"] = (
        f"int8 features of 1500 training-split films per kind ({', '.join(kinds)}; photo "
        "crops developed with true corners, raw crops cut with them); threshold: "
        f"{percentile:g}th percentile of the validation split's distances (the same kinds); "
        "python -m kiosk.lab.ood_sweep --write"
    )
    update_manifest(manifest, [f.threshold for f in man.findings], entry)
    print(f"wrote {path} (threshold {det.threshold:.4f}) and the manifest's ood entry")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
