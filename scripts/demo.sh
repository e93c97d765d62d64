#!/usr/bin/env bash
# Run the appliance on any laptop: simulator camera, bundled model, data in ./demo-data.
# Usage: scripts/demo.sh [--port 8080]; then open http://127.0.0.1:8080/
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e .
export KIOSK_DATA_DIR=${KIOSK_DATA_DIR:-$PWD/demo-data}
exec kiosk serve --demo "$@"
