"""The "is this a chest X-ray at all?" gate: Mahalanobis distance in a PCA of model features.

Fitted on the pooled features of the training X-rays: the features are centred, projected on
the first ``k`` principal components and scaled by each component's standard deviation (the
Mahalanobis distance within that subspace). What the subspace cannot explain counts too: the
residual is scaled by the average variance of the discarded components, as in probabilistic
PCA, so an image whose features leave the subspace is not missed. The distance is the square
root of the sum of both, divided by the feature dimension's square root so it stays near 1 for
typical training images. The threshold is a high percentile
of the distances of the *validation* X-rays (images the fit never saw), so about
``100 - percentile`` percent of real X-rays are flagged by construction and anything far from
them (a photo of a hand, a screen, the empty lightbox) lands far above it.

This is a plausibility check, not a guarantee: an image can be an X-ray and still be out of
scope (an adult film, a lateral view) and pass. numpy only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.errors import ModelError

logger = logging.getLogger(__name__)

_FORMAT = 1


@dataclass(frozen=True)
class OodDetector:
    """PCA-whitened Mahalanobis distance with a fixed threshold."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), orthonormal rows
    std: np.ndarray  # (k,) standard deviation along each component
    threshold: float
    residual_std: float = 0.0  # std of the residual per discarded dimension; 0 = ignore it

    @property
    def feature_dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def fit(
        cls,
        train_features: np.ndarray,
        val_features: np.ndarray,
        components: int = 32,
        percentile: float = 99.5,
    ) -> OodDetector:
        """Fit the PCA on ``train_features`` and set the threshold from ``val_features``."""
        x = np.asarray(train_features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] <= components:
            raise ModelError(
                f"OOD fit needs more than {components} feature rows, got shape {x.shape}",
                "use more training images or fewer components",
            )
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        std = s[:components] / np.sqrt(x.shape[0] - 1)
        std = np.maximum(std, 1e-6 * max(float(std[0]), 1e-12))
        rest = s[components:] ** 2 / (x.shape[0] - 1)
        dims_left = max(x.shape[1] - components, 1)
        residual_std = float(np.sqrt(max(rest.sum() / dims_left, 1e-12)))
        det = cls(mean, vt[:components].copy(), std, float("inf"), residual_std)
        dist = det.distances(val_features)
        threshold = float(np.percentile(dist, percentile))
        logger.info(
            "OOD fit: %d comps, threshold %.3f (p%.1f of %d val)",
            components,
            threshold,
            percentile,
            len(dist),
        )
        return cls(mean, det.components, std, threshold, residual_std)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Distances of a batch (N, D) of feature vectors."""
        f = np.asarray(features, dtype=np.float64)
        if f.ndim == 1:
            f = f[None, :]
        if f.ndim != 2 or f.shape[1] != self.feature_dim:
            raise ModelError(
                f"OOD check got features of shape {np.shape(features)}, expected "
                f"({self.feature_dim},): the OOD file belongs to another model",
                "refit the OOD reference for this model (`kiosk model export`)",
            )
        centred = f - self.mean
        proj = centred @ self.components.T
        z = proj / self.std
        total = (z * z).sum(axis=1)
        if self.residual_std > 0:
            residual = centred - proj @ self.components
            total = total + (residual * residual).sum(axis=1) / self.residual_std**2
        return np.sqrt(total / self.feature_dim)

    def distance(self, features: np.ndarray) -> float:
        """Distance of one feature vector (D,)."""
        return float(self.distances(np.asarray(features).reshape(1, -1))[0])

    def is_ood(self, features: np.ndarray) -> bool:
        """True when the image is further from the training X-rays than the threshold."""
        return self.distance(features) > self.threshold

    def save(self, path: Path) -> Path:
        """Write the reference as a small ``.npz`` (float32 arrays)."""
        np.savez(
            Path(path),
            format=np.int32(_FORMAT),
            mean=self.mean.astype(np.float32),
            components=self.components.astype(np.float32),
            std=self.std.astype(np.float32),
            threshold=np.float64(self.threshold),
            residual_std=np.float64(self.residual_std),
        )
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> OodDetector:
        """Read a reference written by :meth:`save`; :class:`ModelError` if unusable."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                fmt = int(data["format"])
                mean = data["mean"].astype(np.float64)
                comps = data["components"].astype(np.float64)
                std = data["std"].astype(np.float64)
                threshold = float(data["threshold"])
                residual_std = float(data["residual_std"])
        except FileNotFoundError as exc:
            raise ModelError(
                f"OOD reference {path} does not exist", "reinstall the model files"
            ) from exc
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(
                f"OOD reference {path} is not a valid reference file: {exc}",
                "reinstall the model files",
            ) from exc
        if fmt != _FORMAT:
            raise ModelError(f"OOD reference {path} has format {fmt}, expected {_FORMAT}")
        if comps.ndim != 2 or comps.shape != (std.shape[0], mean.shape[0]) or np.any(std <= 0):
            raise ModelError(
                f"OOD reference {path} is inconsistent (components {comps.shape}, "
                f"std {std.shape}, mean {mean.shape})",
                "reinstall the model files",
            )
        return cls(mean, comps, std, threshold, residual_std)
