"""The factory calibration: a calibration record for photographed films, shipped with a model.

A model trained on digital films is miscalibrated on photographs of films. Before any site has
labelled its own photos, the kiosk applies a *factory* calibration fitted here on rendered
photos: films of the model's TRAIN and VAL splits are rendered as lightbox photos by both scene
generators (A: :mod:`kiosk.camera.scene`, B: :mod:`kiosk.lab.photoscene`), developed with their
TRUE corners by :func:`kiosk.rectify.develop.develop` (no rig reference: the grey film a
perfect rectifier hands the model) and classified by the kiosk's own classifier. The record is
fitted by :func:`kiosk.calibration.fitting.fit_calibration` (nested cross-validation, same
refusal rules as a site calibration) with ``kind="factory"`` and written next to the model;
``--write-manifest`` points the manifest's optional ``calibration`` field at it.

It is measured on photos of HOLDOUT films: the shipped record on each generator's photos and
on both pooled, and across generators (fitted on generator A's photos only and scored on
generator B's, and the other way round: a calibration that only learnt one renderer shows it
there). The record is written only when it makes neither the pooled held-out ECE or NLL nor
the worst generator's held-out ECE worse than no calibration.

    python -m kiosk.lab.factory_calibration --model models/cxr-pneumonia-effl0.json \\
        --data ../shared/data/kermany-train --work /tmp/factory-cal \\
        --out models/cxr-pneumonia-effl0.factory-calibration.json --write-manifest \\
        --report docs/factory-calibration.json

Per-photo model outputs are appended to ``<work>/<generator>-<part>.jsonl`` as they are made
(one line per photo), so an interrupted run resumes where it stopped and the fit can be re-run
without rendering again. Takes the manifest as an argument: re-run it for a retrained model.

What it does not do: use HOLDOUT films for fitting, apply the photo gate (every developed film
is classified), or activate anything on a kiosk (a shipped factory record is used only while
no site calibration is active).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import platform
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kiosk.lab.film_photos import GENERATORS, PHOTO_SIZE, render_film_photo
from kiosk.model.classifier import Classifier
from kiosk.model.manifest import Manifest

logger = logging.getLogger(__name__)

FIT_SPLITS = ("train", "val")
EVAL_SPLIT = "holdout"
FACTORY_LABEL = "factory (photographed films, rendered)"


def render_and_develop(
    digital: np.ndarray,
    generator: str,
    rng: np.random.Generator,
    photo_size: tuple[int, int] = PHOTO_SIZE,
) -> np.ndarray:
    """One random lightbox photo of ``digital`` (grey uint8) by ``generator``, developed with
    its true film corners and no rig reference; returns the grey film (uint8)."""
    from kiosk.rectify.develop import develop

    photo = render_film_photo(digital, generator, rng, photo_size)
    if photo.corners is None:
        raise ValueError("the film scene rendered without film corners")
    return develop(photo.image, photo.corners, reference=None)


def _encode_features(features: np.ndarray | None) -> str | None:
    if features is None:
        return None
    return base64.b64encode(np.asarray(features, dtype=np.float16).tobytes()).decode("ascii")


def _decode_features(text: str | None) -> np.ndarray | None:
    if text is None:
        return None
    return np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float64)


def pick_films(samples: Sequence[Any], splits: Sequence[str], n: int, seed: int) -> list[Any]:
    """``n`` films from ``splits`` (as evenly over the splits as they allow), fixed by seed."""
    rng = np.random.default_rng(seed)
    per_split = [
        sorted((s for s in samples if s.split == sp), key=lambda s: s.name) for sp in splits
    ]
    quota = [n // len(splits) + (1 if i < n % len(splits) else 0) for i in range(len(splits))]
    out: list[Any] = []
    for items, q in zip(per_split, quota, strict=True):
        take = min(q, len(items))
        out.extend(items[i] for i in sorted(rng.choice(len(items), take, replace=False)))
    return out


def collect(
    classifier: Classifier,
    films: Sequence[Any],
    generator: str,
    out: Path,
    *,
    seed: int,
    photo_size: tuple[int, int] = PHOTO_SIZE,
) -> None:
    """Render, develop and classify each film once; append one JSON line per photo to ``out``.

    Films already in ``out`` are skipped (resume). A scene that fails to render or develop is
    written with ``"ok": false`` and its error, so it is counted, not retried.
    """
    done: set[str] = set()
    if out.is_file():
        done = {json.loads(line)["name"] for line in out.read_text().splitlines() if line}
    todo = [f for f in films if f.name not in done]
    logger.warning("%s: %d photos done, %d to make", out.name, len(done), len(todo))
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    gen_id = GENERATORS.index(generator)
    with out.open("a", encoding="utf-8") as handle:
        for i, film in enumerate(todo):
            row: dict[str, Any] = {
                "name": film.name,
                "split": film.split,
                "label": float(film.labels[0]),
                "generator": generator,
            }
            digital = cv2.imread(str(film.path), cv2.IMREAD_GRAYSCALE)
            rng = np.random.default_rng([seed, gen_id, zlib.crc32(film.name.encode())])
            try:
                if digital is None:
                    raise ValueError(f"cannot decode {film.path}")
                grey = render_and_develop(digital, generator, rng, photo_size)
                prediction = classifier.predict(grey)
                row |= {
                    "ok": True,
                    "logits": [float(v) for v in prediction.logits],
                    "features": _encode_features(prediction.features),
                }
            except Exception as exc:  # one bad scene must not stop the run; it is counted
                logger.exception("photo of %s failed", film.name)
                row |= {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            if (i + 1) % 25 == 0:
                elapsed = time.perf_counter() - started
                logger.warning(
                    "%s: %d/%d (%.0f s, about %.0f s left)",
                    out.name,
                    i + 1,
                    len(todo),
                    elapsed,
                    elapsed / (i + 1) * (len(todo) - i - 1),
                )


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The photos of one cache file (ok or not), in file order."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _arrays(rows: Sequence[dict[str, Any]], with_features: bool) -> tuple[Any, Any, Any]:
    z = np.array([r["logits"] for r in rows], dtype=np.float64)
    y = np.array([[r["label"]] for r in rows], dtype=np.float64)
    f = None
    if with_features:
        decoded = [_decode_features(r["features"]) for r in rows]
        f = np.stack([v for v in decoded if v is not None])
    return z, y, f


def measure(
    record: Any, rows: Sequence[dict[str, Any]], sha256: str, raw_threshold: float
) -> dict[str, Any]:
    """ECE (15 equal-mass bins, basic bootstrap CI), NLL, AUROC and sensitivity/specificity
    before (raw, at the manifest's threshold) and after (at the record's) on ``rows``."""
    from kiosk.stats import auroc, ece, ece_ci, nll, sensitivity_specificity, sigmoid

    z, y, f = _arrays(rows, record.needs_features)
    before = sigmoid(z[:, 0])
    after = np.asarray(record.apply(z, f, model_sha256=sha256)).reshape(-1)
    labels = y[:, 0]
    out: dict[str, Any] = {"n": int(labels.size), "positives": int(labels.sum())}
    thresholds = {"before": raw_threshold, "after": record.threshold(record.codes[0])}
    for name, p in (("before", before), ("after", after)):
        lo, hi = ece_ci(p, labels, 15, n_boot=1000, seed=0)
        sens, spec = sensitivity_specificity(p, labels, thresholds[name])
        out[name] = {
            "threshold": round(thresholds[name], 4),
            "sensitivity": round(sens, 4),
            "specificity": round(spec, 4),
            "ece": round(ece(p, labels, 15), 4),
            "ece_ci": [round(lo, 4), round(hi, 4)],
            "nll": round(nll(p, labels), 4),
            "auroc": round(auroc(p, labels), 4),
        }
    return out


def fit_factory(
    rows: Sequence[dict[str, Any]],
    manifest: Manifest,
    *,
    method: str,
    with_features: bool,
    notes: str,
    data: dict[str, Any] | None = None,
    n_boot: int = 2000,
    threshold: str = "manifest",
) -> Any:
    """Fit a factory record (kind "factory") on rendered-photo rows.

    ``threshold="manifest"`` keeps the model's own operating point: the threshold becomes the
    manifest's raw threshold mapped through the (monotone) calibrator, so every finding is
    called positive or negative exactly as without calibration and only the probability shown
    changes; its sensitivity and specificity on the fit photos replace the ones for the
    sensitivity target. ``"sensitivity"`` keeps the record's threshold for 0.90 sensitivity.
    """
    from kiosk.calibration.fitting import fit_calibration_detailed
    from kiosk.stats import bootstrap_ci, logit

    z, y, f = _arrays(rows, with_features)
    fit = fit_calibration_detailed(
        z,
        y,
        list(manifest.finding_codes),
        features=f,
        method=method,  # type: ignore[arg-type]
        model_id=manifest.id,
        model_sha256=manifest.sha256,
        created_by="kiosk.lab.factory_calibration",
        known_codes=list(manifest.finding_codes),
        notes=notes,
        kind="factory",
        data=data,
        n_boot=n_boot,
    )
    record = fit.record
    if threshold != "manifest" or record.needs_features:
        return record
    for spec in manifest.findings:
        raw_t = spec.threshold
        value = float(record.calibrator(spec.code).predict_proba(logit(np.array([raw_t])))[0])
        held = fit.held_out[spec.code]
        called = (held.raw >= raw_t).astype(np.float64)
        after = record.metrics[spec.code]["after"]
        after["threshold"] = value
        after["target_sensitivity"] = None
        for key, cls in (("sensitivity", 1.0), ("specificity", 0.0)):

            def rate(c: Any, labels: Any, cls: float = cls) -> float:
                hit = c[labels == cls]
                return float(hit.mean() if cls == 1.0 else 1.0 - hit.mean())

            after[key] = rate(called, held.labels)
            lo, hi = bootstrap_ci(rate, called, held.labels, n_boot=n_boot, seed=0)
            after[f"{key}_ci_low"], after[f"{key}_ci_high"] = lo, hi
        record.thresholds[spec.code] = {
            "value": value,
            "rule": "manifest",
            "target_sensitivity": None,
            "raw_threshold": raw_t,
        }
    record.evaluation["threshold"] = (
        "the manifest's raw threshold mapped through the calibrator (same positive/negative "
        "calls as without calibration); sensitivity and specificity on the fit photos"
    )
    return record


def _usable(rows: list[dict[str, Any]], names: set[str]) -> tuple[list[dict[str, Any]], int]:
    picked = [r for r in rows if r["name"] in names]
    ok = [r for r in picked if r.get("ok")]
    return ok, len(picked) - len(ok)


def write_manifest_reference(manifest_path: Path, record_path: Path) -> None:
    """Point the manifest's optional ``calibration`` field at the record (name and sha256)."""
    import hashlib

    if record_path.parent.resolve() != manifest_path.parent.resolve():
        raise SystemExit("--write-manifest needs --out next to the manifest (same folder)")
    raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    raw["calibration"] = {
        "file": record_path.name,
        "sha256": hashlib.sha256(record_path.read_bytes()).hexdigest(),
    }
    manifest_path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    Manifest.load(manifest_path)  # still valid


def main(argv: list[str] | None = None) -> int:
    from kiosk.lab.train.data import read_split_csv

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the model's manifest")
    parser.add_argument("--data", type=Path, required=True, help="kermany-train folder")
    parser.add_argument("--split", type=Path, help="split CSV (default: the manifest's)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kiosk-factory-calibration"))
    parser.add_argument("--fit-per-generator", type=int, default=300)
    parser.add_argument("--eval-per-generator", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument(
        "--method",
        default="auto",
        choices=["auto", "temperature", "platt"],
        help="auto chooses between temperature and Platt (by nested CV)",
    )
    parser.add_argument(
        "--threshold",
        default="manifest",
        choices=["manifest", "sensitivity"],
        help="manifest: keep the model's positive/negative calls; sensitivity: 0.90 target",
    )
    parser.add_argument(
        "--with-features",
        action="store_true",
        help="let auto consider the refit head (off: it learns the renderer, see the report)",
    )
    parser.add_argument("--out", type=Path, help="where to write the factory record")
    parser.add_argument("--write-manifest", action="store_true")
    parser.add_argument("--report", type=Path, help="write the measurements as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    cv2.setNumThreads(1)
    manifest = Manifest.load(args.model)
    split_csv = args.split or args.model.parent / str(manifest.provenance.get("split", ""))
    samples = read_split_csv(split_csv, args.data)
    classifier = Classifier.from_manifest(args.model, threads=1)
    work = args.work / f"{manifest.id}-{manifest.sha256[:8]}"
    started = time.perf_counter()
    names: dict[str, set[str]] = {}
    for gen_index, generator in enumerate(GENERATORS):
        fit_films = pick_films(samples, FIT_SPLITS, args.fit_per_generator, args.seed + gen_index)
        eval_films = pick_films(
            samples, (EVAL_SPLIT,), args.eval_per_generator, args.seed + 10 + gen_index
        )
        names[f"{generator}-fit"] = {f.name for f in fit_films}
        names[f"{generator}-holdout"] = {f.name for f in eval_films}
        collect(classifier, fit_films, generator, work / f"{generator}-fit.jsonl", seed=args.seed)
        collect(
            classifier, eval_films, generator, work / f"{generator}-holdout.jsonl", seed=args.seed
        )
    if args.collect_only:
        return 0
    rows: dict[str, list[dict[str, Any]]] = {}
    failed: dict[str, int] = {}
    for part, wanted in names.items():
        rows[part], failed[part] = _usable(load_rows(work / f"{part}.jsonl"), wanted)
    fit_rows = rows["A-fit"] + rows["B-fit"]
    eval_rows = rows["A-holdout"] + rows["B-holdout"]
    n_failed = failed["A-fit"] + failed["B-fit"]
    data = {
        "source": "rendered photos",
        "labelled": len(fit_rows) + n_failed,
        "used": len(fit_rows),
        "skipped": {"scene failed to render or develop": n_failed} if n_failed else {},
        "summary": (
            f"{len(fit_rows)} rendered photos of {', '.join(FIT_SPLITS)} films "
            f"({len(rows['A-fit'])} by generator A, {len(rows['B-fit'])} by B)"
        ),
    }
    notes = (
        f"{FACTORY_LABEL}: {data['summary']}, {PHOTO_SIZE[1]}x{PHOTO_SIZE[0]}, developed with "
        "true corners, no rig reference"
    )
    kw: dict[str, Any] = {
        "method": args.method,
        "with_features": args.with_features,
        "threshold": args.threshold,
    }
    raw_threshold = manifest.findings[0].threshold
    record = fit_factory(fit_rows, manifest, notes=notes, data=data, **kw)
    report: dict[str, Any] = {
        "model": {"id": manifest.id, "sha256": manifest.sha256},
        "record": {"id": record.id, "methods": record.methods, "params": record.params},
        "reasons": record.reasons,
        "fit": {part: len(rows[part]) for part in ("A-fit", "B-fit")},
        "failed": failed,
        "holdout": {
            "A": measure(record, rows["A-holdout"], manifest.sha256, raw_threshold),
            "B": measure(record, rows["B-holdout"], manifest.sha256, raw_threshold),
            "A+B": measure(record, eval_rows, manifest.sha256, raw_threshold),
        },
        "cross_generator": {},
    }
    for src, dst in (("A", "B"), ("B", "A")):
        one = fit_factory(rows[f"{src}-fit"], manifest, notes="cross-generator check", **kw)
        report["cross_generator"][f"fit {src} -> holdout {dst}"] = {
            "methods": one.methods,
            "params": one.params,
            **measure(one, rows[f"{dst}-holdout"], manifest.sha256, raw_threshold),
        }
    report["photo_size"] = list(PHOTO_SIZE)
    report["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    report["command"] = "python -m kiosk.lab.factory_calibration " + " ".join(argv or sys.argv[1:])
    report["seconds"] = round(time.perf_counter() - started, 1)
    pooled = report["holdout"]["A+B"]
    worst = {
        side: max(report["holdout"][g][side]["ece"] for g in GENERATORS)
        for side in ("before", "after")
    }
    report["worst_generator_ece"] = worst
    worse = [k for k in ("ece", "nll") if pooled["after"][k] > pooled["before"][k]]
    if worst["after"] > worst["before"]:
        worse.append("worst-generator ECE")
    text = json.dumps(report, indent=2)
    print(text)
    if args.report:
        args.report.write_text(text + "\n", encoding="utf-8")
    if worse:
        logger.error("not written: held-out %s worse than no calibration", " and ".join(worse))
        return 1
    if args.out:
        args.out.write_text(json.dumps(record.to_dict(), indent=2) + "\n", encoding="utf-8")
        if args.write_manifest:
            write_manifest_reference(args.model, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
