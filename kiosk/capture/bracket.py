"""Expose for the film, take the bracket, and merge frames in linear light.

``capture_film`` hands on a ``FilmCapture``: the bracket's frames as the camera took them and
their exposures relative to the base frame. It does not merge them: a 12 MP frame holds about
2.5 times more pixels than the film, and the film is wanted at about 1,000 pixels on its long
side, so rectification warps the film region of each frame to that size first and merges
there (``merge_linear``), a few hundred times cheaper than merging whole frames.

What this module does not do: find the film (``kiosk.rectify``) or decide when to capture
(``detector``, ``auto``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from kiosk.camera.base import (
    META_ANALOGUE_GAIN,
    META_EV,
    META_EXPOSURE_US,
    Camera,
    Still,
)
from kiosk.camera.lores import preview_agrees
from kiosk.errors import CameraError
from kiosk.imaging.colour import SRGB_TO_LINEAR

logger = logging.getLogger(__name__)


CLIP_LEVEL = 250  # 8-bit code treated as clipped
BLACK_LEVEL = 3  # 8-bit code treated as no signal
FILM_HIGHLIGHT_TARGET_LINEAR = 0.8  # film's 99th percentile in the shortest bracket frame
FILM_HIGHLIGHT_PERCENTILE = 99.0
FILM_EV_RANGE = (-4.0, 6.0)
BRACKET_MIN_STEP_EV = 0.25  # film frames closer than this to the base exposure are dropped


def _hat_weight_lut() -> np.ndarray:
    """Merge weight of an 8-bit level: 1 in mid-tones, falling to 0 at black and at clipping."""
    levels = np.arange(256, dtype=np.float32)
    mid = (CLIP_LEVEL + BLACK_LEVEL) / 2.0
    half = (CLIP_LEVEL - BLACK_LEVEL) / 2.0
    w = np.clip(1.0 - np.abs(levels - mid) / half, 0.0, 1.0).astype(np.float32)
    w[levels >= CLIP_LEVEL] = 0.0
    return w


HAT_WEIGHT = _hat_weight_lut()
# Grey frames: the weight of a level with the black penalty folded in, and weight x linear.
_GREY_WEIGHT = np.where(np.arange(256) <= BLACK_LEVEL, HAT_WEIGHT * 0.05, HAT_WEIGHT).astype(
    np.float32
)
_GREY_WEIGHTED_LINEAR = (_GREY_WEIGHT * SRGB_TO_LINEAR).astype(np.float32)


def meter_film_ev(
    preview: np.ndarray, film_mask: np.ndarray | None, bracket_evs: Sequence[float] = (0.0,)
) -> float:
    """EV offset from the preview's exposure that exposes the film (not the lightbox).

    Puts the film's 99th-percentile linear luminance at ``FILM_HIGHLIGHT_TARGET_LINEAR`` in the
    shortest frame of the bracket. 0.0 when there is no usable film region (or it is clipped in
    the preview, in which case the preview cannot tell how far to go down: stay put).
    """
    if film_mask is None or film_mask.sum() < 0.01 * film_mask.size:
        return 0.0
    linear = SRGB_TO_LINEAR[preview].max(axis=2)
    values = linear[film_mask]
    highlight = float(np.percentile(values, FILM_HIGHLIGHT_PERCENTILE))
    if highlight <= 0 or highlight >= SRGB_TO_LINEAR[CLIP_LEVEL]:
        return 0.0
    shortest = min(bracket_evs) if len(bracket_evs) else 0.0
    ev = math.log2(FILM_HIGHLIGHT_TARGET_LINEAR / highlight) - shortest
    return float(np.clip(ev, *FILM_EV_RANGE))


def _relative_exposure(still: Still) -> float:
    """Exposure x gain of a still, or 2**ev when the camera reports neither.

    A camera that could not apply the requested exposure (``exposure_applied == "no"``) took
    every frame alike: 1.0, so such a "bracket" is merely averaged.
    """
    if still.metadata.get("exposure_applied") == "no":
        return 1.0
    exposure_us = still.metadata.get(META_EXPOSURE_US)
    gain = still.metadata.get(META_ANALOGUE_GAIN, 1.0)
    if isinstance(exposure_us, float | int) and isinstance(gain, float | int) and exposure_us > 0:
        return float(exposure_us) * float(gain)
    ev = still.metadata.get(META_EV, 0.0)
    return 2.0 ** float(ev) if isinstance(ev, float | int) else 1.0


@dataclass(frozen=True)
class FilmCapture:
    """The bracket of one film placement, unmerged, with what the camera reported.

    ``exposures`` are the frames' exposures relative to the base frame (the EV 0 frame, set up
    so the bare lightbox does not clip; ``base_index``): 2.0 is one stop longer.
    """

    # the base frame RGB uint8 (H, W, 3); the others may be grey (H, W): only their film
    # region's luminance is used, and a 12 MP grey frame takes 12 MB instead of 36
    frames: tuple[np.ndarray, ...]
    exposures: tuple[float, ...]
    metadata: dict[str, float | str] = field(default_factory=dict)
    captured_at: float = 0.0  # time.time() of the base frame
    # the base frame's colour at an integer reduction: a JPEG decoded at 1/2, 1/4 or 1/8
    # scale, or the camera's own small copy of the still (``camera.lores``, checked against
    # the frame). The film is located on it instead of on the shrunk frame; and when it is
    # set the base frame may be grey (its luma, what the film is developed from) with the
    # colour read from here: a 1080p JPEG decodes to grey plus a quarter-size colour copy in
    # half the time of a full colour decode
    preview: np.ndarray | None = None

    @property
    def base_index(self) -> int:
        """Index of the frame closest to the base exposure."""
        return min(
            range(len(self.frames)),
            key=lambda i: (self.frames[i].ndim != 3, abs(math.log2(max(self.exposures[i], 1e-9)))),
        )

    @property
    def base(self) -> np.ndarray:
        """The base frame: the lightbox as set up, what a single photo would be."""
        return self.frames[self.base_index]

    @classmethod
    def single(
        cls,
        image: np.ndarray,
        metadata: dict[str, float | str] | None = None,
        preview: np.ndarray | None = None,
    ) -> FilmCapture:
        """One photo (a file, a camera without bracketing) as a one-frame capture; a grey
        ``image`` with a colour ``preview`` is a colour photo decoded the fast way."""
        return cls((image,), (1.0,), dict(metadata or {}), preview=preview)


def film_capture(stills: Sequence[Still]) -> FilmCapture:
    """The stills of one bracket as a ``FilmCapture`` (exposures relative to the EV 0 frame)."""
    if not stills:
        raise CameraError("no stills in the bracket", "capture at least one still")
    shapes = {s.image.shape for s in stills}
    if len(shapes) != 1:
        raise CameraError(f"bracket frames differ in size: {sorted(shapes)}", "capture again")
    exposures = [_relative_exposure(s) for s in stills]
    evs = [float(s.metadata.get(META_EV, 0.0)) for s in stills]
    base = int(np.argmin([abs(ev) for ev in evs]))
    metadata: dict[str, float | str] = dict(stills[base].metadata)
    metadata["bracket_evs"] = ",".join(f"{ev:g}" for ev in evs)
    metadata["bracket_count"] = float(len(stills))
    frames = tuple(
        st.image if i == base or st.image.ndim == 2 else cv2.cvtColor(st.image, cv2.COLOR_RGB2GRAY)
        for i, st in enumerate(stills)
    )
    preview = stills[base].preview
    if preview is not None and not preview_agrees(stills[base].image, preview):
        preview = None  # the rectifier shrinks the base frame instead
    return FilmCapture(
        frames=frames,
        exposures=tuple(e / exposures[base] for e in exposures),
        metadata=metadata,
        captured_at=stills[base].captured_at,
        preview=preview,
    )


MERGE_STRIP_ROWS = 64  # grey frames are merged this many rows at a time (see _merge_grey)


def _merge_grey(
    images: Sequence[np.ndarray], relative: list[float], shortest: int, longest: int
) -> np.ndarray:
    """``merge_linear`` of grey frames, a strip of rows at a time: two table lookups per
    frame (cv2.LUT: SIMD) summed into the strip's sums of weights and of weighted light, then
    divided. A strip's arrays stay in the CPU's cache; whole 1 MP float32 arrays went through
    memory at every step (the same numbers, in the same order, 1.5-2x faster here)."""
    h, w = images[0].shape
    out = np.empty((h, w), np.float32)
    weight_luts = [_GREY_WEIGHT * np.float32(rel) for rel in relative]
    for y in range(0, h, MERGE_STRIP_ROWS):
        rows = slice(y, min(h, y + MERGE_STRIP_ROWS))
        acc = out[rows]  # (a view: the strip is written in place)
        first = np.ascontiguousarray(images[0][rows])
        cv2.LUT(first, _GREY_WEIGHTED_LINEAR, dst=acc)
        weights = cv2.LUT(first, weight_luts[0])
        for image, lut in zip(images[1:], weight_luts[1:], strict=True):
            part = np.ascontiguousarray(image[rows])
            cv2.add(acc, cv2.LUT(part, _GREY_WEIGHTED_LINEAR), dst=acc)
            cv2.add(weights, cv2.LUT(part, lut), dst=weights)
        empty = weights <= 1e-6
        if empty.any():  # no frame measured these well: the shortest where it clipped
            short, long_ = images[shortest][rows][empty], images[longest][rows][empty]
            acc[empty] = np.where(
                short >= CLIP_LEVEL,
                SRGB_TO_LINEAR[short] / np.float32(relative[shortest]),
                SRGB_TO_LINEAR[long_] / np.float32(relative[longest]),
            )
            weights[empty] = 1.0
        np.divide(acc, weights, out=acc)
    return out


def merge_linear(images: Sequence[np.ndarray], exposures: Sequence[float]) -> np.ndarray:
    """Merge the same pixels of every bracket frame (grey or RGB uint8, sRGB-encoded) into
    linear float32 light in units of the frame whose exposure is 1.0.

    Each frame is linearised (inverse sRGB), divided by its relative exposure and weighted by a
    hat function of its 8-bit level (zero at clipping, 5% at black) times its exposure, since
    longer frames have better signal-to-noise. Pixels no frame measured well take the shortest
    frame where it clipped and the longest elsewhere. One frame: the inverse sRGB curve.
    A weighted average of linear values, not an exposure fusion (Mertens): fusion weights by
    contrast per pixel and destroys the pixel-to-luminance relation that density needs.
    """
    relative = [float(e) for e in exposures]
    if len(images) == 1:
        return cv2.LUT(images[0], SRGB_TO_LINEAR / np.float32(relative[0]))
    shortest = int(np.argmin(relative))
    longest = int(np.argmax(relative))
    colour = images[0].ndim == 3
    if not colour:
        return _merge_grey(images, relative, shortest, longest)
    acc = np.zeros(images[0].shape, np.float32)
    weights = np.zeros(images[0].shape[:2], np.float32)
    for image, rel in zip(images, relative, strict=True):
        # hat weight from the brightest channel (0 at clipping), 5% where any is black
        w = HAT_WEIGHT[image.max(axis=2)]
        w[image.min(axis=2) <= BLACK_LEVEL] *= np.float32(0.05)
        acc += SRGB_TO_LINEAR[image] * w[..., None]  # w x (value / rel) x rel
        weights += w * np.float32(rel)
    empty = weights <= 1e-6
    if empty.any():
        where = np.nonzero(empty)
        short, long_ = images[shortest][where], images[longest][where]
        clipped = short.max(axis=-1) >= CLIP_LEVEL
        source_short = SRGB_TO_LINEAR[short] / np.float32(relative[shortest])
        source_long = SRGB_TO_LINEAR[long_] / np.float32(relative[longest])
        acc[where] = np.where(clipped[..., None], source_short, source_long)
        weights[where] = 1.0
    return acc / weights[..., None]


def capture_film(
    camera: Camera,
    preview: np.ndarray | None,
    film_mask: np.ndarray | None,
    bracket_evs: Sequence[float] = (-1.0, 0.0, 1.0),
) -> FilmCapture:
    """Autofocus, meter on the film and capture the bracket around it (not merged).

    The bracket always includes the base exposure (EV 0: the lightbox unclipped, as set up),
    so the bare lightbox around the film stays measurable in the merged still: the rectifier
    needs it to turn the film's transmitted light into density when there is no rig
    reference. The longer frames expose for the film's dense parts.
    """
    evs = list(bracket_evs) or [0.0]
    camera.autofocus()
    film_ev = meter_film_ev(preview, film_mask, evs) if preview is not None else 0.0
    wanted = sorted({0.0, *(film_ev + ev for ev in evs if film_ev + ev > BRACKET_MIN_STEP_EV)})
    capture = film_capture(camera.capture_bracket(wanted))
    metadata = dict(capture.metadata)
    metadata["film_ev"] = film_ev
    return replace(capture, metadata=metadata)
