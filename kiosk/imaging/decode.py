"""Reading input images safely: size limits before decoding, DICOM, 16-bit, CMYK.

Inputs come from cameras, USB sticks and scripts, so anything can arrive: empty or truncated
files, a 30000x30000 bomb, 16-bit PNGs from a digitiser, CMYK JPEGs, a PNG named ``.jpg``,
DICOM. Dimensions are read from the header and checked before any pixel is decoded; every
refusal is an :class:`ImageError` that says what was wrong and what to do.

Error messages never contain the file's name: clinics name files after patients, and the
message becomes the stored ``reason`` of a result, which is exported and sent to the hub. The
caller that knows the name (``kiosk analyze``) prints it next to the message.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from kiosk.errors import ImageError

logger = logging.getLogger(__name__)

MAX_PIXELS = 50_000_000  # a 12 MP camera still is 12.3 MP; a 50 MP limit leaves headroom
MAX_FILE_BYTES = 200 * 1024 * 1024
MIN_SIDE_PX = 64
_DICOM_MAGIC_OFFSET = 128


@dataclass(frozen=True)
class LoadedImage:
    """Decoded pixels (grey uint8 (H, W) or RGB uint8 (H, W, 3)) and what we learnt reading them."""

    pixels: np.ndarray
    format: str
    notes: tuple[str, ...] = ()


def _is_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[_DICOM_MAGIC_OFFSET:132] == b"DICM"


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Window a high-bit-depth grey image to 8 bits by its 0.5-99.5 percentiles."""
    values = values.astype(np.float32)
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((values - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _read_dicom(data: bytes, name: str) -> LoadedImage:
    try:
        import pydicom
    except ImportError as exc:
        raise ImageError(
            f"{name} is a DICOM file and DICOM support is not installed",
            "pip install 'lightbox-kiosk[dicom]' (pydicom) or export the image as PNG",
        ) from exc
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        rows, cols = int(ds.Rows), int(ds.Columns)
        if rows * cols > MAX_PIXELS:
            raise ImageError(f"{name} is {cols}x{rows} pixels, more than the {MAX_PIXELS:,} limit")
        arr = ds.pixel_array.astype(np.float32)
    except ImageError:
        raise
    except Exception as exc:  # pydicom raises many types for broken files
        raise ImageError(
            f"{name} is not a readable DICOM image: {exc}",
            "export it again from the PACS or as PNG",
        ) from exc
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2:
        raise ImageError(
            f"{name} holds {arr.ndim}-dimensional DICOM pixel data",
            "send a single 2-D radiograph",
        )
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    arr = arr * slope + intercept
    notes = ["dicom"]
    grey = _to_uint8(arr)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        grey = 255 - grey  # MONOCHROME1: low values are white
        notes.append("monochrome1_inverted")
    return LoadedImage(grey, "DICOM", tuple(notes))


def decode_image(data: bytes, name: str = "the image") -> LoadedImage:
    """Decode image bytes, refusing bombs, truncation and unusable modes with a clear error.

    ``name`` is what error messages call the image; never pass a file name (see the module doc).
    """
    if not data:
        raise ImageError(f"{name} is empty (0 bytes)", "copy the file again; it was not saved")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(
            f"{name} is {len(data) / 1e6:.0f} MB, more than the {MAX_FILE_BYTES // 10**6} MB limit",
            "send a smaller image (a camera still or a PNG export)",
        )
    if _is_dicom(data[:132]):
        return _read_dicom(data, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"{name} claims to be huge ({exc})", "send an image under 50 megapixels"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{name} is not an image the kiosk can read",
            "send a JPEG, PNG, TIFF or DICOM file",
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # PIL reads the header in open(): a file cut inside it raises OSError ("Truncated File
        # Read") or SyntaxError ("broken PNG file"), not UnidentifiedImageError.
        raise ImageError(
            f"{name} is damaged or truncated ({exc})", "copy the file again from its source"
        ) from exc
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name} is {width}x{height} pixels, more than the {MAX_PIXELS:,} pixel limit",
            "resize it or send the camera still itself",
        )
    if min(width, height) < MIN_SIDE_PX:
        raise ImageError(
            f"{name} is only {width}x{height} pixels", "send the full-resolution image"
        )
    notes: list[str] = []
    fmt = img.format or "unknown"
    fast = _decode_complete_jpeg(data, img)
    if fast is not None:
        return LoadedImage(fast, fmt, ())
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            f"{name} is damaged or truncated ({exc})", "copy the file again from its source"
        ) from exc
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = _to_uint8(np.asarray(img))
        notes.append(f"{mode.lower()}_windowed_to_8bit")
    elif mode in ("L", "1", "P", "LA"):
        pixels = np.asarray(img.convert("L"))
    else:
        if mode == "CMYK":
            notes.append("cmyk_converted")
        pixels = _grey_if_grey(np.asarray(img.convert("RGB")))
    return LoadedImage(pixels, fmt, tuple(notes))


def _grey_if_grey(rgb: np.ndarray) -> np.ndarray:
    """Grey images saved as RGB (most X-ray JPEGs) are kept as one channel."""
    sub = rgb[::16, ::16]  # a photo's colour shows in a sample; only a grey image needs all
    if (
        np.array_equal(sub[..., 0], sub[..., 1])
        and np.array_equal(sub[..., 1], sub[..., 2])
        and np.array_equal(rgb[..., 0], rgb[..., 1])
        and np.array_equal(rgb[..., 1], rgb[..., 2])
    ):
        return np.ascontiguousarray(rgb[..., 0])
    return np.ascontiguousarray(rgb)


_IMREAD_RGB: int | None = getattr(cv2, "IMREAD_COLOR_RGB", None)


def _decode_complete_jpeg(data: bytes, img: Image.Image) -> np.ndarray | None:
    """A baseline RGB or grey JPEG that ends in its end-of-image marker, decoded by OpenCV's
    libjpeg-turbo (about twice as fast as PIL here); None when PIL must do it (other formats
    and modes, or a file that may be truncated: OpenCV decodes those without complaint)."""
    if img.format != "JPEG" or img.mode not in ("RGB", "L"):
        return None
    if data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return None
    # OpenCV >= 4.10 decodes straight to RGB; older ones (Bookworm's 4.6) give BGR
    flag = cv2.IMREAD_GRAYSCALE if img.mode == "L" else _IMREAD_RGB or cv2.IMREAD_COLOR
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if decoded is None or decoded.shape[:2] != (img.size[1], img.size[0]):
        return None
    if decoded.ndim == 2:
        return decoded
    if not _IMREAD_RGB:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return _grey_if_grey(decoded)


def read_image(path: Path) -> LoadedImage:
    """Read and decode an image file (content decides the format, not the extension).

    Error messages say "the file", not its name (see the module doc).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(
                f"the file is {size / 1e6:.0f} MB, more than the "
                f"{MAX_FILE_BYTES // 10**6} MB limit",
                "send a smaller image",
            )
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError("the file does not exist", "check the path") from exc
    except IsADirectoryError as exc:
        raise ImageError("the path is a directory, not an image file") from exc
    except PermissionError as exc:
        raise ImageError("the file cannot be read (permission denied)") from exc
    except OSError as exc:
        # str(exc) would name the file; strerror does not.
        raise ImageError(
            f"the file cannot be read ({exc.strerror or type(exc).__name__})",
            "copy the file again from its source",
        ) from exc
    return decode_image(data, "the file")


def list_inputs(paths: list[Path]) -> list[Path]:
    """Expand directories into their files (sorted, recursive, hidden files skipped).

    Every file found is returned, whatever its extension, so that a mislabelled image is still
    analysed and a stray non-image gets its own error line instead of vanishing silently.
    """
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file()
                    and not any(part.startswith(".") for part in f.relative_to(p).parts)
                )
            )
        else:
            out.append(p)
    return out
