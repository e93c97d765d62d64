#!/usr/bin/env bash
# Run every check the project has, on a fresh machine or a developer's: installs what the
# tests need (Debian: chromium, systemd-analyze, sqlite3, postgresql; Python: the package with
# its extras in .venv), then ruff, mypy and pytest. Usage: scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v sqlite3 >/dev/null 2>&1 || need_apt+=(sqlite3)
# The hub tests start a throwaway PostgreSQL cluster (tests/pg.py) with these binaries.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  else
    echo "missing Debian packages: ${need_apt[*]} (run: sudo apt-get install ${need_apt[*]})" >&2
  fi
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Pins live in constraints/ (torch: the CPU build on disk, not a multi-GB CUDA build).
python -m pip install -q -c constraints/dev.txt torch
python -m pip install -q -c constraints/dev.txt -e ".[dev,train,dicom,export,engines,hub]"

ruff check .
ruff format --check .
mypy kiosk
lint-imports    # the layers of docs/ARCHITECTURE.md (contracts in pyproject.toml)
python -m pytest "$@"
# The runtime on Raspberry Pi OS's numpy 1.24, in a venv of its own (see the script).
bash scripts/check-numpy124.sh
