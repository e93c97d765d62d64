"""The shipped systemd units, checked by the real systemd-analyze.

``systemd-analyze verify`` checks that every ExecStart= binary exists, so it runs offline
with ``--root=`` a scratch root holding the units in /etc/systemd/system, a copy of the
host's unit directory (for sysinit.target and friends) and empty executables at the paths
the units name. A unit it cannot parse cleanly prints a warning; any output fails the test.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEMD_DIR = REPO / "systemd"
UNITS = (
    "kiosk.service",
    "kiosk-sync.service",
    "kiosk-sync.timer",
    "kiosk-retention.service",
    "kiosk-retention.timer",
    "kiosk-display.service",
    "kiosk-hub.service",
)
HOST_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
ANALYZE_TIMEOUT_S = 120
KIOSK_MAX_EXPOSURE = 1.5
SYNC_INTERVAL_S = 15 * 60
MODELS_DIR = REPO / "models"
MDWE_UNSUPPORTED_EXIT = 77

# Runs in a child process: refuse W+X memory the way MemoryDenyWriteExecute=yes does (the
# kernel's PR_SET_MDWE, Linux >= 6.3), prove the refusal works, then exercise the native
# stack kiosk.service loads. Any library that needs W+X memory (a JIT) fails here.
MDWE_SCRIPT = r"""
import ctypes, mmap, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(%(unsupported)d)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
wx = libc.mmap(None, 4096, mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC,
               mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
assert wx in (None, ctypes.c_void_p(-1).value), "MDWE did not refuse a W+X mapping"
import numpy as np
a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
np.linalg.svd(a @ a.T); np.fft.fft2(a)
import cv2
img = (np.random.default_rng(1).random((600, 800)) * 255).astype(np.uint8)
cv2.GaussianBlur(img, (7, 7), 0)
cv2.warpPerspective(img, np.eye(3), (400, 300))
cv2.imencode(".jpg", img)
import sqlite3
sqlite3.connect(":memory:").execute("select 1")
from ai_edge_litert.interpreter import Interpreter
for path in sys.argv[1:]:
    it = Interpreter(model_path=path, num_threads=2)
    it.allocate_tensors()
    detail = it.get_input_details()[0]
    it.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    it.invoke()
print("OK", len(sys.argv) - 1)
"""

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (Debian: apt-get install systemd)",
)

Directives = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Directives:
    """Section -> key -> every value in order (keys like DeviceAllow= repeat)."""
    sections: Directives = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[section][key.strip()].append(value.strip())
    return sections


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=ANALYZE_TIMEOUT_S
    )


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    host_units = next((d for d in HOST_UNIT_DIRS if (d / "sysinit.target").exists()), None)
    if host_units is None:
        pytest.skip("no host systemd unit directory to copy (is systemd installed?)")
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    executables: set[str] = set()
    for unit in UNITS:
        shutil.copy(SYSTEMD_DIR / unit, unit_dir / unit)
        for exec_start in parse_unit(SYSTEMD_DIR / unit)["Service"].get("ExecStart", []):
            executables.add(exec_start.split()[0])
            if exec_start.startswith("/usr/bin/cage"):
                executables.add(exec_start.split("--", 1)[1].split()[0])
    for executable in executables:
        target = root / executable.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("#!/bin/sh\n")
        target.chmod(0o755)
    return root


def exposure(unit_path: Path) -> float:
    result = _analyze("security", "--offline=yes", "--no-pager", str(unit_path))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, f"no exposure level in:\n{result.stdout}\n{result.stderr}"
    return float(match.group(1))


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_verify_is_clean(scratch_root: Path, unit: str) -> None:
    result = _analyze("verify", f"--root={scratch_root}", unit)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == "", "systemd-analyze verify printed warnings"


@needs_analyze
def test_verify_catches_a_typo(scratch_root: Path) -> None:
    """The check above would notice a misspelt directive (it is a warning, not an error)."""
    broken = scratch_root / "etc/systemd/system/kiosk-typo.service"
    text = (SYSTEMD_DIR / "kiosk.service").read_text()
    broken.write_text(text.replace("WatchdogSec=", "WatchdogSecs="))
    try:
        result = _analyze("verify", f"--root={scratch_root}", broken.name)
    finally:
        broken.unlink()
    assert "Unknown key" in result.stderr


@needs_analyze
def test_verify_catches_a_missing_executable(scratch_root: Path) -> None:
    broken = scratch_root / "etc/systemd/system/kiosk-noexec.service"
    text = (SYSTEMD_DIR / "kiosk.service").read_text()
    broken.write_text(text.replace("/opt/kiosk/venv/bin/kiosk", "/opt/kiosk/venv/bin/nokiosk"))
    try:
        result = _analyze("verify", f"--root={scratch_root}", broken.name)
    finally:
        broken.unlink()
    assert result.returncode != 0


@needs_analyze
def test_security_exposure() -> None:
    kiosk = exposure(SYSTEMD_DIR / "kiosk.service")
    sync = exposure(SYSTEMD_DIR / "kiosk-sync.service")
    retention = exposure(SYSTEMD_DIR / "kiosk-retention.service")
    assert kiosk <= KIOSK_MAX_EXPOSURE
    assert sync < kiosk
    assert retention < kiosk


@needs_analyze
def test_sync_timer_fires_every_15_minutes() -> None:
    timer = parse_unit(SYSTEMD_DIR / "kiosk-sync.timer")["Timer"]
    result = _analyze("calendar", "--iterations=3", timer["OnCalendar"][0])
    assert result.returncode == 0, result.stderr
    times = re.findall(r"\(in UTC\): \S+ (\S+) (\d\d):(\d\d):(\d\d)", result.stdout)
    if len(times) < 3:  # machine already in UTC: no separate "(in UTC)" line
        times = re.findall(
            r"(?:Next elapse|Iter\. #\d): \S+ (\S+) (\d\d):(\d\d):(\d\d)", result.stdout
        )
    seconds = [int(h) * 3600 + int(m) * 60 + int(s) for _, h, m, s in times]
    assert len(seconds) == 3, result.stdout
    gaps = {(b - a) % 86400 for a, b in itertools.pairwise(seconds)}
    assert gaps == {SYNC_INTERVAL_S}


def test_native_stack_needs_no_wx_memory() -> None:
    """MemoryDenyWriteExecute=yes holds for numpy, OpenCV, sqlite3, LiteRT (+ shipped models)."""
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is not installed")
    models = sorted(str(p) for p in MODELS_DIR.glob("*.tflite"))
    script = MDWE_SCRIPT % {"unsupported": MDWE_UNSUPPORTED_EXIT}
    result = subprocess.run(
        [sys.executable, "-c", script, *models],
        capture_output=True,
        text=True,
        timeout=ANALYZE_TIMEOUT_S,
    )
    if result.returncode == MDWE_UNSUPPORTED_EXIT:
        pytest.skip("this kernel has no PR_SET_MDWE (needs Linux >= 6.3)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"OK {len(models)}"


def test_kiosk_service_directives() -> None:
    unit = parse_unit(SYSTEMD_DIR / "kiosk.service")
    service = unit["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] == ["30"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartSec"]
    assert unit["Unit"]["StartLimitIntervalSec"] and unit["Unit"]["StartLimitBurst"]
    assert "StartLimitBurst" not in service, "StartLimit* belong in [Unit]"
    env = " ".join(service["Environment"]).split()
    assert "KIOSK_CONFIG=/etc/kiosk/kiosk.toml" in env
    assert "KIOSK_DATA_DIR=/var/lib/kiosk" in env
    assert service["ExecStart"] == ["/opt/kiosk/venv/bin/kiosk serve"]
    assert service["User"] == ["kiosk"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["AmbientCapabilities"] == [""]
    assert service["DevicePolicy"] == ["closed"]
    allowed = service["DeviceAllow"]
    for device in ("char-video4linux rw", "char-media rw", "char-dma_heap rw"):
        assert device in allowed
    assert service.get("PrivateDevices", ["no"]) == ["no"], "the camera needs /dev"
    for key in (
        "ProtectSystem",
        "UMask",
        "ProtectProc",
        "MemoryMax",
        "TasksMax",
        "StateDirectory",
        "ConfigurationDirectory",
        "LogsDirectory",
    ):
        assert service[key], key
    assert service["ProtectSystem"] == ["strict"]
    assert service.get("ProcSubset", ["all"]) != ["pid"], (
        "ProcSubset=pid hides /proc/cpuinfo and silently disables LiteRT's XNNPACK delegate"
    )
    assert service["UMask"] == ["0077"]
    for key in (
        "ProtectHome",
        "PrivateTmp",
        "NoNewPrivileges",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ):
        assert service[key] == ["yes"], key
    families = service["RestrictAddressFamilies"][0].split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert service["SystemCallArchitectures"] == ["native"]
    assert service["SystemCallFilter"][0] == "@system-service"


def test_timers_are_persistent_and_randomised() -> None:
    for name in ("kiosk-sync.timer", "kiosk-retention.timer"):
        timer = parse_unit(SYSTEMD_DIR / name)["Timer"]
        assert timer["Persistent"] == ["true"], name
        assert timer["RandomizedDelaySec"], name
        assert parse_unit(SYSTEMD_DIR / name)["Install"]["WantedBy"] == ["timers.target"]


def test_display_waits_for_the_kiosk() -> None:
    unit = parse_unit(SYSTEMD_DIR / "kiosk-display.service")
    assert "kiosk.service" in unit["Unit"]["After"][0].split()
    assert unit["Unit"]["BindsTo"] == ["kiosk.service"]
    assert unit["Service"]["User"] != ["kiosk"], "the browser must not run as the app user"
    assert "--kiosk" in unit["Service"]["ExecStart"][0]


def test_example_config_is_valid() -> None:
    config = pytest.importorskip("kiosk.config", reason="kiosk.config is not available")
    loaded = config.load_config(SYSTEMD_DIR / "kiosk.toml.example", env={})
    assert str(loaded.data_dir) == "/var/lib/kiosk"
    assert loaded.camera.backend == "picamera2"


def test_hub_service_runs_the_hub_behind_the_proxy() -> None:
    service = parse_unit(SYSTEMD_DIR / "kiosk-hub.service")["Service"]
    assert service["ExecStart"][0].startswith("/opt/kiosk-hub/venv/bin/kiosk hub serve ")
    assert "--host 127.0.0.1" in service["ExecStart"][0]
    assert service["User"] == ["kiosk-hub"] and service["CapabilityBoundingSet"] == [""]
    assert service["EnvironmentFile"] == ["-/etc/kiosk-hub/hub.env"]
