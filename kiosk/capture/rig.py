"""The rig reference: what the empty lightbox looks like to this camera at fixed exposure.

A fixed rig can learn its lightbox. With the film removed, a few frames at the exposure used for
films are averaged and linearised; the result is a flat field (the lightbox luminance at every
point, reduced resolution) and the quadrilateral of the lit panel. ``rectify`` divides the film
photo by the flat field to measure transmittance, hence optical density, instead of guessing.

Assumption behind the linearisation: the camera delivers sRGB-encoded 8-bit frames with a fixed
(manual) exposure and white balance, so the inverse sRGB transfer function recovers values
proportional to scene luminance. picamera2 with a fixed ``ExposureTime``/``AnalogueGain`` and
the default tuning is close to that; a camera with a strong local tone mapping (HDR) is not,
and must have it switched off while the kiosk runs.

Files (in the data directory): ``rig-reference.npz`` (arrays) and ``rig-reference.json``
(metadata, written last, so a reference exists only once both are complete).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from kiosk.atomic import atomic_write_bytes
from kiosk.camera.base import META_ANALOGUE_GAIN, META_EXPOSURE_US, Camera, Exposure
from kiosk.errors import CameraError, KioskError
from kiosk.imaging.colour import srgb_lut_linear
from kiosk.imaging.geometry import order_corners
from kiosk.imaging.surface import fit_smooth_surface

logger = logging.getLogger(__name__)

NPZ_NAME = "rig-reference.npz"
JSON_NAME = "rig-reference.json"
FLAT_FIELD_LONG_SIDE_PX = 640
SCHEMA_VERSION = 1
# calibrate_rig: lower the exposure until the empty lightbox does not clip
RIG_CLIP_PERCENTILE = 99.9
RIG_MAX_LEVEL = 240
RIG_MAX_STEPS = 8

_CLIPPED_LEVEL = 250  # 8-bit value treated as clipped
_MAX_CLIPPED_FRACTION = 0.02  # of the lit area
_MIN_LIT_LINEAR = 0.08  # 99th percentile linear luminance below this (sRGB ~80/255): too dark
_FILM_RATIO = 0.75  # a pixel darker than 75% of the smooth panel model is "not lightbox"
_EDGE_LOG_STEP = 0.08  # |grad log L| per pixel at ~160 px: a film edge, not panel shading
_MIN_EDGE_FRACTION = 0.005  # of the lit area
_MAX_DARK_FRACTION = 0.04  # of the lit area, before we call it "a film is present"


def reduced_size(
    image_size: tuple[int, int], long_side: int = FLAT_FIELD_LONG_SIDE_PX
) -> tuple[int, int]:
    """(h, w) with the long side ``long_side`` and the aspect ratio of ``image_size``."""
    h, w = image_size
    s = long_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def find_lit_quad(
    lum: np.ndarray, image_size: tuple[int, int]
) -> tuple[np.ndarray | None, np.ndarray]:
    """The lit panel in a reduced-resolution luminance image.

    Returns (quad in full-resolution pixels or None when the panel fills the frame, lit mask at
    the reduced resolution).
    """
    h, w = lum.shape
    # the empty panel covers most of the view, so the median is a panel pixel; the room is far
    # darker (fall-off and vignetting rarely take the panel below half its median)
    binary = (lum > 0.45 * float(np.median(lum))).astype(np.uint8)
    full = np.ones((h, w), bool)
    if (binary == 0).mean() < 0.01:
        return None, full  # no dark surround: the panel fills the view
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=4)
    if n <= 1:
        return None, full
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    comp = (labels == biggest).astype(np.uint8)
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))
    filled = np.zeros_like(comp)
    cv2.fillConvexPoly(filled, hull, 1)
    approx = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True).reshape(-1, 2)
    if len(approx) != 4:
        rect = cv2.minAreaRect(hull)
        approx = cv2.boxPoints(rect)
    quad = order_corners(approx.astype(np.float32))
    sx, sy = image_size[1] / w, image_size[0] / h
    quad = (quad + 0.5) * np.array([sx, sy], np.float32) - 0.5
    return quad.astype(np.float32), filled.astype(bool)


@dataclass
class RigReference:
    """Flat field and lit region of the empty lightbox, at one camera exposure."""

    flat_field: np.ndarray  # float32 (h, w) linear luminance, long side ~640, 99th pct = 1
    lightbox_quad: np.ndarray | None  # (4, 2) float32 lit panel, full-resolution pixels
    image_size: tuple[int, int]  # (H, W) of the full-resolution stills
    exposure: dict[str, float] = field(default_factory=dict)  # camera settings, free-form
    created_at: str = ""  # ISO 8601 UTC

    @classmethod
    def from_empty_frames(
        cls, frames: list[np.ndarray], exposure: dict[str, float]
    ) -> RigReference:
        """Average RGB uint8 frames of the empty lightbox into a reference.

        Raises CameraError when the frames are unusable: different sizes, over-exposed
        (clipped), too dark, or something dark (a film, a hand) on the panel.
        """
        if not frames:
            raise CameraError("No frames given for the rig reference", "Capture 3-8 frames")
        shape = frames[0].shape
        if len(shape) != 3 or shape[2] != 3:
            raise CameraError(
                f"Rig reference frames must be RGB (H, W, 3), got shape {shape}",
                "Capture colour frames from the kiosk camera",
            )
        if any(f.shape != shape for f in frames):
            raise CameraError(
                "Rig reference frames have different sizes",
                "Capture all frames at the same resolution",
            )
        image_size = (int(shape[0]), int(shape[1]))
        rh, rw = reduced_size(image_size)
        lut = srgb_lut_linear()
        acc = np.zeros((rh, rw), np.float32)
        clipped = np.zeros((rh, rw), np.float32)
        for f in frames:
            small = cv2.resize(f, (rw, rh), interpolation=cv2.INTER_AREA)
            lin = lut[small]
            acc += lin[..., 0] * 0.2126 + lin[..., 1] * 0.7152 + lin[..., 2] * 0.0722
            clipped += (small.max(axis=2) >= _CLIPPED_LEVEL).astype(np.float32)
        lum = acc / len(frames)
        clipped /= len(frames)
        quad, lit = find_lit_quad(lum, image_size)
        lit_core = cv2.erode(lit.astype(np.uint8), np.ones((21, 21), np.uint8)).astype(bool)
        if lit_core.sum() < 0.05 * lum.size:
            lit_core = lit
        clipped_fraction = float(clipped[lit_core].mean())
        if clipped_fraction > _MAX_CLIPPED_FRACTION:
            raise CameraError(
                f"The empty lightbox is over-exposed: {clipped_fraction:.0%} of it is clipped",
                "Lower the exposure time or gain until the lightbox is not pure white, then "
                "calibrate again",
            )
        p99 = float(np.percentile(lum[lit_core], 99))
        if p99 < _MIN_LIT_LINEAR:
            raise CameraError(
                f"The lightbox looks too dark (99th percentile linear luminance {p99:.3f})",
                "Switch the lightbox on, remove anything covering it, or raise the exposure",
            )
        # the film check needs no detail: fit and compare at 1/4 of the flat-field size
        small_size = (max(8, rw // 4), max(8, rh // 4))
        lum_s = cv2.resize(lum, small_size, interpolation=cv2.INTER_AREA)
        core_u8 = cv2.resize(lit_core.astype(np.uint8), small_size, interpolation=cv2.INTER_NEAREST)
        core_s: np.ndarray = np.asarray(core_u8) > 0
        surface = fit_smooth_surface(lum_s, core_s)
        dark = core_s & (lum_s < _FILM_RATIO * surface)
        dark_fraction = float(dark.sum()) / max(1, int(core_s.sum()))
        # a film (or a hand) also has sharp edges; shading of an empty panel does not
        log_l = np.log(np.maximum(lum_s, 1e-4)).astype(np.float32)
        grad = np.hypot(cv2.Sobel(log_l, cv2.CV_32F, 1, 0), cv2.Sobel(log_l, cv2.CV_32F, 0, 1)) / 8
        edge_fraction = float((grad[core_s] > _EDGE_LOG_STEP).mean()) if core_s.any() else 0.0
        if dark_fraction > _MAX_DARK_FRACTION and edge_fraction > _MIN_EDGE_FRACTION:
            raise CameraError(
                f"Something is on the lightbox ({dark_fraction:.0%} of it is darker than the "
                "panel around it)",
                "Remove every film and keep hands away from the lightbox while calibrating",
            )
        flat = (lum / max(p99, 1e-6)).astype(np.float32)
        logger.info(
            "Rig reference from %d frames: %dx%d, p99 linear %.3f, clipped %.4f, quad %s",
            len(frames),
            image_size[1],
            image_size[0],
            p99,
            clipped_fraction,
            "none (panel fills view)" if quad is None else quad.round(1).tolist(),
        )
        return cls(
            flat_field=flat,
            lightbox_quad=quad,
            image_size=image_size,
            exposure={str(k): float(v) for k, v in exposure.items()},
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def flat_field_at(self, size: tuple[int, int]) -> np.ndarray:
        """The flat field resized to (h, w) (any resolution of the same framing)."""
        return cv2.resize(self.flat_field, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)

    def save(self, directory: Path) -> Path:
        """Write the reference atomically into ``directory``; returns the JSON path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        npz_path, json_path = directory / NPZ_NAME, directory / JSON_NAME
        quad = (
            np.zeros((0, 2), np.float32)
            if self.lightbox_quad is None
            else np.asarray(self.lightbox_quad, np.float32)
        )
        flat = np.asarray(self.flat_field, np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, flat_field=flat, lightbox_quad=quad)
        atomic_write_bytes(npz_path, buffer.getvalue())
        meta = {
            "schema_version": SCHEMA_VERSION,
            "image_size": list(self.image_size),
            "exposure": self.exposure,
            "created_at": self.created_at,
            "flat_field_shape": list(flat.shape),
            "arrays": NPZ_NAME,
        }
        data = (json.dumps(meta, indent=2) + "\n").encode()
        atomic_write_bytes(json_path, data)
        logger.info("Saved rig reference to %s", json_path)
        return json_path

    @classmethod
    def load(cls, directory: Path) -> RigReference | None:
        """Read the reference from ``directory``; None when none was saved.

        Raises KioskError when the files exist but cannot be trusted.
        """
        directory = Path(directory)
        json_path, npz_path = directory / JSON_NAME, directory / NPZ_NAME
        if not json_path.exists():
            return None
        fix = "Calibrate the rig again with the lightbox empty (`kiosk` rig calibration)"
        try:
            meta = json.loads(json_path.read_text())
            with np.load(npz_path, allow_pickle=False) as arrays:
                flat = np.asarray(arrays["flat_field"], np.float32)
                quad = np.asarray(arrays["lightbox_quad"], np.float32)
            image_size = (int(meta["image_size"][0]), int(meta["image_size"][1]))
            exposure = {str(k): float(v) for k, v in dict(meta.get("exposure", {})).items()}
            created = str(meta.get("created_at", ""))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise KioskError(f"Rig reference in {directory} is unreadable: {exc}", fix) from exc
        if flat.ndim != 2 or flat.size == 0 or not np.isfinite(flat).all():
            raise KioskError(f"Rig reference {npz_path} has an invalid flat field", fix)
        if list(flat.shape) != list(meta.get("flat_field_shape", flat.shape)):
            raise KioskError(f"Rig reference {npz_path} does not match {json_path}", fix)
        if quad.size == 0:
            lightbox_quad = None
        elif quad.shape == (4, 2):
            lightbox_quad = quad
        else:
            raise KioskError(f"Rig reference {npz_path} has an invalid lightbox quad", fix)
        return cls(
            flat_field=flat,
            lightbox_quad=lightbox_quad,
            image_size=image_size,
            exposure=exposure,
            created_at=created,
        )


def calibrate_rig(camera: Camera, frames: int = 5) -> RigReference:
    """Capture the empty lightbox at an exposure that does not clip, lock it, build the reference.

    Starts from the automatic exposure and lowers it a stop at a time until the
    99.9th percentile is below ``RIG_MAX_LEVEL``. Raises CameraError when the lightbox still
    clips at the lowest exposure, or when RigReference finds it dark or covered.
    """
    camera.autofocus()
    still = camera.capture_still(Exposure())
    raw_us = still.metadata.get(META_EXPOSURE_US)
    raw_gain = still.metadata.get(META_ANALOGUE_GAIN)
    base_us = int(raw_us) if isinstance(raw_us, float | int) and raw_us > 0 else None
    base_gain = float(raw_gain) if isinstance(raw_gain, float | int) and raw_gain > 0 else None
    ev = 0.0
    for _ in range(RIG_MAX_STEPS):
        level = float(np.percentile(still.image.max(axis=2), RIG_CLIP_PERCENTILE))
        if level < RIG_MAX_LEVEL:
            break
        ev -= 1.0
        logger.info("rig calibration: lightbox at %.0f/255, trying EV %+.0f", level, ev)
        still = camera.capture_still(Exposure(base_us, base_gain, ev))
    else:
        raise CameraError(
            f"the empty lightbox still clips {RIG_MAX_STEPS} stops below the automatic exposure",
            "dim the lightbox or check that the camera accepts manual exposure",
        )
    exposure = Exposure(base_us, base_gain, ev)
    camera.lock_exposure(exposure)
    images = [camera.capture_still().image for _ in range(max(1, frames))]
    settings: dict[str, float] = {"ev": ev}
    if base_us is not None:
        settings[META_EXPOSURE_US] = base_us * 2.0**ev
    if base_gain is not None:
        settings[META_ANALOGUE_GAIN] = base_gain
    return RigReference.from_empty_frames(images, settings)
