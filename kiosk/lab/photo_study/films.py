"""The study's digital films: the model's held-out Kermany films, or phantoms without them."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kiosk.camera import scene
from kiosk.config import BUNDLED_MODELS_DIR, DEFAULT_MODEL, KERMANY_DIR

MANIFEST = BUNDLED_MODELS_DIR / f"{DEFAULT_MODEL}.json"
SPLIT_CSV = BUNDLED_MODELS_DIR / "cxr-pneumonia-effl0.split.csv"
LABELS = {"NORMAL": 0, "PNEUMONIA": 1}


@dataclass(frozen=True)
class FilmRef:
    """One digital film: a held-out Kermany image (label 0/1) or a phantom (label None)."""

    key: str
    label: int | None
    path: Path | None
    patient: str = ""


def holdout_films(
    seed: int, split_csv: Path = SPLIT_CSV, root: Path = KERMANY_DIR
) -> list[FilmRef]:
    """The model's held-out films in a seeded order; phantoms when the images are absent."""
    films: list[FilmRef] = []
    if root.is_dir() and split_csv.is_file():
        with split_csv.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if row["split"] == "holdout" and (root / row["filename"]).is_file():
                    films.append(
                        FilmRef(
                            row["filename"],
                            LABELS[row["label"]],
                            root / row["filename"],
                            row.get("patient", ""),
                        )
                    )
    if not films:
        return [FilmRef(f"phantom-{k}", None, None) for k in range(64)]
    order = np.random.default_rng(seed).permutation(len(films))
    return [films[int(i)] for i in order]


def load_film(film: FilmRef) -> np.ndarray:
    """The digital film as grey uint8 (phantoms drawn from the key, so they repeat)."""
    if film.path is not None:
        img = cv2.imread(str(film.path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise OSError(f"cannot read {film.path}")
        return img
    k = int(film.key.rsplit("-", 1)[1])
    return scene.phantom_chest(np.random.default_rng(10_000 + k), (768, 768))
