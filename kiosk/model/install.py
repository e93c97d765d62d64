"""Model updates: install a new model beside the old one, check it, switch, roll back.

An update is copied into ``<data_dir>/models/<id>-<version>-<sha8>/`` and must pass two checks
before the kiosk switches to it: every file it brings matches the sha256 its manifest gives
(the model ``sha256``, the OOD reference ``ood.sha256``, the card ``card_sha256``, the factory
calibration ``calibration.sha256``), checked before and after copying, and one inference on a
synthetic image gives finite outputs of the right shape. Only then is ``active.json`` replaced
(atomically). Previous models stay on disk, so a rollback is one pointer change.

Every name that becomes part of a path (``id``, ``version``, ``file``, ``card``, ``ood.file``,
``calibration.file``) is a plain name (``Manifest.from_dict`` refuses anything else) and the
target folder is checked to lie inside the models folder, so an update package cannot write
anywhere else. A manifest without ``ood.sha256`` or ``card_sha256`` (older releases) is
refused with the command that computes the missing value; models already installed keep
loading.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.atomic import atomic_write_bytes
from kiosk.clock import utcnow
from kiosk.errors import ModelError
from kiosk.model.classifier import Classifier
from kiosk.model.manifest import Manifest
from kiosk.model.runtime import TFLiteModel

logger = logging.getLogger(__name__)

ACTIVE_FILE = "active.json"


@dataclass(frozen=True)
class InstalledModel:
    manifest: str  # relative to the models folder
    id: str
    version: str
    sha256: str
    installed_at: str


def smoke_test(manifest_path: Path, threads: int = 1) -> float:
    """Load the model (sha256 checked) and run one inference; return its latency in ms."""
    manifest = Manifest.load(manifest_path)
    if manifest.kind != "classifier":
        TFLiteModel(manifest, threads=threads)
        return 0.0
    classifier = Classifier(TFLiteModel(manifest, threads=threads))
    image = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    prediction = classifier.predict(image)
    if prediction.logits.shape != (len(manifest.findings),) or not np.all(
        np.isfinite(prediction.logits)
    ):
        raise ModelError(
            f"model {manifest.id} gave unusable output on a test image",
            "do not install it; ask for a fixed model file",
        )
    return prediction.timings_ms["inference"]


def _read_state(folder: Path) -> dict[str, object]:
    path = folder / ACTIVE_FILE
    if not path.is_file():
        return {"manifest": None, "history": []}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{path} is damaged ({exc})",
            "run `kiosk model rollback` or delete the file to use the bundled model",
        ) from exc
    if not isinstance(state, dict):
        raise ModelError(f"{path} is damaged (not a JSON object)", "delete it")
    state.setdefault("history", [])
    return dict(state)


def active_manifest(models_folder: Path) -> Path | None:
    """The manifest an install made active, or None when the bundled model is in use."""
    target = _read_state(models_folder).get("manifest")
    if not target:
        return None
    path = models_folder / str(target)
    if not path.is_file():
        raise ModelError(
            f"{models_folder / ACTIVE_FILE} names {target}, which does not exist",
            "run `kiosk model rollback` or delete the file to use the bundled model",
        )
    return path


def _write_state(folder: Path, state: dict[str, object]) -> None:
    atomic_write_bytes(folder / ACTIVE_FILE, json.dumps(state, indent=2).encode("utf-8"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def named_files(manifest: Manifest) -> dict[str, str]:
    """Every file the manifest names (plain names next to it) -> the sha256 it must have.

    Raises ModelError when a named file has no sha256 in the manifest, saying how to add it.
    """
    files = {manifest.file: manifest.sha256}
    for name, sha, field, where in (
        (manifest.ood.get("file"), manifest.ood.get("sha256"), "sha256", 'to its "ood" object'),
        (manifest.card, manifest.card_sha256, "card_sha256", "at its top level"),
        (
            manifest.calibration.get("file"),
            manifest.calibration.get("sha256"),
            "sha256",
            'to its "calibration" object',
        ),
    ):
        if not name:
            continue
        if not sha:
            raise ModelError(
                f"model manifest {manifest.path} names {name} but gives no sha256 for it",
                f'add "{field}": "<the hash printed by sha256sum {name}>" {where}',
            )
        files[str(name)] = str(sha)
    return files


def verify_files(manifest: Manifest, folder: Path) -> None:
    """Check every named file in ``folder`` against its sha256; raises ModelError."""
    for name, expected in named_files(manifest).items():
        path = folder / name
        if not path.is_file():
            raise ModelError(
                f"{path} is missing (the manifest names it)",
                "copy the whole update package: the manifest and every file next to it",
            )
        actual = file_sha256(path)
        if actual != expected:
            raise ModelError(
                f"{path} does not match the sha256 in its manifest "
                f"({actual[:12]}… instead of {expected[:12]}…)",
                "copy the update package again; do not install a changed file",
            )


def install(manifest_path: Path, models_folder: Path, *, threads: int = 1) -> InstalledModel:
    """Copy, verify and activate a model; the previous one is kept for rollback."""
    source = Manifest.load(manifest_path)
    verify_files(source, source.path.parent)  # refuse before copying anything
    smoke_test(manifest_path, threads=threads)
    folder = models_folder.resolve()
    target_dir = folder / f"{source.id}-{source.version}-{source.sha256[:8]}"
    if target_dir.resolve().parent != folder:
        raise ModelError(
            f"model {source.id} {source.version} would be installed outside {folder}",
            "do not install this package; ask for a corrected manifest",
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in named_files(source):
        shutil.copy2(source.path.parent / name, target_dir / name)
    manifest_copy = target_dir / source.path.name
    shutil.copy2(source.path, manifest_copy)
    verify_files(Manifest.load(manifest_copy), target_dir)  # the copies, as they will be used
    smoke_test(manifest_copy, threads=threads)
    relative = str(manifest_copy.relative_to(folder))
    state = _read_state(models_folder)
    history = list(state.get("history") or [])  # type: ignore[call-overload]
    if state.get("manifest"):
        history.append(state["manifest"])
    _write_state(models_folder, {"manifest": relative, "history": history[-10:]})
    logger.info("model %s %s installed and active", source.id, source.version)
    return InstalledModel(relative, source.id, source.version, source.sha256, utcnow())


def rollback(models_folder: Path) -> str | None:
    """Switch back to the previously active model; None means the bundled one."""
    state = _read_state(models_folder)
    history = list(state.get("history") or [])  # type: ignore[call-overload]
    previous = history.pop() if history else None
    if previous is None:
        (models_folder / ACTIVE_FILE).unlink(missing_ok=True)
        return None
    smoke_test(models_folder / str(previous))
    _write_state(models_folder, {"manifest": previous, "history": history})
    return str(previous)
