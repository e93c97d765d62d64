"""Photo study: what the photo path accepts, how well it finds the film, and what it costs.

``python -m kiosk.lab.photo_study --generator a|b --n N --seed S --size HxW --out FILE.json``
renders ``N`` photos of in-frame films (one per held-out Kermany film of the model's split,
cycling, in a seeded order), ``N/5`` empty lightboxes, ``N/10`` cut-off films and, for
generator B only, ``N/10`` CT/MR film sheets. Generator "a" is the project's own scene renderer
(``kiosk.camera.scene``, difficulty drawn uniformly in 0..1, the empty lightbox at the same
exposure as the rig reference of every other photo); generator "b" is the independently written
``kiosk.lab.photoscene`` (its own rig reference when the scene has one). Each photo is
rectified (with the reference when there is one and ``RigReference`` accepts it); every
developed film is classified (+ the OOD distance), and so is the film's digital original
(cached per film), so the photo AUROC can be compared with the digital AUROC on exactly the same
films.

Written: per-photo records (kind, factors, status, refusal flags, notes, every quality metric,
quad IoU against the true film sheet and against the radiograph's image area, corner errors,
probabilities, OOD) and a summary (acceptance by refusal reason, IoU counting refusals as 0,
corner error, refusal of empties / cut-off films / sheets, AUROC with bootstrap 95% CIs, per
scene factor, and per gate the curve "share accepted" vs "AUROC on accepted" when only that
gate's threshold moves). A compact markdown summary goes to stdout and next to the JSON.

What it does not do: tune anything, or write outside ``--out`` (and its ``.md`` sibling).
Without the shared Kermany images it falls back to phantom chests and reports no AUROC.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kiosk.camera import scene
from kiosk.capture.rig import RigReference
from kiosk.config import BUNDLED_MODELS_DIR, KERMANY_DIR
from kiosk.errors import CameraError
from kiosk.lab import photoscene
from kiosk.lab.rectify_bench import quad_iou
from kiosk.model.classifier import Classifier
from kiosk.model.ood import OodDetector
from kiosk.rectify.rectifier import rectify
from kiosk.stats import auroc_unchecked, bootstrap_ci

logger = logging.getLogger(__name__)

MANIFEST = BUNDLED_MODELS_DIR / "cxr-pneumonia-effl0.json"
SPLIT_CSV = BUNDLED_MODELS_DIR / "cxr-pneumonia-effl0.split.csv"
LABELS = {"NORMAL": 0, "PNEUMONIA": 1}
N_BOOT = 2000
# (metric in quality.metrics, its name in quality.checks, direction: "max" refuses above the
# limit, "min" refuses below it)
GATES: tuple[tuple[str, str, str], ...] = (
    ("lung_clipped_fraction", "lung_clipped_fraction", "max"),
    ("lung_crushed_fraction", "lung_crushed_fraction", "max"),
    ("lung_glare_fraction", "lung_glare_fraction", "max"),
    ("edge_blur_fraction", "edge_blur_fraction", "max"),
    ("colourfulness", "colourfulness", "max"),
    ("contrast", "contrast_min", "min"),
)
# generator B's ground truth: a film whose lung region a reader can read
LEGIBLE_MAX_CLIPPED = 0.02
LEGIBLE_MAX_CRUSHED = 0.02
LEGIBLE_MAX_GLARE = 0.1


# --------------------------------------------------------------------------- films


@dataclass(frozen=True)
class FilmRef:
    """One digital film: a held-out Kermany image (label 0/1) or a phantom (label None)."""

    key: str
    label: int | None
    path: Path | None
    patient: str = ""


def holdout_films(
    seed: int, split_csv: Path = SPLIT_CSV, root: Path = KERMANY_DIR
) -> list[FilmRef]:
    """The model's held-out films in a seeded order; phantoms when the images are absent."""
    films: list[FilmRef] = []
    if root.is_dir() and split_csv.is_file():
        with split_csv.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if row["split"] == "holdout" and (root / row["filename"]).is_file():
                    films.append(
                        FilmRef(
                            row["filename"],
                            LABELS[row["label"]],
                            root / row["filename"],
                            row.get("patient", ""),
                        )
                    )
    if not films:
        return [FilmRef(f"phantom-{k}", None, None) for k in range(64)]
    order = np.random.default_rng(seed).permutation(len(films))
    return [films[int(i)] for i in order]


def load_film(film: FilmRef) -> np.ndarray:
    """The digital film as grey uint8 (phantoms drawn from the key, so they repeat)."""
    if film.path is not None:
        img = cv2.imread(str(film.path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise OSError(f"cannot read {film.path}")
        return img
    k = int(film.key.rsplit("-", 1)[1])
    return scene.phantom_chest(np.random.default_rng(10_000 + k), (768, 768))


# --------------------------------------------------------------------------- scenes


@dataclass
class Shot:
    """One rendered photo and its ground truth."""

    kind: str  # "film" | "empty" | "cut_off" | "sheet"
    image: np.ndarray
    corners: np.ndarray | None  # true film sheet corners TL TR BR BL (may leave the frame)
    image_corners: np.ndarray | None  # true radiograph image-area corners
    in_frame: bool
    reference: np.ndarray | None  # empty-lightbox photo for the rig reference
    factors: dict[str, str]
    truth: dict[str, float] = field(default_factory=dict)


def _in_frame(corners: np.ndarray | None, size: tuple[int, int]) -> bool:
    if corners is None:
        return False
    h, w = size
    return bool(
        corners[:, 0].min() >= 0
        and corners[:, 1].min() >= 0
        and corners[:, 0].max() <= w - 1
        and corners[:, 1].max() <= h - 1
    )


def image_area_a(
    corners: np.ndarray, params: scene.SceneParams, digital_shape: tuple[int, int], h: int
) -> np.ndarray:
    """Generator A's radiograph image-area corners from the sheet corners and its margins.

    Mirrors ``scene._film_density_canvas``: the digital image (scaled to about the on-screen
    film height) padded by ``margin_frac`` = (top, right, bottom, left) of the image size; the
    canvas's pixel edges map to the sheet corners by a homography.
    """
    ih, iw = digital_shape
    mt, mr, mb, ml = params.margin_frac
    fh = params.film_height_frac * h
    scale = min(1.0, max(fh, 16.0) / (ih * (1 + mt + mb)))
    nh, nw = max(8, round(ih * scale)), max(8, round(iw * scale))
    top, bottom, left, right = round(mt * nh), round(mb * nh), round(ml * nw), round(mr * nw)
    ch, cw = nh + top + bottom, nw + left + right
    src = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32) - 0.5
    hom = cv2.getPerspectiveTransform(src, np.asarray(corners, np.float32))
    area = (
        np.array(
            [[left, top], [left + nw, top], [left + nw, top + nh], [left, top + nh]], np.float64
        )
        - 0.5
    )
    out = cv2.perspectiveTransform(area.reshape(-1, 1, 2), hom).reshape(-1, 2)
    return out.astype(np.float32)


def _bin(value: float, edges: tuple[float, ...], names: tuple[str, ...]) -> str:
    for edge, name in zip(edges, names, strict=False):
        if value < edge:
            return name
    return names[-1]


def factors_a(p: scene.SceneParams, difficulty: float, reference: bool) -> dict[str, str]:
    """Coarse scene factors of a generator-A scene, for per-factor reporting."""
    extras = [
        n
        for n, on in (("clip", p.clip), ("fingers", p.fingers), ("second_film", p.second_film))
        if on
    ]
    return {
        "difficulty": _bin(difficulty, (1 / 3, 2 / 3), ("low", "mid", "high")),
        "glare": "none"
        if p.glare_strength <= 0
        else _bin(p.glare_strength, (0.15,), ("faint", "strong")),
        "blur": _bin(p.blur_sigma_px, (0.7, 1.8), ("sharp", "soft", "blurred")),
        "exposure": _bin(p.exposure_scale, (0.85,), ("dim", "normal")),
        "tilt": "high" if max(abs(p.tilt_x_deg), abs(p.tilt_y_deg)) >= 5.0 else "low",
        "film_rotation": "crooked" if abs(p.film_rotation_deg) >= 4.0 else "straight",
        "film_size": _bin(p.film_height_frac, (0.72,), ("small", "large")),
        "lightbox": "fills" if min(p.lightbox_size) >= 1.0 else "partly_in_view",
        "vignetting": _bin(p.vignetting, (0.4,), ("low", "high")),
        "room_light": _bin(p.room_luminance, (0.06,), ("dark", "bright")),
        "jpeg": "high" if p.jpeg_quality >= 75 else "low",
        "reference": "yes" if reference else "no",
        "extras": "+".join(extras) if extras else "none",
    }


def scenes_a(
    n: int, seed: int, size: tuple[int, int], films: list[FilmRef]
) -> Iterator[tuple[Shot, FilmRef | None]]:
    """Generator A: N in-frame films, N/5 empty lightboxes, N/10 cut-off films.

    Every other photo (by index) comes with the empty lightbox at the same exposure as its rig
    reference.
    """
    plan = [("film", i) for i in range(n)]
    plan += [("empty", i) for i in range(max(1, n // 5))]
    plan += [("cut_off", i) for i in range(max(1, n // 10))]
    for j, (kind, i) in enumerate(plan):
        rng = np.random.default_rng([seed, 0xA, j])
        difficulty = float(rng.uniform(0.0, 1.0))
        params = scene.random_params(rng, difficulty=difficulty)
        with_ref = j % 2 == 1
        film: FilmRef | None = None
        digital = None
        if kind == "cut_off":
            side = 1.0 if rng.random() < 0.5 else -1.0
            params = replace(params, film_offset=(0.45 * side, 0.0), second_film=False)
        if kind in ("film", "cut_off"):
            film = films[(i if kind == "film" else n + i) % len(films)]
            digital = load_film(film)
        shot = scene.render(digital, params, rng, size)
        ref = scene.render_empty(params, rng, size) if with_ref else None
        corners = None if shot.corners is None else shot.corners.astype(np.float32)
        area = None
        if corners is not None and digital is not None:
            area = image_area_a(corners, params, digital.shape[:2], size[0])
        f = factors_a(params, difficulty, with_ref)
        yield (
            Shot(
                kind,
                shot.image,
                corners,
                area,
                _in_frame(corners, size),
                ref,
                f,
                {"difficulty": difficulty, "glare_strength": params.glare_strength},
            ),
            film,
        )


def scenes_b(
    n: int, seed: int, size: tuple[int, int], films: list[FilmRef]
) -> Iterator[tuple[Shot, FilmRef | None]]:
    """Generator B: N in-frame films, N/5 empty lightboxes, N/10 cut-off films, N/10 sheets."""
    plan = [("film", i) for i in range(n)]
    plan += [("empty", i) for i in range(max(1, n // 5))]
    plan += [("cut_off", i) for i in range(max(1, n // 10))]
    plan += [("sheet", i) for i in range(max(1, n // 10))]
    aspect = size[1] / size[0]
    for j, (kind, i) in enumerate(plan):
        rng = np.random.default_rng([seed, 0xB, j])
        skind = "film" if kind == "cut_off" else kind
        spec = photoscene.sample_scene(rng, skind, cut_off=kind == "cut_off", aspect=aspect)  # type: ignore[arg-type]
        film: FilmRef | None = None
        digital = None
        if kind in ("film", "cut_off"):
            film = films[(i if kind == "film" else n + i) % len(films)]
            digital = load_film(film)
        photo = photoscene.render_photo(digital, spec, rng, size)
        truth = {
            "lung_clipped_frac": float(photo.lung_clipped_frac),
            "lung_crushed_frac": float(photo.lung_crushed_frac),
            "lung_glare": float(photo.lung_glare),
        }
        yield (
            Shot(
                kind,
                photo.image,
                photo.corners,
                photo.image_corners,
                bool(photo.in_frame),
                photo.reference,
                dict(photoscene.factors(spec)),
                truth,
            ),
            film,
        )


# --------------------------------------------------------------------------- measuring


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _corner_errors(found: np.ndarray, true: np.ndarray, diag: float) -> tuple[float, float]:
    err = np.linalg.norm(np.asarray(found, np.float64) - np.asarray(true, np.float64), axis=1)
    return float(100 * err.mean() / diag), float(100 * err.max() / diag)


class Models:
    """The classifier, its OOD gate and a cache of the digital films' outputs."""

    def __init__(self, manifest: Path = MANIFEST, threads: int = 2) -> None:
        self.classifier = Classifier.from_manifest(manifest, threads=threads)
        ood_file = self.classifier.manifest.ood.get("file")
        self.ood = OodDetector.load(manifest.parent / str(ood_file)) if ood_file else None
        self._digital: dict[str, tuple[float, float | None, bool | None]] = {}

    def classify(self, grey: np.ndarray) -> tuple[float, float | None, bool | None]:
        """(probability of the finding, OOD distance, OOD flag)."""
        pred = self.classifier.predict(grey)
        prob = float(pred.probabilities[-1])
        if self.ood is None or pred.features is None:
            return prob, None, None
        dist = self.ood.distance(pred.features)
        return prob, dist, bool(dist > self.ood.threshold)

    def digital(
        self, film: FilmRef, grey: Callable[[], np.ndarray]
    ) -> tuple[float, float | None, bool | None]:
        if film.key not in self._digital:
            self._digital[film.key] = self.classify(grey())
        return self._digital[film.key]


def _reference(image: np.ndarray | None) -> tuple[RigReference | None, str]:
    if image is None:
        return None, "none"
    try:
        return RigReference.from_empty_frames([image], {}), "used"
    except CameraError:
        return None, "unusable"


def measure(
    shot: Shot, film: FilmRef | None, models: Models, size: tuple[int, int]
) -> dict[str, Any]:
    """Rectify one photo, classify what it gives and compare with the truth."""
    ref, ref_status = _reference(shot.reference)
    res = rectify(shot.image, ref)
    q = res.quality
    h, w = size
    diag = math.hypot(h, w)
    rec: dict[str, Any] = {
        "kind": shot.kind,
        "in_frame": shot.in_frame,
        "factors": {**shot.factors, "reference_used": ref_status},
        "truth": shot.truth,
        "status": res.status,
        "flags": list(q.flags),
        "notes": list(q.notes),
        "metrics": {k: _finite(v) for k, v in q.metrics.items()},
        "checks": {k: [_finite(v[0]), _finite(v[1])] for k, v in q.checks.items()},
        "rectify_ms": _finite(res.timings_ms.get("total_ms", float("nan"))),
        "film": None if film is None else film.key,
        "patient": None if film is None else film.patient,
        "label": None if film is None else film.label,
    }
    ok = res.status == "ok"
    for name, true in (("sheet", shot.corners), ("area", shot.image_corners)):
        iou = err_mean = err_max = None
        if true is not None and res.corners is not None:
            iou = quad_iou(res.corners, true, size)
            err_mean, err_max = _corner_errors(res.corners, true, diag)
        rec[f"iou_{name}_found"] = iou  # whatever quad was returned, accepted or not
        rec[f"iou_{name}"] = iou if ok and iou is not None else 0.0
        rec[f"corner_err_{name}_mean_pct"] = err_mean if ok else None
        rec[f"corner_err_{name}_max_pct"] = err_max if ok else None
    rec["photo_prob"] = rec["ood_distance"] = rec["ood_flag"] = None
    if res.film is not None:
        # every developed film, accepted or not, so a gate's threshold can be moved afterwards
        prob, dist, flag = models.classify(res.film)
        rec.update(photo_prob=prob, ood_distance=dist, ood_flag=flag)
    rec["digital_prob"] = rec["digital_ood_distance"] = rec["digital_ood_flag"] = None
    if film is not None and shot.kind == "film":
        prob, dist, flag = models.digital(film, lambda: load_film(film))
        rec.update(digital_prob=prob, digital_ood_distance=dist, digital_ood_flag=flag)
    return rec


def collect(
    generator: str,
    n: int,
    seed: int,
    size: tuple[int, int],
    models: Models,
    films: list[FilmRef] | None = None,
    log_every: int = 25,
) -> list[dict[str, Any]]:
    """Render, rectify and classify every photo of the study; one record per photo."""
    films = films if films is not None else holdout_films(seed)
    gen = {"a": scenes_a, "b": scenes_b}[generator]
    records: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    total = n + max(1, n // 5) + max(1, n // 10) + (max(1, n // 10) if generator == "b" else 0)
    for k, (shot, film) in enumerate(gen(n, seed, size, films)):
        rec = measure(shot, film, models, size)
        rec["index"] = k
        records.append(rec)
        if log_every and ((k + 1) % log_every == 0 or k + 1 == total):
            acc = sum(r["status"] == "ok" for r in records if r["kind"] == "film")
            nf = sum(r["kind"] == "film" for r in records)
            logger.info(
                "%s: %d/%d photos, %.0f s, films accepted %d/%d",
                generator,
                k + 1,
                total,
                time.perf_counter() - t0,
                acc,
                nf,
            )
    return records


# --------------------------------------------------------------------------- summary


def _pct(x: float, n: int) -> float | None:
    return 100.0 * x / n if n else None


def _q(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def auroc_ci(scores: list[float], labels: list[int], seed: int = 0) -> dict[str, Any]:
    """AUROC with a stratified bootstrap 95% CI; None when a class is missing."""
    y = np.asarray(labels, np.float64)
    s = np.asarray(scores, np.float64)
    n_pos = int(y.sum())
    out: dict[str, Any] = {"n": int(y.size), "n_pos": n_pos, "auroc": None, "ci95": None}
    if n_pos == 0 or n_pos == y.size:
        return out
    out["auroc"] = auroc_unchecked(s, y)
    out["ci95"] = list(bootstrap_ci(auroc_unchecked, s, y, n_boot=N_BOOT, seed=seed))
    return out


def paired_diff_ci(
    photo: list[float], digital: list[float], labels: list[int], seed: int = 0
) -> dict[str, Any]:
    """AUROC(photo) - AUROC(digital) on the same films, with a paired stratified bootstrap."""
    y = np.asarray(labels, np.float64)
    a, b = np.asarray(photo, np.float64), np.asarray(digital, np.float64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return {"diff": None, "ci95": None}

    def diff(idx: np.ndarray, yy: np.ndarray) -> float:
        i = idx.astype(np.intp)
        return auroc_unchecked(a[i], yy) - auroc_unchecked(b[i], yy)

    index = np.arange(y.size, dtype=np.float64)
    return {
        "diff": diff(index, y),
        "ci95": list(bootstrap_ci(diff, index, y, n_boot=N_BOOT, seed=seed)),
    }


def _passes(value: float | None, limit: float, direction: str) -> bool:
    if value is None:  # not measurable: passes, as in the gate
        return True
    return value <= limit if direction == "max" else value >= limit


def current_limits(records: list[dict[str, Any]]) -> dict[str, float]:
    """The gate limits as ``quality.checks`` reported them."""
    limits: dict[str, float] = {}
    for r in records:
        for name, (_, limit) in r["checks"].items():
            if limit is not None:
                limits.setdefault(name, limit)
    return limits


def _accepted_with(films: list[dict[str, Any]], limits: dict[str, float]) -> list[bool]:
    """Acceptance of each photo when the gate uses ``limits`` (photos refused before the gate
    (no film, cut off, dark) stay refused)."""
    out = []
    for r in films:
        if not r["checks"] or r["photo_prob"] is None:
            out.append(False)
            continue
        ok = True
        for _, check, direction in GATES:
            if check in r["checks"] and check in limits:
                ok &= _passes(r["checks"][check][0], limits[check], direction)
        out.append(ok)
    return out


def _thresholds(values: list[float], limit: float, direction: str, k: int = 10) -> list[float]:
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return [limit]
    mode = v.min() if direction == "max" else v.max()
    base = v[v != mode] if (v == mode).mean() > 0.3 and (v != mode).any() else v
    qs = np.quantile(base, np.linspace(0.0, 1.0, k))
    cand = {float(x) for x in qs} | {float(mode), float(limit)}
    return sorted(cand)


def gate_curves(films: list[dict[str, Any]], limits: dict[str, float]) -> dict[str, Any]:
    """Per gate: share of in-frame films accepted vs AUROC on accepted, moving only its limit."""
    n = len(films)
    curves: dict[str, Any] = {}
    base = _accepted_with(films, limits)
    actual = [r["status"] == "ok" for r in films]
    mismatch = sum(a != b for a, b in zip(base, actual, strict=True))
    for metric, check, direction in GATES:
        if check not in limits:
            continue
        vals = [
            r["checks"][check][0]
            for r in films
            if check in r["checks"] and r["checks"][check][0] is not None
        ]
        points = []
        for t in _thresholds(vals, limits[check], direction):
            acc = _accepted_with(films, {**limits, check: t})
            sel = [r for r, a in zip(films, acc, strict=True) if a]
            labelled = [r for r in sel if r["label"] is not None]
            photo = auroc_ci([r["photo_prob"] for r in labelled], [r["label"] for r in labelled])
            dig = auroc_ci([r["digital_prob"] for r in labelled], [r["label"] for r in labelled])
            ood = [r["ood_flag"] for r in sel if r["ood_flag"] is not None]
            points.append(
                {
                    "threshold": t,
                    "current": t == limits[check],
                    "accepted_pct": _pct(len(sel), n),
                    "n_accepted": len(sel),
                    "auroc_photo": photo["auroc"],
                    "auroc_photo_ci95": photo["ci95"],
                    "auroc_digital_same": dig["auroc"],
                    "ood_flag_pct": _pct(sum(ood), len(ood)),
                }
            )
        curves[metric] = {
            "check": check,
            "direction": direction,
            "limit": limits[check],
            "points": points,
        }
    return {"gates": curves, "recomputed_vs_actual_mismatches": mismatch}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _first_flags(rs: list[dict[str, Any]]) -> dict[str, float | None]:
    counts: dict[str, int] = {}
    for r in rs:
        if r["status"] != "ok":
            k = r["flags"][0] if r["flags"] else "unknown"
            counts[k] = counts.get(k, 0) + 1
    return {k: _pct(v, len(rs)) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The study's summary from its per-photo records."""
    films = [r for r in records if r["kind"] == "film" and r["in_frame"]]
    n = len(films)
    acc = [r for r in films if r["status"] == "ok"]
    by_first: dict[str, int] = {}
    by_any: dict[str, int] = {}
    for r in films:
        if r["status"] != "ok":
            first = r["flags"][0] if r["flags"] else "unknown"
            by_first[first] = by_first.get(first, 0) + 1
            for f in set(r["flags"]):
                by_any[f] = by_any.get(f, 0) + 1
    notes: dict[str, int] = {}
    for r in acc:
        for f in r["notes"]:
            notes[f] = notes.get(f, 0) + 1

    def refused(kind: str) -> dict[str, Any]:
        rs = [r for r in records if r["kind"] == kind]
        rect = sum(r["status"] != "ok" for r in rs)
        # the pipeline's OOD gate refuses what rectify accepted and the model finds unfamiliar
        pipe = sum(r["status"] != "ok" or bool(r["ood_flag"]) for r in rs)
        first: dict[str, int] = {}
        for r in rs:
            if r["status"] != "ok":
                k = r["flags"][0] if r["flags"] else "unknown"
                first[k] = first.get(k, 0) + 1
        return {
            "n": len(rs),
            "refused_pct": _pct(rect, len(rs)),
            "refused_incl_ood_pct": _pct(pipe, len(rs)),
            "by_first_flag": first,
        }

    lab_films = [r for r in films if r["label"] is not None]
    lab_acc = [r for r in acc if r["label"] is not None]
    ood_acc = [r["ood_flag"] for r in acc if r["ood_flag"] is not None]
    ood_dig = [r["digital_ood_flag"] for r in films if r["digital_ood_flag"] is not None]
    out: dict[str, Any] = {
        "n_film_photos": sum(r["kind"] == "film" for r in records),
        "n_in_frame_films": n,
        "films_not_in_frame_excluded": sum(
            r["kind"] == "film" and not r["in_frame"] for r in records
        ),
        "accepted_pct": _pct(len(acc), n),
        "refused_by_first_flag_pct": {
            k: _pct(v, n) for k, v in sorted(by_first.items(), key=lambda kv: -kv[1])
        },
        "refused_by_any_flag_pct": {
            k: _pct(v, n) for k, v in sorted(by_any.items(), key=lambda kv: -kv[1])
        },
        "notes_on_accepted_pct": {
            k: _pct(v, len(acc)) for k, v in sorted(notes.items(), key=lambda kv: -kv[1])
        },
        "accepted_and_not_ood_pct": _pct(sum(not r["ood_flag"] for r in acc), n),
        "iou_sheet_mean": _mean([r["iou_sheet"] for r in films]),
        "iou_area_mean": _mean([r["iou_area"] for r in films]),
        "iou_best_mean": _mean([max(r["iou_sheet"], r["iou_area"]) for r in films]),
        "iou_sheet_mean_accepted": _mean([r["iou_sheet"] for r in acc]),
        "iou_area_mean_accepted": _mean([r["iou_area"] for r in acc]),
        "corner_err_sheet_mean_pct": {
            "median": _q([r["corner_err_sheet_mean_pct"] for r in acc], 50),
            "p90": _q([r["corner_err_sheet_mean_pct"] for r in acc], 90),
        },
        "corner_err_sheet_max_pct": {
            "median": _q([r["corner_err_sheet_max_pct"] for r in acc], 50),
            "p90": _q([r["corner_err_sheet_max_pct"] for r in acc], 90),
        },
        "corner_err_area_mean_pct": {
            "median": _q(
                [
                    r["corner_err_area_mean_pct"]
                    for r in acc
                    if r["corner_err_area_mean_pct"] is not None
                ],
                50,
            ),
            "p90": _q(
                [
                    r["corner_err_area_mean_pct"]
                    for r in acc
                    if r["corner_err_area_mean_pct"] is not None
                ],
                90,
            ),
        },
        "empty": refused("empty"),
        "cut_off": refused("cut_off"),
        "cut_off_truly_out_of_frame": sum(
            r["kind"] == "cut_off" and not r["in_frame"] for r in records
        ),
        "rectify_ms": {
            "median": _q([r["rectify_ms"] for r in records if r["rectify_ms"]], 50),
            "p90": _q([r["rectify_ms"] for r in records if r["rectify_ms"]], 90),
        },
        "ood_flag_on_accepted_pct": _pct(sum(ood_acc), len(ood_acc)),
        "ood_flag_on_digital_pct": _pct(sum(ood_dig), len(ood_dig)),
        "auroc_available": bool(lab_films),
    }
    if any(r["kind"] == "sheet" for r in records):
        out["sheet"] = refused("sheet")
    if lab_films:
        out["auroc_digital_all"] = auroc_ci(
            [r["digital_prob"] for r in lab_films], [r["label"] for r in lab_films]
        )
        out["auroc_photo_accepted"] = auroc_ci(
            [r["photo_prob"] for r in lab_acc], [r["label"] for r in lab_acc]
        )
        out["auroc_digital_accepted"] = auroc_ci(
            [r["digital_prob"] for r in lab_acc], [r["label"] for r in lab_acc]
        )
        out["auroc_photo_minus_digital_accepted"] = paired_diff_ci(
            [r["photo_prob"] for r in lab_acc],
            [r["digital_prob"] for r in lab_acc],
            [r["label"] for r in lab_acc],
        )
        gated = [r for r in lab_films if r["photo_prob"] is not None]
        out["auroc_photo_all_developed"] = auroc_ci(
            [r["photo_prob"] for r in gated], [r["label"] for r in gated]
        )
    out["accepted_iou90_pct"] = _pct(sum(max(r["iou_sheet"], r["iou_area"]) >= 0.9 for r in acc), n)
    located: dict[str, Any] = {}
    for how, rs in (
        ("edges", [r for r in acc if not r["metrics"].get("located_by_texture")]),
        ("texture", [r for r in acc if r["metrics"].get("located_by_texture")]),
    ):
        located[how] = {
            "n": len(rs),
            "share_of_accepted_pct": _pct(len(rs), len(acc)),
            "iou_sheet_median": _q([r["iou_sheet"] for r in rs], 50),
            "iou_best_median": _q([max(r["iou_sheet"], r["iou_area"]) for r in rs], 50),
            "corner_err_sheet_mean_pct_median": _q(
                [r["corner_err_sheet_mean_pct"] for r in rs], 50
            ),
            "ood_flag_pct": _pct(sum(bool(r["ood_flag"]) for r in rs), len(rs)),
        }
    out["accepted_located_by"] = located
    legible = [
        r
        for r in films
        if r["truth"].get("lung_clipped_frac") is not None
        and r["truth"]["lung_clipped_frac"] <= LEGIBLE_MAX_CLIPPED
        and r["truth"]["lung_crushed_frac"] <= LEGIBLE_MAX_CRUSHED
        and r["truth"]["lung_glare"] <= LEGIBLE_MAX_GLARE
    ]
    legible_ids = {id(r) for r in legible}
    if legible:
        out["truly_legible"] = {
            "rule": f"truth lung clipped <= {LEGIBLE_MAX_CLIPPED}, crushed <= "
            f"{LEGIBLE_MAX_CRUSHED}, glare <= {LEGIBLE_MAX_GLARE}",
            "n": len(legible),
            "accepted_pct": _pct(sum(r["status"] == "ok" for r in legible), len(legible)),
            "illegible_n": n - len(legible),
            "illegible_accepted_pct": _pct(
                sum(r["status"] == "ok" for r in films if id(r) not in legible_ids),
                n - len(legible),
            ),
        }
    per_factor: dict[str, dict[str, Any]] = {}
    extras = sorted(
        {e for r in films for e in r["factors"].get("extras", "none").split("+")} - {"none"}
    )
    for r in films:
        for fk, fv in r["factors"].items():
            if fk == "extras":  # one yes/no factor per item, not every combination
                have = set(fv.split("+"))
                for e in extras:
                    key = f"extra_{e}"
                    per_factor.setdefault(key, {}).setdefault(
                        "yes" if e in have else "no", []
                    ).append(r)
                continue
            per_factor.setdefault(fk, {}).setdefault(fv, []).append(r)
    out["per_factor"] = {
        fk: {
            fv: {
                "n": len(rs),
                "accepted_pct": _pct(sum(r["status"] == "ok" for r in rs), len(rs)),
                "iou_sheet_mean": _mean([r["iou_sheet"] for r in rs]),
                "iou_area_mean": _mean([r["iou_area"] for r in rs]),
                "refused_first_flag_pct": _first_flags(rs),
            }
            for fv, rs in sorted(vals.items())
        }
        for fk, vals in per_factor.items()
        if fk not in ("kind", "cut_off")
    }
    limits = current_limits(films)
    out["gate_limits"] = limits
    out["gate_curves"] = gate_curves(films, limits)
    return out


# --------------------------------------------------------------------------- report


def _f(x: Any, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _auc(d: dict[str, Any] | None) -> str:
    if not d or d.get("auroc") is None:
        return "n/a"
    lo, hi = d["ci95"]
    return f"{d['auroc']:.3f} [{lo:.3f}, {hi:.3f}] (n={d['n']})"


def to_markdown(result: dict[str, Any]) -> str:
    """A compact markdown summary of a study."""
    s, m = result["summary"], result["meta"]
    lines = [
        f"## Photo study, generator {m['generator'].upper()} ({m['generator_module']})",
        "",
        f"n={m['n']} seed={m['seed']} size={m['size'][0]}x{m['size'][1]}, films: "
        f"{m['films_source']}, {m['wall_s']:.0f} s on {m['machine']}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| in-frame films accepted | {_f(s['accepted_pct'])}% of {s['n_in_frame_films']} |",
        f"| accepted and not OOD | {_f(s['accepted_and_not_ood_pct'])}% |",
        f"| mean IoU sheet / image area / best (refused = 0) | {_f(s['iou_sheet_mean'], '.3f')}"
        f" / {_f(s['iou_area_mean'], '.3f')} / {_f(s['iou_best_mean'], '.3f')} |",
        f"| mean IoU sheet on accepted | {_f(s['iou_sheet_mean_accepted'], '.3f')} |",
        f"| accepted with IoU >= 0.9 (sheet or image area) | {_f(s['accepted_iou90_pct'])}% |",
        *(
            f"| accepted, located by {how}: share / median IoU best / median err % / OOD % | "
            f"{_f(d['share_of_accepted_pct'])}% / {_f(d['iou_best_median'], '.3f')} / "
            f"{_f(d['corner_err_sheet_mean_pct_median'], '.2f')} / {_f(d['ood_flag_pct'])}% |"
            for how, d in s["accepted_located_by"].items()
        ),
        f"| corner error (mean of 4, % photo diag) median / p90 | "
        f"{_f(s['corner_err_sheet_mean_pct']['median'], '.2f')} / "
        f"{_f(s['corner_err_sheet_mean_pct']['p90'], '.2f')} |",
        f"| corner error (worst corner, % diag) median / p90 | "
        f"{_f(s['corner_err_sheet_max_pct']['median'], '.2f')} / "
        f"{_f(s['corner_err_sheet_max_pct']['p90'], '.2f')} |",
        f"| empty lightboxes refused (incl. OOD) | {_f(s['empty']['refused_pct'])}% "
        f"({_f(s['empty']['refused_incl_ood_pct'])}%) of {s['empty']['n']} |",
        f"| cut-off films refused (incl. OOD) | {_f(s['cut_off']['refused_pct'])}% "
        f"({_f(s['cut_off']['refused_incl_ood_pct'])}%) of {s['cut_off']['n']} |",
    ]
    if "sheet" in s:
        lines.append(
            f"| CT/MR sheets refused (incl. OOD) | {_f(s['sheet']['refused_pct'])}% "
            f"({_f(s['sheet']['refused_incl_ood_pct'])}%) of {s['sheet']['n']} |"
        )
    if s["auroc_available"]:
        d = s["auroc_photo_minus_digital_accepted"]
        diff = (
            "n/a"
            if d["diff"] is None
            else (f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
        )
        lines += [
            f"| AUROC digital, all films | {_auc(s['auroc_digital_all'])} |",
            f"| AUROC photo, accepted | {_auc(s['auroc_photo_accepted'])} |",
            f"| AUROC digital, same accepted films | {_auc(s['auroc_digital_accepted'])} |",
            f"| photo - digital on accepted (paired) | {diff} |",
            f"| AUROC photo, every developed film | {_auc(s['auroc_photo_all_developed'])} |",
        ]
    else:
        lines.append("| AUROC | not available (no Kermany images: phantom films) |")
    lines += [
        f"| OOD flagged: accepted photos / digital originals | "
        f"{_f(s['ood_flag_on_accepted_pct'])}% / {_f(s['ood_flag_on_digital_pct'])}% |",
        f"| rectify ms median / p90 | {_f(s['rectify_ms']['median'], '.0f')} / "
        f"{_f(s['rectify_ms']['p90'], '.0f')} |",
    ]
    if "truly_legible" in s:
        t = s["truly_legible"]
        lines.append(
            f"| accepted of truly legible films ({t['rule']}) | "
            f"{_f(t['accepted_pct'])}% of {t['n']} (illegible accepted: "
            f"{_f(t['illegible_accepted_pct'])}% of {t['illegible_n']}) |"
        )
    lines += [
        "",
        "Refusals of in-frame films (first flag; any flag), % of in-frame films:",
        "",
        "| flag | first | any |",
        "|---|---|---|",
    ]
    for k, v in s["refused_by_first_flag_pct"].items():
        lines.append(f"| {k} | {_f(v)} | {_f(s['refused_by_any_flag_pct'].get(k))} |")
    lines += [
        "",
        "Per factor (in-frame films): n, accepted %, mean IoU sheet (refused = 0):",
        "",
        "| factor | value | n | accepted % | IoU sheet | IoU area |",
        "|---|---|---|---|---|---|",
    ]
    for fk, vals in s["per_factor"].items():
        for fv, d in vals.items():
            lines.append(
                f"| {fk} | {fv} | {d['n']} | {_f(d['accepted_pct'])} | "
                f"{_f(d['iou_sheet_mean'], '.3f')} | {_f(d['iou_area_mean'], '.3f')} |"
            )
    gc = s["gate_curves"]
    lines += [
        "",
        "Gate curves (only that gate's limit moves; * = current limit): "
        "threshold -> accepted % / AUROC photo on accepted / AUROC digital same films",
        f"(recomputed vs actual acceptance mismatches: {gc['recomputed_vs_actual_mismatches']})",
        "",
    ]
    for metric, c in gc["gates"].items():
        pts = ", ".join(
            f"{'*' if p['current'] else ''}{p['threshold']:.4g}: {_f(p['accepted_pct'], '.0f')}%"
            f"/{_f(p['auroc_photo'], '.3f')}/{_f(p['auroc_digital_same'], '.3f')}"
            for p in c["points"]
        )
        lines.append(f"- **{metric}** ({c['direction']} {c['limit']:.4g}): {pts}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def run_study(
    generator: str,
    n: int,
    seed: int,
    size: tuple[int, int],
    films: list[FilmRef] | None = None,
    models: Models | None = None,
    log_every: int = 25,
) -> dict[str, Any]:
    """Collect the records and summarise them; a JSON-able dict (meta, summary, records)."""
    t0 = time.perf_counter()
    digest = rectify_source_digest()  # at the start: others edit the gate while this runs
    films = films if films is not None else holdout_films(seed)
    models = models or Models()
    records = collect(generator, n, seed, size, models, films, log_every)
    meta = {
        "generator": generator,
        "generator_module": {"a": "kiosk.camera.scene", "b": "kiosk.lab.photoscene"}[generator],
        "n": n,
        "seed": seed,
        "size": list(size),
        "films_source": "phantoms (AUROC not available)"
        if films[0].label is None
        else f"Kermany holdout of {SPLIT_CSV.name} ({len(films)} films, seeded order)",
        "model": MANIFEST.name,
        "ood_threshold": None if models.ood is None else models.ood.threshold,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU, "
        f"Python {platform.python_version()}",
        "load_average_1min": os.getloadavg()[0],
        "wall_s": time.perf_counter() - t0,
        "rectify_source_sha256": digest,
        "n_boot": N_BOOT,
        "bootstrap": "stratified by class, per photo (films of one patient are not grouped)",
    }
    return {"meta": meta, "summary": summarise(records), "records": records}


def rectify_source_digest() -> str:
    """A digest of kiosk/rectify/*.py as imported (the gate changes while it is tuned)."""
    import hashlib

    import kiosk.rectify

    h = hashlib.sha256()
    for path in sorted(Path(kiosk.rectify.__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


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
    ap = argparse.ArgumentParser(prog="python -m kiosk.lab.photo_study", description=__doc__)
    ap.add_argument("--generator", choices=("a", "b"))
    ap.add_argument("--n", type=int, default=300, help="in-frame film photos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=_size, default=(720, 1280), help="HxW of the photos")
    ap.add_argument("--out", type=Path, required=True, help="JSON file (a .md sibling too)")
    ap.add_argument("--log-every", type=int, default=25)
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
        result = run_study(args.generator, args.n, args.seed, args.size, log_every=args.log_every)
    result = _clean(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    md = to_markdown(result)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
