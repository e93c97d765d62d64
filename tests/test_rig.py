"""Rig reference: built from real simulated frames, refuses bad ones, persists atomically."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kiosk.camera.scene import SceneParams, phantom_chest, render, render_empty
from kiosk.capture.rig import JSON_NAME, NPZ_NAME, RigReference
from kiosk.errors import CameraError, KioskError
from kiosk.imaging.geometry import order_corners

SIZE = (540, 960)


def _params() -> SceneParams:
    # a panel smaller than the view, so the room is visible around it
    return replace(SceneParams(), lightbox_size=(0.8, 0.7), edge_falloff=0.3)


def test_from_empty_frames_measures_the_flat_field_and_panel() -> None:
    rng = np.random.default_rng(0)
    p = _params()
    frames = [render_empty(p, rng, SIZE) for _ in range(3)]
    ref = RigReference.from_empty_frames(frames, {"exposure_us": 5000.0})
    assert ref.image_size == SIZE
    assert max(ref.flat_field.shape) == 640 and ref.flat_field.dtype == np.float32
    assert np.percentile(ref.flat_field, 99) == pytest.approx(1.0, abs=0.02)
    # the panel falls off towards its edges: centre brighter than near the panel edge
    fh, fw = ref.flat_field.shape
    assert ref.flat_field[fh // 2, fw // 2] > ref.flat_field[fh // 2, int(fw * 0.18)] + 0.05
    assert ref.lightbox_quad is not None
    h, w = SIZE
    expected = np.array(
        [[w * 0.15, h * 0.1], [w * 0.85, h * 0.1], [w * 0.85, h * 0.9], [w * 0.15, h * 0.9]]
    )
    assert np.abs(ref.lightbox_quad - expected).max() < 0.02 * w
    assert ref.exposure == {"exposure_us": 5000.0}
    assert ref.created_at.endswith("+00:00")


def test_panel_filling_the_view_has_no_quad() -> None:
    frames = [render_empty(SceneParams(), np.random.default_rng(1), SIZE)]
    ref = RigReference.from_empty_frames(frames, {})
    assert ref.lightbox_quad is None


@pytest.mark.parametrize(
    ("kind", "words"),
    [("over", "over-exposed"), ("dark", "too dark"), ("film", "Something is on the lightbox")],
)
def test_refuses_unusable_frames_with_advice(kind: str, words: str) -> None:
    rng = np.random.default_rng(2)
    p = _params()
    if kind == "over":
        frame = render_empty(p, rng, SIZE, exposure_scale=3.0)
    elif kind == "dark":
        frame = render_empty(p, rng, SIZE, exposure_scale=0.03)
    else:
        frame = render(phantom_chest(rng, (256, 256)), p, rng, SIZE).image
    with pytest.raises(CameraError) as info:
        RigReference.from_empty_frames([frame], {})
    assert words in info.value.message
    assert info.value.fix


def test_refuses_no_frames_and_mixed_sizes() -> None:
    with pytest.raises(CameraError):
        RigReference.from_empty_frames([], {})
    a = render_empty(SceneParams(), np.random.default_rng(0), (120, 160))
    b = render_empty(SceneParams(), np.random.default_rng(0), (90, 160))
    with pytest.raises(CameraError):
        RigReference.from_empty_frames([a, b], {})


def test_save_load_round_trip(tmp_path: Path) -> None:
    frames = [render_empty(_params(), np.random.default_rng(3), SIZE)]
    ref = RigReference.from_empty_frames(frames, {"gain": 1.5})
    assert RigReference.load(tmp_path) is None
    path = ref.save(tmp_path / "rig")
    assert path.name == JSON_NAME
    assert sorted(p.name for p in (tmp_path / "rig").iterdir()) == [JSON_NAME, NPZ_NAME]
    back = RigReference.load(tmp_path / "rig")
    assert back is not None
    assert np.array_equal(back.flat_field, ref.flat_field)
    assert back.lightbox_quad is not None and ref.lightbox_quad is not None
    assert np.allclose(back.lightbox_quad, ref.lightbox_quad)
    assert back.image_size == ref.image_size and back.exposure == {"gain": 1.5}
    assert back.created_at == ref.created_at


def test_corrupt_files_raise_kiosk_error(tmp_path: Path) -> None:
    ref = RigReference(
        flat_field=np.ones((36, 64), np.float32),
        lightbox_quad=None,
        image_size=(108, 192),
        exposure={},
        created_at="2026-01-01T00:00:00+00:00",
    )
    ref.save(tmp_path)
    back = RigReference.load(tmp_path)
    assert back is not None and back.lightbox_quad is None
    (tmp_path / NPZ_NAME).write_bytes(b"not a zip file")
    with pytest.raises(KioskError, match="unreadable"):
        RigReference.load(tmp_path)
    ref.save(tmp_path)
    (tmp_path / JSON_NAME).write_text("{broken")
    with pytest.raises(KioskError):
        RigReference.load(tmp_path)


def test_order_corners() -> None:
    pts = np.array([[10, 90], [100, 5], [0, 0], [95, 100]], np.float32)
    out = order_corners(pts)
    assert out.tolist() == [[0, 0], [100, 5], [95, 100], [10, 90]]
