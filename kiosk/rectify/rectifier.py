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
from kiosk.helper_thread import helper
from kiosk.imaging.colour import channel_max
from kiosk.rectify.develop import develop_film, film_lightbox
from kiosk.rectify.frame_edge import beyond_unlit_sides, edge_content
from kiosk.rectify.gates import (
    CLIP_LEVEL,
    DARK_LIGHTBOX,
    LIGHTBOX_CLIPPED_NOTE,
    judge_photo,
)
from kiosk.rectify.light import Light, measure_light
from kiosk.rectify.locate import (
    LOCALISER_MASK_W,
    MIN_FILL,
    Detection,
    MaskModel,
    clear_film_level,
    detect_film,
    learned_detection,
    quad_cut_off,
    rectangular,
)
from kiosk.rectify.measure import colour_and_surround, film_measurements
from kiosk.rectify.photometry import (
    CLEAR_BASE_MIN_T,
    bright_mask,
)
from kiosk.rectify.refine import MIN_SIDE_FRACTION, refine_corners
from kiosk.rectify.result import RectifyResult, make_quality
from kiosk.rectify.second_look import bay_boxes, crop_capture, in_whole_frame, zoom_box
from kiosk.rectify.snap import snap_quad
from kiosk.rectify.texture import detect_by_texture
from kiosk.rectify.warp import film_size, quad_sides

logger = logging.getLogger(__name__)

PANEL_SEEN_RATIO = 0.3  # lit panel outside the film, as a share of the film's area
# a quad at the frame's edge is not cut off when the brightest light at that edge is at most
# this share of the film's median light: margin or housing, not image (docs/rectify.md)
FRAME_EDGE_DARK_MAX = 0.4
ON_PANEL_MIN = 0.5  # share of the film on the lit panel for the panel model to be trusted
# the localiser's quad is used only from a mask this crisp (chosen in docs/rectify.md)
LOCALISER_MIN_CRISP = 0.97
# a localiser mask along a frame edge for fewer cells than this may be a film's corner next to
# the edge: its corner is then measured from the photo's edges, and read when it lies at least
# NEAR_EDGE_MIN_PX (at 1280 wide) inside the frame
SHORT_EDGE_RUN = 12
NEAR_EDGE_MIN_PX = 2.0
# a film the localiser found covering less of the frame than this is looked at again, closer
# (``second_look.zoom_box``), and read from that look when it finds the film there
CLOSER_LOOK_AREA = 0.10

METHODS = ("auto", "classical", "learned", "combined")
# what "auto" means: the best method on the benchmark in docs/rectify.md
AUTO_METHOD = "combined"


def uses_localiser(method: str) -> bool:
    """Whether rectify ``method`` runs the localiser (callers load it only then)."""
    return method in ("learned", "combined") or (method == "auto" and AUTO_METHOD != "classical")


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
    light: Light | None = None,
) -> RectifyResult:
    """Find the film in a capture (one photo or a bracket), rectify it and judge its quality.

    The film is located and its corners refined on the base frame (the lightbox as set up);
    then only the film region of every frame is warped to the output size and the frames are
    merged there in linear light: the work is per film pixel, not per frame pixel.

    ``reference`` (the empty lightbox at this exposure) makes the density measurement exact;
    without it the lightbox is estimated from what is visible around the film.
    ``method``: "classical" (lightbox model + dark region + line fits, texture when that is
    doubtful), "learned" (the int8 localiser's mask first; ``localiser`` is that model, loaded
    by the caller), "combined" (classical; the localiser's quad where the classical detection
    is missing or doubtful) or "auto" (``AUTO_METHOD``, chosen in docs/rectify.md). Every
    method refines the corners at full resolution with the same edge profiles (see
    ``_locate``). ``light``: the capture's light already measured from its preview with this
    ``reference`` (``light.measure_light_preview``, while the frame was still decoding); it is
    measured here when not given, or when it was measured for another frame size.
    """
    result, light = _rectify_once(capture, reference, method, localiser, light)
    metrics = result.quality.metrics
    by_texture = metrics.get("located_by_texture", 0.0) > 0
    # a small film found by the localiser: a few dozen of its 128 cells across, a coarse quad
    small_mask = (
        metrics.get("localiser_used", 0.0) > 0
        and metrics.get("film_area_fraction", 1.0) < CLOSER_LOOK_AREA
    )
    if "no_film" not in result.quality.flags and not by_texture and not small_mask:
        return result
    # nothing found, found only by its texture (no edge seen), or small in the localiser's
    # mask: a small lightbox far from the camera gives the detectors (480 px across the whole
    # frame) too few pixels; look again at full resolution around the lit panel
    box = zoom_box(light)
    if box is not None:
        closer = _closer_look(capture, box, result, method, localiser)
        if closer is not None:
            return closer
    if "no_film" not in result.quality.flags:
        return result
    # still nothing: a lightbox of several bays, the film in one the panel model was not
    # fitted to (the largest bright region is an empty bay; the film's bay, mostly covered,
    # is smaller): look at each other bay on its own
    for bay in bay_boxes(light):
        closer = _closer_look(capture, bay, result, method, localiser, note="bay_look")
        # (a film seen against its bay's panel, not a texture find: the bay's own panel,
        # filling the crop, has texture too)
        if (
            closer is not None
            and closer.status == "ok"
            and not closer.quality.metrics.get("located_by_texture", 0.0) > 0
        ):
            return closer
    return result


def _closer_look(
    capture: FilmCapture,
    box: tuple[int, int, int, int],
    result: RectifyResult,
    method: str,
    localiser: MaskModel | None,
    note: str = "zoomed",
) -> RectifyResult | None:
    """``_rectify_once`` on the frames' region ``box`` (frame pixels), as a result for the
    whole frame (``metrics[note]`` = 1); None when it found no better answer than
    ``result``."""
    # the rig reference covers the whole frame: the closer look models the panel it sees
    zoomed, _ = _rectify_once(crop_capture(capture, box), None, method, localiser)
    return in_whole_frame(zoomed, box, result, note)


def _rectify_once(
    capture: FilmCapture,
    reference: RigReference | None,
    method: str,
    localiser: MaskModel | None,
    light: Light | None = None,
) -> tuple[RectifyResult, Light]:
    """One look at the whole capture: ``rectify_capture`` without the closer second look;
    also returns the light it measured (or was given)."""
    if method not in METHODS:
        raise ValueError(f"Unknown rectify method {method!r}; use one of {', '.join(METHODS)}")
    if method == "auto":
        method = AUTO_METHOD if AUTO_METHOD == "classical" or localiser else "classical"
    photo = capture.base
    colour = (capture.preview is not None and capture.preview.ndim == 3) or photo.ndim == 3
    if (
        not colour
        or photo.shape[2:] not in ((), (3,))
        or any(f.dtype != np.uint8 for f in capture.frames)
        or len({f.shape[:2] for f in capture.frames}) != 1
    ):
        raise ImageError(
            f"Expected an RGB uint8 photo (H, W, 3) and frames of its size, got {photo.dtype} "
            f"{photo.shape}",
            "Decode the file with kiosk.imaging.decode before calling rectify",
        )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    H, W = photo.shape[:2]
    if light is None or not light.fits((H, W)):
        light = measure_light(photo, reference, capture.preview)
    wh, ww = light.work_hw
    trans, lit = light.trans, light.lit
    lit_sub = lit[::3, ::3]
    clipped_lb = (
        float((channel_max(light.small[::3, ::3])[lit_sub] >= CLIP_LEVEL).mean())
        if lit_sub.any()
        else 0.0
    )
    if method in ("learned", "combined") and localiser is None:
        raise ModelError(
            f"Rectify method {method!r} needs the film localiser, and none was loaded",
            "Use rectify method 'classical', or install models/film-localiser.json",
        )
    proposal = _Proposal(localiser, light)
    det, source, learned_half = _locate(method, light, photo, proposal, clipped_lb)
    by_texture = source == "texture"
    # the lightbox model is trusted for edges, density and glare unless the film was found
    # by its texture, or the localiser's film sits where the panel reads doubtfully, or the
    # film lies outside the lit panel the model was fitted to (another bay of the lightbox,
    # brighter or dimmer than the modelled one: the model under it is an extrapolation)
    lightbox_seen = not by_texture and not (
        source == "localiser" and det is not None and _doubtful(det, clipped_lb, light, (wh, ww))
    )
    on_panel = 1.0 if det is None else _on_panel(det.quad_work, light.lit)
    if lightbox_seen and on_panel < ON_PANEL_MIN:
        lightbox_seen = False
    timings["detect_ms"] = (time.perf_counter() - t0) * 1000
    box_px = lit_sub & (np.abs(trans[::3, ::3] - 1.0) < 0.1)
    lum_sub = light.lum[::3, ::3]
    lightbox_level = float(np.median(lum_sub[box_px])) if box_px.any() else float(lum_sub.max())
    metrics: dict[str, float] = {
        "lightbox_linear": lightbox_level,
        "lightbox_clipped_fraction": clipped_lb,
        "reference_used": 1.0 if light.model_kind == "reference" else 0.0,
        "localiser_used": 1.0 if source == "localiser" else 0.0,
        "located_by_texture": 1.0 if by_texture else 0.0,
        "localiser_crisp": proposal.crisp,
        "film_on_panel_fraction": on_panel,
    }
    if det is None or det.fill < MIN_FILL:
        none_flags = ["no_film"]
        if lightbox_level < DARK_LIGHTBOX and not by_texture:
            none_flags = ["underexposed", "no_film"]
        metrics["film_area_fraction"] = 0.0 if det is None else det.area_fraction
        timings["total_ms"] = (time.perf_counter() - t0) * 1000
        return RectifyResult(
            "rejected", None, None, make_quality(none_flags, metrics), timings
        ), light
    coarse = light.to_frame(det.quad_work)
    clear_t = clear_film_level(trans, det.quad_work) if lightbox_seen else 1.0
    metrics["film_area_fraction"] = det.area_fraction
    metrics["clear_film_transmittance"] = clear_t
    t1 = time.perf_counter()
    cut_off = det.runs_out((wh, ww))
    cut_quad = det.quad_work  # the quad that says "cut off", for the frame-edge check
    if cut_off and source == "localiser" and 0 < det.edge_run < SHORT_EDGE_RUN:
        # the mask touches the frame's edge over a few cells only: a film's corner next to
        # the edge, or a corner cut off. The sides meeting there, seen in the photo, tell
        near, snapped = snap_quad(photo, coarse, learned_half)
        if snapped == 4 and _inside_by(near, (H, W), NEAR_EDGE_MIN_PX * max(1.0, W / 1280)):
            cut_off, coarse = False, near
            metrics["film_near_frame_edge"] = 1.0
    if not cut_off and source == "localiser":
        # the mask says the film is in the frame: a quad a fraction of a cell over the edge
        # is brought inside
        coarse = np.clip(coarse, 0.0, [W - 1.0, H - 1.0]).astype(np.float32)
    if cut_off or not lightbox_seen:
        corners = coarse
        sigma, used = float("nan"), 0
        if source == "localiser" and not cut_off:
            # the mask's quad, moved onto whatever straight edges the photo shows near it
            corners, snapped = snap_quad(photo, corners, learned_half)
            metrics["sides_snapped"] = float(snapped)
    else:
        corners, sigma, used, side_fraction = refine_corners(
            photo, coarse, light.lightbox, light.scale, clear_t, learned_half
        )
        metrics["edge_side_min_fraction"] = side_fraction
        if np.abs(corners - coarse).max() > max(4.0 / light.scale + 4, 2 * learned_half):
            logger.debug("Refinement moved a corner too far; keeping the coarse quad")
            corners = coarse
        if side_fraction < MIN_SIDE_FRACTION:
            if source == "localiser":
                # the localiser's mask, not the dark region, bounds the film: a side without
                # a lightbox edge keeps the mask's line (refine_corners does so per side);
                # the panel model is not trusted under a film whose edges it does not show
                lightbox_seen, sigma, clear_t = False, float("nan"), 1.0
                metrics["clear_film_transmittance"] = clear_t
            elif clipped_lb > LIGHTBOX_CLIPPED_NOTE:
                # the edges cannot be measured (a clipped lightbox and a clipped clear margin
                # look alike): keep the coarse quad, which lies inside the frame
                corners, sigma = coarse, float("nan")
            else:
                # a side shows no lightbox-to-film edge: the frame's edge cuts the film, or
                # the film hangs over the dark housing (it covers its bay); the localiser
                # ("combined") or else the texture tells
                mask = proposal.quad() if method == "combined" else None
                metrics["localiser_crisp"] = proposal.crisp
                if mask is not None and mask.area_fraction < CLOSER_LOOK_AREA:
                    # a small film's mask, a few dozen cells across, does not overrule a
                    # missing edge: it may stop where the panel does while the film runs on
                    # over the housing and out of the frame
                    mask = None
                textured = None if mask is not None else detect_by_texture(light.small)
                # the mask overrules the missing edge only for a film clearly inside the
                # frame: every corner a mask cell or more from the frame's edges
                if mask is not None and _well_inside(mask.quad_work, (wh, ww)):
                    source, lightbox_seen = "localiser", False
                    metrics["localiser_used"] = 1.0
                    corners, sigma, clear_t = light.to_frame(mask.quad_work), math.nan, 1.0
                    corners, snapped = snap_quad(photo, corners, learned_half)
                    metrics["sides_snapped"] = float(snapped)
                    metrics["clear_film_transmittance"] = clear_t
                elif mask is not None:
                    cut_off, cut_quad = True, mask.quad_work
                elif (
                    textured is not None
                    and textured.fill >= MIN_FILL
                    and not quad_cut_off(textured.quad_work, (wh, ww))
                ):
                    det, by_texture, lightbox_seen = textured, True, False
                    metrics["located_by_texture"] = 1.0
                    corners, sigma, clear_t = light.to_frame(textured.quad_work), math.nan, 1.0
                    metrics["clear_film_transmittance"] = clear_t
                elif _well_inside(light.to_work(corners), (wh, ww)) and not (
                    _beyond_unlit(light, corners, metrics) > FRAME_EDGE_DARK_MAX
                ):
                    # a quad inside the frame whose sides without an edge face only dark
                    # housing out to the frame's edge: the film ends at the quad, or hangs
                    # over the housing in view; the quad as refined is read, without the
                    # panel model under it (dim image at the frame's edge beyond such a
                    # side: the film may run on out of the frame, refused as cut off)
                    lightbox_seen, sigma, clear_t = False, math.nan, 1.0
                    metrics["clear_film_transmittance"] = clear_t
                    metrics["film_edge_unseen"] = 1.0
                else:
                    cut_off, cut_quad = True, light.to_work(corners)
        if source == "localiser":
            # the mask, not the quad, says whether the film is in the frame (above)
            corners = np.clip(corners, 0.0, [W - 1.0, H - 1.0]).astype(np.float32)
        else:
            if not cut_off:
                cut_quad = light.to_work(corners)
            cut_off = cut_off or bool(
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
        # the quad comes to the frame's edge; only what lies *at* that edge says whether the
        # radiograph is cut there, or only its dark margin or the unlit housing around it
        content = edge_content(light.lum, cut_quad)
        if math.isnan(content) and source == "localiser" and det.out_edges:
            # no frame edge next to the quad, but the localiser's mask runs out of the frame
            # beyond it: it may have bled from the film's black margin over the dark housing
            # to the edge. What lies at those edges, within the mask's reach, tells
            content = edge_content(light.lum, cut_quad, det.out_edges)
        metrics["frame_edge_content"] = content
        if content <= FRAME_EDGE_DARK_MAX:  # (NaN: no frame edge near the quad, still refused)
            cut_off, lightbox_seen = False, False
            corners = np.clip(light.to_frame(cut_quad), 0.0, [W - 1.0, H - 1.0]).astype(np.float32)
            sigma, clear_t = math.nan, 1.0
            metrics["clear_film_transmittance"] = clear_t
            metrics["edge_sigma_px"] = sigma
            metrics["sharpness"] = 0.0
            metrics["film_edge_in_dark"] = 1.0
    if cut_off:
        metrics["edge_sigma_px"] = 0.0
        timings["total_ms"] = (time.perf_counter() - t0) * 1000
        return RectifyResult(
            "rejected", corners, None, make_quality(["cut_off"], metrics), timings
        ), light
    metrics["film_short_side_px"] = min(quad_sides(corners))  # of the quad that is read
    t2 = time.perf_counter()
    # the lightbox under the film, then the film's colour and surround, are measured on the
    # helper thread while the frames' film regions warp here
    under = (
        helper().submit(film_lightbox, light, corners, film_size(corners))
        if lightbox_seen
        else None
    )
    surround = helper().submit(colour_and_surround, light, corners)
    film = develop_film(
        capture,
        corners,
        light,
        clear_t,
        lightbox_seen=lightbox_seen,
        log_lightbox=None if under is None else under.result,
    )
    timings["develop_ms"] = (time.perf_counter() - t2) * 1000
    metrics.update(surround.result())
    # the clear margin's level is trusted as the glare limit only when a real stretch of
    # lightbox surrounds the film; otherwise (a clipped or hidden panel: the "lightbox" may be
    # the clear margin itself) only light brighter than the panel model counts as glare
    # (a black or grey margin is no clear base: then, too, only light above the panel counts)
    panel_seen = metrics["lightbox_visible_ratio"] >= PANEL_SEEN_RATIO
    glare_t = clear_t * 1.08 if panel_seen and clear_t >= CLEAR_BASE_MIN_T else 1.02
    metrics.update(film_measurements(film, glare_t, lightbox_seen=lightbox_seen))
    metrics["edge_blur_fraction"] = float("nan") if math.isnan(sigma) else sigma / diag
    if lightbox_level < DARK_LIGHTBOX and lightbox_seen:
        metrics["lung_crushed_fraction"] = max(metrics["lung_crushed_fraction"], 1.0)
    quality = judge_photo(metrics)
    timings["total_ms"] = (time.perf_counter() - t0) * 1000
    status: Literal["ok", "rejected"] = "ok" if quality.ok else "rejected"
    return RectifyResult(status, corners.astype(np.float32), film.grey, quality, timings), light


def _locate(
    method: str,
    light: Light,
    photo: np.ndarray,
    proposal: _Proposal,
    clipped_lb: float,
) -> tuple[Detection | None, str, float]:
    """The coarse film quad, which detector found it ("localiser", "transmittance" or
    "texture") and the half-width (px) its refinement may search.

    "learned": the localiser's quad first, the classical detectors when its mask holds no
    filled quadrilateral. "combined": the transmittance detector first, the localiser's quad
    when that finds nothing or is doubtful (``_doubtful``), the texture detector when neither
    holds. "classical": transmittance, checked against texture when doubtful.
    """
    wh, ww = light.work_hw
    learned_half = 1.5 * photo.shape[1] / LOCALISER_MASK_W + 4.0
    if method == "learned":
        learned = proposal.quad()
        if learned is not None:
            return learned, "localiser", learned_half
    det = detect_film(light.trans, light.lit)
    if _doubtful(det, clipped_lb, light, (wh, ww)):
        if method == "combined":
            # the transmittance detection is missing or doubtful: the localiser's quad (run
            # only now: a confident classical detection costs no inference), else texture
            learned = proposal.quad()
            if learned is not None:
                return learned, "localiser", learned_half
        det, by_texture = _prefer_texture(det, detect_by_texture(light.small), (wh, ww))
        if by_texture:
            return det, "texture", 0.0
    return det, "transmittance", 0.0


def _inside_by(corners: np.ndarray, hw: tuple[int, int], margin: float) -> bool:
    """Every corner at least ``margin`` px inside the frame (frame pixels)."""
    h, w = hw
    x, y = corners[:, 0], corners[:, 1]
    return bool(
        (x >= margin).all()
        and (y >= margin).all()
        and (x <= w - 1 - margin).all()
        and (y <= h - 1 - margin).all()
    )


def _well_inside(quad: np.ndarray, work_hw: tuple[int, int]) -> bool:
    """Every corner at least one localiser mask cell inside the frame (work pixels)."""
    return _inside_by(quad, work_hw, work_hw[1] / LOCALISER_MASK_W)


class _Proposal:
    """The localiser's answer for one photo, run at most once: it may be wanted while
    locating and again when a refined side shows no lightbox edge."""

    def __init__(self, localiser: MaskModel | None, light: Light) -> None:
        self._localiser = localiser
        self._light = light
        self._answer: tuple[Detection | None, float] | None = None

    def quad(self) -> Detection | None:
        """The localiser's quad when its mask is a filled quadrilateral and crisp, else None."""
        if self._answer is None:
            assert self._localiser is not None
            # from the work copy (already box-averaged): a 12 MP frame is not shrunk twice
            found = learned_detection(
                self._localiser, self._light.small, self._light.work_hw, self._light.lum
            )
            if found is None:
                self._answer = None, float("nan")
            else:
                usable = found.fill >= MIN_FILL and found.crisp >= LOCALISER_MIN_CRISP
                self._answer = (found if usable else None), found.crisp
        return self._answer[0]

    @property
    def crisp(self) -> float:
        """The mask's crispness; NaN when the localiser did not run or found no mask."""
        return float("nan") if self._answer is None else self._answer[1]


def _beyond_unlit(light: Light, corners: np.ndarray, metrics: dict[str, float]) -> float:
    """``frame_edge.beyond_unlit_sides`` for the quad ``corners`` (frame pixels), recorded in
    ``metrics`` as ``beyond_unlit_sides``."""
    value = beyond_unlit_sides(light.lum, bright_mask(light.lum) > 0, light.to_work(corners))
    metrics["beyond_unlit_sides"] = value
    return value


def _on_panel(quad_work: np.ndarray, lit: np.ndarray) -> float:
    """The share of the film's quad that lies on the lit panel (``lit``); 1 for no area."""
    film = np.zeros(lit.shape, np.uint8)
    cv2.fillConvexPoly(film, np.round(quad_work).astype(np.int32), 1)
    inside = film > 0
    return float(lit[inside].mean()) if inside.any() else 1.0


def _doubtful(
    det: Detection | None, clipped_lb: float, light: Light, work_hw: tuple[int, int]
) -> bool:
    """Whether the transmittance detection needs checking against the texture detector:
    nothing usable, a film running out of the frame, or signs that what looked like lit panel
    is not (``clipped_lb``, its clipped share, over half, or the "clear margin" as dark as
    tissue)."""
    if det is None or det.fill < MIN_FILL or det.runs_out(work_hw):
        return True
    return (
        # (a film's corners are right angles within the tilt of the camera: a dark region
        # with a corner far from one is part of a film covering its bay, a lung say)
        not rectangular(det.quad_work)
        or clipped_lb > LIGHTBOX_CLIPPED_NOTE
        or clear_film_level(light.trans, det.quad_work) < CLEAR_BASE_MIN_T
    )


def _prefer_texture(
    det: Detection | None, textured: Detection | None, work_hw: tuple[int, int]
) -> tuple[Detection | None, bool]:
    """Choose between the transmittance detection and the texture one (True: texture).

    Texture wins when the transmittance detector found nothing usable (no lit panel around
    the film: it covers its bay) and the textured region is not merely the visible part of a
    film running out of the frame, or when the transmittance "film" is a dark part *inside* a
    much larger textured film (exposed for the film, clear margins and bones look like panel).
    """
    if textured is None or textured.fill < MIN_FILL:
        return det, False
    usable = det is not None and det.fill >= MIN_FILL
    if usable and det is not None:
        if quad_cut_off(det.quad_work, work_hw):
            inside = _contains(det.quad_work, textured.quad_work.mean(axis=0))
            return (det, False) if inside else (textured, True)
        swallowed = _contains(textured.quad_work, det.quad_work.mean(axis=0))
        if swallowed and textured.area_fraction > 1.5 * det.area_fraction:
            return textured, True
        return det, False
    return textured, True


def _contains(quad: np.ndarray, point: np.ndarray) -> bool:
    pt = (float(point[0]), float(point[1]))
    return cv2.pointPolygonTest(quad.astype(np.float32), pt, False) >= 0
