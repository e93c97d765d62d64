"""The camera's small copy of a still: its size, the YUV420 conversion, the agreement check,
and that locating the film on it finds the film where the full frame does."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from fakes import picamera2 as fake_picamera2

from kiosk.camera import Still, open_camera
from kiosk.camera.lores import box_preview, lores_size, preview_agrees, yuv420_to_rgb
from kiosk.camera.simulator import SimulatorCamera
from kiosk.capture.bracket import FilmCapture, film_capture
from kiosk.rectify.rectifier import rectify_capture


def _scene(h: int = 648, w: int = 1152) -> np.ndarray:
    """A smooth colour scene with a dark rectangle: edges and flat parts."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.dstack([200 - 80 * xx / w, 120 + 60 * yy / h, 90 + 100 * xx / w]).astype(np.uint8)
    rgb[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] //= 4
    return rgb


def test_lores_size_is_an_even_integer_reduction_of_at_least_480_px() -> None:
    assert lores_size((4608, 2592)) == (576, 324)  # Camera Module 3, full resolution
    assert lores_size((4056, 3040)) == (506, 380)  # HQ camera: 1/8, rounded down to even
    assert lores_size((1152, 648)) == (576, 324)
    assert lores_size((640, 480)) == (640, 480)  # nothing smaller keeps 480 px


def test_yuv420_with_a_padded_stride_converts_back_to_the_picture() -> None:
    rgb = _scene(324, 600)  # 600 px: picamera2 pads each row to a 640-byte stride
    yuv = fake_picamera2._yuv420(rgb)
    assert yuv.shape == (486, 640)
    back = yuv420_to_rgb(yuv, (600, 324))
    assert back.shape == rgb.shape
    diff = np.abs(back.astype(int) - rgb.astype(int))
    assert np.median(diff) <= 1  # rounding, and chroma at half resolution at the edges
    assert diff[10:70, 10:150].max() <= 2  # a flat part: exact up to rounding
    with pytest.raises(ValueError, match="not a 600x324 YUV420 array"):
        yuv420_to_rgb(yuv[:400], (600, 324))


def test_a_box_average_agrees_and_a_wrong_copy_does_not() -> None:
    frame = _scene()
    preview = box_preview(frame)
    assert preview.shape == (324, 576, 3)
    assert preview_agrees(frame, preview)
    limited = (16 + preview.astype(np.float32) * 219 / 255).astype(np.uint8)  # video range
    assert not preview_agrees(frame, limited)
    assert not preview_agrees(frame, np.ascontiguousarray(preview[::-1]))  # upside down
    assert not preview_agrees(frame, cv2.resize(preview, (432, 324)))  # another crop/aspect
    assert not preview_agrees(frame, preview[:, :, 0])  # not colour


def test_picamera2_still_carries_its_lores_copy_in_rgb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2)
    monkeypatch.setattr(
        fake_picamera2, "FAKE_CAMERAS", [{"Model": "imx708", "resolution": (1152, 648)}]
    )
    monkeypatch.setattr(fake_picamera2.Picamera2, "instances", [])
    camera = open_camera("picamera2")
    still = camera.capture_still()
    cam = fake_picamera2.Picamera2.instances[-1]
    assert cam.configure_calls[-2]["lores"] == {"size": (576, 324), "format": "YUV420"}
    assert still.preview is not None and still.preview.shape == (324, 576, 3)
    # the fake scene is red on the left, blue on the right
    assert still.preview[160, 5, 0] > 200 and still.preview[160, 5, 2] < 30
    assert still.preview[160, 570, 2] > 200 and still.preview[160, 570, 0] < 30
    capture = film_capture([still])
    assert capture.preview is still.preview  # it agrees with the still: kept


def test_a_disagreeing_copy_is_dropped_and_the_frame_used() -> None:
    frame = _scene()
    wrong = np.ascontiguousarray(box_preview(frame)[::-1])
    capture = film_capture([Still(frame, {"ev": 0.0}, 0.0, preview=wrong)])
    assert capture.preview is None


def test_the_film_is_found_on_the_copy_where_the_frame_finds_it() -> None:
    camera = open_camera("simulator", resolution=(1920, 1080), seed=5, motion_frames=0)
    assert isinstance(camera, SimulatorCamera)
    camera.place_film()
    still = camera.capture_still()
    camera.close()
    assert still.preview is not None and still.preview.shape == (270, 480, 3)
    with_copy = rectify_capture(film_capture([still]))
    without = rectify_capture(FilmCapture.single(still.image))
    assert with_copy.status == without.status == "ok"
    assert with_copy.corners is not None and without.corners is not None
    diagonal = float(np.hypot(1920, 1080))
    assert np.abs(with_copy.corners - without.corners).max() < 0.002 * diagonal
