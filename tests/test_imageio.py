"""Bad and unusual input files: each gets a clear error or is read correctly."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kiosk.atomic import atomic_write_bytes
from kiosk.errors import ImageError
from kiosk.imaging.decode import MAX_PIXELS, decode_image, list_inputs, read_image


def _png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _huge_png_header(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming a huge size, with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    crc = struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    idat = zlib.compress(b"\x00" * 64)
    idat_chunk = b"IDAT" + idat
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + crc
        + struct.pack(">I", len(idat))
        + idat_chunk
        + struct.pack(">I", zlib.crc32(idat_chunk) & 0xFFFFFFFF)
    )


def test_grey_png_round_trip() -> None:
    arr = np.arange(128 * 96, dtype=np.uint32).reshape(96, 128).astype(np.uint8)
    loaded = decode_image(_png_bytes(arr))
    assert loaded.pixels.shape == (96, 128)
    assert np.array_equal(loaded.pixels, arr)


def test_rgb_grey_content_becomes_one_channel() -> None:
    grey = np.random.default_rng(0).integers(0, 255, (80, 90), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    assert decode_image(_png_bytes(rgb)).pixels.shape == (80, 90)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(path)


def test_truncated_jpeg_is_refused() -> None:
    arr = np.random.default_rng(1).integers(0, 255, (300, 300), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    data = buf.getvalue()
    with pytest.raises(ImageError, match="damaged or truncated"):
        decode_image(data[: len(data) // 2])


def test_huge_image_is_refused_before_decoding() -> None:
    data = _huge_png_header(30000, 30000)
    assert len(data) < 1000  # the claim, not the pixels
    with pytest.raises(ImageError, match=r"pixel|huge"):
        decode_image(data)
    assert MAX_PIXELS < 30000 * 30000


def test_not_an_image_and_wrong_extension(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    with pytest.raises(ImageError, match="not an image"):
        read_image(text)
    arr = np.full((100, 100), 7, dtype=np.uint8)
    mislabelled = tmp_path / "actually_png.jpg"
    mislabelled.write_bytes(_png_bytes(arr))
    assert read_image(mislabelled).format == "PNG"


def test_sixteen_bit_is_windowed_to_eight() -> None:
    arr = (np.linspace(0, 4095, 200 * 200).reshape(200, 200)).astype(np.uint16)
    loaded = decode_image(_png_bytes(arr))
    assert loaded.pixels.dtype == np.uint8
    assert loaded.pixels.min() == 0 and loaded.pixels.max() == 255
    assert any("8bit" in n for n in loaded.notes)


def test_cmyk_jpeg_is_converted() -> None:
    img = Image.new("CMYK", (120, 100), (0, 255, 255, 0))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    loaded = decode_image(buf.getvalue())
    assert loaded.pixels.shape == (100, 120, 3)
    assert "cmyk_converted" in loaded.notes


def test_tiny_image_is_refused() -> None:
    with pytest.raises(ImageError, match="only 10x10"):
        decode_image(_png_bytes(np.zeros((10, 10), dtype=np.uint8)))


def test_dicom_monochrome1_is_inverted() -> None:
    pydicom = pytest.importorskip("pydicom", reason="pydicom is in the dev extra")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ramp = np.tile(np.linspace(0, 4000, 128, dtype=np.uint16), (128, 1))
    ds.Rows, ds.Columns = ramp.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = ramp.tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    loaded = decode_image(buf.getvalue(), "x.dcm")
    assert loaded.format == "DICOM"
    assert "monochrome1_inverted" in loaded.notes
    # MONOCHROME1: the highest stored value is displayed darkest.
    assert loaded.pixels[0, 0] > loaded.pixels[0, -1]


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["a.bin"]


def test_list_inputs_keeps_every_visible_file_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.png").write_bytes(b"x")
    (tmp_path / "a.txt").write_bytes(b"x")
    (tmp_path / ".hidden").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jpg").write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in list_inputs([tmp_path])]
    assert names == ["a.txt", "b.png", "sub/c.jpg"]


def test_colour_jpeg_decodes_to_rgb_with_either_opencv_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenCV >= 4.10 decodes to RGB directly, older ones to BGR: both give the same RGB."""
    import kiosk.imaging.decode as decode_module

    rng = np.random.default_rng(3)
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[..., 0] = 200  # red, so a channel swap shows
    rgb[..., 1] = rng.integers(0, 60, (64, 96))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    first = decode_image(buf.getvalue()).pixels
    monkeypatch.setattr(decode_module, "_IMREAD_RGB", None)
    second = decode_image(buf.getvalue()).pixels
    assert first.shape == (64, 96, 3)
    assert np.array_equal(first, second)
    assert abs(float(first[..., 0].mean()) - 200) < 4 and float(first[..., 2].mean()) < 20


def test_linear_luminance_opencv_path_matches_the_table() -> None:
    """The OpenCV lookup-and-dot path equals the numpy table lookup within float32 rounding."""
    from kiosk.imaging.colour import SRGB_TO_LINEAR, linear_luminance, linear_rgb

    rgb = np.random.default_rng(4).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    lin = SRGB_TO_LINEAR[rgb]
    expected = lin[..., 0] * 0.2126 + lin[..., 1] * 0.7152 + lin[..., 2] * 0.0722
    assert np.allclose(linear_luminance(rgb), expected, rtol=1e-6, atol=1e-7)
    # a non-contiguous view agrees too
    assert np.allclose(linear_luminance(rgb[:, ::2]), expected[:, ::2], rtol=1e-6, atol=1e-7)
    assert np.array_equal(linear_rgb(rgb[::2, ::3]), lin[::2, ::3])


def _colour_jpeg(h: int, w: int, seed: int = 5) -> bytes:
    """A photo-like colour JPEG: smooth shading, a warm cast, texture and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 120 + 80 * np.sin(xx / 37.0) * np.cos(yy / 23.0) + rng.normal(0, 6, (h, w))
    rgb = np.clip(np.stack([base * 1.05, base, base * 0.85], axis=2), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(("size", "k"), [((1080, 1920), 4), ((720, 1280), 2), ((2592, 4608), 8)])
def test_photo_jpeg_decodes_to_luma_and_a_reduced_colour_preview(
    size: tuple[int, int], k: int
) -> None:
    """The photo path's decode: the luma is what a full colour decode converted to grey gives,
    and the preview is that decode box-averaged by k (the decoder scales in its inverse DCT)."""
    import cv2

    from kiosk.imaging.resize import box_shrink

    data = _colour_jpeg(*size)
    full = decode_image(data).pixels
    split = decode_image(data, preview_long_side=480)
    assert full.shape == (*size, 3) and split.preview is not None
    assert split.pixels.shape == size and split.pixels.dtype == np.uint8
    grey = cv2.cvtColor(full, cv2.COLOR_RGB2GRAY)
    assert int(np.abs(split.pixels.astype(np.int16) - grey).max()) <= 1
    box = box_shrink(full, k)
    assert split.preview.shape == box.shape == (size[0] // k, size[1] // k, 3)
    diff = np.abs(split.preview.astype(np.int16) - box)
    assert float(diff.mean()) < 1.0 and int(diff.max()) <= 12
    # red stays red: the preview is RGB, not BGR
    assert float(split.preview[..., 0].mean()) > float(split.preview[..., 2].mean()) + 10


def test_photo_decode_falls_back_to_full_colour_when_a_preview_does_not_pay() -> None:
    """Too small for a reduced preview, a grey picture saved as colour, or a PNG: decoded as
    before (RGB, or one channel for grey content), no preview."""
    small = decode_image(_colour_jpeg(400, 600), preview_long_side=480)
    assert small.preview is None and small.pixels.shape == (400, 600, 3)
    grey = np.random.default_rng(6).integers(0, 256, (1080, 1920), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(buf, format="JPEG", quality=90)
    as_grey = decode_image(buf.getvalue(), preview_long_side=480)
    assert as_grey.preview is None and as_grey.pixels.ndim == 2
    png = io.BytesIO()
    Image.fromarray(decode_image(_colour_jpeg(1080, 1920)).pixels).save(png, format="PNG")
    from_png = decode_image(png.getvalue(), preview_long_side=480)
    assert from_png.preview is None and from_png.pixels.shape == (1080, 1920, 3)


def test_work_on_the_preview_runs_while_the_luma_decodes_and_its_failure_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``on_preview`` gets the colour preview and the frame's (height, width) and its result is
    kept beside the pixels; when it raises, the decode still succeeds, without a result."""
    data = _colour_jpeg(1080, 1920)
    seen: list[tuple[tuple[int, ...], tuple[int, int]]] = []

    def work(preview: np.ndarray, hw: tuple[int, int]) -> float:
        seen.append((preview.shape, hw))
        return float(preview.mean())

    plain = decode_image(data, preview_long_side=480)
    loaded = decode_image(data, preview_long_side=480, on_preview=work)
    assert seen == [((270, 480, 3), (1080, 1920))]
    assert plain.preview is not None and loaded.preview is not None
    assert loaded.from_preview == pytest.approx(float(plain.preview.mean()))
    assert np.array_equal(loaded.pixels, plain.pixels)
    assert np.array_equal(loaded.preview, plain.preview)

    def broken(preview: np.ndarray, hw: tuple[int, int]) -> float:
        raise RuntimeError("boom")

    with caplog.at_level("ERROR"):
        failed = decode_image(data, preview_long_side=480, on_preview=broken)
    assert failed.from_preview is None and np.array_equal(failed.pixels, plain.pixels)
    assert "work on the preview failed" in caplog.text
    # no preview (a PNG): nothing to work on, so it is not called
    png = io.BytesIO()
    Image.fromarray(decode_image(data).pixels).save(png, format="PNG")
    seen.clear()
    assert decode_image(png.getvalue(), preview_long_side=480, on_preview=work).from_preview is None
    assert seen == []
