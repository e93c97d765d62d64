"""Augmentations that imitate a photographed film after rectification.

A digital X-ray becomes, on the kiosk, a photo of a film on a lightbox that was warped back to
a rectangle. What survives that trip: a little residual perspective (corners found a few pixels
off), defocus or motion blur, sensor noise, a different exposure and tone curve, a glare blob
from the room light, and JPEG re-compression. Each is applied with its own probability.
Input and output are uint8 grey images of the same shape; nothing here needs torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and strengths; ``AugmentConfig(enabled=False)`` is the identity."""

    enabled: bool = True
    p_perspective: float = 0.7
    max_corner_shift: float = 0.05
    p_flip: float = 0.5
    p_blur: float = 0.3
    max_blur_sigma: float = 1.5
    p_noise: float = 0.3
    max_noise_sigma: float = 8.0
    p_tone: float = 0.8
    p_glare: float = 0.2
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (35, 95)


def perspective_residue(img: np.ndarray, rng: np.random.Generator, max_shift: float) -> np.ndarray:
    """Move each corner by up to ``max_shift`` of the side and warp back (edges replicated)."""
    h, w = img.shape[:2]
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float32)
    jitter = rng.uniform(-max_shift, max_shift, (4, 2)) * np.array([w, h], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(src, (src + jitter).astype(np.float32))
    return cv2.warpPerspective(
        img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def tone(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure gain/offset and a gamma curve, as a lookup table."""
    x = np.arange(256, dtype=np.float32) / 255.0
    gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.45))))
    gain = float(rng.uniform(0.8, 1.2))
    offset = float(rng.uniform(-0.08, 0.08))
    lut = np.clip((x**gamma) * gain + offset, 0.0, 1.0)
    return cv2.LUT(img, (lut * 255.0 + 0.5).astype(np.uint8))


def glare(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add a soft bright elliptical blob (a reflection of a window or lamp)."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    sy, sx = rng.uniform(0.05, 0.3) * h, rng.uniform(0.05, 0.3) * w
    blob = np.exp(-(((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2) / 2.0)
    out = img.astype(np.float32) + blob * rng.uniform(30, 110)
    return np.clip(out, 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as JPEG at ``quality``."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        return img
    decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return img if decoded is None else np.asarray(decoded)


def augment(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """One random photographed-film look for a uint8 grey (H, W) image; same shape out."""
    if not cfg.enabled:
        return img
    out = img
    if rng.random() < cfg.p_perspective:
        out = perspective_residue(out, rng, cfg.max_corner_shift)
    if rng.random() < cfg.p_flip:
        out = np.ascontiguousarray(out[:, ::-1])
    if rng.random() < cfg.p_tone:
        out = tone(out, rng)
    if rng.random() < cfg.p_glare:
        out = glare(out, rng)
    if rng.random() < cfg.p_blur:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.3, cfg.max_blur_sigma)))
    if rng.random() < cfg.p_noise:
        noise = rng.normal(0.0, rng.uniform(1.0, cfg.max_noise_sigma), out.shape)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < cfg.p_jpeg:
        out = jpeg(out, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return out
