"""What is recorded per photo: rectify it, classify what it gives, compare with the truth."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kiosk.capture.bracket import FilmCapture
from kiosk.capture.rig import RigReference
from kiosk.errors import CameraError
from kiosk.imaging.decode import preview_factor
from kiosk.imaging.resize import box_shrink
from kiosk.lab.photo_study.films import MANIFEST, FilmRef, holdout_films, load_film
from kiosk.lab.photo_study.outline import outline_class, side_steps
from kiosk.lab.photo_study.scenes import Shot, scenes_a, scenes_b
from kiosk.lab.rectify_bench import quad_iou
from kiosk.model.classifier import Classifier
from kiosk.model.ood import OodDetector
from kiosk.rectify.light import WORK_LONG_SIDE_PX
from kiosk.rectify.rectifier import rectify_capture, uses_localiser

# the package's logger (the CLI sets its level), as when the study was one module
logger = logging.getLogger("kiosk.lab.photo_study")


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _corner_errors(found: np.ndarray, true: np.ndarray, diag: float) -> tuple[float, float]:
    err = np.linalg.norm(np.asarray(found, np.float64) - np.asarray(true, np.float64), axis=1)
    return float(100 * err.mean() / diag), float(100 * err.max() / diag)


# how a photo reaches the rectifier: "camera", the RGB frame as the camera hands it; "file",
# as the kiosk decodes a colour JPEG file (its luma plus a colour preview box-averaged by 2, 4
# or 8, ``imaging.decode``), made here from the rendered pixels: the luma is what the JPEG
# decoder gives (``COLOR_RGB2GRAY`` uses the JPEG's luma weights), the preview a box average
# where the decoder scales in its inverse DCT (within 2 levels of each other)
INPUT_FORMS = ("camera", "file")


def _file_form(rgb: np.ndarray) -> FilmCapture:
    k = preview_factor((rgb.shape[1], rgb.shape[0]), WORK_LONG_SIDE_PX)
    if k == 1:
        return FilmCapture.single(rgb)
    return FilmCapture.single(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), preview=box_shrink(rgb, k))


class Models:
    """The classifier, its OOD gate, the rectify method (and the localiser it needs, loaded
    from ``localiser_dir``) and a cache of the digital films' outputs."""

    def __init__(
        self,
        manifest: Path = MANIFEST,
        threads: int = 2,
        *,
        method: str = "auto",
        localiser_dir: Path | None = None,
        input_form: str = "camera",
    ) -> None:
        self.method = method
        if input_form not in INPUT_FORMS:
            raise ValueError(f"input_form must be one of {INPUT_FORMS}, got {input_form!r}")
        self.input_form = input_form
        self.localiser = None
        if localiser_dir is not None or uses_localiser(method):
            from kiosk.model.localiser import load_localiser

            folder = localiser_dir if localiser_dir is not None else manifest.parent
            self.localiser = load_localiser(folder, threads=threads)
            if self.localiser is None:
                raise FileNotFoundError(f"no film-localiser.json in {folder}")
        self.manifest_path = Path(manifest)
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
    capture = (
        _file_form(shot.image) if models.input_form == "file" else FilmCapture.single(shot.image)
    )
    res = rectify_capture(capture, ref, method=models.method, localiser=models.localiser)
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
        # which sides of the true sheet the photo shows (``outline``): films only
        "sheet_outline": None,
        "sheet_side_steps": None,
    }
    if shot.kind == "film" and shot.corners is not None:
        steps = side_steps(shot.image, shot.corners)
        rec["sheet_outline"] = outline_class(steps)
        rec["sheet_side_steps"] = [[round(v, 2) for v in side] for side in steps]
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
