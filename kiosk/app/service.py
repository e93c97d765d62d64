"""The running appliance: camera thread, one pipeline worker, status, events and metrics.

``KioskService`` owns the camera and an :class:`~kiosk.capture.AutoCapture` thread. Each still
the capture thread takes goes into a small bounded queue; one worker thread analyses stills one
at a time with ``appliance.pipeline``, which commits the result to the database *before* the
service publishes it, so an event or a page never names a result that was not stored.

Status is one of five states the live page shows in big type:
``ready`` (waiting for a film), ``film_detected`` (a film is being placed or is settling),
``analysing``, ``result`` (the film that is still on the box has its result) and ``problem``
(camera or storage failed; the message says what to do). Camera errors never stop the service:
AutoCapture reopens the camera with backoff and the state returns to normal when it recovers.

What this module does not do: serve HTTP (kiosk.web) or talk to systemd (the ``serve``
command attaches a :class:`~kiosk.heartbeat.WatchdogPinger` to :attr:`KioskService.heartbeats`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from kiosk.app.appliance import Appliance, configured_camera
from kiosk.app.heartbeat import HeartbeatRegistry
from kiosk.camera import Camera
from kiosk.capture.auto import AutoCapture
from kiosk.capture.bracket import FilmCapture, capture_film
from kiosk.capture.detector import CaptureState
from kiosk.capture.rig import RigReference, calibrate_rig
from kiosk.errors import CameraError, KioskError
from kiosk.imaging.encode import encode_jpeg
from kiosk.pipeline import AnalysisResult

logger = logging.getLogger(__name__)

QUEUE_SIZE = 4
SUBSCRIBER_QUEUE_SIZE = 64
CAMERA_MAX_SILENCE_S = 30.0
WORKER_MAX_SILENCE_S = 120.0  # one analysis on a Pi 4 takes seconds; far below this
WORKER_WAKE_S = 0.5
PREVIEW_JPEG_QUALITY = 70
# Inference latency histogram bucket upper bounds, seconds (Prometheus "le").
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CAMERA_FIX = (
    "Check that the camera cable is seated and the lightbox is on. "
    "If this stays for more than a minute, call the technician."
)

STATES = ("ready", "film_detected", "analysing", "result", "problem")


@dataclass
class _Counters:
    """Since-start counters behind ``status()`` and ``metrics()``."""

    stills: int = 0
    dropped: int = 0
    analysed: int = 0
    camera_errors: int = 0


class KioskService:
    """Camera thread + pipeline worker + status for the web layer. Start once, stop once."""

    def __init__(
        self,
        appliance: Appliance,
        *,
        camera: Camera | None = None,
        heartbeats: HeartbeatRegistry | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.appliance = appliance
        self.config = appliance.config
        self.camera: Camera = camera if camera is not None else configured_camera(self.config)
        self.heartbeats = heartbeats if heartbeats is not None else HeartbeatRegistry()
        self.started_at = time.time()
        self._stills: queue.Queue[FilmCapture] = queue.Queue(maxsize=queue_size)
        self._lock = threading.RLock()
        self._analysis_lock = threading.Lock()  # the pipeline runs one analysis at a time
        self._camera_lock = threading.RLock()  # exclusive camera use (rig set-up, test capture)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._capture: AutoCapture | None = None
        self._subscribers: list[queue.Queue[dict[str, Any]]] = []
        self._busy = False
        self._paused_message: str | None = None
        self._last_error: str | None = None
        self._storage_problem: KioskError | None = None
        self._latest_result: AnalysisResult | None = None
        self._latest_result_at: float | None = None
        self._counters = _Counters()
        self._by_status: dict[str, int] = {"ok": 0, "rejected": 0, "error": 0}
        self._latency_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._latency_sum_s = 0.0
        self._last_failures = 0
        self._last_status: dict[str, Any] | None = None
        self._preview_cache: tuple[np.ndarray, bytes] | None = None
        self._empty_preview: np.ndarray | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the camera thread and the pipeline worker (the camera opens in its thread)."""
        if self._worker is not None:
            return
        self._stop.clear()
        self.heartbeats.register("pipeline-worker", WORKER_MAX_SILENCE_S)
        self._worker = threading.Thread(target=self._work, name="kiosk-worker", daemon=True)
        self._worker.start()
        self._start_capture(mark_captured=False)
        logger.info("kiosk service started (camera %s)", self.camera.name)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop both threads and close the camera; waits up to ``timeout_s`` for each."""
        self._stop.set()
        self._stop_capture(timeout_s)
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.join(timeout_s)
            if worker.is_alive():
                logger.error("pipeline worker did not stop within %.1f s", timeout_s)
        self.heartbeats.unregister("pipeline-worker")
        logger.info("kiosk service stopped")

    def _start_capture(self, *, mark_captured: bool) -> None:
        capture = AutoCapture(
            self.camera,
            self._on_capture,
            preview_fps=self.config.capture.preview_fps,
            stable_s=self.config.capture.stable_s,
            auto=self.config.capture.auto,
            bracket_evs=self.config.camera.bracket_evs,
            empty_reference=self._empty_preview,
            on_heartbeat=self._on_camera_beat,
        )
        if mark_captured:
            # The film on the box was just analysed by hand: wait for its removal.
            capture.detector.mark_captured()
        self.heartbeats.register("camera", CAMERA_MAX_SILENCE_S)
        with self._lock:
            self._capture = capture
        capture.start()

    def _stop_capture(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            capture, self._capture = self._capture, None
        self.heartbeats.unregister("camera")
        if capture is not None and not capture.stop(timeout_s):
            logger.error("camera thread did not stop; the camera may be hung")

    @contextmanager
    def _exclusive_camera(self, message: str, *, mark_captured: bool) -> Iterator[Camera]:
        """Pause auto-capture and hand the open camera to the caller; resume afterwards."""
        with self._camera_lock:
            self._paused_message = message
            self._publish_status()
            self._stop_capture()
            try:
                self.camera.open()
                yield self.camera
            finally:
                self._paused_message = None
                if not self._stop.is_set():
                    self._start_capture(mark_captured=mark_captured)
                self._publish_status()

    # -- capture thread callbacks -----------------------------------------------------------

    def _on_camera_beat(self) -> None:
        if "camera" in self.heartbeats.names():
            self.heartbeats.beat("camera")
        capture = self._capture
        if capture is not None:
            failures = capture.status().consecutive_failures
            with self._lock:
                if failures > self._last_failures:
                    self._counters.camera_errors += failures - self._last_failures
                self._last_failures = failures
        self._publish_status()

    def _on_capture(self, capture: FilmCapture) -> None:
        with self._lock:
            self._counters.stills += 1
        try:
            self._stills.put_nowait(capture)
        except queue.Full:
            with self._lock:
                self._counters.dropped += 1
            logger.warning("analysis queue full (%d): still dropped", self._stills.maxsize)
        self._publish_status()

    # -- pipeline worker --------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            self.heartbeats.beat("pipeline-worker")
            try:
                capture = self._stills.get(timeout=WORKER_WAKE_S)
            except queue.Empty:
                continue
            self._analyse(capture, trigger=str(capture.metadata.get("trigger", "auto")))

    def _analyse(self, capture: FilmCapture, *, trigger: str) -> AnalysisResult | None:
        with self._analysis_lock:
            with self._lock:
                self._busy = True
            self._publish_status()
            try:
                result = self.appliance.pipeline.analyze_capture(capture, source="camera")
            except KioskError as exc:
                logger.error("analysis not stored: %s", exc)
                with self._lock:
                    self._storage_problem = exc
                    self._last_error = str(exc)
                    self._by_status["error"] += 1
                return None
            except Exception as exc:  # the worker must survive anything
                logger.exception("analysis failed unexpectedly")
                with self._lock:
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    self._by_status["error"] += 1
                return None
            finally:
                with self._lock:
                    self._busy = False
            self._record(result)
        logger.info("result %s: %s (%s trigger)", result.result_id, result.status, trigger)
        self._publish({"type": "result", "result_id": result.result_id, "status": result.status})
        self._publish_status()
        return result

    def _record(self, result: AnalysisResult) -> None:
        infer_s = result.timings_ms.get("infer")
        with self._lock:
            self._storage_problem = None
            self._latest_result = result
            self._latest_result_at = time.time()
            self._counters.analysed += 1
            self._by_status[result.status] = self._by_status.get(result.status, 0) + 1
            if result.status == "error":
                self._last_error = result.reason
            if infer_s is not None:
                seconds = infer_s / 1000.0
                self._latency_sum_s += seconds
                index = next(
                    (i for i, le in enumerate(LATENCY_BUCKETS_S) if seconds <= le),
                    len(LATENCY_BUCKETS_S),
                )
                self._latency_counts[index] += 1

    # -- commands ---------------------------------------------------------------------------

    def capture_now(self) -> None:
        """Take a photo at the next preview frame, film detected or not."""
        capture = self._capture
        if capture is None:
            raise CameraError(
                "the camera is not running", "wait for the rig set-up to finish, then try again"
            )
        capture.capture_now()
        logger.info("capture requested by hand")

    def set_up_rig(self) -> RigReference:
        """Measure the empty lightbox, save the reference and make the pipeline use it.

        Pauses auto-capture meanwhile. Raises CameraError (with what to do) when the lightbox
        is covered, too dark or clipping.
        """
        with self._exclusive_camera("Setting up the rig…", mark_captured=False) as camera:
            rig = calibrate_rig(camera)
            rig.save(self.config.rig_dir)
            self.appliance.pipeline.reload_rig()
            self._empty_preview = camera.preview()
        logger.info("rig reference saved (%s)", rig.created_at)
        return rig

    def test_capture(self) -> AnalysisResult:
        """Photograph and analyse what is on the lightbox now (stored like any result).

        Raises KioskError when the camera or the storage fails.
        """
        with self._exclusive_camera("Test capture…", mark_captured=True) as camera:
            frame = camera.preview()
            capture = capture_film(camera, frame, None, self.config.camera.bracket_evs)
        result = self._analyse(capture, trigger="test")
        if result is None:
            raise KioskError(
                f"the test capture was not analysed: {self._last_error}",
                "see the technician's log page",
            )
        return result

    # -- events -----------------------------------------------------------------------------

    def subscribe(self) -> queue.Queue[dict[str, Any]]:
        """A queue receiving ``{"type": "status"|"result", ...}`` events; unsubscribe when done."""
        q: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=SUBSCRIBER_QUEUE_SIZE)
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue[dict[str, Any]]) -> None:
        """Stop sending events to ``q``; unknown queues are ignored."""
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    def _publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for q in subscribers:
            with contextlib.suppress(queue.Full):  # a stalled browser must not slow the kiosk
                q.put_nowait(event)

    def _publish_status(self) -> None:
        status = self.status()
        key = {k: v for k, v in status.items() if k not in ("counters", "uptime_s", "queue_depth")}
        with self._lock:
            if key == self._last_status:
                return
            self._last_status = key
        self._publish({"type": "status", "status": status})

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What the live page shows: state, message, advice, camera, latest result, counters."""
        capture = self._capture
        cap = capture.status() if capture is not None else None
        with self._lock:
            latest = self._latest_result
            depth = self._stills.qsize()
            busy = self._busy
            storage = self._storage_problem
            counters = {
                "stills": self._counters.stills,
                "dropped": self._counters.dropped,
                "analysed": self._counters.analysed,
                "camera_errors": self._counters.camera_errors,
                "by_status": dict(self._by_status),
            }
            last_error = self._last_error
        camera_ok = bool(cap and cap.camera_ok)
        camera_error = cap.last_error if cap is not None and not cap.camera_ok else None
        detector = cap.state if cap is not None else CaptureState.EMPTY.value
        state, message, advice = self._describe(
            cap_running=cap is not None,
            camera_ok=camera_ok,
            camera_error=camera_error,
            detector=detector,
            busy=busy or depth > 0,
            latest=latest,
            storage=storage,
        )
        return {
            "state": state,
            "message": message,
            "advice": advice,
            "detector": detector,
            "camera": {"ok": camera_ok, "error": camera_error, "backend": self.camera.name},
            "last_error": (cap.last_error if cap is not None and cap.last_error else None)
            or last_error,
            "latest_result_id": latest.result_id if latest is not None else None,
            "latest_result_status": latest.status if latest is not None else None,
            "queue_depth": depth,
            "counters": counters,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def _describe(
        self,
        *,
        cap_running: bool,
        camera_ok: bool,
        camera_error: str | None,
        detector: str,
        busy: bool,
        latest: AnalysisResult | None,
        storage: KioskError | None,
    ) -> tuple[str, str, str]:
        if self._paused_message is not None:
            return "analysing", self._paused_message, "Keep the lightbox as the technician set it."
        if storage is not None:
            return (
                "problem",
                "Results cannot be saved",
                f"{storage.message}. {storage.fix or ''} Call the technician.".strip(),
            )
        if cap_running and not camera_ok and camera_error:
            return "problem", "Camera problem", CAMERA_FIX
        if busy:
            return (
                "analysing",
                "Analysing the film…",
                "This takes a few seconds. Leave the film in place.",
            )
        if detector == CaptureState.PLACING.value:
            return "film_detected", "Film detected", "Let go of the film and keep hands away."
        if detector == CaptureState.STABLE.value:
            return "film_detected", "Film detected", "Hold still: taking the photo…"
        if detector == CaptureState.CAPTURED.value and latest is not None:
            if latest.status == "ok":
                return "result", "Result ready", "Read the findings. Remove the film when done."
            reason = latest.reason or "The photo could not be used"
            return (
                "result",
                "Photo not usable",
                f"{reason}. {latest.advice or 'Place the film again.'}",
            )
        if not cap_running or not camera_ok:
            return "ready", "Starting the camera…", "Wait a moment."
        return "ready", "Ready", "Clip a chest X-ray film on the lightbox."

    def preview_jpeg(self) -> bytes | None:
        """The latest preview frame as JPEG (encoded once per frame), or None before the first."""
        capture = self._capture
        frame = capture.latest_preview() if capture is not None else None
        if frame is None:
            return None
        cached = self._preview_cache
        if cached is not None and cached[0] is frame:
            return cached[1]
        data = encode_jpeg(frame, quality=PREVIEW_JPEG_QUALITY)
        self._preview_cache = (frame, data)
        return data

    def metrics(self) -> dict[str, Any]:
        """Numbers for ``/metrics``: latency histogram, results by status, queue, disk, outbox."""
        with self._lock:
            cumulative = []
            total = 0
            for count in self._latency_counts:
                total += count
                cumulative.append(total)
            buckets = [
                *zip(LATENCY_BUCKETS_S, cumulative[:-1], strict=True),
                (float("inf"), cumulative[-1]),
            ]
            by_status = dict(self._by_status)
            latency_sum = self._latency_sum_s
            counters = self._counters
            camera_errors = counters.camera_errors
            dropped = counters.dropped
        try:
            disk_free = shutil.disk_usage(self.config.data_dir).free
        except OSError:
            disk_free = 0
        outbox = self.appliance.store.outbox_counts()
        return {
            "inference_seconds_buckets": buckets,
            "inference_seconds_sum": latency_sum,
            "inference_seconds_count": cumulative[-1],
            "results_by_status": by_status,
            "queue_depth": self._stills.qsize(),
            "stills_dropped": dropped,
            "camera_errors": camera_errors,
            "camera_ok": bool(self._capture and self._capture.status().camera_ok),
            "disk_free_bytes": disk_free,
            "outbox_size": outbox["pending"] + outbox["failed"],
        }
