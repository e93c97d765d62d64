"""From camera frames to one good still per film placement.

Three jobs, one module:

* **Is a film there, and is it still?** ``FilmDetector`` compares small grey preview frames with
  the empty-lightbox appearance (learnt from the first frames, or given) and with the previous
  frame. States: ``empty -> placing (motion) -> stable -> captured -> removed -> empty``. A film
  left on the box is captured once; only its removal (or ``capture_now``) allows another.
* **Expose for the film, not the lightbox.** Metered on the bare lightbox, the dense lung fields
  of a film land in the bottom few 8-bit codes and drown in noise. ``meter_film_ev`` measures the
  film region of the preview in linear light and puts the film's brightest content just below
  clipping in the *shortest* frame of the bracket; the longer frames then lift the lung fields.
  The bare lightbox around the film may clip: the rig reference (``calibrate_rig``, taken at an
  unclipped exposure) is what measures the lightbox.
* **Bracket and merge.** ``merge_bracket`` merges the frames in linear light (inverse sRGB),
  each divided by its relative exposure and weighted by a hat function that is zero near
  clipping and near black, times its exposure (longer frames have better signal-to-noise). The
  result is encoded back to sRGB with white at the shortest frame's clipping point, so it reads
  like one unclipped, low-noise photo at ``exposure_us`` (metadata) and stays radiometrically
  linear after decoding: rectify's flat-field / density recovery relies on that. Mertens
  exposure fusion would look nicer but weights by contrast and saturation per pixel, which
  destroys the pixel-to-luminance relation that density measurement needs.

``AutoCapture`` runs all of it in a thread, survives a camera that errors or disappears
(status + log, exponential backoff with jitter, reopen) and exposes a heartbeat that stops when
the camera thread is stuck.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from kiosk.camera.base import (
    META_ANALOGUE_GAIN,
    META_EV,
    META_EXPOSURE_US,
    Camera,
    Exposure,
    Still,
)
from kiosk.errors import CameraError

if TYPE_CHECKING:
    from kiosk.rig import RigReference

logger = logging.getLogger(__name__)

# --- detection (levels are 8-bit sRGB codes of the blurred grey preview) ---
DETECT_WIDTH_PX = 160
PRESENCE_DIFF_LEVELS = 20.0  # darker than the empty lightbox by this much = film
PRESENCE_FRACTION = 0.04  # of the frame, for "a film is there"
MOTION_DIFF_LEVELS = 12.0  # frame-to-frame change that counts as motion
MOTION_FRACTION = 0.004  # of the frame, for "something moves"
REMOVED_FRAMES = 2  # consecutive film-free frames before a captured film counts as removed
RELEARN_FRAMES = 3  # consecutive still frames brighter than "empty" before it is relearnt
EMPTY_ADAPT_RATE = 0.05  # running-average weight of each quiet empty frame (lamp drift)

# --- exposure ---
CLIP_LEVEL = 250  # 8-bit code treated as clipped
BLACK_LEVEL = 3  # 8-bit code treated as no signal
FILM_HIGHLIGHT_TARGET_LINEAR = 0.8  # film's 99th percentile in the shortest bracket frame
FILM_HIGHLIGHT_PERCENTILE = 99.0
FILM_EV_RANGE = (-4.0, 6.0)
BRACKET_MIN_STEP_EV = 0.25  # film frames closer than this to the base exposure are dropped
MERGE_BAND_ROWS = 256  # rows merged at a time (bounds the merge's memory)
RIG_CLIP_PERCENTILE = 99.9
RIG_MAX_LEVEL = 240
RIG_MAX_STEPS = 8

# --- AutoCapture loop ---
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0
RETRY_JITTER = 0.25  # +-25 % of each delay
HEARTBEAT_SLICE_S = 1.0  # longest wait without a heartbeat while backing off


class CaptureState(enum.StrEnum):
    """Where a placement is in its life."""

    EMPTY = "empty"
    PLACING = "placing"
    STABLE = "stable"
    CAPTURED = "captured"
    REMOVED = "removed"


@dataclass(frozen=True)
class DetectorReading:
    """What the detector concluded from one preview frame."""

    state: CaptureState
    film_fraction: float  # of the frame darker than the empty lightbox
    motion_fraction: float  # of the frame changed since the previous frame
    ready: bool  # a stable placement waits to be captured


def _srgb_to_linear_lut() -> np.ndarray:
    x = np.arange(256, dtype=np.float64) / 255.0
    lin = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    return lin.astype(np.float32)


SRGB_TO_LINEAR = _srgb_to_linear_lut()


def _hat_weight_lut() -> np.ndarray:
    """Merge weight of an 8-bit level: 1 in mid-tones, falling to 0 at black and at clipping."""
    levels = np.arange(256, dtype=np.float32)
    mid = (CLIP_LEVEL + BLACK_LEVEL) / 2.0
    half = (CLIP_LEVEL - BLACK_LEVEL) / 2.0
    w = np.clip(1.0 - np.abs(levels - mid) / half, 0.0, 1.0).astype(np.float32)
    w[levels >= CLIP_LEVEL] = 0.0
    return w


HAT_WEIGHT = _hat_weight_lut()


def _linear_to_srgb_lut(levels: int = 65536) -> np.ndarray:
    x = np.linspace(0.0, 1.0, levels)
    y = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)


# 16-bit steps in linear light are finer than one 8-bit sRGB level even near black, and a
# table lookup is several times faster than a power function on a 12 MP frame.
LINEAR_TO_SRGB = _linear_to_srgb_lut()


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear 0..1 (clipped) -> sRGB-encoded uint8."""
    scale = np.float32(LINEAR_TO_SRGB.size - 1)
    index = (np.clip(linear, 0.0, 1.0) * scale + np.float32(0.5)).astype(np.uint16)
    return LINEAR_TO_SRGB[index]


def _detect_grey(frame: np.ndarray) -> np.ndarray:
    """Preview RGB -> small blurred grey float32 (noise averaged away before any threshold)."""
    h, w = frame.shape[:2]
    if w > DETECT_WIDTH_PX:
        size = (DETECT_WIDTH_PX, max(1, round(h * DETECT_WIDTH_PX / w)))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    return cv2.GaussianBlur(grey.astype(np.float32), (5, 5), 0)


class FilmDetector:
    """Film-present / stable state machine over preview frames (pure: no camera, no thread).

    Without an ``empty`` reference the first frame is taken as the empty lightbox. If that was
    wrong (a film was already on the box), the frame turns *brighter* than "empty" once the film
    is taken off and the reference is relearnt.
    """

    def __init__(self, stable_s: float = 1.5, empty: np.ndarray | None = None) -> None:
        self.stable_s = stable_s
        self.state = CaptureState.EMPTY
        self._empty: np.ndarray | None = None if empty is None else _detect_grey(empty)
        self._previous: np.ndarray | None = None
        self._still_since: float | None = None
        self._absent_frames = 0
        self._brighter_frames = 0

    @property
    def has_empty_reference(self) -> bool:
        """True once the empty-lightbox appearance is known."""
        return self._empty is not None

    def set_empty(self, frame: np.ndarray) -> None:
        """Use ``frame`` (RGB preview of the empty box) as the empty-lightbox appearance."""
        self._empty = _detect_grey(frame)
        self.state = CaptureState.EMPTY

    def film_mask(self, frame: np.ndarray) -> np.ndarray | None:
        """Boolean mask (frame size) of pixels darker than the empty lightbox, or None."""
        if self._empty is None:
            return None
        grey = _detect_grey(frame)
        if grey.shape != self._empty.shape:
            return None
        small = ((self._empty - grey) > PRESENCE_DIFF_LEVELS).astype(np.uint8)
        small = cv2.erode(small, np.ones((3, 3), np.uint8))
        h, w = frame.shape[:2]
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)

    def update(self, frame: np.ndarray, now: float) -> DetectorReading:
        """Feed one preview frame taken at ``now`` (monotonic seconds)."""
        grey = _detect_grey(frame)
        if self._empty is None or self._empty.shape != grey.shape:
            self._empty = grey
        previous, self._previous = self._previous, grey
        motion = 0.0
        if previous is not None and previous.shape == grey.shape:
            motion = float(np.mean(np.abs(grey - previous) > MOTION_DIFF_LEVELS))
        diff = self._empty - grey
        film = float(np.mean(diff > PRESENCE_DIFF_LEVELS))
        brighter = float(np.mean(-diff > PRESENCE_DIFF_LEVELS))
        present = film > PRESENCE_FRACTION
        moving = motion > MOTION_FRACTION
        self._check_reference(grey, present, moving, brighter)
        self._step(present, moving, now)
        return DetectorReading(self.state, film, motion, self.state is CaptureState.STABLE)

    def _check_reference(
        self, grey: np.ndarray, present: bool, moving: bool, brighter: float
    ) -> None:
        if brighter > PRESENCE_FRACTION and not moving:
            self._brighter_frames += 1
            if self._brighter_frames >= RELEARN_FRAMES:
                logger.info("empty lightbox relearnt (%.0f%% brighter than before)", 100 * brighter)
                self._empty = grey
                self._brighter_frames = 0
        else:
            self._brighter_frames = 0
        if self.state is CaptureState.EMPTY and not present and not moving:
            assert self._empty is not None
            self._empty = (1 - EMPTY_ADAPT_RATE) * self._empty + EMPTY_ADAPT_RATE * grey

    def _step(self, present: bool, moving: bool, now: float) -> None:
        state = self.state
        if state in (CaptureState.EMPTY, CaptureState.REMOVED):
            self.state = CaptureState.EMPTY
            if present:
                self.state = CaptureState.PLACING
                self._still_since = None if moving else now
                self._settle(now)
        elif state in (CaptureState.PLACING, CaptureState.STABLE):
            if not present:
                self.state = CaptureState.EMPTY
            elif moving:
                self.state = CaptureState.PLACING
                self._still_since = None
            else:
                if self._still_since is None:
                    self._still_since = now
                self._settle(now)
        elif state is CaptureState.CAPTURED:
            self._absent_frames = 0 if present else self._absent_frames + 1
            if self._absent_frames >= REMOVED_FRAMES:
                self.state = CaptureState.REMOVED
                self._absent_frames = 0

    def _settle(self, now: float) -> None:
        if self._still_since is not None and now - self._still_since >= self.stable_s:
            self.state = CaptureState.STABLE

    def mark_captured(self) -> None:
        """The current placement has been captured: never capture it again."""
        self.state = CaptureState.CAPTURED
        self._absent_frames = 0


# --------------------------------------------------------------------------- exposure


def meter_film_ev(
    preview: np.ndarray, film_mask: np.ndarray | None, bracket_evs: Sequence[float] = (0.0,)
) -> float:
    """EV offset from the preview's exposure that exposes the film (not the lightbox).

    Puts the film's 99th-percentile linear luminance at ``FILM_HIGHLIGHT_TARGET_LINEAR`` in the
    shortest frame of the bracket. 0.0 when there is no usable film region (or it is clipped in
    the preview, in which case the preview cannot tell how far to go down: stay put).
    """
    if film_mask is None or film_mask.sum() < 0.01 * film_mask.size:
        return 0.0
    linear = SRGB_TO_LINEAR[preview].max(axis=2)
    values = linear[film_mask]
    highlight = float(np.percentile(values, FILM_HIGHLIGHT_PERCENTILE))
    if highlight <= 0 or highlight >= SRGB_TO_LINEAR[CLIP_LEVEL]:
        return 0.0
    shortest = min(bracket_evs) if len(bracket_evs) else 0.0
    ev = math.log2(FILM_HIGHLIGHT_TARGET_LINEAR / highlight) - shortest
    return float(np.clip(ev, *FILM_EV_RANGE))


def _relative_exposure(still: Still) -> float:
    """Exposure x gain of a still, or 2**ev when the camera reports neither.

    A camera that could not apply the requested exposure (``exposure_applied == "no"``) took
    every frame alike: 1.0, so such a "bracket" is merely averaged.
    """
    if still.metadata.get("exposure_applied") == "no":
        return 1.0
    exposure_us = still.metadata.get(META_EXPOSURE_US)
    gain = still.metadata.get(META_ANALOGUE_GAIN, 1.0)
    if isinstance(exposure_us, float | int) and isinstance(gain, float | int) and exposure_us > 0:
        return float(exposure_us) * float(gain)
    ev = still.metadata.get(META_EV, 0.0)
    return 2.0 ** float(ev) if isinstance(ev, float | int) else 1.0


def _merge_band(
    images: Sequence[np.ndarray],
    relative: Sequence[float],
    shortest: int,
    longest: int,
    white: float,
) -> np.ndarray:
    """Hat-weighted linear merge of the same rows of every bracket frame -> sRGB uint8 rows."""
    acc = np.zeros(images[0].shape, np.float32)
    weights = np.zeros(images[0].shape[:2], np.float32)
    for image, rel in zip(images, relative, strict=True):
        # hat weight from the brightest channel (0 at clipping), 5% where any channel is black
        w = HAT_WEIGHT[image.max(axis=2)]
        w[image.min(axis=2) <= BLACK_LEVEL] *= np.float32(0.05)
        acc += SRGB_TO_LINEAR[image] * w[..., None]  # weight x (value / rel) x rel
        weights += w * np.float32(rel)
    # pixels no frame measured well: clipped everywhere -> shortest, black everywhere -> longest
    empty = weights <= 1e-6
    if empty.any():
        clipped = images[shortest].max(axis=2) >= CLIP_LEVEL
        source_short = SRGB_TO_LINEAR[images[shortest]] / np.float32(relative[shortest])
        source_long = SRGB_TO_LINEAR[images[longest]] / np.float32(relative[longest])
        fill = np.where(clipped[..., None], source_short, source_long)
        acc[empty] = fill[empty]
        weights[empty] = 1.0
    merged = acc / weights[..., None]
    return linear_to_srgb(merged / np.float32(white))


def merge_bracket(stills: Sequence[Still]) -> Still:
    """Merge differently exposed stills of one scene into one RGB uint8 still (linear light).

    The output is sRGB-encoded with white at the clipping point of the shortest frame; its
    ``exposure_us`` metadata is the equivalent single exposure, so decoding the pixels gives
    values proportional to luminance on the same scale as an ordinary still at that exposure.
    The metadata records the bracket (``bracket_evs``, ``bracket_exposure_us``, ``merge``).
    """
    if not stills:
        raise CameraError("no stills to merge", "capture at least one still")
    if len(stills) == 1:
        return stills[0]
    shapes = {s.image.shape for s in stills}
    if len(shapes) != 1:
        raise CameraError(f"bracket frames differ in size: {sorted(shapes)}", "capture again")
    exposures = [_relative_exposure(s) for s in stills]
    evs = [float(s.metadata.get(META_EV, 0.0)) for s in stills]
    ref_index = int(np.argmin([abs(ev - float(np.median(evs))) for ev in evs]))
    ref = exposures[ref_index]
    relative = [e / ref for e in exposures]
    shortest = int(np.argmin(relative))
    longest = int(np.argmax(relative))
    white = 1.0 / relative[shortest]  # linear value (EV0 units) that maps to 255
    # Merged in bands of rows: four 12 MP frames in float32 at once would need ~600 MB, more
    # than a 2 GB Pi can spare next to the model and the web server.
    height = stills[0].image.shape[0]
    image = np.empty_like(stills[0].image)
    for r0 in range(0, height, MERGE_BAND_ROWS):
        band = [st.image[r0 : r0 + MERGE_BAND_ROWS] for st in stills]
        image[r0 : r0 + MERGE_BAND_ROWS] = _merge_band(band, relative, shortest, longest, white)
    metadata: dict[str, float | str] = dict(stills[ref_index].metadata)
    exposure_us = metadata.get(META_EXPOSURE_US)
    if isinstance(exposure_us, float | int):
        metadata[META_EXPOSURE_US] = float(exposure_us) / white
    metadata[META_EV] = evs[ref_index] - math.log2(white)
    metadata["merge"] = "linear-hat"
    metadata["bracket_evs"] = ",".join(f"{ev:g}" for ev in evs)
    metadata["bracket_exposure_us"] = ",".join(
        f"{float(s.metadata.get(META_EXPOSURE_US, 0.0)):g}" for s in stills
    )
    metadata["bracket_count"] = float(len(stills))
    metadata["hdr_white"] = float(white)
    return Still(image=image, metadata=metadata, captured_at=stills[ref_index].captured_at)


def capture_film_still(
    camera: Camera,
    preview: np.ndarray | None,
    film_mask: np.ndarray | None,
    bracket_evs: Sequence[float] = (-1.0, 0.0, 1.0),
) -> Still:
    """Autofocus, meter on the film, capture the bracket around it and merge it into one still.

    The bracket always includes the base exposure (EV 0: the lightbox unclipped, as set up),
    so the bare lightbox around the film stays measurable in the merged still: the rectifier
    needs it to turn the film's transmitted light into density when there is no rig
    reference. The longer frames expose for the film's dense parts.
    """
    evs = list(bracket_evs) or [0.0]
    camera.autofocus()
    film_ev = meter_film_ev(preview, film_mask, evs) if preview is not None else 0.0
    wanted = sorted({0.0, *(film_ev + ev for ev in evs if film_ev + ev > BRACKET_MIN_STEP_EV)})
    stills = camera.capture_bracket(wanted)
    still = merge_bracket(stills)
    metadata = dict(still.metadata)
    metadata["film_ev"] = film_ev
    return replace(still, metadata=metadata)


# --------------------------------------------------------------------------- rig


def calibrate_rig(camera: Camera, frames: int = 5) -> RigReference:
    """Capture the empty lightbox at an exposure that does not clip, lock it, build the reference.

    Starts from the automatic exposure and lowers it a stop at a time until the
    99.9th percentile is below ``RIG_MAX_LEVEL``. Raises CameraError when the lightbox still
    clips at the lowest exposure, or when RigReference finds it dark or covered.
    """
    from kiosk.rig import RigReference

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


# --------------------------------------------------------------------------- AutoCapture


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


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for reopening a failed camera."""

    initial_s: float = RETRY_INITIAL_S
    max_s: float = RETRY_MAX_S
    jitter: float = RETRY_JITTER

    def delay_s(self, failures: int, rng: random.Random) -> float:
        """Delay before attempt number ``failures`` (1 = first retry)."""
        base = min(self.max_s, self.initial_s * 2.0 ** max(0, failures - 1))
        return max(0.0, base * (1.0 + rng.uniform(-self.jitter, self.jitter)))


class AutoCapture:
    """The camera thread: previews -> detector -> bracketed still -> ``on_still``.

    ``on_still`` runs on this thread: keep it short (hand the still to a queue). Its exceptions
    are logged and never stop the loop. ``last_heartbeat`` (monotonic) advances on every frame
    and while backing off, and stops when a camera call hangs, which is what the systemd
    watchdog needs; ``on_heartbeat`` is called at the same moments.
    """

    def __init__(
        self,
        camera: Camera,
        on_still: Callable[[Still], None],
        *,
        preview_fps: float = 4.0,
        stable_s: float = 1.5,
        auto: bool = True,
        bracket_evs: Sequence[float] = (-1.0, 0.0, 1.0),
        empty_reference: np.ndarray | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        on_heartbeat: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.camera = camera
        self.on_still = on_still
        self.interval_s = 1.0 / preview_fps
        self.auto = auto
        self.bracket_evs = list(bracket_evs)
        self.retry = retry or RetryPolicy()
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
        still = capture_film_still(self.camera, frame, mask, self.bracket_evs)
        self._beat()
        self._capture_requested.clear()
        self.detector.mark_captured()
        metadata = dict(still.metadata)
        metadata["trigger"] = "manual" if forced else "auto"
        still = replace(still, metadata=metadata)
        with self._lock:
            self._captures += 1
        logger.info("film captured (%s, state %s)", metadata["trigger"], reading.state.value)
        try:
            self.on_still(still)
        except Exception:
            logger.exception("on_still callback failed; the capture loop continues")

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
            delay_s = self.retry.delay_s(failures, self._rng)
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
