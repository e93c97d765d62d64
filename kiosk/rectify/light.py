"""The light on the lightbox, measured once per capture at work resolution.

A photo is shrunk to a work copy (long side ``WORK_LONG_SIDE_PX``), linearised, and the
lightbox's luminance under everything is modelled (the rig reference scaled to this exposure,
or a smooth surface fitted to the visible panel). Transmittance ``T = L / L_lightbox`` is what
locating the film and recovering its density both start from.

What this module does not do: find the film (``locate``) or develop it (``develop``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from kiosk.capture.rig import RigReference
from kiosk.imaging.colour import linear_luminance
from kiosk.imaging.resize import shrink
from kiosk.rectify.photometry import LIT_IN_REFERENCE, lightbox_model, lit_mask

logger = logging.getLogger(__name__)

WORK_LONG_SIDE_PX = 480  # detection resolution


@dataclass(frozen=True)
class Light:
    """The base frame at work resolution and the lightbox model under it."""

    small: np.ndarray  # RGB uint8 work copy of the base frame
    lum: np.ndarray  # linear luminance of ``small``
    lit: np.ndarray  # bool: the lit panel
    lightbox: np.ndarray  # linear lightbox luminance model, work resolution
    trans: np.ndarray  # lum / lightbox
    model_kind: str  # "reference" or "smooth"
    scale: float  # work pixels per frame pixel

    @property
    def work_hw(self) -> tuple[int, int]:
        return self.lum.shape[0], self.lum.shape[1]

    def to_frame(self, quad_work: np.ndarray) -> np.ndarray:
        """Work-resolution points -> frame pixels (pixel centres at integers)."""
        return ((quad_work + 0.5) / self.scale - 0.5).astype(np.float32)

    def to_work(self, quad: np.ndarray) -> np.ndarray:
        """Frame pixels -> work-resolution points."""
        return ((quad + 0.5) * self.scale - 0.5).astype(np.float32)

    def fits(self, frame_hw: tuple[int, int]) -> bool:
        """Whether this light was measured for a frame of size ``frame_hw``."""
        ww, wh = work_size(frame_hw)
        return self.work_hw == (wh, ww) and self.scale == ww / frame_hw[1]


def work_size(frame_hw: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of the work copy of a frame of size ``frame_hw`` (long side
    ``WORK_LONG_SIDE_PX``)."""
    h, w = frame_hw
    work_scale = WORK_LONG_SIDE_PX / max(h, w)
    return max(16, round(w * work_scale)), max(16, round(h * work_scale))


def usable_reference(
    reference: RigReference | None, frame_hw: tuple[int, int]
) -> RigReference | None:
    """The rig reference if it was taken with this frame's aspect ratio, else None (logged)."""
    if reference is None:
        return None
    rh, rw = reference.image_size
    h, w = frame_hw
    if abs(rh / rw - h / w) > 0.02:
        logger.warning(
            "Rig reference is %dx%d but the photo is %dx%d: ignoring the reference", rw, rh, w, h
        )
        return None
    return reference


def measure_light(
    photo: np.ndarray, reference: RigReference | None, preview: np.ndarray | None = None
) -> Light:
    """Shrink, linearise and model the lightbox of one frame (RGB uint8; or its grey luma with
    ``preview``, its colour box-averaged by an integer factor, see ``FilmCapture``)."""
    return _measure(photo if preview is None else preview, photo.shape[:2], reference)


def measure_light_preview(
    preview: np.ndarray, frame_hw: tuple[int, int], reference: RigReference | None
) -> Light:
    """``measure_light`` of a frame of size ``frame_hw`` from its colour ``preview`` alone:
    the same Light, before the frame itself is decoded (the frame is needed only from
    refining the corners on)."""
    return _measure(preview, frame_hw, reference)


def _measure(
    source: np.ndarray, frame_hw: tuple[int, int], reference: RigReference | None
) -> Light:
    reference = usable_reference(reference, frame_hw)
    ww, wh = work_size(frame_hw)
    small = shrink(source, (ww, wh))
    lum = linear_luminance(small)
    if reference is not None:
        lit = reference.flat_field_at((wh, ww)) > LIT_IN_REFERENCE
    else:
        lit = lit_mask(lum)
    lightbox, model_kind = lightbox_model(lum, lit, reference)
    trans = lum / np.maximum(lightbox, 1e-5)
    return Light(small, lum, lit, lightbox, trans, model_kind, ww / frame_hw[1])
