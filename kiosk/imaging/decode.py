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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from kiosk.errors import ImageError
from kiosk.helper_thread import helper

logger = logging.getLogger(__name__)

MAX_PIXELS = 50_000_000  # a 12 MP camera still is 12.3 MP; a 50 MP limit leaves headroom
MAX_FILE_BYTES = 200 * 1024 * 1024
MIN_SIDE_PX = 64
_DICOM_MAGIC_OFFSET = 128


@dataclass(frozen=True)
class LoadedImage:
    """Decoded pixels (grey uint8 (H, W) or RGB uint8 (H, W, 3)) and what we learnt reading them.

    ``preview`` is set only when asked for (``preview_long_side``) and the file is a colour
    JPEG: then ``pixels`` is its luma at full size and ``preview`` its colour, box-averaged by
    2, 4 or 8 (the decoder's own scaling) to at least ``preview_long_side`` on the long side.
    ``from_preview`` is what the caller's ``on_preview`` made of the preview while the luma
    was still decoding (None when it was not run: no preview, or it failed).
    """

    pixels: np.ndarray
    format: str
    notes: tuple[str, ...] = ()
    preview: np.ndarray | None = None
    from_preview: Any = None


# work on the colour preview of a frame of size (height, width), done while its luma decodes
OnPreview = Callable[[np.ndarray, tuple[int, int]], Any]


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


def decode_image(
    data: bytes,
    name: str = "the image",
    *,
    preview_long_side: int | None = None,
    on_preview: OnPreview | None = None,
) -> LoadedImage:
    """Decode image bytes, refusing bombs, truncation and unusable modes with a clear error.

    ``name`` is what error messages call the image; never pass a file name (see the module doc).
    ``preview_long_side``: for a photo whose colour is wanted only at that size (the photo
    path locates the film at 480 px), a colour JPEG is decoded as full-size luma plus a
    reduced colour preview (``LoadedImage``), about half the work of a full colour decode.
    ``on_preview(preview, (height, width))`` then runs on the preview while the luma decodes
    on the helper thread (the photo path measures the light meanwhile); an exception in it is
    logged and its result left out.
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
    if preview_long_side is not None:
        split = _decode_jpeg_luma_and_preview(data, img, preview_long_side, on_preview)
        if split is not None:
            return LoadedImage(split[0], fmt, (), split[1], split[2])
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


def _channels_equal(rgb: np.ndarray) -> bool:
    """Whether the three channels of an (H, W, 3) image are identical: a grey picture."""
    sub = rgb[::16, ::16]  # a photo's colour shows in a sample; only a grey image needs all
    return (
        np.array_equal(sub[..., 0], sub[..., 1])
        and np.array_equal(sub[..., 1], sub[..., 2])
        and np.array_equal(rgb[..., 0], rgb[..., 1])
        and np.array_equal(rgb[..., 1], rgb[..., 2])
    )


def _grey_if_grey(rgb: np.ndarray) -> np.ndarray:
    """Grey images saved as RGB (most X-ray JPEGs) are kept as one channel."""
    return np.ascontiguousarray(rgb[..., 0] if _channels_equal(rgb) else rgb)


def _complete_jpeg(data: bytes, img: Image.Image) -> bool:
    """A JPEG that ends in its end-of-image marker (OpenCV decodes a truncated one without
    complaint, so only these go to it)."""
    return img.format == "JPEG" and data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


_IMREAD_RGB: int | None = getattr(cv2, "IMREAD_COLOR_RGB", None)


def _decode_complete_jpeg(data: bytes, img: Image.Image) -> np.ndarray | None:
    """A baseline RGB or grey JPEG that ends in its end-of-image marker, decoded by OpenCV's
    libjpeg-turbo (about twice as fast as PIL here); None when PIL must do it (other formats
    and modes, or a file that may be truncated: OpenCV decodes those without complaint)."""
    if img.mode not in ("RGB", "L") or not _complete_jpeg(data, img):
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


_REDUCED_COLOUR = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def preview_factor(size_wh: tuple[int, int], preview_long_side: int) -> int:
    """The largest of 8, 4, 2 by which the JPEG decoder can scale an image of ``size_wh`` and
    keep its long side at least ``preview_long_side``; 1 when none can."""
    return next((k for k in (8, 4, 2) if max(size_wh) // k >= preview_long_side), 1)


def _decode_jpeg_luma_and_preview(
    data: bytes, img: Image.Image, preview_long_side: int, on_preview: OnPreview | None = None
) -> tuple[np.ndarray, np.ndarray, Any] | None:
    """A complete colour JPEG as (luma at full size, colour at 1/k, what ``on_preview`` made of
    the colour): libjpeg reads the luma without upsampling or converting the chroma, and
    scales the colour in its inverse DCT (1/8: the 8x8 block means). k is the largest of 8,
    4, 2 that keeps the preview's long side at least ``preview_long_side``; None when none
    does, or for anything but a complete colour JPEG, or an exactly grey one (decoded as
    before)."""
    if img.mode != "RGB" or not _complete_jpeg(data, img):
        return None
    width, height = img.size
    k = preview_factor((width, height), preview_long_side)
    if k == 1:
        return None
    buf = np.frombuffer(data, np.uint8)
    # the two decodes on the two cores (OpenCV lets go of the GIL while it decodes): the
    # luma, the longer one, on the helper, so the preview is ready here first
    pending = helper().submit(cv2.imdecode, buf, cv2.IMREAD_GRAYSCALE)
    rgb = _reduced_colour(buf, k, (height, width))
    made = None
    if rgb is not None and on_preview is not None:
        try:
            made = on_preview(rgb, (height, width))
        except Exception:  # the caller measures again from the decoded image
            logger.exception("work on the preview failed; it is done again later")
    luma = pending.result()
    if rgb is None or luma is None or luma.shape != (height, width):
        return None
    return luma, rgb, made


def _reduced_colour(buf: np.ndarray, k: int, hw: tuple[int, int]) -> np.ndarray | None:
    """The JPEG's colour decoded at 1/k in whole k x k cells, RGB; None when it is exactly
    grey (one channel, as ``_grey_if_grey`` gives) or does not decode to the expected size."""
    small = cv2.imdecode(buf, _REDUCED_COLOUR[k])
    if small is None:
        return None
    height, width = hw
    # whole k x k cells only, as ``imaging.resize.box_shrink`` keeps them
    small = small[: height // k, : width // k]
    if small.shape[:2] != (height // k, width // k) or _channels_equal(small):
        return None
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)  # (the reduced flags have no RGB variant)


def read_image(
    path: Path, *, preview_long_side: int | None = None, on_preview: OnPreview | None = None
) -> LoadedImage:
    """Read and decode an image file (content decides the format, not the extension).

    Error messages say "the file", not its name (see the module doc). ``preview_long_side``
    and ``on_preview``: see ``decode_image``.
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
    return decode_image(
        data, "the file", preview_long_side=preview_long_side, on_preview=on_preview
    )


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
