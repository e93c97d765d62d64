"""KioskService with the simulator camera: capture -> analyse -> store -> publish, and failures."""

from __future__ import annotations

# The simulator places drawn phantom films, which the shipped model's "not a chest X-ray"
# gate rightly rejects: these tests switch it off (ood_gate=False); tests/test_real_xrays.py
# checks the gate on real images.
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiosk.app.appliance import Appliance
from kiosk.app.service import KioskService
from kiosk.camera.simulator import SimulatorCamera
from kiosk.capture.rig import JSON_NAME
from kiosk.config import CaptureConfig, KioskConfig
from kiosk.errors import CameraError
from kiosk.web import create_app

WAIT_S = 45.0


class UnpluggableCamera(SimulatorCamera):
    """The simulator with a cable that can be pulled: every call fails while unplugged."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unplugged = threading.Event()

    def _check(self) -> None:
        if self.unplugged.is_set():
            raise CameraError("camera not detected", "check the cable")

    def open(self) -> None:
        self._check()
        super().open()

    def preview(self) -> Any:
        self._check()
        return super().preview()


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[Appliance]:
    config = KioskConfig(
        ood_gate=False,
        data_dir=tmp_path / "data",
        capture=CaptureConfig(preview_fps=10, stable_s=0.4),
    )
    appliance = Appliance.open(config)
    yield appliance
    appliance.close()


@pytest.fixture
def camera() -> UnpluggableCamera:
    return UnpluggableCamera(resolution=(960, 540), seed=5, motion_frames=2)


@pytest.fixture
def service(appliance: Appliance, camera: UnpluggableCamera) -> Iterator[KioskService]:
    service = KioskService(appliance, camera=camera)
    service.start()
    yield service
    service.stop()


def wait_for(predicate: Any, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_s} s")


def next_event(q: queue.Queue[dict[str, Any]], kind: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        event = q.get(timeout=max(0.1, deadline - time.monotonic()))
        if event["type"] == kind:
            return event
    raise AssertionError(f"no {kind} event")


def test_placed_film_is_analysed_stored_and_published_once(
    service: KioskService, appliance: Appliance, camera: UnpluggableCamera
) -> None:
    events = service.subscribe()
    seen_in_db: list[bool] = []
    states: list[str] = []

    def watch() -> None:
        # a second subscriber checks the database the moment the event arrives
        q = service.subscribe()
        while True:
            event = q.get()
            if event["type"] == "status":
                states.append(event["status"]["state"])
            if event["type"] == "result":
                seen_in_db.append(appliance.store.get_result(event["result_id"]) is not None)
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    wait_for(lambda: service.status()["camera"]["ok"])
    assert service.status()["state"] == "ready"
    camera.place_film()
    event = next_event(events, "result")
    watcher.join(5)
    assert seen_in_db == [True]
    assert "film_detected" in states and "analysing" in states
    stored = appliance.store.get_result(event["result_id"])
    assert stored is not None and stored["status"] == event["status"]
    assert service.status()["latest_result_id"] == event["result_id"]
    wait_for(lambda: service.status()["state"] == "result")
    # the film stays on the box: no second capture
    time.sleep(2.0)
    assert appliance.store.list_results()[1] == 1
    metrics = service.metrics()
    assert sum(metrics["results_by_status"].values()) == 1
    assert metrics["outbox_size"] == 1 and metrics["disk_free_bytes"] > 0
    # taking it off returns to ready; a new film is a new result
    camera.remove_film()
    wait_for(lambda: service.status()["state"] == "ready")
    camera.place_film()
    second = next_event(events, "result")
    assert second["result_id"] != event["result_id"]
    assert appliance.store.list_results()[1] == 2
    preview = service.preview_jpeg()
    assert preview is not None and preview[:2] == b"\xff\xd8"


def test_capture_now_takes_a_photo_without_a_film(
    service: KioskService, appliance: Appliance
) -> None:
    events = service.subscribe()
    wait_for(lambda: service.status()["camera"]["ok"])
    service.capture_now()
    event = next_event(events, "result")
    stored = appliance.store.get_result(event["result_id"])
    assert stored is not None and stored["status"] == "rejected"  # an empty lightbox
    assert stored["reason"]


def test_camera_failure_is_a_problem_that_recovers(
    service: KioskService, camera: UnpluggableCamera, appliance: Appliance
) -> None:
    wait_for(lambda: service.status()["camera"]["ok"])
    camera.unplugged.set()
    wait_for(lambda: service.status()["state"] == "problem", 10)
    status = service.status()
    assert status["message"] == "Camera problem"
    assert "cable" in status["advice"]
    assert "camera not detected" in (status["camera"]["error"] or "")
    app = create_app(appliance, service, testing=True)
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503 and "camera" in ready.get_json()["reasons"][0]
    camera.unplugged.clear()
    wait_for(lambda: service.status()["state"] == "ready", 15)
    assert service.metrics()["camera_errors"] >= 1
    assert app.test_client().get("/readyz").status_code == 200
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert "kiosk_camera_errors_total" in metrics and "kiosk_camera_up 1" in metrics


def test_rig_set_up_and_test_capture(
    service: KioskService, appliance: Appliance, camera: UnpluggableCamera
) -> None:
    wait_for(lambda: service.status()["camera"]["ok"])
    assert appliance.pipeline.rig is None
    rig = service.set_up_rig()
    assert (appliance.config.rig_dir / JSON_NAME).is_file()
    assert appliance.pipeline.rig is not None
    assert appliance.pipeline.rig.created_at == rig.created_at
    wait_for(lambda: service.status()["camera"]["ok"])
    camera.place_film()
    result = service.test_capture()
    assert result.result_id is not None
    assert appliance.store.get_result(result.result_id) is not None
    # auto-capture resumed but does not photograph the tested film again
    time.sleep(2.0)
    assert appliance.store.list_results()[1] == 1
    assert service.status()["camera"]["ok"]


def test_heartbeats_registered_and_fresh(service: KioskService) -> None:
    wait_for(lambda: service.status()["camera"]["ok"])
    assert service.heartbeats.names() == ["camera", "pipeline-worker"]
    assert service.heartbeats.all_alive() == (True, [])
    service.stop()
    assert service.heartbeats.names() == []
