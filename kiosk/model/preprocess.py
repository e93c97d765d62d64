"""Film image -> model input tensor, exactly as the manifest says.

The same function feeds training-time evaluation and the appliance, so the numbers in a model
card are the numbers the kiosk computes.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.model.manifest import InputSpec


def to_channels(image: np.ndarray, colour: str) -> np.ndarray:
    """Grey (H, W) or RGB (H, W, 3) uint8 -> the colour layout the model wants."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2) if colour == "rgb" else image[:, :, None]
    if image.ndim == 3 and image.shape[2] == 3:
        if colour == "rgb":
            return image
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    raise ValueError(f"expected a grey or RGB image, got shape {image.shape}")


def resize_to(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Resize by the manifest's policy: stretch, letterbox (pad) or centre crop."""
    h, w = image.shape[:2]
    th, tw = spec.height, spec.width
    interp = cv2.INTER_AREA if h > th or w > tw else cv2.INTER_LINEAR
    if spec.resize == "stretch":
        out = cv2.resize(image, (tw, th), interpolation=interp)
    else:
        scale = min(th / h, tw / w) if spec.resize == "letterbox" else max(th / h, tw / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        scaled = cv2.resize(image, (nw, nh), interpolation=interp)
        if spec.resize == "letterbox":
            out = np.zeros((th, tw, *scaled.shape[2:]), dtype=scaled.dtype)
            y, x = (th - nh) // 2, (tw - nw) // 2
            out[y : y + nh, x : x + nw] = scaled
        else:
            y, x = (nh - th) // 2, (nw - tw) // 2
            out = scaled[y : y + th, x : x + tw]
    if out.ndim == 2:
        out = out[:, :, None]
    return out


def prepare(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 grey/RGB image of any size -> float32 NHWC tensor ``(pixel - mean) / std``."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:  # grey films: resize one channel, then copy it (same numbers, 3x less work)
        pixels = to_channels(resize_to(image, spec)[:, :, 0], spec.colour).astype(np.float32)
    else:
        pixels = resize_to(to_channels(image, spec.colour), spec).astype(np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return ((pixels - mean) / std)[None, ...]
