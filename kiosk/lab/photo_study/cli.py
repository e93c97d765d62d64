"""The command line: ``python -m kiosk.lab.photo_study`` (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.lab.photo_study.films import MANIFEST
from kiosk.lab.photo_study.records import INPUT_FORMS, Models, logger
from kiosk.lab.photo_study.report import to_markdown
from kiosk.lab.photo_study.study import run_study
from kiosk.lab.photo_study.summary import summarise


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def main(argv: list[str] | None = None) -> int:
    from kiosk.lab import photo_study  # its docstring is the --help text

    ap = argparse.ArgumentParser(
        prog="python -m kiosk.lab.photo_study", description=photo_study.__doc__
    )
    ap.add_argument("--generator", choices=("a", "b"))
    ap.add_argument("--n", type=int, default=300, help="in-frame film photos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=_size, default=(720, 1280), help="HxW of the photos")
    ap.add_argument("--out", type=Path, required=True, help="JSON file (a .md sibling too)")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument(
        "--method", default="auto", help="rectify method: auto, classical, learned, combined"
    )
    ap.add_argument(
        "--model", type=Path, default=MANIFEST, help="classifier manifest (default: the shipped)"
    )
    ap.add_argument(
        "--localiser",
        type=Path,
        default=None,
        help="folder holding film-localiser.json (for --method learned or combined)",
    )
    ap.add_argument(
        "--input",
        choices=INPUT_FORMS,
        default="camera",
        help="camera: the RGB frame (default); file: as the kiosk decodes a JPEG file",
    )
    ap.add_argument(
        "--resummarise",
        action="store_true",
        help="recompute the summary and markdown from the records already in --out",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    if args.resummarise:
        result = json.loads(args.out.read_text())
        result["summary"] = summarise(result["records"])
    elif args.generator is None:
        ap.error("--generator is required (unless --resummarise)")
    else:
        models = Models(
            args.model, method=args.method, localiser_dir=args.localiser, input_form=args.input
        )
        result = run_study(
            args.generator, args.n, args.seed, args.size, models=models, log_every=args.log_every
        )
    result = _clean(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    md = to_markdown(result)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0
