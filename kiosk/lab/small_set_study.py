"""Small labelled sets: how often would an activated calibration make new cases worse?

Synthetic sites, each a model whose true probability is ``sigmoid(a * logit + b)`` (calibrated,
shifted, over- and under-confident), logits ~ N(0.5, 2.5). For each site and each labelled-set
size ``n``, ``repeats`` sets are drawn; ``auto`` fits a record on each and the activation rules
(:func:`kiosk.calibration.selection.activation_refusals`) decide; an activated record is scored
on 20,000 new cases of the same site (ECE, 15 equal-mass bins) against no calibration. It
counts refused / better / worse. This is the evidence behind ``MIN_ACTIVATION_CASES`` and the
"NLL gain above its standard error" rule (docs/calibration.md).

    python -m kiosk.lab.small_set_study --sizes 30,60,200 --repeats 60 --out docs/small-sets.json
    python -m kiosk.lab.small_set_study --plain --sizes 30,60,200 --repeats 60  # one rule only

What it does not do: use images or the model (the rules act on logits and labels only).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.calibration.fitting import fit_calibration
from kiosk.calibration.selection import activation_refusals
from kiosk.errors import CalibrationError
from kiosk.stats import ece, sigmoid

SITES = {
    "calibrated": (1.0, 0.0),
    "shifted": (0.8, 1.0),
    "over-confident": (0.5, 0.0),
    "under-confident": (1.6, 0.0),
}
SHA = "0" * 64
NEW_CASES = 20_000


def _draw(rng: np.random.Generator, n: int, a: float, b: float) -> tuple[Any, Any]:
    z = rng.normal(0.5, 2.5, n)
    return z, (rng.random(n) < sigmoid(a * z + b)).astype(float)


def run(sizes: list[int], repeats: int, seed: int, *, plain: bool = False) -> dict[str, Any]:
    """Counts per (size, site): refused, better, worse, and the worst ECE increase.

    ``plain``: apply only the "held-out NLL or ECE worse than none" rule (no minimum number of
    cases, no standard-error margin), to show what the other rules add.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for n in sizes:
        for site, (a, b) in SITES.items():
            z_new, y_new = _draw(rng, NEW_CASES, a, b)
            ece_none = ece(sigmoid(z_new), y_new)
            counts = {"refused": 0, "better": 0, "worse": 0, "worst_increase": 0.0}
            for _ in range(repeats):
                z, y = _draw(rng, n, a, b)
                try:
                    record = fit_calibration(
                        z,
                        y,
                        ["x"],
                        model_id="study",
                        model_sha256=SHA,
                        created_by="study",
                        n_boot=50,
                    )
                except CalibrationError:
                    counts["refused"] += 1
                    continue
                refusals = activation_refusals(record)
                if plain:
                    refusals = [r for r in refusals if "make the probabilities worse" in r]
                if refusals:
                    counts["refused"] += 1
                    continue
                after = ece(record.apply(z_new[:, None], model_sha256=SHA).reshape(-1), y_new)
                key = "worse" if after > ece_none else "better"
                counts[key] += 1
                counts["worst_increase"] = max(counts["worst_increase"], after - ece_none)
            counts["ece_without"] = round(ece_none, 4)
            counts["worst_increase"] = round(counts["worst_increase"], 4)
            out[f"n={n} {site}"] = counts
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="30,60,200")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--plain", action="store_true", help="only the worse-than-none rule")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # every refusal is logged; thousands here
    report = run([int(s) for s in args.sizes.split(",")], args.repeats, args.seed, plain=args.plain)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
