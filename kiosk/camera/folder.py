"""Replays the image files of a folder (sorted by name) as if a camera had taken them.

Two ways to replay: with ``frame_interval_s`` set, the folder is a recorded session and the
current image advances with time (previews and stills both show it, so AutoCapture sees films
arrive and leave); without it, every still returns the next file (batch replay). At the end it
starts again (``loop=True``) or raises CameraError. Exposure requests cannot change a recorded
photo: they are accepted and reported in the metadata as not applied.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from kiosk.camera.base import (
    DEFAULT_PREVIEW_WIDTH_PX,
    META_BACKEND,
    META_EV,
    Exposure,
    Still,
    as_rgb,
    resize_to_width,
)
from kiosk.errors import CameraError, ImageError
from kiosk.imaging.decode import list_inputs, read_image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".dcm"})


class FolderCamera:
    """Image files of one folder, replayed in name order."""

    name = "folder"

    def __init__(
        self,
        folder: Path | str,
        loop: bool = True,
        frame_interval_s: float | None = None,
        preview_width: int = DEFAULT_PREVIEW_WIDTH_PX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = Path(folder)
        self.loop = loop
        self.frame_interval_s = frame_interval_s
        self.preview_width = preview_width
        self._clock = clock
        self._lock = threading.Lock()
        self._files: list[Path] = []
        self._index = 0
        self._started_at = 0.0
        self._current: tuple[int, np.ndarray] | None = None
        self._open = False

    def open(self) -> None:
        """List the folder's images; CameraError if there are none."""
        with self._lock:
            if self._open:
                return
            if not self.folder.is_dir():
                raise CameraError(
                    f"replay folder {self.folder} does not exist",
                    "set camera.folder to a folder of photos",
                )
            files = [p for p in list_inputs([self.folder]) if p.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise CameraError(
                    f"replay folder {self.folder} has no images",
                    f"put {', '.join(sorted(IMAGE_SUFFIXES))} files in it",
                )
            self._files = files
            self._index = 0
            self._started_at = self._clock()
            self._open = True
        logger.info("folder camera: %d images in %s", len(files), self.folder)

    def close(self) -> None:
        """Forget the listing (a reopen lists the folder again and starts over)."""
        with self._lock:
            self._open = False
            self._current = None

    @property
    def current_path(self) -> Path | None:
        """The file shown now."""
        index = self._position()
        return self._files[index] if self._files and index is not None else None

    def _position(self) -> int | None:
        """Index of the current image, None when a non-looping replay has ended."""
        index = self._index
        if self.frame_interval_s:
            index = int((self._clock() - self._started_at) // self.frame_interval_s)
        if index >= len(self._files):
            if not self.loop:
                return None
            index %= len(self._files)
        return index

    def _image_locked(self) -> tuple[int, np.ndarray]:
        if not self._open:
            raise CameraError("the folder camera is not open", "call open() first")
        index = self._position()
        if index is None:
            raise CameraError(
                f"replay of {self.folder} finished ({len(self._files)} images)",
                "set loop=True to replay again, or add images and reopen",
            )
        if self._current is None or self._current[0] != index:
            path = self._files[index]
            try:
                pixels = read_image(path).pixels
            except ImageError as exc:
                raise CameraError(f"cannot replay {path.name}: {exc}", "remove the file") from exc
            self._current = (index, as_rgb(pixels))
        return self._current

    def preview(self) -> np.ndarray:
        """The current image, downscaled."""
        with self._lock:
            _, image = self._image_locked()
        return resize_to_width(image, self.preview_width)

    def capture_still(self, exposure: Exposure | None = None) -> Still:
        """The current image at full size; in batch replay, then move to the next file."""
        with self._lock:
            index, image = self._image_locked()
            path = self._files[index]
            if not self.frame_interval_s:
                self._index += 1
        metadata: dict[str, float | str] = {
            META_BACKEND: self.name,
            META_EV: float(exposure.ev) if exposure is not None else 0.0,
            "source": str(path),
            "exposure_applied": "no",
        }
        return Still(image=image.copy(), metadata=metadata, captured_at=time.time())

    def capture_bracket(self, evs: Sequence[float]) -> list[Still]:
        """A recorded photo has one exposure: a single still, whatever ``evs`` asks."""
        return [self.capture_still(Exposure(ev=0.0))]

    def lock_exposure(self, exposure: Exposure) -> None:
        """Nothing to lock on a recording."""
        logger.debug("folder camera: exposure %s ignored", exposure)

    def autofocus(self) -> bool:
        """Nothing to focus."""
        return True

    def info(self) -> dict[str, str | float]:
        """Backend, folder and image count."""
        return {
            "backend": self.name,
            "model": f"replay of {self.folder}",
            "resolution": "per file",
            "images": float(len(self._files)),
        }
