"""systemd/install.sh into a scratch root, with apt-get, systemctl, useradd, pip and python
replaced by recorder scripts that log their arguments (and fake just enough side effects:
useradd writes the scratch /etc/passwd, ``python -m venv`` creates the venv's python).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEMD_DIR = REPO / "systemd"
INSTALL_SH = SYSTEMD_DIR / "install.sh"
SCRIPT_TIMEOUT_S = 60
RECORDED_TOOLS = (
    "apt-get",
    "systemctl",
    "useradd",
    "usermod",
    "userdel",
    "chown",
    "python3",
    "pip",
    "venv-python",
)

RECORDER = r"""#!/bin/sh
# Log "<tool> <args...>" as one line; fake the side effects install.sh relies on.
tool=$(basename "$0")
printf '%s' "$tool" >> "$RECORD_LOG"
for arg in "$@"; do printf ' %s' "$arg" >> "$RECORD_LOG"; done
printf '\n' >> "$RECORD_LOG"
eval "last=\${$#}"
prefix=""
prev=""
for arg in "$@"; do
    if [ "$prev" = "--prefix" ]; then prefix=$arg; fi
    prev=$arg
done
case "$tool" in
    useradd)
        mkdir -p "$prefix/etc"
        echo "$last:x:999:999::/var/lib/kiosk:/usr/sbin/nologin" >> "$prefix/etc/passwd" ;;
    userdel)
        grep -v "^$last:" "$prefix/etc/passwd" > "$prefix/etc/passwd.new" || true
        mv "$prefix/etc/passwd.new" "$prefix/etc/passwd" ;;
    python3)
        if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
            mkdir -p "$last/bin"
            printf '#!/bin/sh\n' > "$last/bin/python"
            chmod +x "$last/bin/python"
        fi ;;
esac
exit 0
"""


@dataclass
class Harness:
    """A scratch root, a fake source tree and the recorders' log."""

    root: Path
    source: Path
    log: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.log.write_text("")
        result = subprocess.run(
            [
                "bash",
                str(INSTALL_SH),
                "--root",
                str(self.root),
                "--source",
                str(self.source),
                *args,
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
        )
        if check:
            assert result.returncode == 0, f"install.sh failed:\n{result.stdout}\n{result.stderr}"
        return result

    def calls(self, tool: str) -> list[list[str]]:
        lines = self.log.read_text().splitlines()
        return [line.split()[1:] for line in lines if line.split()[0] == tool]

    def all_calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def files(self) -> set[str]:
        return {
            str(p.relative_to(self.root))
            for p in self.root.rglob("*")
            if p.is_file() and "app.prev" not in p.parts
        }


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in RECORDED_TOOLS:
        script = bin_dir / tool
        script.write_text(RECORDER)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    source = tmp_path / "source"
    (source / "kiosk").mkdir(parents=True)
    (source / "pyproject.toml").write_text("[project]\nname = 'lightbox-kiosk'\n")
    (source / "kiosk" / "__init__.py").write_text('__version__ = "0.0.0"\n')
    (source / ".git").mkdir()
    (source / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    shutil.copytree(SYSTEMD_DIR, source / "systemd")
    shutil.copytree(REPO / "constraints", source / "constraints")
    root = tmp_path / "root"
    root.mkdir()
    log = tmp_path / "calls.log"
    env = dict(os.environ)
    env.update(
        RECORD_LOG=str(log),
        APT_GET=str(bin_dir / "apt-get"),
        SYSTEMCTL=str(bin_dir / "systemctl"),
        USERADD=str(bin_dir / "useradd"),
        USERMOD=str(bin_dir / "usermod"),
        USERDEL=str(bin_dir / "userdel"),
        CHOWN=str(bin_dir / "chown"),
        PYTHON=str(bin_dir / "python3"),
        PIP=str(bin_dir / "pip"),
        VENV_PYTHON=str(bin_dir / "venv-python"),
    )
    return Harness(root=root, source=source, log=log, env=env)


def test_install_into_scratch_root(harness: Harness) -> None:
    harness.run()
    root = harness.root

    installs = [c for c in harness.calls("apt-get") if "install" in c]
    assert len(installs) == 1
    for package in ("python3-picamera2", "python3-venv", "python3-pip", "sqlite3"):
        assert package in installs[0]
    assert "cage" not in installs[0] and "chromium" not in installs[0]
    assert ["update"] in harness.calls("apt-get")

    venv = root / "opt/kiosk/venv"
    assert harness.calls("python3") == [["-m", "venv", "--system-site-packages", str(venv)]]

    app = root / "opt/kiosk/app"
    constraints = app / "constraints/pi.txt"
    pip_calls = harness.calls("pip")
    assert any(
        "--constraint" in c
        and c[c.index("--constraint") + 1] == str(constraints)
        and c[-1] == str(app)
        for c in pip_calls
    ), pip_calls
    constraint_lines = constraints.read_text().splitlines()
    assert "numpy<2" in constraint_lines
    assert "opencv-python-headless==4.11.0.86" in constraint_lines
    assert len(harness.calls("venv-python")) == 1, "the numpy < 2 check must run"

    assert (app / "pyproject.toml").is_file()
    assert not (app / ".git").exists(), "git metadata must not be copied"

    useradd = harness.calls("useradd")
    assert len(useradd) == 1
    assert useradd[0][-1] == "kiosk"
    assert "--system" in useradd[0]
    assert useradd[0][useradd[0].index("--groups") + 1] == "video,render"
    assert useradd[0][useradd[0].index("--shell") + 1] == "/usr/sbin/nologin"

    units = root / "etc/systemd/system"
    for unit in (
        "kiosk.service",
        "kiosk-sync.service",
        "kiosk-sync.timer",
        "kiosk-retention.service",
        "kiosk-retention.timer",
    ):
        assert (units / unit).read_bytes() == (SYSTEMD_DIR / unit).read_bytes()
    assert not (units / "kiosk-display.service").exists()

    config = root / "etc/kiosk/kiosk.toml"
    assert config.read_bytes() == (SYSTEMD_DIR / "kiosk.toml.example").read_bytes()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert ["root:kiosk", str(config)] in harness.calls("chown")
    assert stat.S_IMODE((root / "etc/kiosk").stat().st_mode) == 0o750

    systemctl = harness.calls("systemctl")
    assert [
        f"--root={root}",
        "enable",
        "kiosk.service",
        "kiosk-sync.timer",
        "kiosk-retention.timer",
    ] in systemctl
    assert not any(verb in c for c in systemctl for verb in ("start", "restart")), (
        "nothing may be started inside a scratch root"
    )
    wrapper = root / "usr/local/bin/kiosk"
    assert "KIOSK_DATA_DIR=/var/lib/kiosk" in wrapper.read_text()


def test_second_run_is_idempotent_and_keeps_config(harness: Harness) -> None:
    harness.run()
    files_after_first = harness.files()
    config = harness.root / "etc/kiosk/kiosk.toml"
    config.write_text('device_id = "clinic-a"\n')
    config.chmod(0o640)

    harness.run()
    assert config.read_text() == 'device_id = "clinic-a"\n', "config must never be overwritten"
    assert harness.files() == files_after_first
    assert harness.calls("useradd") == [], "user exists: no second useradd"
    assert harness.calls("usermod")[0][-1] == "kiosk"
    assert harness.calls("python3") == [], "venv exists: not recreated"
    passwd = (harness.root / "etc/passwd").read_text().splitlines()
    assert [line for line in passwd if line.startswith("kiosk:")] == [passwd[0]]
    assert (harness.root / "opt/kiosk/app.prev/pyproject.toml").is_file()


def test_display_option(harness: Harness) -> None:
    harness.run("--display")
    install = next(c for c in harness.calls("apt-get") if "install" in c)
    assert "cage" in install and "chromium" in install
    assert (harness.root / "etc/systemd/system/kiosk-display.service").is_file()
    users = [c[-1] for c in harness.calls("useradd")]
    assert users == ["kiosk", "kiosk-display"]
    enables = [c for c in harness.calls("systemctl") if "enable" in c]
    assert "kiosk-display.service" in enables[0]


def test_uninstall_keeps_data_and_purge_removes_it(harness: Harness) -> None:
    harness.run()
    data = harness.root / "var/lib/kiosk"
    data.mkdir(parents=True)
    (data / "kiosk.db").write_bytes(b"SQLite format 3\0")

    harness.run("--uninstall")
    assert not (harness.root / "opt/kiosk").exists()
    assert not (harness.root / "etc/systemd/system/kiosk.service").exists()
    assert (data / "kiosk.db").is_file(), "--uninstall must keep results"
    assert (harness.root / "etc/kiosk/kiosk.toml").is_file()
    assert harness.calls("userdel") == []
    assert any("disable" in c for c in harness.calls("systemctl"))

    harness.run("--uninstall", "--purge")
    assert not data.exists()
    assert not (harness.root / "etc/kiosk").exists()
    assert harness.calls("userdel") == [["--prefix", str(harness.root), "kiosk"]]


def test_dry_run_changes_nothing(harness: Harness) -> None:
    result = harness.run("--dry-run", "--display")
    assert list(harness.root.iterdir()) == []
    assert harness.all_calls() == []
    assert "[dry-run]" in result.stdout
    assert "python3-picamera2" in result.stdout


def test_purge_without_uninstall_is_refused(harness: Harness) -> None:
    result = harness.run("--purge", check=False)
    assert result.returncode != 0
    assert "--uninstall" in result.stderr
    assert harness.all_calls() == []


def test_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(
        [shellcheck, str(INSTALL_SH)], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S
    )
    assert result.returncode == 0, result.stdout
