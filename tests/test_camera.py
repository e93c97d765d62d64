"""Camera backends through the one Protocol: simulator, folder, OpenCV (video file), picamera2.

picamera2 runs its real backend code against tests/fakes/picamera2, a fake of the library's
API injected into ``sys.modules``; everything else is real (OpenCV, files, rendering).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from fakes import picamera2 as fake_picamera2

from kiosk.camera import Camera, Exposure, Still, create_camera, open_camera
from kiosk.camera.simulator import AUTO_EXPOSURE_US, SimulatorCamera
from kiosk.errors import CameraError

SMALL = (640, 360)  # (width, height) of simulator stills: cheap to render


def _sim(**options: object) -> SimulatorCamera:
    camera = open_camera("simulator", **options)
    assert isinstance(camera, SimulatorCamera)
    return camera


# --------------------------------------------------------------------------- factory


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(CameraError) as err:
        open_camera("webcam9000")
    assert "simulator" in str(err.value) and "picamera2" in str(err.value)


def test_unknown_option_is_a_camera_error() -> None:
    with pytest.raises(CameraError, match="invalid options"):
        create_camera("simulator", shutter_speed=3)


# --------------------------------------------------------------------------- simulator


def test_simulator_implements_protocol_and_sizes() -> None:
    camera = open_camera("simulator", resolution=SMALL, preview_width=320, seed=3)
    assert isinstance(camera, Camera)
    preview = camera.preview()
    assert preview.dtype == np.uint8 and preview.shape == (180, 320, 3)
    still = camera.capture_still()
    assert isinstance(still, Still)
    assert still.image.shape == (360, 640, 3)
    assert still.metadata["exposure_us"] == AUTO_EXPOSURE_US
    assert camera.info()["resolution"] == "640x360"
    camera.close()
    with pytest.raises(CameraError, match="not open"):
        camera.preview()


def test_simulator_film_darkens_the_scene_and_previews_are_noisy() -> None:
    camera = _sim(resolution=SMALL, preview_width=320, seed=4)
    empty_a, empty_b = camera.preview(), camera.preview()
    assert not np.array_equal(empty_a, empty_b), "previews need per-frame noise"
    assert np.abs(empty_a.astype(int) - empty_b.astype(int)).mean() < 3
    camera.place_film()
    assert camera.film_present
    placed = camera.preview()
    assert placed.mean() < empty_a.mean() - 15
    camera.remove_film()
    assert abs(float(camera.preview().mean()) - float(empty_a.mean())) < 2


def test_simulator_exposure_really_changes_the_rendering() -> None:
    camera = _sim(resolution=SMALL, seed=5)
    camera.place_film()
    dark = camera.capture_still(Exposure(ev=-1.0))
    normal = camera.capture_still(Exposure(ev=0.0))
    bright = camera.capture_still(Exposure(ev=1.0))
    assert dark.image.mean() < normal.image.mean() < bright.image.mean()
    assert bright.metadata["exposure_us"] == pytest.approx(2 * normal.metadata["exposure_us"])
    manual = camera.capture_still(Exposure(exposure_us=AUTO_EXPOSURE_US // 2, analogue_gain=2.0))
    assert np.abs(manual.image.astype(int) - normal.image.astype(int)).mean() < 1.0
    bracket = camera.capture_bracket([-1.0, 0.0, 1.0])
    assert [s.metadata["ev"] for s in bracket] == [-1.0, 0.0, 1.0]
    # a locked exposure applies to previews and stills
    before = camera.preview().mean()
    camera.lock_exposure(Exposure(exposure_us=AUTO_EXPOSURE_US // 4))
    assert camera.preview().mean() < before - 20
    assert camera.capture_still().metadata["exposure_us"] == AUTO_EXPOSURE_US // 4


def test_simulator_stills_are_cached_per_placement_and_exposure() -> None:
    camera = _sim(resolution=SMALL, seed=6)
    camera.place_film()
    first = camera.capture_still()
    again = camera.capture_still()
    assert np.array_equal(first.image, again.image)
    camera.remove_film()
    camera.place_film()
    other = camera.capture_still()
    assert other.metadata["placement"] == 2.0
    assert not np.array_equal(first.image, other.image)


def test_simulator_placement_shows_motion_then_settles() -> None:
    camera = _sim(resolution=SMALL, preview_width=320, seed=7, motion_frames=3)
    camera.place_film()
    frames = [camera.preview().astype(np.float32) for _ in range(6)]
    changes = [float(np.abs(b - a).mean()) for a, b in itertools.pairwise(frames)]
    assert min(changes[:3]) > 3 * max(changes[4:]), changes


def test_simulator_demo_cycle_places_and_removes_films() -> None:
    now = [0.0]
    camera = _sim(resolution=SMALL, preview_width=160, auto_cycle_s=10.0, clock=lambda: now[0])
    camera.preview()
    assert camera.film_present and camera.placements == 1
    now[0] = 7.0  # past ON_FRACTION of the cycle
    camera.preview()
    assert not camera.film_present
    now[0] = 11.0
    camera.preview()
    assert camera.film_present and camera.placements == 2


def test_simulator_demo_uses_digital_images_from_a_folder(tmp_path: Path) -> None:
    digital = np.zeros((200, 160), np.uint8)
    digital[:, 80:] = 255  # half black: a dense half-film easy to see
    cv2.imwrite(str(tmp_path / "xray.png"), digital)
    camera = _sim(resolution=SMALL, folder=tmp_path, seed=8)
    camera.place_film()
    assert camera.film_digital is not None
    assert np.array_equal(camera.film_digital, digital), "the folder's image is the film"
    assert camera.last_rendering is None
    camera.capture_still()
    assert camera.last_rendering is not None and camera.last_rendering.corners is not None


# --------------------------------------------------------------------------- folder


def _write_images(folder: Path, count: int) -> list[np.ndarray]:
    images = []
    for i in range(count):
        rgb = np.zeros((120, 200, 3), np.uint8)
        rgb[..., 0] = 40 * (i + 1)  # red encodes the index
        rgb[:, :100, 2] = 200
        cv2.imwrite(str(folder / f"frame{i:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images.append(rgb)
    (folder / "notes.txt").write_text("not an image")
    return images


def test_folder_replays_sorted_stills_and_loops(tmp_path: Path) -> None:
    images = _write_images(tmp_path, 3)
    camera = open_camera("folder", folder=tmp_path, preview_width=100)
    assert isinstance(camera, Camera)
    preview = camera.preview()
    assert preview.shape == (60, 100, 3)
    assert abs(int(preview[..., 0].mean()) - 40) <= 1, "RGB order and first file"
    stills = [camera.capture_still() for _ in range(4)]
    assert [int(s.image[0, 150, 0]) for s in stills] == [40, 80, 120, 40]
    assert np.array_equal(stills[1].image, images[1])
    assert str(stills[0].metadata["source"]).endswith("frame00.png")
    assert len(camera.capture_bracket([-1.0, 0.0, 1.0])) == 1


def test_folder_stops_at_the_end_without_loop(tmp_path: Path) -> None:
    _write_images(tmp_path, 2)
    camera = open_camera("folder", folder=tmp_path, loop=False)
    camera.capture_still()
    camera.capture_still()
    with pytest.raises(CameraError, match="finished"):
        camera.capture_still()


def test_folder_time_based_replay(tmp_path: Path) -> None:
    _write_images(tmp_path, 3)
    now = [0.0]
    camera = open_camera("folder", folder=tmp_path, frame_interval_s=2.0, clock=lambda: now[0])
    assert int(camera.preview()[0, -1, 0]) == 40
    now[0] = 4.5
    assert int(camera.capture_still().image[0, -1, 0]) == 120
    assert int(camera.capture_still().image[0, -1, 0]) == 120, "stills do not advance in time mode"


def test_folder_missing_or_empty_is_a_camera_error(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="does not exist"):
        open_camera("folder", folder=tmp_path / "nope")
    with pytest.raises(CameraError, match="no images"):
        open_camera("folder", folder=tmp_path)


# --------------------------------------------------------------------------- opencv


def _write_video(path: Path, frames: int = 20, size: tuple[int, int] = (320, 240)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    for i in range(frames):
        rgb = np.zeros((size[1], size[0], 3), np.uint8)
        rgb[:, : size[0] // 2, 0] = 220  # red left half
        rgb[:, size[0] // 2 :, 2] = 220  # blue right half
        rgb[:, :, 1] = 10 * i
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


def test_opencv_reads_a_video_file_through_videocapture(tmp_path: Path) -> None:
    video = tmp_path / "lightbox.avi"
    _write_video(video)
    camera = open_camera("opencv", device=str(video), preview_width=160)
    assert isinstance(camera, Camera)
    assert camera.info()["resolution"] == "320x240"
    preview = camera.preview()
    assert preview.shape == (120, 160, 3)
    assert preview[60, 20, 0] > 180 and preview[60, 20, 2] < 60, "left is red: RGB order"
    assert preview[60, 140, 2] > 180 and preview[60, 140, 0] < 60
    still = camera.capture_still(Exposure(exposure_us=5000))
    assert still.image.shape == (240, 320, 3)
    assert still.metadata["exposure_applied"] == "no", "a file cannot change exposure"
    assert still.image[120, 300, 1] > preview[60, 140, 1], "frames advance"
    camera.close()


def test_opencv_end_of_video_and_missing_device_raise(tmp_path: Path) -> None:
    video = tmp_path / "short.avi"
    _write_video(video, frames=2)
    camera = open_camera("opencv", device=str(video))
    camera.preview()
    camera.preview()
    with pytest.raises(CameraError, match="no frame"):
        camera.preview()
    camera.close()
    with pytest.raises(CameraError, match="could not be opened") as err:
        open_camera("opencv", device=str(tmp_path / "video99"))
    assert err.value.fix and "v4l2-ctl" in err.value.fix


# --------------------------------------------------------------------------- picamera2


@pytest.fixture
def fake_pi(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2)
    small_cm3 = {"Model": "imx708", "resolution": (1152, 648), "af": True}
    monkeypatch.setattr(fake_picamera2, "FAKE_CAMERAS", [small_cm3])
    monkeypatch.setattr(fake_picamera2.Picamera2, "instances", [])
    return fake_picamera2


def _fake_instance() -> fake_picamera2.Picamera2:
    return fake_picamera2.Picamera2.instances[-1]


def test_picamera2_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
    with pytest.raises(CameraError) as err:
        open_camera("picamera2")
    assert err.value.fix and "python3-picamera2" in err.value.fix
    assert "--system-site-packages" in err.value.fix


def test_picamera2_no_camera_attached(fake_pi: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_picamera2, "FAKE_CAMERAS", [])
    with pytest.raises(CameraError, match="could not be opened"):
        open_camera("picamera2")


def test_picamera2_configures_preview_and_full_resolution_still(fake_pi: object) -> None:
    camera = open_camera("picamera2", preview_size=(640, 480))
    cam = _fake_instance()
    assert cam.started
    preview_cfg = cam.configure_calls[0]
    assert preview_cfg["use_case"] == "preview"
    assert preview_cfg["main"] == {"size": (640, 480), "format": "RGB888"}
    assert "create_still_configuration" in cam.calls
    info = camera.info()
    assert info["model"] == "imx708" and info["resolution"] == "1152x648"
    assert info["autofocus"] == "yes"


def test_picamera2_preview_and_still_are_rgb(fake_pi: object) -> None:
    camera = open_camera("picamera2", preview_size=(320, 240))
    preview = camera.preview()
    assert preview.shape == (240, 320, 3)
    # the fake scene is red on the left, blue on the right; "RGB888" arrays arrive as BGR
    assert preview[120, 10, 0] > 200 and preview[120, 10, 2] == 0
    assert preview[120, 310, 2] > 200 and preview[120, 310, 0] == 0
    still = camera.capture_still()
    assert still.image.shape == (648, 1152, 3)
    assert still.image[300, 10, 0] > 200 and still.image[300, 10, 2] == 0
    assert still.image.flags["C_CONTIGUOUS"]
    cam = _fake_instance()
    still_cfg = cam.configure_calls[-2]
    assert still_cfg["use_case"] == "still"
    assert still_cfg["main"] == {"size": (1152, 648), "format": "RGB888"}
    assert cam.camera_config is not None and cam.camera_config["use_case"] == "preview"


def test_picamera2_lock_exposure_sets_manual_controls(fake_pi: object) -> None:
    camera = open_camera("picamera2")
    camera.lock_exposure(Exposure(exposure_us=12_000, analogue_gain=2.0))
    cam = _fake_instance()
    locked = cam.set_controls_calls[-1]
    assert locked["AeEnable"] is False and locked["AwbEnable"] is False
    assert locked["ExposureTime"] == 12_000 and locked["AnalogueGain"] == 2.0
    assert locked["ColourGains"] == fake_picamera2.AWB_GAINS
    # both configurations carry the locked controls, so a mode switch keeps them
    still = camera.capture_still()
    assert still.metadata["exposure_us"] == 12_000
    assert still.metadata["analogue_gain"] == 2.0
    assert cam.configure_calls[-2]["controls"]["ExposureTime"] == 12_000
    assert cam.configure_calls[-1]["controls"]["AeEnable"] is False


def test_picamera2_autofocus_cycle_before_still(fake_pi: object) -> None:
    camera = open_camera("picamera2")
    cam = _fake_instance()
    camera.capture_still()
    assert cam.af_cycles == 1
    assert cam.calls.index("autofocus_cycle") < cam.calls.index("switch_mode")
    assert camera.autofocus() is True


def test_picamera2_hq_camera_without_af(fake_pi: object, monkeypatch: pytest.MonkeyPatch) -> None:
    hq = {"Model": "imx477", "resolution": (1014, 760), "af": False}
    monkeypatch.setattr(fake_picamera2, "FAKE_CAMERAS", [hq])
    camera = open_camera("picamera2")
    assert camera.autofocus() is True
    camera.capture_still()
    assert "autofocus_cycle" not in _fake_instance().calls
    assert camera.info()["autofocus"] == "no"


def test_picamera2_bracket_is_manual_and_in_one_still_mode(fake_pi: object) -> None:
    camera = open_camera("picamera2", autofocus_before_still=False)
    camera.lock_exposure(Exposure(exposure_us=10_000, analogue_gain=1.0))
    cam = _fake_instance()
    switches_before = cam.calls.count("switch_mode")
    stills = camera.capture_bracket([-1.0, 0.0, 1.0])
    assert [s.metadata["exposure_us"] for s in stills] == [5_000, 10_000, 20_000]
    assert [s.metadata["ev"] for s in stills] == [-1.0, 0.0, 1.0]
    means = [float(s.image.mean()) for s in stills]
    assert means[0] < means[1] < means[2]
    assert cam.calls.count("switch_mode") - switches_before == 2  # into still mode and back
    manual = [c for c in cam.set_controls_calls if c.get("ExposureTime") == 20_000]
    assert manual and manual[0]["AeEnable"] is False


def test_picamera2_long_exposure_moves_to_gain(fake_pi: object) -> None:
    camera = open_camera("picamera2", autofocus_before_still=False)
    camera.lock_exposure(Exposure(exposure_us=50_000, analogue_gain=1.0))
    still = camera.capture_bracket([1.0])[0]  # 100 ms > the fake's 66.7 ms maximum
    assert still.metadata["exposure_us"] == 66_666
    assert still.metadata["analogue_gain"] == pytest.approx(100_000 / 66_666, rel=1e-3)


def test_picamera2_close_releases_camera(fake_pi: object) -> None:
    camera = open_camera("picamera2")
    cam = _fake_instance()
    camera.close()
    assert "close" in cam.calls and not cam.is_open
    with pytest.raises(CameraError, match="not open"):
        camera.preview()
    camera.close()  # idempotent
    camera.open()
    assert _fake_instance() is not cam and _fake_instance().started
