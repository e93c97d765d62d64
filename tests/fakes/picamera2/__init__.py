"""A fake ``picamera2`` package for tests off the Raspberry Pi.

It mimics the parts of the real ``picamera2.Picamera2`` API the kiosk uses, with the real names,
signatures, defaults and failure modes (read from raspberrypi/picamera2, picamera2/picamera2.py):
``create_preview_configuration`` / ``create_still_configuration`` return plain dicts whose
streams accept only "format" and "size" (ValueError otherwise) and whose lores stream must be
YUV; ``configure`` refuses a started camera; ``set_controls`` applies to later frames (here after
``CONTROL_LATENCY_FRAMES`` frames, like the real pipeline); ``capture_array``,
``capture_arrays`` (arrays + metadata), ``capture_metadata``, ``switch_mode``,
``switch_mode_and_capture_array``, ``autofocus_cycle`` and ``close``. Pixel formats follow the
picamera2 manual's table: "RGB888" arrays are B, G, R per pixel, "BGR888" are R, G, B,
"XBGR8888" R, G, B, 255 and "XRGB8888" B, G, R, 255.

Frames come from ``Picamera2.scene(size_hw, exposure_scale) -> RGB uint8`` (replace it in a test,
e.g. with the simulator); the default is a synthetic scene with a red left half and a blue right
half so channel order mistakes show. Every call is recorded in ``calls`` and every
``set_controls`` argument in ``set_controls_calls``.

Inject with ``monkeypatch.setitem(sys.modules, "picamera2", this_module)``; configure the fake
hardware with ``FAKE_CAMERAS`` (one dict per attached camera).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

AUTO_EXPOSURE_US = 20_000
AUTO_GAIN = 1.0
AWB_GAINS = (1.8, 1.5)
CONTROL_LATENCY_FRAMES = 2

# libcamera enum values (controls.AfModeEnum / AfTriggerEnum / AfStateEnum)
AF_MODE_AUTO = 1
AF_TRIGGER_START = 0
AF_STATE_FOCUSED = 2

CAMERA_MODULE_3: dict[str, Any] = {"Model": "imx708", "resolution": (4608, 2592), "af": True}
HQ_CAMERA: dict[str, Any] = {"Model": "imx477", "resolution": (4056, 3040), "af": False}

FAKE_CAMERAS: list[dict[str, Any]] = [CAMERA_MODULE_3]

_STREAM_KEYS = ("format", "size")
_YUV = ("YUV420", "YVU420", "NV12", "NV21", "YUYV", "UYVY")
_RGB = ("RGB888", "BGR888", "XBGR8888", "XRGB8888")


def default_scene(size_hw: tuple[int, int], exposure_scale: float) -> np.ndarray:
    """Red left half, blue right half, a grey ramp down the rows; brightness ~ exposure."""
    h, w = size_hw
    ramp = np.linspace(0.2, 0.6, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    rgb = np.zeros((h, w, 3), np.float32)
    rgb[:, : w // 2, 0] = 0.9
    rgb[:, w // 2 :, 2] = 0.9
    rgb[..., 1] = ramp
    rgb = np.clip(rgb * exposure_scale, 0.0, 1.0) ** (1 / 2.2)
    return np.round(rgb * 255).astype(np.uint8)


class Picamera2:
    """Fake of ``picamera2.Picamera2`` (see the module docstring for what is mimicked)."""

    scene: ClassVar[Callable[[tuple[int, int], float], np.ndarray]] = staticmethod(default_scene)
    instances: ClassVar[list[Picamera2]] = []

    def __init__(self, camera_num: int = 0, verbose_console: Any = None, tuning: Any = None):
        if not FAKE_CAMERAS:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        if camera_num >= len(FAKE_CAMERAS):
            raise IndexError("list index out of range")
        spec = FAKE_CAMERAS[camera_num]
        self.camera_idx = camera_num
        self.tuning = tuning
        self.sensor_resolution: tuple[int, int] = tuple(spec["resolution"])
        self.camera_properties: dict[str, Any] = {
            "Model": spec["Model"],
            "PixelArraySize": self.sensor_resolution,
        }
        controls: dict[str, Any] = {
            "AeEnable": (False, True, True),
            "ExposureTime": (1, 66_666, AUTO_EXPOSURE_US),
            "AnalogueGain": (1.0, 16.0, 1.0),
            "AwbEnable": (False, True, True),
            "ColourGains": (0.0, 32.0, None),
            "ExposureValue": (-8.0, 8.0, 0.0),
            "FrameDurationLimits": (33_333, 120_000_000, 33_333),
            "NoiseReductionMode": (0, 4, 0),
        }
        if spec.get("af"):
            controls |= {
                "AfMode": (0, 2, 0),
                "AfTrigger": (0, 1, 0),
                "LensPosition": (0.0, 15.0, 1.0),
            }
        self.camera_controls = controls
        self.is_open = True
        self.started = False
        self.camera_config: dict[str, Any] | None = None
        self.calls: list[str] = []
        self.set_controls_calls: list[dict[str, Any]] = []
        self.configure_calls: list[dict[str, Any]] = []
        self.af_cycles = 0
        self._controls: dict[str, Any] = {}
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._frame = 0
        Picamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return [
            {"Model": c["Model"], "Location": 2, "Rotation": 0, "Id": f"/fake/{i}", "Num": i}
            for i, c in enumerate(FAKE_CAMERAS)
        ]

    # -- configurations ------------------------------------------------------------------
    @staticmethod
    def _stream(initial: dict[str, Any], updates: dict[str, Any] | None) -> dict[str, Any] | None:
        if updates is None:
            return None
        for key, value in updates.items():
            if key not in _STREAM_KEYS:
                raise ValueError(
                    f"Bad key {key!r}: valid stream configuration keys are {_STREAM_KEYS}"
                )
            initial[key] = value
        return initial

    def _config(
        self,
        use_case: str,
        main: dict[str, Any],
        default_main: dict[str, Any],
        lores: dict[str, Any] | None,
        buffer_count: int,
        controls: dict[str, Any],
        display: str | None,
        encode: str | None,
    ) -> dict[str, Any]:
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        main_cfg = self._stream(dict(default_main), main)
        assert main_cfg is not None
        lores_cfg = self._stream({"format": "YUV420", "size": main_cfg["size"]}, lores)
        return {
            "use_case": use_case,
            "transform": None,
            "colour_space": None,
            "buffer_count": buffer_count,
            "queue": True,
            "main": main_cfg,
            "lores": lores_cfg,
            "raw": {"format": "SRGGB10_CSI2P", "size": main_cfg["size"]},
            "controls": dict(controls),
            "display": display,
            "encode": encode,
        }

    def create_preview_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 4,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
    ) -> dict[str, Any]:
        self.calls.append("create_preview_configuration")
        return self._config(
            "preview",
            main or {},
            {"format": "XBGR8888", "size": (640, 480)},
            lores,
            buffer_count,
            controls or {},
            display,
            encode,
        )

    def create_still_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 1,
        controls: dict[str, Any] | None = None,
        display: str | None = None,
        encode: str | None = None,
        queue: bool = True,
    ) -> dict[str, Any]:
        self.calls.append("create_still_configuration")
        return self._config(
            "still",
            main or {},
            {"format": "BGR888", "size": self.sensor_resolution},
            lores,
            buffer_count,
            controls or {},
            display,
            encode,
        )

    def _check(self, config: dict[str, Any]) -> None:
        for name in ("main", "lores"):
            stream = config.get(name)
            if stream is None:
                continue
            fmt = stream["format"]
            if name == "lores" and fmt not in _YUV:
                raise RuntimeError("lores stream must be YUV")
            if fmt not in _YUV + _RGB:
                raise RuntimeError(f"Bad format {fmt} in stream {name}")
            size = stream["size"]
            if not isinstance(size, tuple) or len(size) != 2:
                raise RuntimeError(f"size in {name} stream should be (width, height)")
            if size[0] % 2 or size[1] % 2:
                raise RuntimeError("width and height should be even")

    # -- lifecycle -----------------------------------------------------------------------
    def configure(self, camera_config: dict[str, Any] | str = "preview") -> None:
        self.calls.append("configure")
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if isinstance(camera_config, str):
            maker = (
                self.create_still_configuration
                if camera_config == "still"
                else self.create_preview_configuration
            )
            camera_config = maker()
        self._check(camera_config)
        self.camera_config = copy.deepcopy(camera_config)
        self.configure_calls.append(self.camera_config)
        self._controls |= dict(camera_config.get("controls", {}))
        self._pending.clear()

    def start(
        self, config: dict[str, Any] | None = None, show_preview: bool | None = False
    ) -> None:
        self.calls.append("start")
        if self.camera_config is None and config is None:
            config = self.create_preview_configuration()
        if config is not None:
            self.configure(config)
        self.started = True

    def stop(self) -> None:
        self.calls.append("stop")
        self.started = False

    def close(self) -> None:
        self.calls.append("close")
        if not self.is_open:
            return
        self.stop()
        self.is_open = False
        self.camera_config = None

    def set_controls(self, controls: dict[str, Any]) -> None:
        self.calls.append("set_controls")
        self.set_controls_calls.append(dict(controls))
        self._pending.append((self._frame + CONTROL_LATENCY_FRAMES, dict(controls)))

    def switch_mode(
        self, camera_config: dict[str, Any], wait: bool | None = None, signal_function: Any = None
    ) -> dict[str, Any]:
        self.calls.append("switch_mode")
        self.stop()
        self.configure(camera_config)
        self.start()
        assert self.camera_config is not None
        return self.camera_config

    # -- frames --------------------------------------------------------------------------
    def _next_frame(self) -> dict[str, Any]:
        if not self.is_open or not self.started or self.camera_config is None:
            raise RuntimeError("Camera is not running")
        self._frame += 1
        due = [c for f, c in self._pending if f <= self._frame]
        self._pending = [(f, c) for f, c in self._pending if f > self._frame]
        for controls in due:
            self._controls |= controls
        c = self._controls
        if c.get("AeEnable", True) is False and "ExposureTime" in c:
            exposure_us = int(c["ExposureTime"])
            gain = float(c.get("AnalogueGain", AUTO_GAIN))
        else:
            exposure_us = round(AUTO_EXPOSURE_US * 2.0 ** float(c.get("ExposureValue", 0.0)))
            gain = AUTO_GAIN
        colour = tuple(c["ColourGains"]) if c.get("AwbEnable", True) is False else AWB_GAINS
        metadata: dict[str, Any] = {
            "ExposureTime": exposure_us,
            "AnalogueGain": gain,
            "ColourGains": colour,
            "Lux": 400.0,
            "SensorTimestamp": self._frame * 33_333_000,
        }
        if "AfMode" in self.camera_controls:
            metadata["AfState"] = AF_STATE_FOCUSED if self.af_cycles else 0
            metadata["LensPosition"] = 2.5
        return metadata

    def _array(self, name: str, metadata: dict[str, Any]) -> np.ndarray:
        assert self.camera_config is not None
        stream = self.camera_config.get(name)
        if stream is None:
            raise RuntimeError(f"Stream {name!r} is not configured")
        width, height = stream["size"]
        scale = metadata["ExposureTime"] * metadata["AnalogueGain"] / AUTO_EXPOSURE_US
        rgb = np.asarray(type(self).scene((height, width), scale), dtype=np.uint8)
        fmt = stream["format"]
        alpha = np.full((height, width, 1), 255, np.uint8)
        if fmt == "RGB888":
            return np.ascontiguousarray(rgb[:, :, ::-1])
        if fmt == "BGR888":
            return rgb
        if fmt == "XBGR8888":
            return np.concatenate([rgb, alpha], axis=2)
        if fmt == "XRGB8888":
            return np.concatenate([rgb[:, :, ::-1], alpha], axis=2)
        if fmt == "YUV420":
            return _yuv420(rgb)
        raise RuntimeError(f"the fake cannot make {fmt} arrays")

    def capture_metadata(
        self, wait: bool | None = None, signal_function: Any = None
    ) -> dict[str, Any]:
        self.calls.append("capture_metadata")
        return self._next_frame()

    def capture_array(
        self, name: str = "main", wait: bool | None = None, signal_function: Any = None
    ) -> np.ndarray:
        self.calls.append("capture_array")
        return self._array(name, self._next_frame())

    def capture_arrays(
        self,
        names: list[str] | None = None,
        wait: bool | None = None,
        signal_function: Any = None,
    ) -> tuple[list[np.ndarray], dict[str, Any]]:
        self.calls.append("capture_arrays")
        metadata = self._next_frame()
        return [self._array(n, metadata) for n in (names or ["main"])], metadata

    def switch_mode_and_capture_array(
        self,
        camera_config: dict[str, Any],
        name: str = "main",
        wait: bool | None = None,
        signal_function: Any = None,
    ) -> np.ndarray:
        self.calls.append("switch_mode_and_capture_array")
        previous = self.camera_config
        self.switch_mode(camera_config)
        array = self._array(name, self._next_frame())
        assert previous is not None
        self.switch_mode(previous)
        return array

    def autofocus_cycle(self, wait: bool | None = None, signal_function: Any = None) -> bool:
        self.calls.append("autofocus_cycle")
        self.set_controls({"AfMode": AF_MODE_AUTO, "AfTrigger": AF_TRIGGER_START})
        if "AfMode" not in self.camera_controls:
            raise KeyError("AfState")
        self.af_cycles += 1
        return True


def _yuv420(rgb: np.ndarray) -> np.ndarray:
    """As picamera2 returns "YUV420": full-range BT.601 (sYCC) planes Y, U, V, chroma averaged
    over 2x2 pixels, each row padded to a stride that is a multiple of 64 bytes, the whole as
    an array of (height * 3 // 2, stride) bytes (two chroma rows per array row)."""
    h, w = rgb.shape[:2]
    stride = -(-w // 64) * 64
    f = rgb.astype(np.float64)
    y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    u = 128.0 + (f[..., 2] - y) / 1.772
    v = 128.0 + (f[..., 0] - y) / 1.402

    def half(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    def plane(c: np.ndarray, width: int) -> np.ndarray:
        out = np.zeros((c.shape[0], width), np.uint8)
        out[:, : c.shape[1]] = np.clip(np.rint(c), 0, 255).astype(np.uint8)
        return out.reshape(-1)

    flat = np.concatenate(
        [plane(y, stride), plane(half(u), stride // 2), plane(half(v), stride // 2)]
    )
    return flat.reshape(h * 3 // 2, stride)
