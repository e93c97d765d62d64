"""Raspberry Pi cameras (Camera Module 3, HQ camera) through picamera2 from apt.

The camera runs a small preview configuration (main stream, "RGB888") for detection and the
live page. A still switches to a full-resolution still configuration (``switch_mode``), waits
until the frames carry the requested exposure, takes ``capture_arrays(["main", "lores"])``
(pixels, the ISP's small YUV420 copy of them, ``camera.lores``, and the frame's metadata) and
switches back. A bracket stays in the still mode for all its
exposures. picamera2's "RGB888" arrays are in B, G, R byte order: they are flipped to RGB here.

Manual exposure is libcamera's controls: ``AeEnable`` off with ``ExposureTime`` (µs) and
``AnalogueGain``, ``AwbEnable`` off with ``ColourGains`` (red, blue). Locked controls are also
put in both configurations, because a mode switch restarts the camera with the configuration's
controls. The preview configuration caps the frame duration (so exposures beyond ~83 ms only
apply to stills). Cameras with ``AfMode`` among their controls (Camera Module 3) get an
``autofocus_cycle()`` before each still, unless disabled.

picamera2 is imported when the camera is opened, so this module imports anywhere; without it
``open()`` raises CameraError saying how to install it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from kiosk.camera.base import (
    META_ANALOGUE_GAIN,
    META_BACKEND,
    META_EV,
    META_EXPOSURE_US,
    Exposure,
    Still,
)
from kiosk.camera.lores import lores_size, yuv420_to_rgb
from kiosk.errors import CameraError

logger = logging.getLogger(__name__)

DEFAULT_PREVIEW_SIZE_PX = (640, 480)  # (width, height)
# Frames inspected, at most, for the requested exposure to show up in the metadata.
SETTLE_MAX_FRAMES = 12
EXPOSURE_MATCH_TOLERANCE = 0.05  # relative
GAIN_MAX = 16.0
INSTALL_FIX = (
    "install python3-picamera2 with apt and create the venv with --system-site-packages "
    "(python3 -m venv --system-site-packages .venv)"
)


class Picamera2Camera:
    """A Pi camera: preview stream for detection, still mode for photographs."""

    name = "picamera2"

    def __init__(
        self,
        device: int | str = 0,
        resolution: tuple[int, int] | None = None,
        preview_size: tuple[int, int] = DEFAULT_PREVIEW_SIZE_PX,
        autofocus_before_still: bool = True,
        tuning: str | None = None,
    ) -> None:
        self.camera_num = int(device)
        self.resolution = resolution  # (width, height); None = sensor resolution
        self.preview_size = preview_size
        self.autofocus_before_still = autofocus_before_still
        self.tuning = tuning
        self._cam: Any = None
        self._lock = threading.RLock()
        self._locked_controls: dict[str, Any] = {}
        self._locked = Exposure()
        self._preview_config: Any = None
        self._still_config: Any = None

    # -- lifecycle -----------------------------------------------------------------------
    def open(self) -> None:
        """Acquire the camera, build both configurations and start the preview stream."""
        with self._lock:
            if self._cam is not None:
                return
            try:
                from picamera2 import Picamera2
            except ImportError as exc:
                raise CameraError("picamera2 is not installed", INSTALL_FIX) from exc
            try:
                cam = Picamera2(self.camera_num, tuning=self.tuning)
            except (RuntimeError, IndexError) as exc:
                raise CameraError(
                    f"Pi camera {self.camera_num} could not be opened: {exc}",
                    "check the ribbon cable and `rpicam-hello --list-cameras`, and that no other "
                    "program is using the camera",
                ) from exc
            self._cam = cam
            try:
                self._build_configs()
                cam.configure(self._preview_config)
                cam.start()
            except Exception as exc:
                self._cam = None
                cam.close()
                raise CameraError(
                    f"Pi camera {self.camera_num} could not be configured: {exc}",
                    "check camera.resolution against the sensor's modes (`rpicam-hello "
                    "--list-cameras`)",
                ) from exc
            if self._locked_controls:
                cam.set_controls(self._locked_controls)
        logger.info("picamera2 camera %d open: %s", self.camera_num, self.info())

    def close(self) -> None:
        """Stop and release the camera."""
        with self._lock:
            cam, self._cam = self._cam, None
            if cam is not None:
                cam.close()

    def _require(self) -> Any:
        if self._cam is None:
            raise CameraError("the Pi camera is not open", "call open() first")
        return self._cam

    def _build_configs(self) -> None:
        cam = self._require()
        still_size = tuple(self.resolution or cam.sensor_resolution)
        self._preview_config = cam.create_preview_configuration(
            main={"size": tuple(self.preview_size), "format": "RGB888"},
            controls=dict(self._locked_controls),
        )
        self._still_config = cam.create_still_configuration(
            main={"size": still_size, "format": "RGB888"},
            lores={"size": lores_size(still_size), "format": "YUV420"},
            controls=dict(self._locked_controls),
        )

    @property
    def has_autofocus(self) -> bool:
        """True for cameras with a focus motor (Camera Module 3)."""
        cam = self._require()
        return "AfMode" in cam.camera_controls

    # -- exposure ------------------------------------------------------------------------
    def _current_metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = self._require().capture_metadata()
        return metadata

    def _resolve(self, exposure: Exposure) -> tuple[int, float] | None:
        """Manual (exposure_us, gain) for ``exposure``; None = automatic with EV compensation.

        Automatic fields with a non-zero EV are resolved from the running AE, so a bracket is
        made of fixed exposures instead of AE guesses.
        """
        if exposure.exposure_us is None and exposure.analogue_gain is None and not exposure.ev:
            return None
        metadata = self._current_metadata()
        exposure_us = exposure.exposure_us or int(metadata["ExposureTime"])
        gain = exposure.analogue_gain or float(metadata["AnalogueGain"])
        total = exposure_us * gain * 2.0**exposure.ev
        max_us = self._max_exposure_us()
        # Longer time first (no extra noise), gain only for what the time cannot give.
        new_us = min(total / gain, max_us)
        new_gain = min(max(total / new_us, 1.0), GAIN_MAX)
        return max(1, round(new_us)), float(new_gain)

    def _max_exposure_us(self) -> float:
        limits = self._require().camera_controls.get("ExposureTime")
        if limits and limits[1]:
            return float(limits[1])
        return 1_000_000.0

    def _manual_controls(self, exposure_us: int, gain: float) -> dict[str, Any]:
        controls: dict[str, Any] = {
            "AeEnable": False,
            "ExposureTime": int(exposure_us),
            "AnalogueGain": float(gain),
        }
        for key in ("AwbEnable", "ColourGains"):
            if key in self._locked_controls:
                controls[key] = self._locked_controls[key]
        return controls

    def _wait_for_exposure(self, exposure_us: int, gain: float) -> dict[str, Any]:
        """Metadata of the first frame that carries the requested exposure (or the last seen)."""
        metadata: dict[str, Any] = {}
        for _ in range(SETTLE_MAX_FRAMES):
            metadata = self._current_metadata()
            got_us = float(metadata.get("ExposureTime", 0))
            got_gain = float(metadata.get("AnalogueGain", 0.0))
            if (
                abs(got_us - exposure_us) <= EXPOSURE_MATCH_TOLERANCE * exposure_us
                and abs(got_gain - gain) <= EXPOSURE_MATCH_TOLERANCE * gain
            ):
                return metadata
        logger.warning(
            "picamera2: exposure %d us x%.2f not reached after %d frames (last %s us x%s)",
            exposure_us,
            gain,
            SETTLE_MAX_FRAMES,
            metadata.get("ExposureTime"),
            metadata.get("AnalogueGain"),
        )
        return metadata

    def lock_exposure(self, exposure: Exposure) -> None:
        """Turn AE and AWB off and fix exposure, gain and colour gains for all later frames.

        ``None`` fields take the values the automatic controls have converged to now.
        """
        with self._lock:
            cam = self._require()
            metadata = self._current_metadata()
            exposure_us = exposure.exposure_us or int(metadata["ExposureTime"])
            gain = exposure.analogue_gain or float(metadata["AnalogueGain"])
            exposure_us = max(1, round(exposure_us * 2.0**exposure.ev))
            controls: dict[str, Any] = {
                "AeEnable": False,
                "ExposureTime": int(exposure_us),
                "AnalogueGain": float(gain),
            }
            colour_gains = metadata.get("ColourGains")
            if colour_gains is not None:
                controls["AwbEnable"] = False
                controls["ColourGains"] = (float(colour_gains[0]), float(colour_gains[1]))
            self._locked_controls = controls
            self._locked = Exposure(int(exposure_us), float(gain))
            cam.set_controls(controls)
            was_running = cam.started
            if was_running:
                cam.stop()
            self._build_configs()
            cam.configure(self._preview_config)
            if was_running:
                cam.start()
        logger.info("picamera2 exposure locked: %s", controls)

    # -- frames --------------------------------------------------------------------------
    def preview(self) -> np.ndarray:
        """The next preview-stream frame as RGB."""
        with self._lock:
            frame = self._require().capture_array("main")
        return _bgr_to_rgb(frame)

    def autofocus(self) -> bool:
        """Run one AF cycle on cameras with autofocus; True if focused or no AF."""
        with self._lock:
            if not self.has_autofocus:
                return True
            focused = bool(self._require().autofocus_cycle())
        if not focused:
            logger.warning("picamera2: autofocus cycle did not converge")
        return focused

    def capture_still(self, exposure: Exposure | None = None) -> Still:
        """A full-resolution still at ``exposure`` (default: the locked exposure)."""
        return self._capture([exposure if exposure is not None else self._locked])[0]

    def capture_bracket(self, evs: Sequence[float]) -> list[Still]:
        """Stills at each EV offset from the locked (or current automatic) exposure."""
        base = self._locked
        return self._capture([Exposure(base.exposure_us, base.analogue_gain, ev) for ev in evs])

    def _capture(self, exposures: Sequence[Exposure]) -> list[Still]:
        with self._lock:
            cam = self._require()
            if self.autofocus_before_still:
                self.autofocus()
            resolved = [self._resolve(e) for e in exposures]
            stills: list[Still] = []
            cam.switch_mode(self._still_config)
            try:
                for exposure, manual in zip(exposures, resolved, strict=True):
                    if manual is not None:
                        cam.set_controls(self._manual_controls(*manual))
                        self._wait_for_exposure(*manual)
                    elif self._locked_controls:
                        cam.set_controls(self._locked_controls)
                    arrays, metadata = cam.capture_arrays(["main", "lores"])
                    stills.append(
                        Still(
                            image=_bgr_to_rgb(arrays[0]),
                            metadata=self._still_metadata(metadata, exposure.ev),
                            captured_at=time.time(),
                            preview=self._lores_rgb(arrays[1]),
                        )
                    )
            finally:
                cam.switch_mode(self._preview_config)
                if self._locked_controls:
                    cam.set_controls(self._locked_controls)
        return stills

    def _lores_rgb(self, array: np.ndarray) -> np.ndarray | None:
        """The still's lores copy as RGB; None (logged) when it cannot be read. Its size is
        the one the running configuration holds (picamera2 may have adjusted the asked one)."""
        try:
            running = getattr(self._require(), "camera_config", None) or self._still_config
            size = tuple(running["lores"]["size"])
            return yuv420_to_rgb(array, (int(size[0]), int(size[1])))
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("Cannot read the still's lores copy (%s): the frame is shrunk", exc)
            return None

    def _still_metadata(self, metadata: dict[str, Any], ev: float) -> dict[str, float | str]:
        out: dict[str, float | str] = {META_BACKEND: self.name, META_EV: float(ev)}
        if "ExposureTime" in metadata:
            out[META_EXPOSURE_US] = float(metadata["ExposureTime"])
        if "AnalogueGain" in metadata:
            out[META_ANALOGUE_GAIN] = float(metadata["AnalogueGain"])
        for key, name in (("Lux", "lux"), ("LensPosition", "lens_position")):
            if key in metadata:
                out[name] = float(metadata[key])
        if "ColourGains" in metadata:
            red, blue = metadata["ColourGains"]
            out["colour_gains"] = f"{float(red):.4f},{float(blue):.4f}"
        return out

    def info(self) -> dict[str, str | float]:
        """Model, still resolution, autofocus."""
        with self._lock:
            cam = self._cam
            if cam is None:
                return {"backend": self.name, "model": "closed", "resolution": "?"}
            width, height = self.resolution or cam.sensor_resolution
            return {
                "backend": self.name,
                "model": str(cam.camera_properties.get("Model", "unknown")),
                "resolution": f"{width}x{height}",
                "autofocus": "yes" if self.has_autofocus else "no",
            }


def _bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """picamera2 "RGB888" (B, G, R bytes; XRGB8888 adds a 4th) -> contiguous RGB."""
    return np.ascontiguousarray(frame[:, :, 2::-1])
