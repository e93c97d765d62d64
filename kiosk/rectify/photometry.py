"""Light on the lightbox: the lit panel, a model of its luminance under the film, colour.

Transmittance ``T = L / L_lightbox`` is measured against this model: the rig reference's flat
field scaled to the photo's exposure, or a robust smooth surface fitted to the visible box.

What this module does not do: find the film (``locate``).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from kiosk.capture.rig import RigReference
from kiosk.imaging.colour import SRGB_TO_LINEAR, linear_rgb
from kiosk.imaging.surface import fit_smooth_surface

LIT_IN_REFERENCE = 0.3  # flat-field level (99th pct = 1) above which the box is lit
FIT_LONG_SIDE_PX = 112  # resolution of the smooth lightbox model
# a film "margin" darker than this transmittance is a black or grey one, not a clear base
CLEAR_BASE_MIN_T = 0.45
LIGHTBOX_FIT_DEGREES = (2, 4)  # smooth models of the box tried without a reference
# the panel's level is at least this share of the brightest lit pixels (99.5th percentile;
# glare is a few times brighter than the panel, a dense film 100 times darker)
PANEL_LEVEL_MIN_OF_TOP = 0.1
BRIGHT_OF_TOP = 0.4  # "bright": the lit panel and what is as bright (``bright_mask``)
FIELD_PX = 32  # long side at which colour_variation computes the smooth colour field
LOG10_LINEAR = np.log10(np.maximum(SRGB_TO_LINEAR, 1e-4)).astype(
    np.float32
)  # log10 of linear value


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness of an RGB uint8 image (0 = grey)."""
    f = rgb.reshape(-1, 3).astype(np.float32)
    rg = f[:, 0] - f[:, 1]
    yb = 0.5 * (f[:, 0] + f[:, 1]) - f[:, 2]
    return float(
        math.hypot(float(rg.std()), float(yb.std()))
        + 0.3 * math.hypot(float(rg.mean()), float(yb.mean()))
    )


def balanced_colourfulness(linear: np.ndarray, white: np.ndarray) -> float:
    """Colourfulness of linear RGB pixels (N, 3) once balanced to ``white`` (a von Kries
    scaling in linear light): a radiograph on a warm or cool panel is grey again, a coloured
    picture stays colourful."""
    if linear.size == 0:
        return 0.0
    white = np.asarray(white, np.float32)
    wb = np.clip(linear / np.maximum(white, 1e-4) * white.mean(), 0, 1)
    return colourfulness((np.power(wb, 1 / 2.2) * 255).astype(np.uint8))


def colour_variation(rgb: np.ndarray) -> tuple[float, float]:
    """How a colour picture's hue varies, measured so a photographed film does not: (detail,
    field), both in log-chroma units (natural log of R/G and B/G in linear light).

    A film is a grey transmission filter: under any light, its pixel's chromaticity is the
    light's. The panel's colour may drift slowly across the film (ageing tubes, a warm and a
    cool tube, a coloured reflection), so the log-chroma of a photographed film is a smooth
    field whatever the film's densities. ``detail`` is the luminance-weighted RMS of the
    log-chroma left after removing that smooth field (a Gaussian of 1/8 of the picture's long
    side): JPEG chroma noise on a film, object edges on a coloured picture. ``field`` is the
    RMS of the smooth field about its mean: a slow tint across a film, large coloured regions
    on a picture. A uniform cast (a warm panel) moves neither.
    """
    h, w = rgb.shape[:2]
    step = max(1, max(h, w) // 256)
    lin = linear_rgb(np.ascontiguousarray(rgb[::step, ::step])).astype(np.float32)
    weight = lin @ np.array([0.2126, 0.7152, 0.0722], np.float32) + 1e-3
    eps = 0.01  # linear light: keeps the black's noise from dominating the ratios
    u = np.log((lin[..., 0] + eps) / (lin[..., 1] + eps))
    v = np.log((lin[..., 2] + eps) / (lin[..., 1] + eps))
    # the smooth field is computed FIELD_PX across (a Gaussian of 1/8 of that) and brought
    # back up: the same field as a wide Gaussian at full size, at a fraction of the cost
    h, w = u.shape
    f = FIELD_PX / max(h, w)
    small_size = (max(2, round(w * f)), max(2, round(h * f)))
    sigma = max(small_size) / 8

    def smoothed(values: np.ndarray) -> np.ndarray:
        small = cv2.resize(values, small_size, interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small, (0, 0), sigma)

    norm = smoothed(weight)
    total = float(weight.sum())
    detail_sq = 0.0
    field_sq = 0.0
    for chroma in (u, v):
        smooth = smoothed(chroma * weight) / norm
        smooth = cv2.resize(smooth, (w, h), interpolation=cv2.INTER_LINEAR)
        mean = float((chroma * weight).sum()) / total
        detail_sq += float((weight * (chroma - smooth) ** 2).sum()) / total
        field_sq += float((weight * (smooth - mean) ** 2).sum()) / total
    return math.sqrt(detail_sq), math.sqrt(field_sq)


def bright_mask(lum: np.ndarray) -> np.ndarray:
    """uint8 1 where the light is at least 0.4 of the brightest (99.5th percentile): the lit
    panel and what is as bright, not the housing or the room."""
    # (the percentile of every other row and column: the same level, a quarter of the work)
    return (lum > BRIGHT_OF_TOP * float(np.percentile(lum[::2, ::2], 99.5))).astype(np.uint8)


def lit_mask(lum: np.ndarray) -> np.ndarray:
    """The lit panel at work resolution without a reference: the convex hull of the largest
    bright region (the panel is convex; the film inside it is a hole that fills)."""
    h, w = lum.shape
    mask = np.zeros((h, w), np.uint8)
    bright = bright_mask(lum)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=4)
    if n <= 1:
        return np.ones((h, w), bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    contours, _ = cv2.findContours(
        (labels == biggest).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    cv2.fillConvexPoly(mask, cv2.convexHull(np.concatenate(contours)), 1)
    return mask.astype(bool)


def dominant_level(values: np.ndarray) -> float:
    """The most common value among bright pixels: the lightbox, not the (narrower) clear film
    margins nor a glare band, which spread over many levels."""
    if values.size == 0:
        return 1.0
    hist, edges = np.histogram(np.log(np.maximum(values, 1e-6)), bins=60)
    hist = np.convolve(hist, np.ones(3), mode="same")
    peak = int(np.argmax(hist))
    centre = float(np.exp((edges[peak] + edges[peak + 1]) / 2))
    near = values[(values > centre * 0.93) & (values < centre * 1.07)]
    return float(np.median(near)) if near.size else centre


def lightbox_model(
    lum: np.ndarray, lit: np.ndarray, reference: RigReference | None
) -> tuple[np.ndarray, str]:
    """Linear lightbox luminance at every work pixel, and which model produced it."""
    h, w = lum.shape
    if reference is not None:
        flat = reference.flat_field_at((h, w))
        ratio = (lum / np.maximum(flat, 1e-4))[lit & (flat > 0.2)]
        if ratio.size == 0:
            ratio = (lum / np.maximum(flat, 1e-4)).ravel()
        gain = dominant_level(ratio[ratio > 0.5 * float(np.percentile(ratio, 99.5))])
        return (flat * gain).astype(np.float32), "reference"
    fs = max(h, w) / FIT_LONG_SIDE_PX
    small = (max(8, round(w / fs)), max(8, round(h / fs)))
    lum_s = cv2.resize(lum, small, interpolation=cv2.INTER_AREA)
    lit_s = cv2.resize(lit.astype(np.uint8), small, interpolation=cv2.INTER_NEAREST) > 0
    # start from pixels near the panel's most common level (not the brightest: glare), then
    # let the robust fit take in the dimmer and brighter parts of the panel that agree with
    # it. A level under PANEL_LEVEL_MIN_OF_TOP of the brightest is a dense film's, not the
    # panel's (a film covering most of its bay outnumbers the panel around it): then the
    # most common level among the bright pixels (``bright_mask``'s)
    values = lum_s[lit_s] if lit_s.any() else lum_s.ravel()
    level = dominant_level(values)
    top = float(np.percentile(values, 99.5))
    if level < PANEL_LEVEL_MIN_OF_TOP * top:
        level = dominant_level(values[values > BRIGHT_OF_TOP * top])
    cand = lit_s & (lum_s > 0.8 * level) & (lum_s < 1.2 * level)
    # a high degree follows strong fall-off but can swing inside the film's hole; keep the
    # degree whose surface explains the most lit pixels as lightbox (|T - 1| < 8%)
    best, best_score = None, -1.0
    for degree in LIGHTBOX_FIT_DEGREES:
        surf = fit_smooth_surface(
            lum_s, cand, degree=degree, iterations=4, keep_ratio=0.9, upper_ratio=1.1
        )
        surf = np.maximum(surf, 0.05 * level)
        score = float((np.abs(lum_s / surf - 1.0) < 0.08)[lit_s].mean())
        if score > best_score + 0.01:
            best, best_score = surf, score
    assert best is not None
    surface = best
    return cv2.resize(surface, (w, h), interpolation=cv2.INTER_LINEAR), "smooth"
