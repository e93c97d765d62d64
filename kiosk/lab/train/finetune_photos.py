"""Fine-tune the shipped classifier on digital films plus developed photo crops (issue 17).

Subcommands of ``python -m kiosk.lab.train.finetune_photos``: ``cache`` (render the photo-crop
cache, see ``photo_data``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kiosk.lab.train.data import read_split_csv
from kiosk.lab.train.photo_data import build_cache

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/work/cache/photocrops")
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
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.cmd == "cache":
        samples = read_split_csv(args.split_csv, args.data)
        stats = build_cache(samples, args.cache, order=DEFAULT_ORDER, workers=args.workers)
        logger.info("cache done: %s", stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
