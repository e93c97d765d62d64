"""Encoding images for storage and the page (PNG for films, JPEG for previews)."""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.errors import ImageError


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a grey or RGB uint8 image."""
    pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", pixels)
    if not ok:
        raise ImageError("could not encode image as PNG")
    return buf.tobytes()


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a grey or RGB uint8 image."""
    pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageError("could not encode image as JPEG")
    return buf.tobytes()
