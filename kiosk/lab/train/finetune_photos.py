"""Fine-tune the shipped classifier on digital films plus developed photo crops (issue 17).

Subcommands of ``python -m kiosk.lab.train.finetune_photos``: ``cache`` (render the photo-crop
cache, ``photo_data``), ``train`` (fine-tune, ``photo_tune``), ``release`` (export, threshold,
OOD reference, ``photo_release``) and ``compare`` (models side by side on the holdout).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from kiosk.lab.train.data import read_split_csv
from kiosk.lab.train.photo_data import build_cache
from kiosk.lab.train.photo_release import compare, release_photo_model
from kiosk.lab.train.photo_tune import PhotoTuneConfig, photo_tune

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/work/cache/photocrops")
DEFAULT_WORK = Path("/work/cache/photo-eval")
DEFAULT_ORDER = (
    ("A", "train"),
    ("A", "val"),
    ("A", "holdout"),
    ("B", "holdout"),
    ("B", "val"),
    ("B", "train"),
)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m kiosk.lab.train.finetune_photos")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache", help="render + develop the photo-crop cache")
    c.add_argument("--split-csv", type=Path, default=Path("models/cxr-pneumonia-effl0.split.csv"))
    c.add_argument("--data", type=Path, default=Path("../shared/data/kermany-train"))
    c.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    c.add_argument("--workers", type=int, default=2)
    c.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="GEN:SPLIT",
        help="render only these (generator, split) parts, e.g. A:holdout B:holdout A:val",
    )
    t = sub.add_parser("train", help="fine-tune on digital + one generator's photo crops")
    t.add_argument("--init", type=Path, default=Path("models/cxr-pneumonia-effl0.pt"))
    t.add_argument("--split-csv", type=Path, default=Path("models/cxr-pneumonia-effl0.split.csv"))
    t.add_argument("--data", type=Path, default=Path("../shared/data/kermany-train"))
    t.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--model-id", default="cxr-pneumonia-effl0-photo")
    t.add_argument("--generator", default="A")
    t.add_argument("--epochs", type=float, default=2.0)
    t.add_argument("--photo-fraction", type=float, default=0.5)
    t.add_argument("--lr-backbone", type=float, default=2e-4)
    t.add_argument("--lr-head", type=float, default=5e-4)
    t.add_argument("--no-init-eval", action="store_true")
    t.add_argument("--no-val", action="store_true", help="skip the PyTorch val pass")
    t.add_argument("--warmup-steps", type=int, default=20)
    r = sub.add_parser("release", help="export + threshold + OOD reference of tuned weights")
    r.add_argument("--weights", type=Path, required=True)
    r.add_argument("--models", type=Path, default=Path("models"))
    r.add_argument("--model-id", default="cxr-pneumonia-effl0-photo")
    r.add_argument("--split-csv", type=Path, default=Path("models/cxr-pneumonia-effl0.split.csv"))
    r.add_argument("--data", type=Path, default=Path("../shared/data/kermany-train"))
    r.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    r.add_argument("--work", type=Path, default=DEFAULT_WORK)
    r.add_argument("--reuse-export", action="store_true", help="redo threshold + OOD only")
    r.add_argument("--version", default="1.0.0", help="the manifest's model version")
    r.add_argument("--ood-components", type=int, default=32)
    r.add_argument("--ood-percentile", type=float, default=99.5)
    m = sub.add_parser("compare", help="shipped vs new on the holdout: digital, photo A, photo B")
    m.add_argument("manifests", nargs="+", type=Path, help="LABEL=MANIFEST.json, first = base")
    m.add_argument("--split-csv", type=Path, default=Path("models/cxr-pneumonia-effl0.split.csv"))
    m.add_argument("--data", type=Path, default=Path("../shared/data/kermany-train"))
    m.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    m.add_argument("--work", type=Path, default=DEFAULT_WORK)
    m.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.cmd == "cache":
        samples = read_split_csv(args.split_csv, args.data)
        order = DEFAULT_ORDER
        if args.only:
            order = tuple(tuple(part.split(":", 1)) for part in args.only)  # type: ignore[assignment]
        stats = build_cache(samples, args.cache, order=order, workers=args.workers)
        logger.info("cache done: %s", stats)
    elif args.cmd == "train":
        photo_tune(
            PhotoTuneConfig(
                out_dir=args.out,
                init=args.init,
                split_csv=args.split_csv,
                data=args.data,
                cache=args.cache,
                model_id=args.model_id,
                generator=args.generator,
                epochs=args.epochs,
                photo_fraction=args.photo_fraction,
                lr_backbone=args.lr_backbone,
                lr_head=args.lr_head,
                evaluate_init=not args.no_init_eval,
                validate=not args.no_val,
                warmup_steps=args.warmup_steps,
            )
        )
    elif args.cmd == "release":
        chosen = release_photo_model(
            args.weights,
            args.models,
            args.model_id,
            args.split_csv,
            args.data,
            args.cache,
            args.work,
            provenance=_provenance(args.model_id, args.weights),
            version=args.version,
            licence=LICENCE,
            reuse_export=args.reuse_export,
            ood_components=args.ood_components,
            ood_percentile=args.ood_percentile,
        )
        print(json.dumps(chosen, indent=2))
    elif args.cmd == "compare":
        pairs = dict(str(m).split("=", 1) for m in args.manifests)
        text, _ = compare(
            {k: Path(v) for k, v in pairs.items()},
            args.split_csv,
            args.data,
            args.cache,
            args.work,
            resamples=args.resamples,
        )
        print(text)
    return 0


LICENCE = (
    "Weights: fine-tuned from cxr-pneumonia-effl0 on Kermany et al. 2018 (CC BY 4.0, "
    "doi:10.17632/rscbjbr9sj.2) and synthetic photographs of those films, from the Apache-2.0 "
    "EfficientNet-Lite0 ImageNet checkpoint; see the model card."
)


def _provenance(model_id: str, weights: Path) -> dict[str, Any]:
    shipped = json.loads(Path("models/cxr-pneumonia-effl0.json").read_text(encoding="utf-8"))
    prov = dict(shipped["provenance"])
    # the generators the weights were tuned on, from their run record beside them
    run = weights.with_suffix(".run.json")
    gens = json.loads(run.read_text())["config"]["generator"] if run.is_file() else "A"
    names = " and ".join(f"generator-{g}" for g in gens)
    prov.update(
        {
            "data": prov["data"] + f"; plus {names} photo crops of the training films",
            "split": f"{model_id}.split.csv",
            "training_run": f"{model_id}.run.json",
            "weights": f"{model_id}.pt",
            "initial_weights": "cxr-pneumonia-effl0.pt",
        }
    )
    return prov


if __name__ == "__main__":
    raise SystemExit(main())
