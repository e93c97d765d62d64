"""Shared fixtures: a scratch data directory, the bundled model, the shared data set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
KERMANY = SHARED / "data" / "kermany-train"
BUNDLED_MANIFEST = REPO / "models" / "cxr-pneumonia-effl0.json"


@pytest.fixture(autouse=True)
def _clean_kiosk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own KIOSK_* settings."""
    for name in list(os.environ):
        if name.startswith("KIOSK_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh KIOSK_DATA_DIR for one test."""
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("KIOSK_DATA_DIR", str(path))
    yield path


@pytest.fixture
def synthetic_films(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that use drawn phantom films switch the "not a chest X-ray" gate off: the shipped
    model rightly finds a phantom unlike the X-rays it was trained on. test_real_xrays.py checks
    the gate itself on real images and phantoms."""
    monkeypatch.setenv("KIOSK_OOD_GATE", "false")


@pytest.fixture
def bundled_manifest() -> Path:
    """The shipped default model; it is part of the repository, so it must be there."""
    assert BUNDLED_MANIFEST.is_file(), f"bundled model manifest missing: {BUNDLED_MANIFEST}"
    return BUNDLED_MANIFEST


@pytest.fixture
def kermany() -> Path:
    """The shared training images; tests that need them skip cleanly without them."""
    if not (KERMANY / "NORMAL").is_dir():
        pytest.skip(f"shared data set not present at {KERMANY} (only on the team's machines)")
    return KERMANY
