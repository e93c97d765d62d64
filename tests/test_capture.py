"""Film detection, exposure for the film, bracket merging, rig calibration and AutoCapture.

Everything runs on the real simulator camera and real threads. Camera faults are injected by
``FlakyCamera``, a wrapper that forwards to the simulator and raises or hangs on demand, i.e. at
the hardware edge and behind the same Camera interface.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import pytest

from kiosk.backoff import Backoff
from kiosk.camera import Camera, Exposure, Still, open_camera
from kiosk.camera.simulator import SimulatorCamera
from kiosk.capture.auto import AutoCapture
from kiosk.capture.bracket import (
    FilmCapture,
    capture_film,
    film_capture,
    merge_linear,
    meter_film_ev,
)
from kiosk.capture.detector import CaptureState, FilmDetector
from kiosk.capture.rig import calibrate_rig
from kiosk.errors import CameraError
from kiosk.imaging.colour import SRGB_TO_LINEAR

SMALL = (640, 360)  # (width, height) of simulator stills
FAST_RETRY = Backoff(initial_s=0.02, max_s=0.1, jitter=0.25)


def _sim(seed: int = 0, motion_frames: int = 2) -> SimulatorCamera:
    camera = open_camera(
        "simulator", resolution=SMALL, preview_width=240, seed=seed, motion_frames=motion_frames
    )
    assert isinstance(camera, SimulatorCamera)
    return camera


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


# --------------------------------------------------------------------------- detector


def _feed(detector: FilmDetector, camera: SimulatorCamera, frames: int, t: list[float]) -> list:
    readings = []
    for _ in range(frames):
        reading = detector.update(camera.preview(), t[0])
        t[0] += 0.25
        readings.append(reading)
        if reading.ready:
            detector.mark_captured()
    return readings


def test_detector_cycle_captures_each_placement_once() -> None:
    camera = _sim(seed=1)
    detector = FilmDetector(stable_s=0.5)
    t = [0.0]
    assert {r.state for r in _feed(detector, camera, 4, t)} == {CaptureState.EMPTY}
    camera.place_film()
    placed = _feed(detector, camera, 20, t)
    states = [r.state for r in placed]
    assert states[0] is CaptureState.PLACING
    assert sum(r.ready for r in placed) == 1, "a film left on the box is captured once"
    assert CaptureState.STABLE in states
    assert states[-1] is CaptureState.CAPTURED
    camera.remove_film()
    removed = [r.state for r in _feed(detector, camera, 5, t)]
    assert CaptureState.REMOVED in removed and removed[-1] is CaptureState.EMPTY
    camera.place_film()
    again = _feed(detector, camera, 20, t)
    assert sum(r.ready for r in again) == 1, "a new placement is captured again"


def test_motion_during_placement_delays_capture() -> None:
    def frames_until_ready(motion_frames: int) -> int:
        camera = _sim(seed=2, motion_frames=motion_frames)
        detector = FilmDetector(stable_s=0.5)
        t = [0.0]
        _feed(detector, camera, 3, t)
        camera.place_film()
        for i, reading in enumerate(_feed(detector, camera, 30, t)):
            if reading.ready:
                return i
        raise AssertionError("never became stable")

    still_film = frames_until_ready(0)
    moving_film = frames_until_ready(6)
    assert moving_film >= still_film + 5


def test_detector_relearns_when_started_with_a_film_on_the_box() -> None:
    camera = _sim(seed=3, motion_frames=0)  # the film was clipped on before the kiosk started
    camera.place_film()
    detector = FilmDetector(stable_s=0.25)
    t = [0.0]
    readings = _feed(detector, camera, 6, t)  # the film is mistaken for the empty box
    assert not any(r.ready for r in readings)
    camera.remove_film()
    _feed(detector, camera, 6, t)  # brighter than "empty": relearnt
    camera.place_film()
    assert any(r.ready for r in _feed(detector, camera, 20, t))


# --------------------------------------------------------------------------- exposure


def _wedge() -> np.ndarray:
    """Digital step wedge, 10 vertical bands from 0 (densest on film) to 255 (clear)."""
    steps = np.repeat(np.linspace(0, 255, 10).astype(np.uint8)[None, :], 400, axis=0)
    return np.repeat(steps, 40, axis=1)


def _band_stats(camera: SimulatorCamera, capture: FilmCapture, wedge: np.ndarray) -> list[tuple]:
    """(transmittance estimate, SNR) per wedge band, from the merged capture warped to film
    coordinates."""
    rendering = camera.last_rendering
    assert rendering is not None and rendering.corners is not None
    mt, mr, mb, ml = camera.params.margin_frac
    ih, iw = wedge.shape
    ch, cw = ih * (1 + mt + mb), iw * (1 + ml + mr)
    target = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    m = cv2.getPerspectiveTransform(rendering.corners.astype(np.float32), target)
    # the kiosk merges the frames' grey (the film is neutral): as rectify does
    grey = [f if f.ndim == 2 else cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in capture.frames]
    linear = merge_linear(grey, capture.exposures)
    luminance = cv2.warpPerspective(linear, m, (round(cw), round(ch)), flags=cv2.INTER_NEAREST)
    scale = float(capture.metadata["exposure_us"]) * float(capture.metadata["analogue_gain"])
    stats = []
    y0, y1 = round(mt * ih + 0.2 * ih), round(mt * ih + 0.8 * ih)
    for k in range(10):
        x0, x1 = round(ml * iw + (k + 0.25) * 40), round(ml * iw + (k + 0.75) * 40)
        region = luminance[y0:y1, x0:x1]
        stats.append((float(region.mean()) / scale, float(region.mean() / region.std())))
    return stats


def test_bracket_merge_extends_dynamic_range_on_a_dense_film() -> None:
    camera = _sim(seed=4, motion_frames=0)
    camera.lock_exposure(Exposure())
    detector = FilmDetector(stable_s=0.0)
    detector.update(camera.preview(), 0.0)
    wedge = _wedge()
    camera.place_film(wedge)
    preview = camera.preview()
    mask = detector.film_mask(preview)
    assert mask is not None and mask.mean() > 0.1

    single = capture_film(camera, preview, mask, [0.0])
    single_stats = _band_stats(camera, single, wedge)
    merged = capture_film(camera, preview, mask, [-1.0, 0.0, 1.0])
    merged_stats = _band_stats(camera, merged, wedge)

    assert merged.base.dtype == np.uint8 and merged.base.shape == single.base.shape
    assert merged.exposures[merged.base_index] == 1.0
    # The base exposure (lightbox unclipped) plus the three film frames.
    assert merged.metadata["bracket_count"] == 4.0 and len(merged.frames) == 4
    assert float(str(merged.metadata["bracket_evs"]).split(",")[0]) == 0.0
    assert len(str(merged.metadata["bracket_evs"]).split(",")) == 4
    # dense bands: the merge measures them with much better signal-to-noise
    for k in (0, 1, 2):
        assert merged_stats[k][1] > 1.5 * single_stats[k][1], (k, single_stats, merged_stats)

    # ... and the film's full density range is measured: every band is monotonic and usable
    def usable(stats: Sequence[tuple]) -> int:
        return sum(snr >= 10 for _, snr in stats)

    assert usable(merged_stats) > usable(single_stats)
    assert all(a[0] < b[0] for a, b in itertools.pairwise(merged_stats))
    # the merged pixels stay linear: clear bands agree with the single exposure
    assert merged_stats[-1][0] == pytest.approx(single_stats[-1][0], rel=0.05)


def test_film_metering_exposes_for_the_film_not_the_lightbox() -> None:
    camera = _sim(seed=5, motion_frames=0)
    detector = FilmDetector(stable_s=0.0)
    detector.update(camera.preview(), 0.0)
    camera.place_film()
    preview = camera.preview()
    mask = detector.film_mask(preview)
    assert mask is not None
    ev = meter_film_ev(preview, mask)
    assert ev > 0.3, "a film transmits less than the bare lightbox: expose longer"
    assert meter_film_ev(preview, mask, [-1.0, 0.0, 1.0]) == pytest.approx(ev + 1.0)
    assert meter_film_ev(preview, None) == 0.0
    still = camera.capture_still(Exposure(ev=ev))
    film_pixels = cv2.resize(mask.astype(np.uint8), (still.image.shape[1], still.image.shape[0]))
    film_levels = still.image.max(axis=2)[film_pixels > 0]
    assert np.percentile(film_levels, 99) < 250, "film highlights not clipped"
    assert np.percentile(film_levels, 99) > 200, "film highlights near the top"


def test_merge_of_unapplied_exposures_is_an_average() -> None:
    image = np.full((4, 4, 3), 100, np.uint8)
    stills = [Still(image, {"ev": ev, "exposure_applied": "no"}, 0.0) for ev in (-1.0, 0.0, 1.0)]
    capture = film_capture(stills)
    assert capture.exposures == (1.0, 1.0, 1.0)
    assert capture.base.shape == (4, 4, 3)  # the base keeps its colour, the others are grey
    assert all(f.shape == (4, 4) for i, f in enumerate(capture.frames) if i != capture.base_index)
    grey = [f if f.ndim == 2 else f[..., 1] for f in capture.frames]
    merged = merge_linear(grey, capture.exposures)
    assert np.allclose(merged, SRGB_TO_LINEAR[100], rtol=1e-5)
    with pytest.raises(CameraError):
        film_capture([])


def test_merge_of_a_bracket_recovers_what_one_frame_clips() -> None:
    linear = np.linspace(0.001, 3.0, 200, dtype=np.float32)[None, :].repeat(2, axis=0)
    exposures = (0.5, 1.0, 2.0)
    frames = [
        (np.clip(np.interp(np.clip(linear * e, 0, 1), SRGB_TO_LINEAR, np.arange(256)), 0, 255))
        .round()
        .astype(np.uint8)
        for e in exposures
    ]
    merged = merge_linear(frames, exposures)
    measurable = linear * 0.5 <= 0.95  # the shortest frame does not clip there
    rel_err = np.abs(merged[measurable] - linear[measurable]) / linear[measurable]
    assert np.median(rel_err) < 0.02
    assert (frames[1] >= 250).any(), "the base frame clips part of the range"
    assert merged[linear > 1.2].min() > 1.0, "beyond the base frame's clipping point"


# --------------------------------------------------------------------------- rig


def test_calibrate_rig_gives_an_unclipped_locked_reference() -> None:
    camera = _sim(seed=6)
    auto_level = np.percentile(camera.capture_still().image.max(axis=2), 99.9)
    rig = calibrate_rig(camera, frames=3)
    assert rig.image_size == (360, 640)
    assert rig.exposure["ev"] <= 0.0
    still = camera.capture_still()  # the locked exposure
    assert np.percentile(still.image.max(axis=2), 99.9) < 240
    assert still.metadata["exposure_us"] == pytest.approx(rig.exposure["exposure_us"])
    if auto_level >= 240:
        assert rig.exposure["ev"] < 0.0
    assert float(np.percentile(rig.flat_field, 99)) == pytest.approx(1.0, rel=0.05)


def test_calibrate_rig_refuses_a_film_on_the_box() -> None:
    camera = _sim(seed=7, motion_frames=0)
    camera.place_film()
    with pytest.raises(CameraError):
        calibrate_rig(camera, frames=2)


# --------------------------------------------------------------------------- AutoCapture


class FlakyCamera:
    """Forwards to a real camera; raises on ``fail_next`` calls, hangs while ``hang`` is set."""

    def __init__(self, inner: Camera) -> None:
        self.inner = inner
        self.name = "flaky"
        self.fail_next = 0
        self.hang = threading.Event()
        self.release = threading.Event()
        self.opens = 0
        self.closes = 0

    def _maybe_fail(self) -> None:
        if self.hang.is_set():
            self.release.wait(10)
        if self.fail_next > 0:
            self.fail_next -= 1
            raise CameraError("camera vanished (USB reset)")

    def open(self) -> None:
        self._maybe_fail()
        self.opens += 1
        self.inner.open()

    def close(self) -> None:
        self.closes += 1
        self.inner.close()

    def preview(self) -> np.ndarray:
        self._maybe_fail()
        return self.inner.preview()

    def capture_still(self, exposure: Exposure | None = None) -> Still:
        self._maybe_fail()
        return self.inner.capture_still(exposure)

    def capture_bracket(self, evs: Sequence[float]) -> list[Still]:
        self._maybe_fail()
        return self.inner.capture_bracket(evs)

    def lock_exposure(self, exposure: Exposure) -> None:
        self.inner.lock_exposure(exposure)

    def autofocus(self) -> bool:
        return self.inner.autofocus()

    def info(self) -> dict[str, str | float]:
        return self.inner.info()


def _auto(
    camera: Camera, on_capture: Callable[[FilmCapture], None], **kwargs: object
) -> AutoCapture:
    options: dict = {
        "preview_fps": 40.0,
        "stable_s": 0.1,
        "bracket_evs": [0.0],
        "retry": FAST_RETRY,
        "rng": random.Random(0),
    }
    options.update(kwargs)
    return AutoCapture(camera, on_capture, **options)


def test_autocapture_captures_each_placement_once_in_a_thread() -> None:
    camera = _sim(seed=8)
    stills: list[FilmCapture] = []
    auto = _auto(camera, stills.append, bracket_evs=[-1.0, 0.0, 1.0])
    auto.start()
    try:
        assert _wait_for(lambda: auto.status().frames_seen >= 5)
        assert auto.status().state == "empty" and auto.status().camera_ok
        camera.place_film()
        assert _wait_for(lambda: len(stills) == 1)
        frames = auto.status().frames_seen
        assert _wait_for(lambda: auto.status().frames_seen >= frames + 15)
        assert len(stills) == 1 and auto.status().state == "captured"
        assert stills[0].metadata["trigger"] == "auto"
        assert stills[0].metadata["bracket_count"] == 4.0
        assert stills[0].base.shape == (360, 640, 3)
        camera.remove_film()
        assert _wait_for(lambda: auto.status().state == "empty")
        camera.place_film()
        assert _wait_for(lambda: len(stills) == 2)
        preview = auto.latest_preview()
        assert preview is not None and preview.shape == (135, 240, 3)
        assert auto.status().captures == 2
    finally:
        assert auto.stop(timeout_s=5.0)


def test_capture_now_forces_a_capture_and_manual_mode_waits() -> None:
    camera = _sim(seed=9)
    stills: list[FilmCapture] = []
    auto = _auto(camera, stills.append, auto=False)
    auto.start()
    try:
        camera.place_film()
        assert _wait_for(lambda: auto.status().state == "stable")
        frames = auto.status().frames_seen
        assert _wait_for(lambda: auto.status().frames_seen >= frames + 10)
        assert stills == [], "auto=False never captures by itself"
        auto.capture_now()
        assert _wait_for(lambda: len(stills) == 1)
        assert stills[0].metadata["trigger"] == "manual"
    finally:
        auto.stop()


def test_autocapture_recovers_a_failing_camera_without_restart() -> None:
    inner = _sim(seed=10)
    camera = FlakyCamera(inner)
    stills: list[FilmCapture] = []
    auto = _auto(camera, stills.append, retry=Backoff(initial_s=0.1, max_s=0.2, jitter=0.1))
    auto.start()
    try:
        assert _wait_for(lambda: auto.status().frames_seen >= 3)
        thread = auto._thread
        camera.fail_next = 3  # the preview fails, then two reopen attempts fail
        assert _wait_for(lambda: not auto.status().camera_ok, timeout_s=5)
        status = auto.status()
        assert status.last_error is not None and "vanished" in status.last_error
        assert status.consecutive_failures >= 1
        assert _wait_for(lambda: auto.status().camera_ok, timeout_s=10)
        assert auto._thread is thread and thread is not None and thread.is_alive()
        assert camera.closes >= 1 and camera.opens >= 2
        frames = auto.status().frames_seen
        inner.place_film()
        assert _wait_for(lambda: len(stills) == 1), "captures work again after recovery"
        assert auto.status().frames_seen > frames
        assert auto.status().consecutive_failures == 0
    finally:
        auto.stop()


def test_callback_exceptions_do_not_kill_the_loop() -> None:
    camera = _sim(seed=11)
    calls: list[FilmCapture] = []

    def explode(still: Still) -> None:
        calls.append(still)
        raise RuntimeError("pipeline bug")

    auto = _auto(camera, explode)
    auto.start()
    try:
        assert _wait_for(lambda: auto.status().frames_seen >= 3)
        camera.place_film()
        assert _wait_for(lambda: len(calls) == 1)
        camera.remove_film()
        assert _wait_for(lambda: auto.status().state == "empty")
        camera.place_film()
        assert _wait_for(lambda: len(calls) == 2)
        assert auto.status().camera_ok and auto.status().captures == 2
    finally:
        auto.stop()


def test_heartbeat_stops_when_the_camera_hangs() -> None:
    camera = FlakyCamera(_sim(seed=12))
    beats: list[float] = []
    auto = _auto(camera, lambda s: None, on_heartbeat=lambda: beats.append(time.monotonic()))
    auto.start()
    try:
        assert _wait_for(lambda: len(beats) >= 3)
        camera.hang.set()
        time.sleep(0.2)
        stuck_at = auto.last_heartbeat
        count = len(beats)
        time.sleep(0.4)
        assert auto.last_heartbeat == stuck_at, "a hung camera call must stop the heartbeat"
        assert len(beats) == count
        camera.hang.clear()
        camera.release.set()
        assert _wait_for(lambda: auto.last_heartbeat > stuck_at)
    finally:
        camera.release.set()
        auto.stop()


def test_heartbeat_keeps_beating_while_backing_off() -> None:
    camera = FlakyCamera(_sim(seed=13))
    camera.fail_next = 1000  # the camera is gone for good
    auto = _auto(camera, lambda s: None, retry=Backoff(initial_s=0.05, max_s=0.05, jitter=0))
    auto.start()
    try:
        assert _wait_for(lambda: auto.status().consecutive_failures >= 3)
        first = auto.last_heartbeat
        assert _wait_for(lambda: auto.last_heartbeat > first)
        assert not auto.status().camera_ok
    finally:
        assert auto.stop(timeout_s=5.0)


def test_retry_policy_doubles_to_a_cap_with_bounded_jitter() -> None:
    policy = Backoff(initial_s=0.5, max_s=30.0, jitter=0.25)
    rng = random.Random(1)
    for failures, base in [(1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (20, 30.0)]:
        delays = [policy.delay_s(failures, rng.random) for _ in range(50)]
        assert all(0.75 * base <= d <= 1.25 * base for d in delays)
        assert len({round(d, 6) for d in delays}) > 1, "jitter spreads the retries"
