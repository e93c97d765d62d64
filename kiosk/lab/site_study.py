"""Issue 14's test on rendered photos: a site calibrates on 200 labelled photos, 424 check it.

From the records of a photo study (``python -m kiosk.lab.photo_study ... --out F.json``) the
in-frame films whose lungs can be read (``photo_study.summary.is_legible``) are split by
patient (seeded): whole patients go to the site's labelled set until it holds ``--labelled``
photos, the next patients to the held-out set until it holds ``--held-out``. On the labelled
set the site does what ``kiosk calibrate labels.csv --method auto --activate`` does: photos the
photo path refuses (the rectifier's gate or the "not a chest X-ray" gate) are skipped, the rest
go to ``fit_calibration(method="auto")`` and ``activation_refusals`` decides. On the held-out
set: how many photos the photo path accepts, ECE before and after (the activated calibration
applied; without one, the raw scores stay), and AUROC of the accepted photos against the same
films digital, paired, with a bootstrap by patient. Then the small-set rule: ``--small``
labelled photos drawn ``--small-repeats`` times from the labelled set; each either refuses with
a reason or, activated, must not make the held-out ECE worse.

    python -m kiosk.lab.photo_study --generator b --n 1000 --seed 23 --out b23.json
    python -m kiosk.lab.site_study b23.json --out docs/site-calibration-b.json

What it does not do: render or classify (the photo study did; its ``photo_prob`` is the raw
model probability of the finding, ``sigmoid(logit)``), or use the refit head (the records hold
no features; ``auto`` does not consider it below 300 labelled photos anyway).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.calibration.factory import load_factory
from kiosk.calibration.fitting import fit_calibration
from kiosk.calibration.records import CalibrationRecord
from kiosk.calibration.selection import activation_refusals
from kiosk.errors import CalibrationError
from kiosk.lab.photo_study.summary import is_legible
from kiosk.model.manifest import Manifest
from kiosk.stats import auroc, ece, logit, patient_bootstrap_auroc

MANIFEST = Path(__file__).resolve().parents[2] / "models" / "cxr-pneumonia-effl0-photo.json"


def _accepted(record: dict[str, Any]) -> bool:
    """What the kiosk shows a finding for: the rectifier accepted and the model knows it."""
    return record["status"] == "ok" and not record.get("ood_flag")


def split_by_patient(
    films: list[dict[str, Any]], labelled: int, held_out: int, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Whole patients, in a seeded order, to the labelled set until it holds ``labelled``
    photos, then to the held-out set until it holds ``held_out`` (fewer if they run out)."""
    patients = sorted({r["patient"] for r in films})
    order = np.random.default_rng(seed).permutation(len(patients))
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for r in films:
        by_patient.setdefault(r["patient"], []).append(r)
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    for i in order:
        photos = by_patient[patients[int(i)]]
        if len(first) < labelled:
            first.extend(photos)
        elif len(second) < held_out:
            second.extend(photos)
    return first, second


def _logits(records: list[dict[str, Any]]) -> np.ndarray:
    return logit(np.array([r["photo_prob"] for r in records], np.float64))[:, None]


def _labels(records: list[dict[str, Any]]) -> np.ndarray:
    return np.array([float(r["label"]) for r in records], np.float64)


def _fit(
    records: list[dict[str, Any]], manifest: Manifest, seed: int
) -> tuple[CalibrationRecord | None, list[str]]:
    """``kiosk calibrate --method auto --activate`` on these labelled photos: the record if it
    may be activated, else None and the reasons it was refused."""
    try:
        record = fit_calibration(
            _logits(records),
            _labels(records)[:, None],
            list(manifest.finding_codes),
            method="auto",
            seed=seed,
            model_id=manifest.id,
            model_sha256=manifest.sha256,
            created_by="site_study",
            n_boot=500,
        )
    except CalibrationError as exc:
        return None, [exc.message]
    refusals = activation_refusals(record)
    return (None, refusals) if refusals else (record, [])


def _probs(
    record: CalibrationRecord | None, records: list[dict[str, Any]], manifest: Manifest
) -> np.ndarray:
    raw = np.array([r["photo_prob"] for r in records], np.float64)
    if record is None:
        return raw
    applied = record.apply(
        _logits(records), model_sha256=manifest.sha256, codes=list(manifest.finding_codes)
    )
    return np.asarray(applied, np.float64).reshape(-1)


def run(
    records: list[dict[str, Any]],
    *,
    labelled: int = 200,
    held_out: int = 424,
    small: int = 30,
    small_repeats: int = 20,
    seed: int = 0,
    manifest_path: Path = MANIFEST,
) -> dict[str, Any]:
    """The whole protocol on one photo study's records (see the module doc)."""
    manifest = Manifest.load(manifest_path)
    films = [
        r
        for r in records
        if r["kind"] == "film"
        and r["in_frame"]
        and r.get("label") is not None
        and is_legible(r["truth"])
    ]
    site, check = split_by_patient(films, labelled, held_out, seed)
    usable = [r for r in site if _accepted(r)]
    record, refusals = _fit(usable, manifest, seed)
    shown = [r for r in check if _accepted(r)]
    y = _labels(shown)
    raw = np.array([r["photo_prob"] for r in shown], np.float64)
    # what the kiosk shows before a site calibration: the model's factory calibration for
    # photos when it ships one, else the raw scores; a site calibration replaces either
    factory = load_factory(manifest)
    before = _probs(factory, shown, manifest)
    after = _probs(record or factory, shown, manifest)
    digital = np.array([r["digital_prob"] for r in shown], np.float64)
    boot = patient_bootstrap_auroc(
        y, [raw, digital], [r["patient"] for r in shown], n_boot=1000, seed=seed
    )
    diff = boot[:, 0] - boot[:, 1]
    out: dict[str, Any] = {
        "legible_in_frame_films": len(films),
        "labelled": {
            "photos": len(site),
            "accepted": len(usable),
            "skipped_by_the_photo_path": len(site) - len(usable),
            "activated": record is not None,
            "methods": None if record is None else dict(record.methods),
            "refusals": refusals,
        },
        "held_out": {
            "photos": len(check),
            "accepted": len(shown),
            "positives_accepted": int(y.sum()),
            "ece_raw": ece(raw, y),
            "factory_calibration": None if factory is None else factory.id,
            "ece_before": ece(before, y),
            "ece_after": ece(after, y),
            "auroc_photo": auroc(raw, y),
            "auroc_digital_same_films": auroc(digital, y),
            "photo_minus_digital": auroc(raw, y) - auroc(digital, y),
            "photo_minus_digital_ci95": [float(np.percentile(diff, q)) for q in (2.5, 97.5)],
        },
    }
    rng = np.random.default_rng(seed + 1)
    outcomes = {"refused": 0, "activated_not_worse": 0, "activated_worse": 0}
    reasons: dict[str, int] = {}
    for _ in range(small_repeats):
        pick = rng.choice(len(site), size=min(small, len(site)), replace=False)
        drawn = [site[int(i)] for i in pick]
        small_record, why = _fit([r for r in drawn if _accepted(r)], manifest, seed)
        if small_record is None:
            outcomes["refused"] += 1
            key = why[0].split(":", 1)[-1].strip() if why else "unknown"
            reasons[key] = reasons.get(key, 0) + 1
        elif ece(_probs(small_record, shown, manifest), y) <= out["held_out"]["ece_before"]:
            outcomes["activated_not_worse"] += 1
        else:
            outcomes["activated_worse"] += 1
    out["small_sets"] = {
        "photos": small,
        "repeats": small_repeats,
        **outcomes,
        "refusal_reasons": reasons,
    }
    return out


def to_markdown(result: dict[str, Any]) -> str:
    lab, held, small = result["labelled"], result["held_out"], result["small_sets"]
    ci = held["photo_minus_digital_ci95"]
    calibration = (
        f"activated ({', '.join(f'{k}: {v}' for k, v in lab['methods'].items())})"
        if lab["activated"]
        else "refused: " + "; ".join(lab["refusals"])
    )
    factory = ", factory calibration" if held["factory_calibration"] else ", raw scores"
    return "\n".join(
        [
            "| measure | value |",
            "|---|---|",
            f"| legible in-frame films in the study | {result['legible_in_frame_films']} |",
            f"| labelled photos / accepted by the photo path | {lab['photos']} / "
            f"{lab['accepted']} |",
            f"| site calibration (`auto`) | {calibration} |",
            f"| held-out photos / accepted | {held['photos']} / **{held['accepted']}** |",
            f"| held-out ECE raw / before (the kiosk as shipped{factory}) / after | "
            f"{held['ece_raw']:.3f} / {held['ece_before']:.3f} / **{held['ece_after']:.3f}** |",
            f"| held-out AUROC photo / same films digital | {held['auroc_photo']:.4f} / "
            f"{held['auroc_digital_same_films']:.4f} |",
            f"| photo - digital [95% CI, by patient] | {held['photo_minus_digital']:+.4f} "
            f"[{ci[0]:+.4f}, {ci[1]:+.4f}] |",
            f"| {small['photos']} labelled photos, {small['repeats']} draws: refused / "
            f"activated, not worse / activated, worse | {small['refused']} / "
            f"{small['activated_not_worse']} / {small['activated_worse']} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiosk.lab.site_study", description=__doc__)
    parser.add_argument("study", type=Path, help="a photo study's JSON (with its records)")
    parser.add_argument("--labelled", type=int, default=200)
    parser.add_argument("--held-out", type=int, default=424)
    parser.add_argument("--small", type=int, default=30)
    parser.add_argument("--small-repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--out", type=Path, help="JSON file (a .md sibling too)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the fits' per-fold notes are not the result
    study = json.loads(args.study.read_text())
    result = run(
        study["records"],
        labelled=args.labelled,
        held_out=args.held_out,
        small=args.small,
        small_repeats=args.small_repeats,
        seed=args.seed,
        manifest_path=args.manifest,
    )
    result["study"] = {
        "file": args.study.name,
        **{
            k: study["meta"].get(k)
            for k in ("generator", "n", "seed", "size", "model", "rectify_method", "machine")
        },
    }
    text = to_markdown(result)
    print(text)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
