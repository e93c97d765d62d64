"""A virtual camera over a virtual lightbox, rendered by kiosk.render_scene.

The rig is fixed for the life of the camera (one lightbox, one camera pose: ``SceneParams``
drawn once from ``seed``); each placement of a film varies only where the film lies. Exposure
controls really change the rendering: the scene's ``exposure_scale`` is multiplied by
``exposure_us * gain / (AUTO_EXPOSURE_US * AUTO_GAIN) * 2**ev``, so bracketing and rig set-up are
exercised. "Automatic" exposure is the scene's own, a lightbox-metered exposure like a real AE
would pick (which is exactly what makes dense lung fields crush, see capture.py).

Previews are rendered small (cheap) and cached per placement, exposure and motion step, with
fresh per-frame noise on top. Right after ``place_film`` a few previews show the film shifted
(it is being clipped on), so stability detection has motion to wait for. Full-resolution
stills are cached per placement + exposure, so repeated stills cost nothing.

Demo: ``auto_cycle_s > 0`` places a film (a phantom chest, or a random image from ``folder``)
at the start of every cycle and removes it ``ON_FRACTION`` of the way through.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kiosk.camera import scene as render_scene
from kiosk.camera.base import (
    DEFAULT_PREVIEW_WIDTH_PX,
    META_ANALOGUE_GAIN,
    META_BACKEND,
    META_EV,
    META_EXPOSURE_US,
    Exposure,
    Still,
    as_rgb,
)
from kiosk.camera.lores import box_preview
from kiosk.errors import CameraError, ImageError
from kiosk.imaging.decode import list_inputs, read_image

logger = logging.getLogger(__name__)

AUTO_EXPOSURE_US = 10_000  # what the virtual AE reports; exposure_scale 1.0 of the scene
AUTO_GAIN = 1.0
DEFAULT_RESOLUTION_PX = (1920, 1080)  # (width, height)
MOTION_FRAMES = 3  # previews showing the film moving after each placement
MOTION_SHIFT_FRAC = 0.04  # film offset of the first moving preview, fraction of the frame
PREVIEW_NOISE_LEVELS = 1.5  # extra per-frame noise on cached previews, sRGB levels RMS
ON_FRACTION = 0.6  # demo: the film stays on for this fraction of each cycle
STILL_CACHE_SIZE = 6


@dataclass(frozen=True)
class _Placement:
    """One film on the box: its pixels and where it lies."""

    ident: int
    digital: np.ndarray
    film_offset: tuple[float, float]
    film_rotation_deg: float


class SimulatorCamera:
    """Renders a lightbox with a film placed and removed over time."""

    name = "simulator"

    def __init__(
        self,
        resolution: tuple[int, int] | None = None,
        preview_width: int = DEFAULT_PREVIEW_WIDTH_PX,
        seed: int = 0,
        difficulty: float = 0.2,
        auto_cycle_s: float = 0.0,
        folder: Path | str | None = None,
        motion_frames: int = MOTION_FRAMES,
        params: render_scene.SceneParams | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        width, height = resolution or DEFAULT_RESOLUTION_PX
        self.size = (int(height), int(width))  # (h, w) as the renderer wants it
        self.preview_width = preview_width
        preview_height = max(2, round(height * preview_width / width))
        self.preview_size = (preview_height, preview_width)
        self.auto_cycle_s = auto_cycle_s
        self.folder = Path(folder) if folder is not None else None
        self.motion_frames = motion_frames
        self._clock = clock
        self._rng = np.random.default_rng(seed)
        if params is None:
            params = replace(
                render_scene.random_params(self._rng, difficulty=difficulty),
                clip=False,
                fingers=False,
                second_film=False,
                glare_strength=0.0,
            )
        self.params = params
        self._lock = threading.RLock()
        self._open = False
        self._placement: _Placement | None = None
        self._placements = 0
        self._motion_left = 0
        self._locked = Exposure()
        self._preview_cache: dict[tuple[int, float, int], np.ndarray] = {}
        self._still_cache: OrderedDict[tuple[int, float, int], render_scene.Rendering] = (
            OrderedDict()
        )
        self._cycle_index = -1
        self._folder_files: list[Path] | None = None
        self.last_rendering: render_scene.Rendering | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def open(self) -> None:
        """Start the virtual camera (the demo cycle starts counting now)."""
        with self._lock:
            if not self._open:
                self._open = True
                self._cycle_start = self._clock()

    def close(self) -> None:
        """Stop the virtual camera; the scene (film on the box) is kept."""
        with self._lock:
            self._open = False

    def _require_open(self) -> None:
        if not self._open:
            raise CameraError("the simulator camera is not open", "call open() first")

    # -- scene ---------------------------------------------------------------------------
    @property
    def film_present(self) -> bool:
        """Whether a film is on the virtual lightbox."""
        return self._placement is not None

    @property
    def film_digital(self) -> np.ndarray | None:
        """The digital image of the film on the box (None when the box is empty)."""
        placement = self._placement
        return None if placement is None else placement.digital

    @property
    def placements(self) -> int:
        """How many films have been placed so far."""
        return self._placements

    def place_film(self, digital: np.ndarray | None = None) -> None:
        """Clip a film on the box: ``digital`` (grey or RGB), or a phantom chest when None."""
        if digital is None:
            digital = self._pick_digital()
        with self._lock:
            self._placements += 1
            self._placement = _Placement(
                ident=self._placements,
                digital=digital,
                film_offset=(
                    float(self._rng.uniform(-0.03, 0.03)),
                    float(self._rng.uniform(-0.02, 0.02)),
                ),
                film_rotation_deg=float(self._rng.uniform(-3.0, 3.0)),
            )
            self._motion_left = self.motion_frames
            self._preview_cache.clear()
        logger.info("simulator: film %d placed", self._placements)

    def remove_film(self) -> None:
        """Take the film off the box."""
        with self._lock:
            if self._placement is not None:
                logger.info("simulator: film %d removed", self._placement.ident)
            self._placement = None
            self._motion_left = 0
            self._preview_cache.clear()

    def _pick_digital(self) -> np.ndarray:
        if self.folder is not None:
            if self._folder_files is None:
                self._folder_files = list_inputs([self.folder]) if self.folder.is_dir() else []
                if not self._folder_files:
                    logger.warning("simulator: no images in %s, using phantoms", self.folder)
            if self._folder_files:
                path = self._folder_files[int(self._rng.integers(len(self._folder_files)))]
                try:
                    return read_image(path).pixels
                except ImageError:
                    # No file name in the log: names of X-ray files can identify patients.
                    logger.warning("simulator: an image in the folder is unreadable; phantom used")
        return render_scene.phantom_chest(self._rng)

    def _run_demo_cycle(self) -> None:
        if self.auto_cycle_s <= 0:
            return
        elapsed = self._clock() - self._cycle_start
        index = int(elapsed // self.auto_cycle_s)
        on = (elapsed % self.auto_cycle_s) < ON_FRACTION * self.auto_cycle_s
        if on and index != self._cycle_index:
            self._cycle_index = index
            self.place_film()
        elif not on and self._placement is not None:
            self.remove_film()

    # -- exposure ------------------------------------------------------------------------
    def _resolve(self, exposure: Exposure) -> tuple[float, float, float]:
        """(exposure_us, gain, factor on the scene's exposure) for ``exposure``."""
        exposure_us = float(exposure.exposure_us or self._locked.exposure_us or AUTO_EXPOSURE_US)
        gain = float(exposure.analogue_gain or self._locked.analogue_gain or AUTO_GAIN)
        exposure_us *= 2.0**exposure.ev
        factor = exposure_us * gain / (AUTO_EXPOSURE_US * AUTO_GAIN)
        return exposure_us, gain, round(factor, 6)

    def lock_exposure(self, exposure: Exposure) -> None:
        """Fix the exposure for previews and stills; None fields keep the automatic values."""
        exposure_us, gain, _ = self._resolve(exposure)
        with self._lock:
            self._locked = Exposure(round(exposure_us), gain)
            self._preview_cache.clear()

    # -- frames --------------------------------------------------------------------------
    def _scene(
        self, factor: float, motion_step: int
    ) -> tuple[np.ndarray | None, render_scene.SceneParams]:
        p = replace(self.params, exposure_scale=self.params.exposure_scale * factor)
        placement = self._placement
        if placement is None:
            return None, p
        shift = MOTION_SHIFT_FRAC * motion_step
        offset = (placement.film_offset[0] + shift, placement.film_offset[1] + shift / 2)
        p = replace(p, film_offset=offset, film_rotation_deg=placement.film_rotation_deg)
        return placement.digital, p

    def preview(self) -> np.ndarray:
        """A small noisy frame of the current scene at the locked exposure."""
        with self._lock:
            self._require_open()
            self._run_demo_cycle()
            motion_step = self._motion_left
            if self._motion_left > 0:
                self._motion_left -= 1
            _, _, factor = self._resolve(Exposure())
            ident = self._placement.ident if self._placement is not None else 0
            key = (ident, factor, motion_step)
            base = self._preview_cache.get(key)
            if base is None:
                digital, params = self._scene(factor, motion_step)
                base = render_scene.render(digital, params, self._rng, size=self.preview_size).image
                self._preview_cache[key] = base
            noise = self._rng.normal(0.0, PREVIEW_NOISE_LEVELS, base.shape).astype(np.float32)
        return np.clip(base.astype(np.float32) + noise, 0, 255).astype(np.uint8)

    def capture_still(self, exposure: Exposure | None = None) -> Still:
        """A full-resolution rendering of the current scene at ``exposure``."""
        requested = exposure if exposure is not None else Exposure()
        with self._lock:
            self._require_open()
            self._run_demo_cycle()
            exposure_us, gain, factor = self._resolve(requested)
            ident = self._placement.ident if self._placement is not None else 0
            key = (ident, factor, self._motion_left)
            rendering = self._still_cache.get(key)
            if rendering is None:
                digital, params = self._scene(factor, self._motion_left)
                rendering = render_scene.render(digital, params, self._rng, size=self.size)
                self._still_cache[key] = rendering
                while len(self._still_cache) > STILL_CACHE_SIZE:
                    self._still_cache.popitem(last=False)
            else:
                self._still_cache.move_to_end(key)
            self.last_rendering = rendering
        metadata: dict[str, float | str] = {
            META_BACKEND: self.name,
            META_EXPOSURE_US: exposure_us,
            META_ANALOGUE_GAIN: gain,
            META_EV: float(requested.ev),
            "placement": float(ident),
        }
        image = as_rgb(rendering.image)
        # what the Pi's ISP scales into the lores stream alongside the still
        return Still(image, metadata, time.time(), preview=box_preview(image))

    def capture_bracket(self, evs: Sequence[float]) -> list[Still]:
        """Stills at each EV offset from the locked exposure."""
        return [self.capture_still(Exposure(ev=float(ev))) for ev in evs]

    def autofocus(self) -> bool:
        """The virtual lens is always in focus."""
        return True

    def info(self) -> dict[str, str | float]:
        """Backend, model and resolution."""
        h, w = self.size
        return {
            "backend": self.name,
            "model": "simulated lightbox",
            "resolution": f"{w}x{h}",
        }
