"""kiosk.heartbeat: a stale component stops the watchdog pings; recovery resumes them.

The pinger sends through kiosk.sdnotify to a real AF_UNIX datagram socket, as under systemd.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiosk.app.heartbeat import WATCHDOG_FRACTION, HeartbeatRegistry, WatchdogPinger

RECV_TIMEOUT_S = 2.0
SHORT_WAIT_S = 0.3
PING_INTERVAL_S = 0.05


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now_s

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now_s += seconds


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    with sock:
        yield sock


def _drain(sock: socket.socket) -> list[str]:
    """Every datagram waiting on the socket, without blocking."""
    sock.setblocking(False)
    messages = []
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
    return messages


def _wait_for(sock: socket.socket, message: str) -> bool:
    sock.settimeout(RECV_TIMEOUT_S)
    try:
        while True:
            if sock.recv(4096).decode() == message:
                return True
    except TimeoutError:
        return False


def test_registry_names_stale_components() -> None:
    clock = FakeClock()
    registry = HeartbeatRegistry(clock=clock)
    registry.register("camera", max_age_s=5.0)
    registry.register("web", max_age_s=20.0)
    assert registry.all_alive() == (True, [])
    clock.advance(6.0)
    assert registry.all_alive() == (False, ["camera"])
    registry.beat("camera")
    assert registry.all_alive() == (True, [])
    clock.advance(21.0)
    assert registry.all_alive() == (False, ["camera", "web"])
    registry.unregister("camera")
    assert registry.all_alive() == (False, ["web"])


def test_beat_from_unregistered_component_is_an_error() -> None:
    with pytest.raises(KeyError, match="pipeline"):
        HeartbeatRegistry().beat("pipeline")


def test_register_rejects_non_positive_age() -> None:
    with pytest.raises(ValueError):
        HeartbeatRegistry().register("camera", max_age_s=0)


def test_stale_component_stops_pings_and_recovery_resumes(
    notify_socket: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    registry = HeartbeatRegistry(clock=clock)
    registry.register("camera", max_age_s=5.0)
    registry.register("pipeline", max_age_s=5.0)
    pinger = WatchdogPinger(registry, interval_s=1.0)
    caplog.set_level(logging.INFO, logger="kiosk.app.heartbeat")

    assert pinger.check_once() is True
    assert _drain(notify_socket) == ["WATCHDOG=1"]

    clock.advance(6.0)
    registry.beat("pipeline")  # the pipeline is fine, the camera thread is stuck
    assert pinger.check_once() is False
    assert pinger.check_once() is False
    messages = _drain(notify_socket)
    assert "WATCHDOG=1" not in messages
    assert any(m.startswith("STATUS=stale: camera") for m in messages)
    stale_logs = [r for r in caplog.records if "withholding" in r.getMessage()]
    assert len(stale_logs) == 1, "the transition is logged once, not every round"
    assert "camera" in stale_logs[0].getMessage()
    assert "pipeline" not in stale_logs[0].getMessage()

    registry.beat("camera")
    assert pinger.check_once() is True
    assert _drain(notify_socket) == ["STATUS=running", "WATCHDOG=1"]
    assert sum("resuming" in r.getMessage() for r in caplog.records) == 1


def test_pinger_thread_pings_only_while_alive(notify_socket: socket.socket) -> None:
    clock = FakeClock()
    registry = HeartbeatRegistry(clock=clock)
    registry.register("camera", max_age_s=5.0)
    pinger = WatchdogPinger(registry, interval_s=PING_INTERVAL_S)
    assert pinger.start() is True
    try:
        assert _wait_for(notify_socket, "WATCHDOG=1")
        clock.advance(10.0)
        assert _wait_for(notify_socket, "STATUS=stale: camera; watchdog will restart the service")
        _drain(notify_socket)
        # Several intervals pass with the camera stale: no ping may arrive.
        notify_socket.settimeout(SHORT_WAIT_S)
        with pytest.raises(TimeoutError):
            notify_socket.recv(4096)
        registry.beat("camera")
        assert _wait_for(notify_socket, "WATCHDOG=1")
    finally:
        pinger.stop()


def test_interval_is_half_of_systemd_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    pinger = WatchdogPinger(HeartbeatRegistry())
    assert pinger.interval_s == pytest.approx(30.0 * WATCHDOG_FRACTION)


def test_no_thread_when_watchdog_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    pinger = WatchdogPinger(HeartbeatRegistry())
    assert pinger.interval_s is None
    assert pinger.start() is False
    pinger.stop()


def test_stop_ends_the_thread_promptly(notify_socket: socket.socket) -> None:
    pinger = WatchdogPinger(HeartbeatRegistry(), interval_s=60.0)
    assert pinger.start()
    assert _wait_for(notify_socket, "WATCHDOG=1")
    thread = pinger._thread
    assert thread is not None
    pinger.stop(timeout_s=2.0)
    assert not thread.is_alive(), "stop() must interrupt the wait, not sleep out the interval"
