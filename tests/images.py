"""Generated test images (never from ../shared): digital phantoms, simulated photos, bad files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from kiosk.camera import scene
from kiosk.imaging.encode import encode_jpeg, encode_png


def digital(seed: int = 0, size: int = 512) -> np.ndarray:
    return scene.phantom_chest(np.random.default_rng(seed), size=(size, size))


def photo(seed: int = 0, difficulty: float = 0.3) -> scene.Rendering:
    rng = np.random.default_rng(seed)
    film = scene.phantom_chest(rng, size=(768, 768))
    return scene.render(film, scene.random_params(rng, difficulty=difficulty), rng)


def empty_lightbox(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return scene.render(None, scene.random_params(rng, difficulty=0.2), rng).image


def colourful(seed: int = 0) -> np.ndarray:
    """A colourful picture (sky, grass, a red square): certainly not an X-ray."""
    h, w = 480, 640
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[: h // 2] = (90, 150, 230)
    img[h // 2 :] = (60, 170, 60)
    img[150:300, 250:400] = (220, 30, 30)
    noise = np.random.default_rng(seed).integers(0, 20, img.shape, dtype=np.uint8)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def huge_png_header(width: int = 30000, height: int = 30000) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
        + struct.pack(">I", len(idat) - 4)
        + idat
        + struct.pack(">I", zlib.crc32(idat) & 0xFFFFFFFF)
    )


def write_mixed_folder(folder: Path) -> dict[str, str]:
    """Write good and bad inputs; return file name -> expected status."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}

    def put(name: str, data: bytes, status: str) -> None:
        (folder / name).write_bytes(data)
        expected[name] = status

    put("a_digital.png", encode_png(digital(1)), "ok")
    put("b_photo.jpg", encode_jpeg(photo(2).image, quality=92), "ok")
    put("c_no_film.jpg", encode_jpeg(empty_lightbox(3)), "rejected")
    put("d_holiday.jpg", encode_jpeg(colourful(4)), "rejected")
    good = encode_jpeg(digital(5))
    put("e_truncated.jpg", good[: len(good) // 3], "error")
    put("f_empty.png", b"", "error")
    put("g_huge.png", huge_png_header(), "error")
    put("h_text.jpg", b"patient list, not an image\n", "error")
    buf = io.BytesIO()
    Image.fromarray(digital(6).astype(np.uint16) * 16).save(buf, format="PNG")
    put("i_16bit.png", buf.getvalue(), "ok")
    put("j_png_named.jpg", encode_png(digital(7)), "ok")
    return expected
