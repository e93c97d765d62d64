"""Is a film on the lightbox, and is it still?"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)


DETECT_WIDTH_PX = 160
PRESENCE_DIFF_LEVELS = 20.0  # darker than the empty lightbox by this much = film
PRESENCE_FRACTION = 0.04  # of the frame, for "a film is there"
MOTION_DIFF_LEVELS = 12.0  # frame-to-frame change that counts as motion
MOTION_FRACTION = 0.004  # of the frame, for "something moves"
REMOVED_FRAMES = 2  # consecutive film-free frames before a captured film counts as removed
RELEARN_FRAMES = 3  # consecutive still frames brighter than "empty" before it is relearnt
EMPTY_ADAPT_RATE = 0.05  # running-average weight of each quiet empty frame (lamp drift)


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
