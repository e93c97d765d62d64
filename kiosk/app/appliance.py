"""Composition: the configured store, model, and pipeline, built once for the CLI or the server.

This module only wires stages together; it contains no stage logic of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from kiosk.camera.base import Camera, create_camera
from kiosk.config import KioskConfig
from kiosk.errors import ModelError
from kiosk.model.classifier import Classifier
from kiosk.model.install import active_manifest
from kiosk.model.manifest import Manifest
from kiosk.pipeline import Pipeline
from kiosk.store import Store

logger = logging.getLogger(__name__)


def installed_models_dir(config: KioskConfig) -> Path:
    """Where `kiosk model install` puts model updates (inside the data directory)."""
    return config.data_dir / "models"


def resolve_manifest(config: KioskConfig) -> Path:
    """The manifest of the model to run.

    An installed update (``<data_dir>/models/active.json`` naming a manifest) wins over the
    bundled ``models_dir/<model>.json``; ``model`` may also be a path to a manifest.
    """
    installed = active_manifest(installed_models_dir(config))
    if installed is not None:
        return installed
    candidate = Path(config.model)
    if candidate.suffix == ".json" and candidate.is_file():
        return candidate
    path = config.models_dir / f"{config.model}.json"
    if not path.is_file():
        raise ModelError(
            f"no manifest for model {config.model!r} in {config.models_dir}",
            "set `model` in the config to a model id that exists in models_dir",
        )
    return path


def load_manifest(config: KioskConfig) -> Manifest:
    return Manifest.load(resolve_manifest(config))


def load_classifier(config: KioskConfig) -> Classifier:
    return Classifier.from_manifest(resolve_manifest(config), threads=config.threads)


def camera_options(config: KioskConfig) -> dict[str, object]:
    """Backend options from the ``camera`` section (each backend takes only its own)."""
    cam = config.camera
    if cam.backend == "simulator":
        return {
            "resolution": cam.resolution or (1920, 1080),
            "folder": cam.folder,
            "auto_cycle_s": cam.demo_cycle_s,
            "preview_width": cam.preview_width,
            "seed": cam.simulator_seed,
        }
    if cam.backend == "folder":
        return {
            "folder": cam.folder,
            "loop": cam.replay_loop,
            "frame_interval_s": cam.replay_interval_s,
            "preview_width": cam.preview_width,
        }
    if cam.backend == "opencv":
        device: int | str = int(cam.device) if cam.device.isdigit() else cam.device
        return {"device": device, "resolution": cam.resolution, "preview_width": cam.preview_width}
    return {
        "device": int(cam.device) if cam.device.isdigit() else 0,
        "resolution": cam.resolution,
        "autofocus_before_still": cam.autofocus_before_still,
    }


def configured_camera(config: KioskConfig) -> Camera:
    """The configured camera, not yet opened (AutoCapture opens and reopens it)."""
    return create_camera(config.camera.backend, **camera_options(config))


def open_configured_camera(config: KioskConfig) -> Camera:
    camera = configured_camera(config)
    camera.open()
    return camera


@dataclass
class Appliance:
    """The long-lived objects of one kiosk process."""

    config: KioskConfig
    store: Store
    classifier: Classifier
    pipeline: Pipeline = field(init=False)

    def __post_init__(self) -> None:
        self.pipeline = Pipeline.from_config(self.config, self.classifier, self.store)

    @classmethod
    def open(cls, config: KioskConfig) -> Appliance:
        store = Store(config.db_path)
        return cls(config=config, store=store, classifier=load_classifier(config))

    def close(self) -> None:
        self.store.close()
