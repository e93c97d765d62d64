"""The camera thread: previews -> film detector -> bracket of stills -> a callback.

``AutoCapture`` survives a camera that errors or disappears (status + log, exponential
backoff with jitter, reopen) and exposes a heartbeat that stops when the camera thread is
stuck.

What this module does not do: decide whether a film is there (``detector``) or how to
expose and merge it (``bracket``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from kiosk.backoff import Backoff
from kiosk.camera.base import (
    Camera,
)
from kiosk.capture.bracket import FilmCapture, capture_film
from kiosk.capture.detector import FilmDetector

logger = logging.getLogger(__name__)


RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0
RETRY_JITTER = 0.25  # +-25 % of each delay
HEARTBEAT_SLICE_S = 1.0  # longest wait without a heartbeat while backing off


@dataclass(frozen=True)
class CaptureStatus:
    """Snapshot of the capture thread for the status page and the doctor."""

    state: str
    last_error: str | None
    camera_ok: bool
    frames_seen: int
    captures: int
    last_frame_at: float | None  # time.time() of the last preview
    consecutive_failures: int


class AutoCapture:
    """The camera thread: previews -> detector -> bracket -> ``on_capture``.

    ``on_capture`` runs on this thread: keep it short (hand the capture to a queue). Its exceptions
    are logged and never stop the loop. ``last_heartbeat`` (monotonic) advances on every frame
    and while backing off, and stops when a camera call hangs, which is what the systemd
    watchdog needs; ``on_heartbeat`` is called at the same moments.
    """

    def __init__(
        self,
        camera: Camera,
        on_capture: Callable[[FilmCapture], None],
        *,
        preview_fps: float = 4.0,
        stable_s: float = 1.5,
        auto: bool = True,
        bracket_evs: Sequence[float] = (-1.0, 0.0, 1.0),
        empty_reference: np.ndarray | None = None,
        retry: Backoff | None = None,
        rng: random.Random | None = None,
        on_heartbeat: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.camera = camera
        self.on_capture = on_capture
        self.interval_s = 1.0 / preview_fps
        self.auto = auto
        self.bracket_evs = list(bracket_evs)
        self.retry = retry or Backoff(RETRY_INITIAL_S, RETRY_MAX_S, RETRY_JITTER)
        self.detector = FilmDetector(stable_s=stable_s, empty=empty_reference)
        self._rng = rng or random.Random()
        self._on_heartbeat = on_heartbeat
        self._clock = clock
        self.stop_event = threading.Event()
        self._capture_requested = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._latest: np.ndarray | None = None
        self._camera_ok = False
        self._last_error: str | None = None
        self._failures = 0
        self._frames_seen = 0
        self._captures = 0
        self._last_frame_at: float | None = None
        self.last_heartbeat = clock()

    # -- public --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the camera thread (the camera is opened there, with retries)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.stop_event.clear()
        self.last_heartbeat = self._clock()
        self._thread = threading.Thread(target=self._run, name="kiosk-capture", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the thread and close the camera; False if the thread did not end in time."""
        self.stop_event.set()
        thread, self._thread = self._thread, None
        stopped = True
        if thread is not None:
            thread.join(timeout_s)
            stopped = not thread.is_alive()
            if not stopped:
                logger.error("capture thread did not stop within %.1f s (camera hung?)", timeout_s)
                return False
        self._close_camera()
        return stopped

    def capture_now(self) -> None:
        """Capture at the next frame whatever the detector says (film present or not)."""
        self._capture_requested.set()

    def latest_preview(self) -> np.ndarray | None:
        """The most recent preview frame (RGB), for the live page."""
        with self._lock:
            return self._latest

    def status(self) -> CaptureStatus:
        """A consistent snapshot of the thread's state."""
        with self._lock:
            return CaptureStatus(
                state=self.detector.state.value,
                last_error=self._last_error,
                camera_ok=self._camera_ok,
                frames_seen=self._frames_seen,
                captures=self._captures,
                last_frame_at=self._last_frame_at,
                consecutive_failures=self._failures,
            )

    # -- loop ----------------------------------------------------------------------------
    def _beat(self) -> None:
        self.last_heartbeat = self._clock()
        if self._on_heartbeat is not None:
            self._on_heartbeat()

    def _run(self) -> None:
        logger.info("capture thread started (camera %s)", self.camera.name)
        while not self.stop_event.is_set():
            if not self._camera_ok and not self._reopen():
                continue
            try:
                self._step()
            except Exception as exc:
                self._camera_failed(exc)
                continue
            self.stop_event.wait(self.interval_s)
        logger.info("capture thread stopped")

    def _step(self) -> None:
        frame = self.camera.preview()
        self._beat()
        now = self._clock()
        with self._lock:
            self._latest = frame
            self._frames_seen += 1
            self._last_frame_at = time.time()
        reading = self.detector.update(frame, now)
        forced = self._capture_requested.is_set()
        if not (forced or (self.auto and reading.ready)):
            return
        mask = self.detector.film_mask(frame)
        capture = capture_film(self.camera, frame, mask, self.bracket_evs)
        self._beat()
        self._capture_requested.clear()
        self.detector.mark_captured()
        metadata = dict(capture.metadata)
        metadata["trigger"] = "manual" if forced else "auto"
        capture = replace(capture, metadata=metadata)
        with self._lock:
            self._captures += 1
        logger.info("film captured (%s, state %s)", metadata["trigger"], reading.state.value)
        try:
            self.on_capture(capture)
        except Exception:
            logger.exception("on_capture callback failed; the capture loop continues")

    def _camera_failed(self, exc: BaseException) -> None:
        with self._lock:
            self._camera_ok = False
            self._failures += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            failures = self._failures
        logger.warning(
            "camera %s failed (%s); reopening (attempt %d)", self.camera.name, exc, failures
        )
        self._close_camera()

    def _close_camera(self) -> None:
        try:
            self.camera.close()
        except Exception:
            logger.exception("closing camera %s failed", self.camera.name)

    def _wait_with_heartbeat(self, delay_s: float) -> None:
        deadline = self._clock() + delay_s
        while not self.stop_event.is_set():
            left = deadline - self._clock()
            if left <= 0:
                return
            self._beat()
            self.stop_event.wait(min(left, HEARTBEAT_SLICE_S))

    def _reopen(self) -> bool:
        """Open the camera, waiting the backoff delay first after a failure. True on success."""
        with self._lock:
            failures = self._failures
        if failures:
            delay_s = self.retry.delay_s(failures, self._rng.random)
            logger.info("retrying camera %s in %.2f s", self.camera.name, delay_s)
            self._wait_with_heartbeat(delay_s)
            if self.stop_event.is_set():
                return False
        try:
            self.camera.open()
        except Exception as exc:
            logger.exception("reopening camera %s failed", self.camera.name)
            with self._lock:
                self._failures += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
            return False
        with self._lock:
            recovered = self._failures > 0
            self._camera_ok = True
            self._failures = 0
        if recovered:
            logger.info("camera %s recovered", self.camera.name)
        self._beat()
        return True
