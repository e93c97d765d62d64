"""Develop the film: from a capture and the film's corners to the grey film the model reads.

Only the film region of every frame is warped to the output size; the frames are merged
there in linear light; density ``D = log10(I_lightbox) - log10(I)`` is measured against the
lightbox model; the clear margins are cropped; density is mapped linearly to grey with robust
percentiles (low density = bone = bright). The same path serves the kiosk (corners found by
``locate``/``refine``) and training (``develop`` with known corners: "what a perfect rectifier
hands the model").

What this module does not do: find the corners, or judge the result (``gates``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from kiosk.capture.bracket import FilmCapture, merge_linear
from kiosk.capture.rig import RigReference
from kiosk.rectify.light import Light, measure_light
from kiosk.rectify.locate import clear_film_level
from kiosk.rectify.photometry import CLEAR_BASE_MIN_T, LOG10_LINEAR
from kiosk.rectify.warp import crop_margins, film_size, warp_film, warp_lightbox


@dataclass(frozen=True)
class Developed:
    """The developed film and what the quality gate measures on it."""

    grey: np.ndarray  # uint8, margins cropped, bone bright
    density: np.ndarray  # float32 density of the cropped film
    shortest: np.ndarray  # uint8 grey of the shortest frame, cropped like ``grey``
    longest: np.ndarray  # uint8 grey of the longest frame, cropped like ``grey``
    transmittance: np.ndarray  # T of the cropped film, half resolution
    d_lo: float  # robust density range (0.5th and 99.5th percentiles)
    d_hi: float


def develop_film(
    capture: FilmCapture,
    corners: np.ndarray,
    light: Light,
    clear_t: float,
    *,
    lightbox_seen: bool = True,
    log_lightbox: Callable[[], np.ndarray] | None = None,
) -> Developed:
    """Warp, merge, measure density and crop margins (``clear_t``: the clear margin's T).

    ``lightbox_seen=False`` (the film was found by its texture, no lit panel around it): the
    lightbox level is taken as flat, at the film's own clearest part (its clear margin when it
    has one). The grey mapping uses robust percentiles of density, so a constant offset in the
    lightbox level does not change the film. ``log_lightbox``: gives ``film_lightbox(light,
    corners, film_size(corners))`` when that is computed elsewhere meanwhile (on the
    rectifier's helper thread, while the frames' film regions warp here).
    """
    size = film_size(corners)
    films = [warp_film(frame, corners, size) for frame in capture.frames]
    if lightbox_seen:
        log_lb = log_lightbox() if log_lightbox else film_lightbox(light, corners, size)
    else:
        log_lb = np.zeros((size[1], size[0]), np.float32)
    shortest = films[int(np.argmin(capture.exposures))]  # clips last
    longest = films[int(np.argmax(capture.exposures))]  # crushes last
    # in place where it can: a 2 GB Pi holds the bracket's frames meanwhile
    if len(films) == 1:  # a table lookup plus a smooth field
        density = np.subtract(log_lb, cv2.LUT(shortest, LOG10_LINEAR), out=log_lb)
    else:
        linear = merge_linear(films, capture.exposures)
        np.maximum(linear, np.float32(1e-4), out=linear)
        density = np.subtract(log_lb, np.log10(linear, out=linear), out=log_lb)
        del linear
    del films
    if not lightbox_seen:
        density -= np.float32(np.percentile(density[::4, ::4], 0.5))
    t_film = cv2.exp(density[::2, ::2] * np.float32(-math.log(10.0)))  # 10 ** -density
    # the margins cropped are clear film: at its base density when the film has a clear base;
    # a black or grey margin is no base (measured against it, most of the image would look
    # "clear" and be cut away), so then only what is as clear as the lightbox itself goes
    clear_base = lightbox_seen and clear_t >= CLEAR_BASE_MIN_T
    base_d = -math.log10(clear_t) if clear_base else 0.0  # (not seen: the clearest is 0)
    top, bottom, left, right = crop_margins(density[::2, ::2], base_d)
    top, bottom, left, right = 2 * top, 2 * bottom, 2 * left, 2 * right
    fh, fw = density.shape
    rows, cols = slice(top, fh - bottom), slice(left, fw - right)
    dens = density[rows, cols]
    short_c, long_c = shortest[rows, cols], longest[rows, cols]
    t_c = t_film[top // 2 : (fh - bottom) // 2, left // 2 : (fw - right) // 2]
    if dens.size < 64:
        dens, short_c, long_c, t_c = density, shortest, longest, t_film
    d_lo, d_hi = (float(v) for v in np.percentile(dens[::3, ::3], [0.5, 99.5]))
    scale = 255.0 / max(d_hi - d_lo, 1e-3)
    # (d_hi - D) * scale, rounded and saturated to 0..255 in one pass
    grey = cv2.addWeighted(dens, -scale, dens, 0.0, d_hi * scale, dtype=cv2.CV_8U)
    return Developed(grey, dens, short_c, long_c, t_c, d_lo, d_hi)


def film_lightbox(light: Light, corners: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """log10 of the lightbox model under the film, in the film's view of ``size`` (w, h)."""
    log_lb_work = np.log10(np.maximum(light.lightbox, 1e-5)).astype(np.float32)
    return warp_lightbox(log_lb_work, corners, light.scale, size)


def develop(
    photo: np.ndarray | FilmCapture,
    corners: np.ndarray,
    reference: RigReference | None = None,
) -> np.ndarray:
    """The grey film (uint8) of a photo or capture whose film corners are known (TL, TR, BR,
    BL in frame pixels): the kiosk's warp, density recovery and margin crop, no detection."""
    capture = photo if isinstance(photo, FilmCapture) else FilmCapture.single(photo)
    light = measure_light(capture.base, reference, capture.preview)
    quad_work = light.to_work(np.asarray(corners, np.float32))
    clear_t = clear_film_level(light.trans, quad_work)
    return develop_film(capture, np.asarray(corners, np.float32), light, clear_t).grey
