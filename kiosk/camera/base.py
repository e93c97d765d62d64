"""The one camera interface every backend implements, and the factory that picks a backend.

A camera gives two kinds of pictures: small, cheap ``preview()`` frames for film detection and
the live page, and full-resolution ``Still`` photographs with their exposure metadata. Colour
images are RGB uint8 ``(H, W, 3)`` arrays everywhere; a backend converts from BGR at its own
boundary (OpenCV, picamera2's "RGB888").

``Exposure`` fields left at ``None`` mean "automatic"; ``ev`` is a compensation in stops applied
on top of whatever the other fields give (manual or automatic), which is how brackets are asked
for. What this module does not do: it does not decide *which* exposure to use (capture.py does)
and it does not retry a failed camera (capture.AutoCapture does).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from kiosk.errors import CameraError

logger = logging.getLogger(__name__)

BACKENDS: dict[str, tuple[str, str]] = {
    "simulator": ("kiosk.camera.simulator", "SimulatorCamera"),
    "folder": ("kiosk.camera.folder", "FolderCamera"),
    "opencv": ("kiosk.camera.opencv", "OpenCVCamera"),
    "picamera2": ("kiosk.camera.picamera2", "Picamera2Camera"),
}
DEFAULT_PREVIEW_WIDTH_PX = 480

# Metadata keys every backend fills in when it knows them (values are float or str).
META_EXPOSURE_US = "exposure_us"
META_ANALOGUE_GAIN = "analogue_gain"
META_EV = "ev"
META_BACKEND = "backend"


@dataclass(frozen=True)
class Still:
    """One full-resolution photograph: RGB uint8 pixels, what the camera reported, when."""

    image: np.ndarray
    metadata: dict[str, float | str] = field(default_factory=dict)
    captured_at: float = 0.0  # time.time()
    # the same frame's colour at a 2-8x smaller size, made by the camera (``camera.lores``);
    # None when the backend has no such copy
    preview: np.ndarray | None = None


@dataclass(frozen=True)
class Exposure:
    """Requested exposure: ``None`` fields are left to the camera's automatic control.

    ``ev`` is a compensation in stops (exposure multiplied by ``2**ev``) on top of the manual
    values, or of the automatic exposure when they are ``None``.
    """

    exposure_us: int | None = None
    analogue_gain: float | None = None
    ev: float = 0.0

    @property
    def is_manual(self) -> bool:
        """True when the exposure time is fixed by the caller."""
        return self.exposure_us is not None


@runtime_checkable
class Camera(Protocol):
    """What capture.py needs from a camera; every backend implements exactly this."""

    name: str

    def open(self) -> None:
        """Acquire the device; calling it on an open camera does nothing."""

    def close(self) -> None:
        """Release the device; calling it on a closed camera does nothing."""

    def preview(self) -> np.ndarray:
        """A small RGB frame (about 320-640 px wide) for detection and the live page."""

    def capture_still(self, exposure: Exposure | None = None) -> Still:
        """A full-resolution still; ``None`` uses the locked (or automatic) exposure."""

    def capture_bracket(self, evs: Sequence[float]) -> list[Still]:
        """One still per EV offset from the current (locked or automatic) exposure."""

    def lock_exposure(self, exposure: Exposure) -> None:
        """Fix exposure, gain and white balance for all later frames (after rig set-up)."""

    def autofocus(self) -> bool:
        """Run an AF cycle where the camera has one; True if focused or not applicable."""

    def info(self) -> dict[str, str | float]:
        """Model, resolution and backend name, for the status page and logs."""


def resize_to_width(image: np.ndarray, width_px: int) -> np.ndarray:
    """Downscale ``image`` to ``width_px`` wide keeping the aspect ratio (never upscales)."""
    h, w = image.shape[:2]
    if w <= width_px:
        return image
    height_px = max(1, round(h * width_px / w))
    return cv2.resize(image, (width_px, height_px), interpolation=cv2.INTER_AREA)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Grey (H, W) or RGB(A) uint8 pixels as contiguous RGB (H, W, 3)."""
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    if image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return np.ascontiguousarray(image)


def create_camera(backend: str, **options: Any) -> Camera:
    """Build the named backend without opening it (AutoCapture opens and reopens it).

    Raises CameraError for an unknown backend, unknown options, or a backend whose library is
    missing (e.g. picamera2 off the Pi).
    """
    if backend not in BACKENDS:
        raise CameraError(
            f"unknown camera backend {backend!r}",
            f"use one of: {', '.join(sorted(BACKENDS))}",
        )
    module_name, class_name = BACKENDS[backend]
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    try:
        camera: Camera = cls(**options)
    except TypeError as exc:
        raise CameraError(
            f"invalid options for the {backend} camera: {exc}",
            "check the [camera] section of the configuration",
        ) from exc
    return camera


def open_camera(backend: str, **options: Any) -> Camera:
    """Build the named backend and open it: ``"simulator" | "folder" | "opencv" | "picamera2"``.

    Raises CameraError with what to do when the backend or its device is unavailable.
    """
    camera = create_camera(backend, **options)
    camera.open()
    logger.info("camera %s opened: %s", backend, camera.info())
    return camera
