"""The int8 film localiser (a mask model that proposes where the film is in a photo).

Loaded here, by the model stage, and handed to ``kiosk.rectify`` by whoever composes the
stages: rectify itself loads no model.

What this module does not do: interpret the mask (``kiosk.rectify.locate`` does).
"""

from __future__ import annotations

from pathlib import Path

from kiosk.model.runtime import TFLiteModel

LOCALISER_MANIFEST_NAME = "film-localiser.json"


def localiser_manifest(models_dir: Path) -> Path:
    """Where the localiser's manifest lives in a models folder."""
    return models_dir / LOCALISER_MANIFEST_NAME


def load_localiser(models_dir: Path, threads: int = 2) -> TFLiteModel | None:
    """The localiser of ``models_dir``, or None when it is not shipped there."""
    path = localiser_manifest(models_dir)
    if not path.is_file():
        return None
    return TFLiteModel.from_manifest(path, threads=threads)
