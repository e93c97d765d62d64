"""A chest X-ray classifier: film image in, logits, probabilities, features and CAM out."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.model.manifest import Manifest
from kiosk.model.preprocess import prepare
from kiosk.model.runtime import TFLiteModel
from kiosk.stats import sigmoid


@dataclass(frozen=True)
class Prediction:
    """Raw model output for one image. ``probabilities`` are uncalibrated (sigmoid/softmax)."""

    logits: np.ndarray  # (C,)
    probabilities: np.ndarray  # (C,)
    features: np.ndarray | None  # (D,) pooled penultimate features, when the model has them
    cam: np.ndarray | None  # (h, w, C) class activation map, when the model has one
    timings_ms: dict[str, float]


class Classifier:
    """Wraps a verified :class:`TFLiteModel` whose manifest kind is ``classifier``."""

    def __init__(self, model: TFLiteModel) -> None:
        if model.manifest.kind != "classifier":
            raise ValueError(f"model {model.manifest.id} is a {model.manifest.kind}")
        self.model = model
        self.manifest = model.manifest

    @classmethod
    def from_manifest(cls, path: Path, threads: int = 2) -> Classifier:
        return cls(TFLiteModel(Manifest.load(path), threads=threads))

    def predict(self, image: np.ndarray) -> Prediction:
        """Classify one uint8 grey (H, W) or RGB (H, W, 3) image of any size."""
        t0 = time.perf_counter()
        tensor = prepare(image, self.manifest.input)
        t1 = time.perf_counter()
        out = self.model.run(tensor)
        t2 = time.perf_counter()
        logits = out["logits"].reshape(-1).astype(np.float64)
        if self.manifest.head == "softmax":
            e = np.exp(logits - logits.max())
            probs = e / e.sum()
        elif self.manifest.head == "sigmoid":
            probs = sigmoid(logits)
        else:
            probs = logits.copy()
        features = out["features"].reshape(-1) if "features" in out else None
        cam = out["cam"][0] if "cam" in out else None
        return Prediction(
            logits=logits,
            probabilities=probs,
            features=features,
            cam=cam,
            timings_ms={"preprocess": (t1 - t0) * 1000.0, "inference": (t2 - t1) * 1000.0},
        )
