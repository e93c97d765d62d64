#!/usr/bin/env bash
# Prove the runtime works on Raspberry Pi OS Bookworm's numpy (1.24): a fresh venv with
# numpy 1.24.4 and the Pi constraints (constraints/pi.txt), the package installed
# WITHOUT extras, then the real CLI on a generated digital X-ray and a simulated photo.
# Usage: scripts/check-numpy124.sh [VENV_DIR]   (default: a temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-$(mktemp -d)/venv124}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "numpy==1.24.4"
"$VENV/bin/python" -m pip install -q -c constraints/pi.txt -e .
"$VENV/bin/python" - <<'PY'
import numpy, cv2, importlib
assert numpy.__version__ == "1.24.4", numpy.__version__
for name in ("kiosk.pipeline", "kiosk.rectify.rectifier", "kiosk.camera.scene",
             "kiosk.capture.auto", "kiosk.calibration.fitting", "kiosk.store", "kiosk.web",
             "kiosk.sync.client", "kiosk.app.server", "kiosk.camera"):
    importlib.import_module(name)
print(f"numpy {numpy.__version__}, opencv {cv2.__version__}: imports ok")
PY
WORK=$(mktemp -d)
export KIOSK_DATA_DIR="$WORK/data"
"$VENV/bin/python" - "$WORK" <<'PY'
import sys
from pathlib import Path
import numpy as np
from kiosk.atomic import atomic_write_bytes
from kiosk.camera import scene as simulate
from kiosk.imaging.encode import encode_jpeg, encode_png
work = Path(sys.argv[1])
rng = np.random.default_rng(0)
digital = simulate.phantom_chest(rng, size=(512, 512))
atomic_write_bytes(work / "in" / "digital.png", encode_png(digital))
photo = simulate.render(digital, simulate.random_params(rng, difficulty=0.2), rng).image
atomic_write_bytes(work / "in" / "photo.jpg", encode_jpeg(photo))
PY
"$VENV/bin/kiosk" model verify
# The inputs are drawn phantoms, which the "not a chest X-ray" gate rightly rejects; switch
# it off here so the whole path (inference, findings, storage) runs on numpy 1.24.
KIOSK_OOD_GATE=false "$VENV/bin/kiosk" analyze --json "$WORK/in" > "$WORK/out.jsonl"
"$VENV/bin/python" - "$WORK/out.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 2, lines
for line in lines:
    assert line["status"] in ("ok", "rejected"), line
    assert line["result_id"], line
digital = next(l for l in lines if l["input"] == "digital")
assert digital["status"] == "ok" and digital["findings"][0]["code"] == "pneumonia", digital
print("analyze on numpy 1.24:", [(l["input"], l["status"]) for l in lines])
PY
echo "numpy 1.24 check passed"
