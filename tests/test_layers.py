"""The house rules that a tool can check: module size, and what the appliance loads.

The import layers themselves are import-linter contracts (pyproject.toml, run by
scripts/test.sh as ``lint-imports``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

KIOSK = Path(__file__).resolve().parents[1] / "kiosk"
MAX_MODULE_LINES = 600


def test_no_module_is_over_600_lines() -> None:
    sizes = {
        str(p.relative_to(KIOSK.parent)): len(p.read_text().splitlines())
        for p in KIOSK.rglob("*.py")
    }
    too_big = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not too_big, f"split these modules (one idea per file): {too_big}"


def test_the_appliance_loads_no_research_code_or_training_framework() -> None:
    """What `kiosk serve` imports, in a fresh interpreter: no lab/, torch, TF or ONNX."""
    probe = (
        "import sys\n"
        "import kiosk.cli, kiosk.cli.serve, kiosk.app.server, kiosk.app.service, kiosk.web\n"
        "import kiosk.pipeline, kiosk.app.appliance\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'tensorflow', 'onnxruntime', 'onnx', 'keras') or m.startswith('kiosk.lab'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"the appliance imported: {out.stdout.strip()}"
