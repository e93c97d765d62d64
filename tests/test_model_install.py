"""Model updates: verify before switching, keep the previous one, roll back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kiosk.app.appliance import resolve_manifest
from kiosk.config import load_config
from kiosk.errors import ModelError
from kiosk.model.install import install, rollback
from kiosk.model.manifest import Manifest


def _release(src_manifest: Path, dest: Path, version: str) -> Path:
    """A copy of the bundled model presented as another release."""
    dest.mkdir(parents=True)
    m = Manifest.load(src_manifest)
    shutil.copy(m.model_path, dest / m.file)
    if m.calibration:  # the factory calibration travels with its model
        name = m.calibration["file"]
        shutil.copy(src_manifest.parent / name, dest / name)
    raw = json.loads(src_manifest.read_text())
    raw["version"] = version
    raw.pop("ood", None)
    raw.pop("card", None)
    path = dest / src_manifest.name
    path.write_text(json.dumps(raw))
    return path


def test_install_switch_and_rollback(
    bundled_manifest: Path, data_dir: Path, tmp_path: Path
) -> None:
    config = load_config()
    folder = data_dir / "models"
    before = resolve_manifest(config)
    v2 = install(_release(bundled_manifest, tmp_path / "r2", "2.0.0"), folder)
    installed = Manifest.load(resolve_manifest(config))
    assert installed.version == "2.0.0"
    from kiosk.calibration.factory import load_factory

    factory = load_factory(installed)  # copied, checked against its sha256, and usable
    assert factory is not None and factory.kind == "factory"
    install(_release(bundled_manifest, tmp_path / "r3", "3.0.0"), folder)
    assert Manifest.load(resolve_manifest(config)).version == "3.0.0"
    assert rollback(folder) == v2.manifest
    assert Manifest.load(resolve_manifest(config)).version == "2.0.0"
    assert rollback(folder) is None
    assert resolve_manifest(config) == before


def test_corrupt_update_is_refused_and_nothing_changes(
    bundled_manifest: Path, data_dir: Path, tmp_path: Path
) -> None:
    config = load_config()
    folder = data_dir / "models"
    install(_release(bundled_manifest, tmp_path / "good", "2.0.0"), folder)
    bad = _release(bundled_manifest, tmp_path / "bad", "9.9.9")
    model_file = Manifest.load(bad).model_path
    model_file.write_bytes(model_file.read_bytes()[:-100])
    with pytest.raises(ModelError, match="does not match"):
        install(bad, folder)
    worse = _release(bundled_manifest, tmp_path / "worse", "9.9.8")
    factory_file = worse.parent / Manifest.load(worse).calibration["file"]
    factory_file.write_text(factory_file.read_text().replace('"platt"', '"temperature"'))
    with pytest.raises(ModelError, match="does not match"):
        install(worse, folder)
    assert Manifest.load(resolve_manifest(config)).version == "2.0.0"
    assert not any("9.9.9" in p.name for p in folder.iterdir())
