"""kiosk.sdnotify against real AF_UNIX datagram sockets (a file path and an abstract name)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiosk.app import sdnotify

RECV_TIMEOUT_S = 2.0
MAX_DATAGRAM_BYTES = 4096


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(RECV_TIMEOUT_S)
    return sock


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[socket.socket]:
    """A bound receiver, with $NOTIFY_SOCKET pointing at it the way systemd would write it."""
    if request.param == "path":
        path = str(tmp_path / "notify")
        sock = _receiver(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
    else:
        name = f"kiosk-test-{uuid.uuid4().hex}"
        sock = _receiver("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    with sock:
        yield sock


def _recv(sock: socket.socket) -> str:
    return sock.recv(MAX_DATAGRAM_BYTES).decode("utf-8")


def test_ready_is_sent(notify_socket: socket.socket) -> None:
    assert sdnotify.ready() is True
    assert _recv(notify_socket) == "READY=1"


def test_ready_with_status_is_one_datagram(notify_socket: socket.socket) -> None:
    assert sdnotify.ready("model loaded\nweb listening")
    assert _recv(notify_socket) == "READY=1\nSTATUS=model loaded web listening"


def test_watchdog_status_stopping(notify_socket: socket.socket) -> None:
    assert sdnotify.watchdog_ping()
    assert _recv(notify_socket) == "WATCHDOG=1"
    assert sdnotify.status("capturing")
    assert _recv(notify_socket) == "STATUS=capturing"
    assert sdnotify.stopping()
    assert _recv(notify_socket) == "STOPPING=1"


def test_noop_without_notify_socket() -> None:
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.watchdog_ping() is False


def test_relative_socket_path_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/notify")
    assert sdnotify.notify("READY=1") is False


def test_missing_socket_returns_false_not_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.watchdog_ping() is False


def test_watchdog_interval_unset() -> None:
    assert sdnotify.watchdog_interval_s() is None


def test_watchdog_interval_without_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert sdnotify.watchdog_interval_s() == pytest.approx(30.0)


def test_watchdog_interval_for_this_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1500000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval_s() == pytest.approx(1.5)


def test_watchdog_interval_for_another_pid_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval_s() is None


@pytest.mark.parametrize("value", ["0", "-5", "thirty", ""])
def test_watchdog_interval_invalid_is_disabled(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", value)
    assert sdnotify.watchdog_interval_s() is None


def test_watchdog_interval_bad_pid_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", "not-a-pid")
    assert sdnotify.watchdog_interval_s() is None
