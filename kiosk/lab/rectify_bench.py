"""Measure the rectifier on simulated lightbox photos with known film corners.

``python -m kiosk.lab.rectify_bench --n 300`` renders ``n`` photos across the simulator's whole
range (difficulty drawn uniformly in 0..1; phantom chests and, when ``../shared/data`` has the
Kermany training images, real digital X-rays), runs ``rectify`` on each with and without a rig
reference, and reports corner error, quadrilateral IoU, false rejections, rejections of empty
and cut-off scenes, and latency at 1920x1080 and 12 MP. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kiosk.camera import scene
from kiosk.capture.rig import RigReference
from kiosk.config import BUNDLED_MODELS_DIR, KERMANY_DIR
from kiosk.errors import CameraError
from kiosk.imaging.geometry import quad_iou
from kiosk.model.localiser import load_localiser
from kiosk.rectify.rectifier import rectify
from kiosk.rectify.result import RectifyResult

logger = logging.getLogger(__name__)

SHARED_DATA = KERMANY_DIR
SIZE_12MP = (3040, 4056)


def _digital_sources(rng: np.random.Generator, n: int) -> list[Path | None]:
    """Half real Kermany images when available (None = draw a phantom chest)."""
    if not SHARED_DATA.is_dir():
        return [None] * n
    files = sorted(SHARED_DATA.glob("*/*.jpeg"))
    if not files:
        return [None] * n
    picks = rng.choice(len(files), size=n, replace=True)
    return [files[int(i)] if k % 2 else None for k, i in enumerate(picks)]


def _load_digital(src: Path | None, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if src is not None:
        img = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
        if img is not None:
            return img, "kermany"
    return scene.phantom_chest(rng, (768, 768)), "phantom"


def _reference(
    params: scene.SceneParams, rng: np.random.Generator, size: tuple[int, int]
) -> RigReference:
    """Calibrate like the kiosk does: lower the exposure until the empty box does not clip."""
    scale = 1.0
    while True:
        empty = scene.render_empty(params, rng, size, exposure_scale=scale)
        try:
            return RigReference.from_empty_frames([empty], {"exposure_scale": scale})
        except CameraError:
            if scale < 0.3:
                raise
            scale *= 0.8


def _rectifier(method: str) -> Callable[..., RectifyResult]:
    """``rectify`` with ``method`` and, for the learned methods, the shipped localiser."""
    localiser = None
    if method in ("learned", "combined"):
        localiser = load_localiser(BUNDLED_MODELS_DIR)
    return functools.partial(rectify, method=method, localiser=localiser)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _latency_ms(photo: np.ndarray, method: str, runs: int) -> dict[str, float]:
    """Median wall-clock and process-CPU milliseconds of ``rectify`` (CPU time is what the
    call costs when the machine is shared; wall time is what a user waits)."""
    run = _rectifier(method)
    run(photo, None)  # warm-up
    wall, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        run(photo, None)
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return {"wall": float(np.median(wall)), "cpu": float(np.median(cpu)), "runs": float(runs)}


def evaluate_rectifier(
    n: int,
    seed: int,
    size: tuple[int, int] = (1080, 1920),
    method: str = "auto",
    *,
    latency_runs: int = 15,
) -> dict[str, Any]:
    """Render ``n`` film photos (+ n/5 empty, + n/10 cut off) and measure ``rectify``.

    Returns a JSON-able dict: per reference mode (``without_reference``, ``with_reference``)
    the corner error in px and % of the film diagonal (median, p90), IoU (mean, median, p5)
    over every photo where corners were returned, rejections by first flag (glare is a
    deserved rejection when the scene has a reflection), how often glare was flagged with and
    without glare in the scene; rejection rates of empty and cut-off scenes; latency medians.
    """
    run = _rectifier(method)
    rng = np.random.default_rng(seed)
    sources = _digital_sources(rng, n)
    modes: dict[str, dict[str, list[float]]] = {
        m: {"err_px": [], "err_pct": [], "iou": []} for m in ("without_reference", "with_reference")
    }
    rejected: dict[str, dict[str, int]] = {m: {} for m in modes}
    # a glare rejection is deserved when the scene has a reflection of >= 10% of the box
    glare_scenes = 0
    glare_caught: dict[str, int] = {m: 0 for m in modes}
    glare_false: dict[str, int] = {m: 0 for m in modes}
    found: dict[str, int] = {m: 0 for m in modes}
    kinds: dict[str, int] = {}
    t_start = time.perf_counter()
    for i in range(n):
        difficulty = float(rng.uniform(0.0, 1.0))
        params = scene.random_params(rng, difficulty=difficulty)
        digital, kind = _load_digital(sources[i], rng)
        kinds[kind] = kinds.get(kind, 0) + 1
        shot = scene.render(digital, params, rng, size)
        assert shot.corners is not None
        reference = _reference(params, rng, size)
        diag = float(np.hypot(*(shot.corners[2] - shot.corners[0])))
        has_glare = params.glare_strength >= 0.1 * params.lightbox_luminance
        glare_scenes += int(has_glare)
        for mode, ref in (("without_reference", None), ("with_reference", reference)):
            res = run(shot.image, ref)
            if res.status == "rejected":
                for flag in res.quality.flags[:1]:
                    rejected[mode][flag] = rejected[mode].get(flag, 0) + 1
            if "glare" in res.quality.flags:
                glare_caught[mode] += int(has_glare)
                glare_false[mode] += int(params.glare_strength < 0.02)
            if res.corners is None:
                continue
            found[mode] += 1
            err = np.linalg.norm(res.corners - shot.corners, axis=1)
            modes[mode]["err_px"].extend(err.tolist())
            modes[mode]["err_pct"].extend((100 * err / diag).tolist())
            modes[mode]["iou"].append(quad_iou(res.corners, shot.corners, size))
        if (i + 1) % 50 == 0:
            logger.info("%d/%d photos, %.0f s", i + 1, n, time.perf_counter() - t_start)
    # scenes that must be rejected
    n_empty, n_cut = max(1, n // 5), max(1, n // 10)
    empty_rejected = 0
    for _ in range(n_empty):
        params = scene.random_params(rng, difficulty=float(rng.uniform(0, 1)))
        res = run(scene.render(None, params, rng, size).image, None)
        empty_rejected += int(res.status == "rejected" and "no_film" in res.quality.flags)
    cut_rejected = 0
    for _ in range(n_cut):
        params = scene.random_params(rng, difficulty=float(rng.uniform(0, 1)))
        side = float(rng.choice([-1.0, 1.0]))
        params = replace(
            params, film_offset=(side * float(rng.uniform(0.3, 0.45)), 0.0), second_film=False
        )
        digital = scene.phantom_chest(rng, (512, 512))
        res = run(scene.render(digital, params, rng, size).image, None)
        cut_rejected += int(res.status == "rejected" and "cut_off" in res.quality.flags)
    # latency on one typical photo per size
    lat_rng = np.random.default_rng(seed + 1)
    lat_params = scene.random_params(lat_rng, difficulty=0.3)
    digital = scene.phantom_chest(lat_rng, (1024, 1024))
    photo_1080 = scene.render(digital, lat_params, lat_rng, (1080, 1920)).image
    photo_12mp = scene.render(digital, lat_params, lat_rng, SIZE_12MP).image
    out: dict[str, Any] = {
        "n_film_photos": n,
        "seed": seed,
        "size": list(size),
        "method": method,
        "digital_sources": kinds,
        "empty_scenes": n_empty,
        "empty_rejected_no_film_pct": 100.0 * empty_rejected / n_empty,
        "cut_off_scenes": n_cut,
        "cut_off_rejected_pct": 100.0 * cut_rejected / n_cut,
        "latency_ms_median": {
            "1920x1080": _latency_ms(photo_1080, method, latency_runs),
            "4056x3040": _latency_ms(photo_12mp, method, max(3, latency_runs // 3)),
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU, {platform.python_version()}",
        "load_average_1min": os.getloadavg()[0],
        "opencv": cv2.__version__,
        "wall_s": time.perf_counter() - t_start,
    }
    for mode, vals in modes.items():
        out[mode] = {
            "film_found_pct": 100.0 * found[mode] / n,
            "rejected_pct": 100.0 * sum(rejected[mode].values()) / n,
            "rejections_by_first_flag": rejected[mode],
            "glare_scenes": glare_scenes,
            "glare_flagged_on_glare_scenes_pct": 100.0 * glare_caught[mode] / max(1, glare_scenes),
            "glare_flagged_without_any_glare": glare_false[mode],
            "corner_error_px": {
                "median": _pct(vals["err_px"], 50),
                "p90": _pct(vals["err_px"], 90),
            },
            "corner_error_pct_diag": {
                "median": _pct(vals["err_pct"], 50),
                "p90": _pct(vals["err_pct"], 90),
            },
            "iou": {
                "mean": float(np.mean(vals["iou"])) if vals["iou"] else float("nan"),
                "median": _pct(vals["iou"], 50),
                "p5": _pct(vals["iou"], 5),
            },
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: print the evaluation as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="film photos to render")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="auto")
    parser.add_argument("--size", default="1080x1920", help="HEIGHTxWIDTH of the renders")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("kiosk.capture.rig").setLevel(logging.WARNING)
    h, w = (int(v) for v in args.size.lower().split("x"))
    result = evaluate_rectifier(args.n, args.seed, (h, w), args.method)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
