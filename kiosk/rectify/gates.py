"""The quality gate: refuse a photo only for diagnostic reasons, note everything else.

A photo is refused when the lung fields cannot be read: clipped (white) or crushed (black)
over more than a stated share of the lung region, glare over it, blur beyond what the model
tolerates, the film really crossing the frame's edge, or nothing that looks like a radiograph.
What happens *around* the lungs (a clipped lightbox, clipped clear margins or flash card, a
reflection beside the film, an edge that could not be measured) does not refuse the photo: it
becomes a note in the quality record. Every threshold is chosen from data (docs/rectify.md:
share of photos accepted against the classifier's AUROC on them, per gate).

The lung region is the middle 60% x 60% of the developed film (margins cropped).

What this module does not do: locate, warp or develop the film.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from kiosk.imaging.colour import linear_rgb
from kiosk.rectify.photometry import balanced_colourfulness, colour_variation
from kiosk.rectify.result import Quality, make_quality
from kiosk.rectify.sheet import similar_regions

# refusals (lung region = the middle 60% x 60% of the developed film)
LUNG_CLIPPED_MAX = 0.15  # share of the lung region white in the shortest frame
LUNG_CRUSHED_MAX = 0.02  # share of the lung region black in the longest frame
LUNG_GLARE_MAX = 0.4  # share of the lung region brighter than clear film (a reflection)
SHARP_MAX = 0.0045  # edge blur sigma / film diagonal above which the photo is "blurred"
MIN_CONTRAST_D = 0.3  # density range of a radiograph; a blank sheet has less
# a film's or picture's hue variation (photometry.colour_variation, log-chroma; docs/rectify.md)
COLOUR_DETAIL_MAX = 0.25  # photographed films <= 0.22, coloured pictures mostly far above
COLOUR_FIELD_MAX = 0.5  # photographed films <= 0.18, large coloured regions ~1.2
SHEET_REGIONS_MAX = 3  # sheet.similar_regions: films of the holdout <= 2, most CT/MR sheets >= 4
# the film's shorter side in the photo (px) below which it cannot be read: half the model's
# 224 px input; B's correctly found films >= 134 px, its wrong tiny quads 44-103 px
# (docs/rectify.md)
MIN_FILM_SIDE_PX = 112.0
DARK_LIGHTBOX = 0.06  # linear lightbox level below which nothing can be measured
CLIP_LEVEL = 250  # 8-bit code treated as clipped
BLACK_LEVEL = 3  # 8-bit code treated as no signal
LUNG_FRACTION = 0.6  # the lung region's share of the film's width and height
# notes only
GLARE_RING_T = 1.15  # lightbox brighter than its model by this factor: a reflection
GLARE_RING_NOTE = 0.05  # share of the lightbox ring around the film showing glare
LIGHTBOX_CLIPPED_NOTE = 0.5  # share of the visible lightbox clipped


def lung_region(shape: tuple[int, ...]) -> tuple[slice, slice]:
    """Rows and columns of the lung region of a developed film of ``shape``."""
    h, w = shape[:2]
    mh, mw = round(h * (1 - LUNG_FRACTION) / 2), round(w * (1 - LUNG_FRACTION) / 2)
    return slice(mh, max(mh + 1, h - mh)), slice(mw, max(mw + 1, w - mw))


# (measurement, limit, refusal flag): the checks that refuse, in the order they are reported
REFUSALS: tuple[tuple[str, float, str], ...] = (
    ("lung_clipped_fraction", LUNG_CLIPPED_MAX, "overexposed"),
    ("lung_crushed_fraction", LUNG_CRUSHED_MAX, "underexposed"),
    ("edge_blur_fraction", SHARP_MAX, "blurred"),
    ("lung_glare_fraction", LUNG_GLARE_MAX, "glare"),
    ("colour_detail", COLOUR_DETAIL_MAX, "not_xray"),
    ("colour_field", COLOUR_FIELD_MAX, "not_xray"),
    ("similar_regions", SHEET_REGIONS_MAX, "not_xray"),
)


def judge_photo(metrics: dict[str, float]) -> Quality:
    """The verdict on a developed photo from its measurements (NaN = not measurable: passes).

    Refusal flags come first in ``flags``; notes (imperfections that do not refuse) follow
    in ``notes``; ``checks`` records each measured value against its limit.
    """
    flags: list[str] = []
    checks: dict[str, tuple[float, float]] = {}
    side = float(metrics.get("film_short_side_px", math.nan))
    if side == side:  # not NaN
        checks["film_short_side_px_min"] = (side, MIN_FILM_SIDE_PX)
        if side < MIN_FILM_SIDE_PX:
            flags.append("film_too_small")
    for name, limit, flag in REFUSALS:
        value = float(metrics.get(name, float("nan")))
        if value == value:  # not NaN
            checks[name] = (value, limit)
            if value > limit and flag not in flags:
                flags.append(flag)
    contrast = float(metrics.get("contrast", 1.0))
    checks["contrast_min"] = (contrast, MIN_CONTRAST_D)
    if contrast < MIN_CONTRAST_D and "not_xray" not in flags:
        flags.append("not_xray")
    notes: list[str] = []
    if metrics.get("lightbox_clipped_fraction", 0.0) > LIGHTBOX_CLIPPED_NOTE:
        notes.append("lightbox_clipped")
    if metrics.get("glare_ring_fraction", 0.0) > GLARE_RING_NOTE:
        notes.append("glare_beside_film")
    # corners placed without a measured edge: by the texture detector, or by the localiser's
    # mask where the film's edges were not seen against the panel nor every side snapped
    # onto an edge in the photo
    by_mask = (
        metrics.get("localiser_used", 0.0) > 0
        and not math.isfinite(metrics.get("edge_sigma_px", math.nan))
        and metrics.get("sides_snapped", 0.0) < 4
    )
    # (or a side of the refined quad that shows no edge, on a film well inside the frame)
    if (
        metrics.get("located_by_texture", 0.0) > 0
        or by_mask
        or metrics.get("film_edge_unseen", 0.0) > 0
    ):
        notes.append("film_edges_not_seen")
    if metrics.get("film_edge_in_dark", 0.0) > 0:
        # the quad reached the picture's edge, but only dark margin or housing lies there
        notes.append("film_at_frame_edge")
    if metrics.get("film_near_frame_edge", 0.0) > 0:
        # a corner within a cell of the picture's edge: measured from the photo's edges, inside
        notes.append("film_near_frame_edge")
    if metrics.get("zoomed", 0.0) > 0:
        # found only by a closer look around the lit panel: the film is small in the picture
        notes.append("film_small_in_frame")
    if metrics.get("bay_look", 0.0) > 0:
        # found by a look at another bay of the lightbox than the one the panel was modelled on
        notes.append("film_in_other_bay")
    if metrics.get("reference_used", 0.0) == 0.0:
        notes.append("no_rig_reference")
    return make_quality(flags, metrics, notes=notes, checks=checks)


def check_digital(image: np.ndarray) -> Quality:
    """Gate for a digital (non-photo) image: too small, blank, or not an X-ray (colourful)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if grey.dtype != np.uint8:
        g = grey.astype(np.float32)
        g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6) * 255
        grey = g.astype(np.uint8)
    h, w = grey.shape
    sub = grey[:: max(1, h // 512), :: max(1, w // 512)]
    p1, p99 = (float(v) for v in np.percentile(sub, [1, 99]))
    metrics = {
        "height": float(h),
        "width": float(w),
        "contrast": p99 - p1,
        "std": float(sub.std()),
        "colourfulness": 0.0,
    }
    flags: list[str] = []
    if min(h, w) < 128:
        flags.append("too_small")
    if sub.std() < 3.0:
        flags.append("blank")
    colourful = False
    if image.ndim == 3:
        rgb = image if image.dtype == np.uint8 else cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
        # balanced on the image's own mean colour (grey world), for the record
        lin = linear_rgb(rgb[:: max(1, h // 256), :: max(1, w // 256)]).reshape(-1, 3)
        metrics["colourfulness"] = balanced_colourfulness(lin, lin.mean(axis=0))
        # what decides: a radiograph photographed under a cast, or a light whose colour drifts
        # across the film, has a smooth hue; a coloured picture has hue detail or big regions
        detail, field = colour_variation(rgb)
        metrics["colour_detail"] = detail
        metrics["colour_field"] = field
        colourful = detail > COLOUR_DETAIL_MAX or field > COLOUR_FIELD_MAX
    aspect = max(h, w) / max(1, min(h, w))
    metrics["aspect"] = aspect
    metrics["similar_regions"] = float(similar_regions(grey))
    sheet = metrics["similar_regions"] > SHEET_REGIONS_MAX
    if "blank" not in flags and (colourful or sheet or p99 - p1 < 40 or aspect > 2.5):
        flags.append("not_xray")
    return make_quality(flags, metrics)


PHOTO_CLIPPED_SHARE = 0.05  # of a colour picture white: a lightbox photo, not a radiograph


def looks_like_photo(image: np.ndarray) -> bool:
    """True for a camera photo of a film on a lightbox, False for a digital X-ray.

    A digital radiograph is exactly grey and usually dark at its borders; a lightbox photo has
    colour noise and a colour cast, and bright lightbox around the film, often clipped: more
    than ``PHOTO_CLIPPED_SHARE`` of the picture at >= 245 (0 of 600 Kermany radiographs,
    their maximum 3.4 %; a lightbox bay beside the film, a panel metered for the film).
    """
    if image.ndim == 2 or image.shape[2] == 1:
        return False
    h, w = image.shape[:2]
    sub = image[:: max(1, h // 256), :: max(1, w // 256)].astype(np.int16)
    if float((sub.min(axis=2) >= 245).mean()) > PHOTO_CLIPPED_SHARE:
        return True
    chroma = float(np.mean(np.abs(sub[..., 0] - sub[..., 1]) + np.abs(sub[..., 2] - sub[..., 1])))
    if chroma < 1.0:
        return False
    grey = sub.mean(axis=2)
    bh, bw = max(1, grey.shape[0] // 12), max(1, grey.shape[1] // 12)
    border = np.concatenate(
        [grey[:bh].ravel(), grey[-bh:].ravel(), grey[:, :bw].ravel(), grey[:, -bw:].ravel()]
    )
    centre = grey[
        grey.shape[0] // 4 : -grey.shape[0] // 4, grey.shape[1] // 4 : -grey.shape[1] // 4
    ]
    bright_border = float(np.percentile(border, 75)) > max(120.0, float(np.median(centre)) + 30)
    return bright_border or chroma > 6.0
