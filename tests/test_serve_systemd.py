"""`kiosk serve` under a systemd-like supervisor: READY=1, WATCHDOG=1, clean stop on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _receive(sock: socket.socket, deadline: float) -> list[str]:
    messages = []
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            if messages:
                break
    return messages


def test_serve_signals_ready_pings_watchdog_and_stops(tmp_path: Path, data_dir: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    env = {
        **os.environ,
        "NOTIFY_SOCKET": address,
        "WATCHDOG_USEC": "2000000",
        "KIOSK_CAMERA_DEMO_CYCLE_S": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiosk", "serve", "--demo", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any("READY=1" in m for m in seen):
            seen += _receive(sock, min(deadline, time.monotonic() + 2))
            assert proc.poll() is None, proc.communicate()[1]
        ready = next(m for m in seen if "READY=1" in m)
        port = int(re.search(r"http://[^:]+:(\d+)/", ready).group(1))  # type: ignore[union-attr]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.status == 200
        pings: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sum("WATCHDOG=1" in m for m in pings) < 2:
            pings += _receive(sock, min(deadline, time.monotonic() + 2))
        assert sum("WATCHDOG=1" in m for m in pings) >= 2, pings
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        tail = _receive(sock, time.monotonic() + 2)
        assert any("STOPPING=1" in m for m in pings + tail)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        sock.close()
