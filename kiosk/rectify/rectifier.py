"""The one function that chains the steps of rectification (see the package docstring).

What this module does not do: load models (the localiser is handed in) or store anything.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

import cv2
import numpy as np

from kiosk.capture.bracket import FilmCapture
from kiosk.capture.rig import RigReference
from kiosk.errors import ImageError, ModelError
from kiosk.imaging.colour import SRGB_TO_LINEAR
from kiosk.rectify.develop import develop_film
from kiosk.rectify.gates import (
    CLIPPED_MAX,
    COLOURFUL_MAX,
    DARK_LIGHTBOX,
    GLARE_MAX,
    GLARE_RING_MAX,
    GLARE_RING_T,
    SHARP_MAX,
)
from kiosk.rectify.light import measure_light
from kiosk.rectify.locate import (
    LOCALISER_MASK_W,
    MIN_FILL,
    Detection,
    MaskModel,
    clear_film_level,
    detect_film,
    learned_detection,
    quad_cut_off,
)
from kiosk.rectify.photometry import (
    colourfulness,
)
from kiosk.rectify.refine import MIN_SIDE_FRACTION, refine_corners
from kiosk.rectify.result import RectifyResult, make_quality

logger = logging.getLogger(__name__)

METHODS = ("auto", "classical", "learned", "combined")
# what "auto" means: the best method on the benchmark in docs/rectify.md
AUTO_METHOD = "classical"


def rectify(
    photo: np.ndarray,
    reference: RigReference | None = None,
    *,
    method: str = "auto",
    localiser: MaskModel | None = None,
) -> RectifyResult:
    """Find the film in one lightbox photo (RGB uint8), rectify it and judge its quality.

    The same as ``rectify_capture`` of a one-frame capture.
    """
    return rectify_capture(FilmCapture.single(photo), reference, method=method, localiser=localiser)


def rectify_capture(
    capture: FilmCapture,
    reference: RigReference | None = None,
    *,
    method: str = "auto",
    localiser: MaskModel | None = None,
) -> RectifyResult:
    """Find the film in a capture (one photo or a bracket), rectify it and judge its quality.

    The film is located and its corners refined on the base frame (the lightbox as set up);
    then only the film region of every frame is warped to the output size and the frames are
    merged there in linear light: the work is per film pixel, not per frame pixel.

    ``reference`` (the empty lightbox at this exposure) makes the density measurement exact;
    without it the lightbox is estimated from what is visible around the film.
    ``method``: "classical" (lightbox model + dark region + line fits), "learned" (the int8
    localiser's mask; ``localiser`` is that model, loaded by the caller), "combined"
    (classical; the localiser's quad when the classical detector
    finds nothing) or "auto" (``AUTO_METHOD``, the best on the benchmark). Every method
    refines the corners at full resolution with the same edge profiles.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown rectify method {method!r}; use one of {', '.join(METHODS)}")
    if method == "auto":
        method = AUTO_METHOD if AUTO_METHOD == "classical" or localiser else "classical"
    photo = capture.base
    if (
        any(f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8 for f in capture.frames)
        or len({f.shape for f in capture.frames}) != 1
    ):
        raise ImageError(
            f"Expected RGB uint8 photos (H, W, 3) of one size, got {photo.dtype} {photo.shape}",
            "Decode the file with kiosk.imaging.decode before calling rectify",
        )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    H, W = photo.shape[:2]
    light = measure_light(photo, reference)
    wh, ww = light.work_hw
    trans, lit = light.trans, light.lit
    det = detect_film(trans, lit) if method != "learned" else None
    learned: Detection | None = None
    if method in ("learned", "combined"):
        if localiser is None:
            raise ModelError(
                f"Rectify method {method!r} needs the film localiser, and none was loaded",
                "Use rectify method 'classical', or install models/film-localiser.json",
            )
        learned = learned_detection(localiser, photo, (wh, ww))
    learned_half = 0.0
    if learned is not None and (det is None or det.fill < MIN_FILL):
        # the classical detector found nothing: take the localiser's quad
        det = learned
        learned_half = 1.5 * W / LOCALISER_MASK_W + 4.0
    timings["detect_ms"] = (time.perf_counter() - t0) * 1000
    lit_sub = lit[::3, ::3]
    box_px = lit_sub & (np.abs(trans[::3, ::3] - 1.0) < 0.1)
    lum_sub = light.lum[::3, ::3]
    lightbox_level = float(np.median(lum_sub[box_px])) if box_px.any() else float(lum_sub.max())
    clipped_lb = (
        float((light.small[::3, ::3][lit_sub].max(axis=-1) >= 250).mean()) if lit_sub.any() else 0.0
    )
    metrics: dict[str, float] = {
        "lightbox_linear": lightbox_level,
        "lightbox_clipped_fraction": clipped_lb,
        "reference_used": 1.0 if light.model_kind == "reference" else 0.0,
        "localiser_used": 1.0 if method in ("learned", "combined") else 0.0,
    }
    if det is None or det.fill < MIN_FILL:
        none_flags = ["no_film"]
        if lightbox_level < DARK_LIGHTBOX:
            none_flags = ["underexposed", "no_film"]
        metrics["film_area_fraction"] = 0.0 if det is None else det.area_fraction
        timings["total_ms"] = (time.perf_counter() - t0) * 1000
        return RectifyResult("rejected", None, None, make_quality(none_flags, metrics), timings)
    coarse = light.to_frame(det.quad_work)
    clear_t = clear_film_level(trans, det.quad_work)
    metrics["film_area_fraction"] = det.area_fraction
    metrics["clear_film_transmittance"] = clear_t
    t1 = time.perf_counter()
    cut_off = quad_cut_off(det.quad_work, (wh, ww))
    if cut_off:
        corners = coarse
        sigma, used = float("nan"), 0
    else:
        corners, sigma, used, side_fraction = refine_corners(
            photo, coarse, light.lightbox, light.scale, clear_t, learned_half
        )
        metrics["edge_side_min_fraction"] = side_fraction
        if np.abs(corners - coarse).max() > max(4.0 / light.scale + 4, 2 * learned_half):
            logger.debug("Refinement moved a corner too far; keeping the coarse quad")
            corners = coarse
        cut_off = side_fraction < MIN_SIDE_FRACTION or bool(
            (corners[:, 0] < 0).any()
            or (corners[:, 1] < 0).any()
            or (corners[:, 0] > W - 1).any()
            or (corners[:, 1] > H - 1).any()
        )
    timings["refine_ms"] = (time.perf_counter() - t1) * 1000
    diag = float(np.hypot(*(corners[2] - corners[0])))
    metrics["edge_points"] = float(used)
    metrics["edge_sigma_px"] = sigma
    metrics["sharpness"] = float(diag / sigma) if not math.isnan(sigma) and sigma > 0 else 0.0
    if cut_off:
        metrics["edge_sigma_px"] = 0.0
        timings["total_ms"] = (time.perf_counter() - t0) * 1000
        return RectifyResult("rejected", corners, None, make_quality(["cut_off"], metrics), timings)
    t2 = time.perf_counter()
    film = develop_film(capture, corners, light, clear_t)
    timings["develop_ms"] = (time.perf_counter() - t2) * 1000
    # ---- quality (statistics on a subsample of the central film)
    ch, cw = film.density.shape
    core = (slice(ch // 8, ch - ch // 8, 2), slice(cw // 8, cw - cw // 8, 2))
    t_c = film.transmittance
    th, tw = t_c.shape
    core_t = (slice(th // 8, th - th // 8), slice(tw // 8, tw - tw // 8))
    glare_fraction = float((t_c[core_t] > clear_t * 1.08).mean())
    clipped = float((film.shortest[core] >= 250).mean())
    # colour: from the work-resolution copy, inside the film, white-balanced on the lightbox
    film_w = np.zeros((wh, ww), np.uint8)
    cv2.fillConvexPoly(film_w, np.round(light.to_work(corners)).astype(np.int32), 1)
    inner = cv2.erode(film_w, np.ones((9, 9), np.uint8)) > 0
    # glare is additive and spreads beyond the film: look for it on the lightbox around it
    ring = (cv2.dilate(film_w, np.ones((31, 31), np.uint8)) > 0) & ~(
        cv2.dilate(film_w, np.ones((7, 7), np.uint8)) > 0
    )
    ring &= lit
    glare_ring = float((trans[ring] > GLARE_RING_T).mean()) if ring.any() else 0.0
    sub = (slice(None, None, 2), slice(None, None, 2))
    lin_small = SRGB_TO_LINEAR[light.small[sub]]
    around = (lit & (film_w == 0) & (np.abs(trans - 1.0) < 0.1))[sub]
    within = inner[sub]
    lb_rgb = np.median(lin_small[around], axis=0) if around.any() else np.ones(3)
    wb = np.clip(lin_small[within] / np.maximum(lb_rgb, 1e-4) * lb_rgb.mean(), 0, 1)
    wb_srgb = (np.power(wb, 1 / 2.2) * 255).astype(np.uint8)
    d_lo, d_hi = film.d_lo, film.d_hi
    metrics.update(
        {
            "glare_fraction": glare_fraction,
            "glare_ring_fraction": glare_ring,
            "clipped_fraction": clipped,
            "contrast": d_hi - d_lo,
            "density_min": d_lo,
            "density_max": d_hi,
            "colourfulness": colourfulness(wb_srgb) if wb_srgb.size else 0.0,
            "edge_blur_fraction": 0.0 if math.isnan(sigma) else sigma / diag,
        }
    )
    flags: list[str] = []
    if clipped > CLIPPED_MAX or clipped_lb > 0.5:
        flags.append("overexposed")
    if lightbox_level < DARK_LIGHTBOX:
        flags.append("underexposed")
    if not math.isnan(sigma) and sigma / diag > SHARP_MAX:
        flags.append("blurred")
    if glare_fraction > GLARE_MAX or glare_ring > GLARE_RING_MAX:
        flags.append("glare")
    if metrics["colourfulness"] > COLOURFUL_MAX or d_hi - d_lo < 0.3:
        flags.append("not_xray")
    quality = make_quality(flags, metrics)
    timings["total_ms"] = (time.perf_counter() - t0) * 1000
    status: Literal["ok", "rejected"] = "ok" if quality.ok else "rejected"
    return RectifyResult(status, corners.astype(np.float32), film.grey, quality, timings)
