"""USB / V4L2 cameras (and video files) through ``cv2.VideoCapture``.

The fallback when there is no Pi camera. Manual exposure goes through V4L2's controls where the
driver allows it: ``CAP_PROP_AUTO_EXPOSURE`` 1 = manual, 3 = aperture priority (automatic), and
``CAP_PROP_EXPOSURE`` in V4L2's unit of 100 µs. Many webcams ignore some of these; ``set()``
returns False then and the still's metadata says the request was not applied, instead of
pretending. Analogue gain maps to ``CAP_PROP_GAIN`` in the driver's own unit. A video file is
accepted as ``device`` too, which is how the real code path is tested without a webcam.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from kiosk.camera.base import (
    DEFAULT_PREVIEW_WIDTH_PX,
    META_ANALOGUE_GAIN,
    META_BACKEND,
    META_EV,
    META_EXPOSURE_US,
    Exposure,
    Still,
    resize_to_width,
)
from kiosk.errors import CameraError

logger = logging.getLogger(__name__)

V4L2_AUTO_EXPOSURE_MANUAL = 1.0
V4L2_AUTO_EXPOSURE_AUTO = 3.0  # aperture priority: the camera picks the exposure time
V4L2_EXPOSURE_UNIT_US = 100.0
# Frames read and dropped after an exposure change so the new setting has reached the sensor.
SETTLE_FRAMES = 3


class OpenCVCamera:
    """A ``cv2.VideoCapture`` device (index or path) or a video file."""

    name = "opencv"

    def __init__(
        self,
        device: int | str = 0,
        resolution: tuple[int, int] | None = None,
        preview_width: int = DEFAULT_PREVIEW_WIDTH_PX,
        settle_frames: int = SETTLE_FRAMES,
    ) -> None:
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        self.device: int | str = device
        self.resolution = resolution  # (width, height)
        self.preview_width = preview_width
        self.settle_frames = settle_frames
        self._capture: cv2.VideoCapture | None = None
        self._lock = threading.Lock()
        self._locked = Exposure()
        self._applied: Exposure | None = None
        self._exposure_settable = False

    def open(self) -> None:
        """Open the device (V4L2 on Linux for an index) and apply the resolution."""
        with self._lock:
            if self._capture is not None:
                return
            if isinstance(self.device, int) and sys.platform.startswith("linux"):
                capture = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
            else:
                capture = cv2.VideoCapture(str(self.device))
            if not capture.isOpened():
                capture.release()
                raise CameraError(
                    f"video device {self.device!r} could not be opened",
                    "check the cable and `v4l2-ctl --list-devices`, that the kiosk user is in "
                    "the 'video' group, and camera.device in the configuration",
                )
            if self.resolution is not None:
                width, height = self.resolution
                capture.set(cv2.CAP_PROP_FRAME_WIDTH, float(width))
                capture.set(cv2.CAP_PROP_FRAME_HEIGHT, float(height))
            self._capture = capture
            self._applied = None
            self._exposure_settable = isinstance(self.device, int) or str(self.device).startswith(
                "/dev/"
            )
        logger.info("opencv camera %s open at %s", self.device, self._size_text())

    def close(self) -> None:
        """Release the device."""
        with self._lock:
            if self._capture is not None:
                self._capture.release()
                self._capture = None

    def _size_text(self) -> str:
        if self._capture is None:
            return "?"
        width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        return f"{width}x{height}"

    def _read_locked(self) -> np.ndarray:
        if self._capture is None:
            raise CameraError("the opencv camera is not open", "call open() first")
        ok, frame = self._capture.read()
        if not ok or frame is None:
            raise CameraError(
                f"video device {self.device!r} returned no frame",
                "the camera was unplugged or the video ended; it is reopened automatically",
            )
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def _apply_locked(self, exposure: Exposure) -> bool:
        """Send ``exposure`` to the driver; True if the driver accepted every setting."""
        if exposure == self._applied:
            return True
        assert self._capture is not None
        ok = True
        if exposure.exposure_us is None:
            ok = self._capture.set(cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_AUTO_EXPOSURE_AUTO) and ok
            if exposure.ev:
                # No EV compensation control in V4L2 through OpenCV: say so, don't fake it.
                ok = False
        else:
            exposure_us = exposure.exposure_us * 2.0**exposure.ev
            ok = self._capture.set(cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_AUTO_EXPOSURE_MANUAL) and ok
            ok = (
                self._capture.set(cv2.CAP_PROP_EXPOSURE, exposure_us / V4L2_EXPOSURE_UNIT_US) and ok
            )
        if exposure.analogue_gain is not None:
            ok = self._capture.set(cv2.CAP_PROP_GAIN, float(exposure.analogue_gain)) and ok
        self._applied = exposure
        for _ in range(self.settle_frames):
            self._capture.grab()
        if not ok:
            logger.warning("opencv camera %s did not accept exposure %s", self.device, exposure)
        return ok

    def preview(self) -> np.ndarray:
        """The next frame, downscaled to the preview width."""
        with self._lock:
            return resize_to_width(self._read_locked(), self.preview_width)

    def capture_still(self, exposure: Exposure | None = None) -> Still:
        """The next frame at full resolution, after applying ``exposure`` if given."""
        requested = exposure if exposure is not None else self._locked
        with self._lock:
            if self._capture is None:
                raise CameraError("the opencv camera is not open", "call open() first")
            applied = self._apply_locked(requested) if self._exposure_settable else False
            image = self._read_locked()
            metadata: dict[str, float | str] = {
                META_BACKEND: self.name,
                META_EV: float(requested.ev),
                "exposure_applied": "yes" if applied else "no",
            }
            reported = self._capture.get(cv2.CAP_PROP_EXPOSURE)
            if requested.exposure_us is not None and applied:
                metadata[META_EXPOSURE_US] = float(requested.exposure_us * 2.0**requested.ev)
            elif reported > 0:
                metadata[META_EXPOSURE_US] = float(reported * V4L2_EXPOSURE_UNIT_US)
            gain = self._capture.get(cv2.CAP_PROP_GAIN)
            if gain > 0:
                metadata[META_ANALOGUE_GAIN] = float(gain)
        return Still(image=image, metadata=metadata, captured_at=time.time())

    def capture_bracket(self, evs: Sequence[float]) -> list[Still]:
        """One still per EV offset from the locked exposure (automatic: not applied)."""
        return [
            self.capture_still(
                Exposure(self._locked.exposure_us, self._locked.analogue_gain, float(ev))
            )
            for ev in evs
        ]

    def lock_exposure(self, exposure: Exposure) -> None:
        """Use ``exposure`` for every later still (V4L2 manual mode when exposure_us is set)."""
        self._locked = exposure
        with self._lock:
            if self._capture is not None and self._exposure_settable:
                self._apply_locked(exposure)

    def autofocus(self) -> bool:
        """UVC autofocus runs continuously in the camera when it has one: nothing to trigger."""
        return True

    def info(self) -> dict[str, str | float]:
        """Backend, device and frame size."""
        return {
            "backend": self.name,
            "model": "V4L2 video device" if self._exposure_settable else "video file",
            "device": str(self.device) if not isinstance(self.device, Path) else self.device.name,
            "resolution": self._size_text(),
        }
