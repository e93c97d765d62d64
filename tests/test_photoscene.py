"""Tests for kiosk.lab.photoscene: the physically based lightbox photo renderer.

Synthetic digital radiographs only (no data files); most renders are small to stay fast.
"""

from __future__ import annotations

import dataclasses
import json
import time
import tracemalloc

import cv2
import numpy as np
import pytest

from kiosk.lab.photoscene import (
    FILM_SIZES_CM,
    Photo,
    SceneSpec,
    factors,
    render_photo,
    sample_scene,
)

SMALL = (360, 640)


def chest(n: int = 224, ribs: bool = True) -> np.ndarray:
    """Crude chest radiograph, bone bright: body, darker lungs, spine, optional ribs."""
    y, x = np.mgrid[0:n, 0:n] / n
    v = np.full((n, n), 0.05, np.float32)
    body = ((x - 0.5) / 0.42) ** 2 + ((y - 0.55) / 0.5) ** 2 < 1
    v[body] = 0.5
    for cx in (0.33, 0.67):
        v[((x - cx) / 0.13) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1] = 0.25
    v[(np.abs(x - 0.5) < 0.05) & body] = 0.8
    if ribs:
        for k in range(8):
            rib = np.abs(y - (0.3 + 0.06 * k) - 0.05 * np.cos((x - 0.5) * 6)) < 0.008
            v[rib & body] = np.maximum(v[rib & body], 0.55)
    return (v * 255).astype(np.uint8)


def quiet(spec: SceneSpec, **changes: object) -> SceneSpec:
    """The same scene without the optional clutter that would confuse pixel checks."""
    base: dict[str, object] = {
        "glare": "none",
        "glare_spots": 0,
        "glare_bands": 0,
        "glare_strength": 0.0,
        "tape": 0,
        "magnets": 0,
        "dust": 0,
        "clips": 0,
        "flash_card": False,
        "flash_corner": "none",
        "marker": "none",
        "marker_side": "none",
        "blur_sigma": 0.0,
        "motion_px": 0.0,
    }
    base.update(changes)
    return dataclasses.replace(spec, **base)  # type: ignore[arg-type]


def lightbox_metered(spec: SceneSpec) -> SceneSpec:
    return dataclasses.replace(spec, metering="lightbox", metering_mix=1.0, exposure_ev=0.0)


def film_metered(spec: SceneSpec) -> SceneSpec:
    return dataclasses.replace(spec, metering="film", metering_mix=0.0, exposure_ev=0.0)


def quad_mask(shape: tuple[int, int], quad: np.ndarray, grow: int = 0) -> np.ndarray:
    """Boolean mask of a quadrilateral, dilated (grow > 0) or eroded (grow < 0) in pixels."""
    m: np.ndarray = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(m, np.round(quad * 16).astype(np.int32), 1, cv2.LINE_8, 4)
    if grow:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(grow) + 1, 2 * abs(grow) + 1))
        m = cv2.dilate(m, k) if grow > 0 else cv2.erode(m, k)
    return m.astype(bool)


def spec_where(kind: str, pred: object, start: int = 0, **kw: bool) -> SceneSpec:
    for seed in range(start, start + 500):
        s = sample_scene(np.random.default_rng(seed), kind, **kw)  # type: ignore[arg-type]
        if pred(s):  # type: ignore[operator]
            return s
    raise AssertionError("no matching spec")


# ----------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("kind", ["film", "empty", "sheet"])
def test_spec_is_plain_and_json_serialisable(kind: str) -> None:
    spec = sample_scene(np.random.default_rng(3), kind)  # type: ignore[arg-type]
    d = dataclasses.asdict(spec)
    assert all(type(v) in (int, float, str, bool) for v in d.values()), d
    assert SceneSpec(**json.loads(json.dumps(d))) == spec


def test_sampled_parameter_ranges() -> None:
    rng = np.random.default_rng(11)
    specs = [sample_scene(rng, k) for k in ("film", "sheet", "empty") for _ in range(60)]
    specs += [sample_scene(rng, "film", cut_off=True) for _ in range(20)]
    sizes = {tuple(sorted(s)) for s in FILM_SIZES_CM}
    for s in specs:
        assert 40 <= s.jpeg_quality <= 95
        assert abs(s.rot_deg) <= 8 and abs(s.pitch_deg) <= 10 and abs(s.yaw_deg) <= 10
        assert abs(s.rot_deg + s.film_rot_deg) <= 10  # radiograph "up" stays near image up
        assert 0.0 <= s.blur_sigma <= 3.0
        assert 3500 <= s.colour_temp_k <= 7500
        assert s.bays in (1, 2)
        lo, hi = (200, 1600) if s.panel_dim else (1000, 4000)
        assert lo <= s.panel_cd_m2 <= hi
        assert s.metering in ("film", "lightbox", "between")
        assert 0.0 <= s.metering_mix <= 1.0
        if s.kind == "empty":
            assert s.margin_kind == "none" and s.film_w_cm == 0.0
            continue
        if s.kind == "film":
            assert (min(s.film_w_cm, s.film_h_cm), max(s.film_w_cm, s.film_h_cm)) in sizes
        else:
            assert min(s.sheet_rows, s.sheet_cols) >= 3 and max(s.sheet_rows, s.sheet_cols) <= 6
        assert (s.film_w_cm > s.film_h_cm) == (s.orientation == "landscape")
        for m in (s.margin_left, s.margin_top, s.margin_right, s.margin_bottom):
            assert 0.0 <= m <= 0.08
        assert 0.15 <= s.base_fog <= 0.25 and 2.8 <= s.d_max <= 3.6
        if s.margin_kind == "grey":
            assert 1.0 <= s.margin_density <= 2.0
        elif s.margin_kind == "black":
            assert s.margin_density > 2.5
        else:
            assert s.margin_density == s.base_fog
    seen = {k: {factors(s)[k] for s in specs} for k in ("framing", "metering", "margin", "glare")}
    assert seen["framing"] == {"fills", "medium", "small"}
    assert seen["metering"] == {"film", "lightbox", "between"}
    assert {"clear", "black", "grey"} <= seen["margin"]
    assert seen["glare"] == {"none", "faint", "strong"}


def test_cut_off_requires_a_film() -> None:
    with pytest.raises(ValueError):
        sample_scene(np.random.default_rng(0), "empty", cut_off=True)


def test_factors_are_coarse_labels() -> None:
    allowed = {
        "framing": {"fills", "medium", "small"},
        "metering": {"film", "lightbox", "between"},
        "margin": {"clear", "black", "grey", "none"},
        "glare": {"none", "faint", "strong"},
        "panel": {"normal", "dim"},
        "blur": {"sharp", "soft", "blurred"},
        "jpeg": {"high", "low"},
        "reference": {"yes", "no"},
        "orientation": {"portrait", "landscape", "none"},
    }
    rng = np.random.default_rng(5)
    for kind in ("film", "empty", "sheet"):
        for _ in range(20):
            f = factors(sample_scene(rng, kind))
            for key, values in allowed.items():
                assert f[key] in values, (key, f[key])
            assert f["extras"] == "none" or all(
                e in {"clips", "tape", "magnets", "dust", "flash", "marker"}
                for e in f["extras"].split("+")
            )


# ----------------------------------------------------------------------------------- geometry


def _shoelace(q: np.ndarray) -> float:
    x, y = q[:, 0], q[:, 1]
    return float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) / 2)


def test_film_scenes_are_in_frame_with_clockwise_corners() -> None:
    rng = np.random.default_rng(21)
    h, w = 90, 160
    for _ in range(30):
        spec = sample_scene(rng, "film")
        ph = render_photo(chest(32), spec, np.random.default_rng(0), (h, w))
        assert ph.in_frame
        assert ph.corners is not None and ph.image_corners is not None
        assert ph.corners.shape == (4, 2) and ph.corners.dtype == np.float32
        c = ph.corners
        assert c[:, 0].min() >= 0 and c[:, 0].max() <= w - 1
        assert c[:, 1].min() >= 0 and c[:, 1].max() <= h - 1
        # Clockwise as seen (image y down => positive shoelace), starting top-left.
        assert _shoelace(c) > 0 and _shoelace(ph.image_corners) > 0
        assert int(np.argmin(c.sum(axis=1))) == 0
        assert c[0, 0] < c[1, 0] and c[3, 1] > c[0, 1]
        # The image area is inside the film sheet.
        for p in ph.image_corners:
            inside = cv2.pointPolygonTest(c.reshape(-1, 1, 2), (float(p[0]), float(p[1])), True)
            assert inside >= -0.01
        # The radiograph stays upright within +-12 degrees (in-plane rotation + perspective).
        top = ph.image_corners[1] - ph.image_corners[0]
        assert abs(np.degrees(np.arctan2(top[1], top[0]))) <= 12


def test_cut_off_film_is_partly_outside() -> None:
    rng = np.random.default_rng(22)
    h, w = 90, 160
    for _ in range(15):
        spec = sample_scene(rng, "film", cut_off=True)
        ph = render_photo(chest(32), spec, np.random.default_rng(0), (h, w))
        assert not ph.in_frame
        assert ph.corners is not None
        c = ph.corners
        out = max(-c[:, 0].min(), c[:, 0].max() - (w - 1), -c[:, 1].min(), c[:, 1].max() - (h - 1))
        assert out > 0.02 * h
        centre = c.mean(axis=0)
        assert 0 <= centre[0] <= w - 1 and 0 <= centre[1] <= h - 1


def test_bright_square_lands_where_projected() -> None:
    dig = np.full((224, 224), 0.05, np.float32)
    dig[90:134, 90:134] = 1.0  # bone-bright square (little exposure: low density)
    spec = spec_where("film", lambda s: s.framing != "small" and s.margin_kind == "black", 40)
    spec = lightbox_metered(quiet(spec))
    ph = render_photo(dig, spec, np.random.default_rng(0), SMALL)
    assert ph.image_corners is not None
    grey = ph.image.mean(axis=2)
    area = quad_mask(SMALL, ph.image_corners, grow=-3)
    bright = (grey > 100) & area
    assert bright.sum() > 50
    ys, xs = np.nonzero(bright)
    # Where the digital square's centre must land: the image-area homography of the film.
    unit = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    hq = cv2.getPerspectiveTransform(unit, ph.image_corners.astype(np.float32))
    # The square spans pixels 90..133 of 224: centre at 112 / 224 of the image area.
    expect = cv2.perspectiveTransform(np.array([[[0.5, 0.5]]], np.float32), hq)[0, 0]
    assert np.hypot(xs.mean() - expect[0], ys.mean() - expect[1]) < 2.5
    sq = cv2.perspectiveTransform(
        np.array(
            [
                [
                    [90 / 224, 90 / 224],
                    [134 / 224, 90 / 224],
                    [134 / 224, 134 / 224],
                    [90 / 224, 134 / 224],
                ]
            ],
            np.float32,
        ),
        hq,
    )[0]
    expected_area = abs(_shoelace(sq))
    assert 0.7 * expected_area < bright.sum() < 1.3 * expected_area
    # Nothing bright elsewhere in the image area (black surround stays dark).
    assert (bright & ~quad_mask(SMALL, sq, grow=4)).sum() == 0


@pytest.mark.parametrize("margin", ["clear", "black"])
def test_margin_kind_seen_just_inside_film_corners(margin: str) -> None:
    spec = spec_where("film", lambda s: s.framing != "small" and s.orientation == "portrait", 60)
    # A 24x30 film sits on the panel (a 35x43 one may overhang the unlit housing).
    spec = dataclasses.replace(spec, film_w_cm=24.0, film_h_cm=30.0)
    density = spec.base_fog if margin == "clear" else spec.d_max
    spec = lightbox_metered(
        quiet(
            spec,
            margin_kind=margin,
            margin_density=density,
            margin_left=0.07,
            margin_top=0.07,
            margin_right=0.07,
            margin_bottom=0.07,
        )
    )
    ph = render_photo(chest(), spec, np.random.default_rng(0), SMALL)
    assert ph.corners is not None and ph.image_corners is not None
    grey = ph.image.mean(axis=2)
    for c, ic in zip(ph.corners, ph.image_corners, strict=True):
        p = c + 0.45 * (ic - c)  # inside the film, in the margin, near the corner
        v = float(grey[round(p[1]), round(p[0])])
        if margin == "clear":
            assert v > 140, v
        else:
            assert v < 40, v


# ----------------------------------------------------------------------------------- exposure


def _outside_film_255_frac(ph: Photo) -> float:
    assert ph.corners is not None
    outside = ~quad_mask(ph.image.shape[:2], ph.corners, grow=6)
    return float((ph.image[outside] == 255).any(axis=1).mean())


def test_metering_on_film_clips_the_lightbox_but_metering_on_lightbox_does_not() -> None:
    spec = spec_where(
        "film", lambda s: s.bays == 2 and s.framing == "medium" and not s.panel_dim, 80
    )
    spec = quiet(spec)
    on_film = render_photo(chest(), film_metered(spec), np.random.default_rng(0), SMALL)
    on_box = render_photo(chest(), lightbox_metered(spec), np.random.default_rng(0), SMALL)
    assert _outside_film_255_frac(on_film) > 0.1
    assert _outside_film_255_frac(on_box) < 0.005
    # Dense film parts get crushed when the panel sets the exposure, not when the film does.
    assert on_box.image.mean() < on_film.image.mean()


def test_lung_clipped_frac_rises_with_over_exposure() -> None:
    spec = film_metered(quiet(spec_where("film", lambda s: s.framing != "small", 100)))
    photos = [
        render_photo(
            chest(), dataclasses.replace(spec, exposure_ev=ev), np.random.default_rng(0), SMALL
        )
        for ev in (-6.0, -2.0, 0.0, 1.5, 3.0)
    ]
    clipped = [p.lung_clipped_frac for p in photos]
    crushed = [p.lung_crushed_frac for p in photos]
    assert clipped == sorted(clipped)
    assert clipped[1] < 0.05 and clipped[-1] > clipped[1] + 0.3
    assert crushed == sorted(crushed, reverse=True)
    assert crushed[0] > crushed[2] + 0.1


def test_lung_glare_is_zero_without_glare_and_linear_in_strength() -> None:
    spec = spec_where("film", lambda s: s.glare == "strong", 120)
    base = quiet(spec)
    none = render_photo(chest(), base, np.random.default_rng(0), SMALL)
    assert none.lung_glare == 0.0
    glare = {k: getattr(spec, k) for k in ("glare", "glare_spots", "glare_bands")}
    g1 = render_photo(
        chest(),
        dataclasses.replace(base, **glare, glare_strength=0.1),
        np.random.default_rng(0),
        SMALL,
    )
    g2 = render_photo(
        chest(),
        dataclasses.replace(base, **glare, glare_strength=0.2),
        np.random.default_rng(0),
        SMALL,
    )
    assert g1.lung_glare > 0
    assert g2.lung_glare == pytest.approx(2 * g1.lung_glare, rel=1e-3)


# ----------------------------------------------------------------------------------- kinds


def test_empty_scene_has_no_film() -> None:
    spec = lightbox_metered(quiet(sample_scene(np.random.default_rng(7), "empty")))
    ph = render_photo(None, spec, np.random.default_rng(0), SMALL)
    assert ph.corners is None and ph.image_corners is None
    assert not ph.in_frame
    assert ph.lung_clipped_frac == 0.0 and ph.lung_glare == 0.0
    assert ph.image.shape == (*SMALL, 3) and ph.image.dtype == np.uint8
    assert (ph.image.mean(axis=2) > 180).mean() > 0.02  # the lit panel is there


def _bright_blobs(ph: Photo, rows: int, cols: int) -> int:
    """Number of large bright connected parts in the rectified image area."""
    assert ph.image_corners is not None
    rw, rh = 40 * cols, 40 * rows
    dst = np.array([[0, 0], [rw - 1, 0], [rw - 1, rh - 1], [0, rh - 1]], np.float32)
    m = cv2.getPerspectiveTransform(ph.image_corners.astype(np.float32), dst)
    rect = cv2.warpPerspective(cv2.cvtColor(ph.image, cv2.COLOR_RGB2GRAY), m, (rw, rh))
    _, bw = cv2.threshold(rect, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    _, _, stats, _ = cv2.connectedComponentsWithStats(bw)
    return int((stats[1:, cv2.CC_STAT_AREA] > 0.15 * 40 * 40).sum())


def test_sheet_shows_a_grid_of_tiles_unlike_a_chest_film() -> None:
    spec = spec_where("sheet", lambda s: s.framing != "small", 140)
    spec = lightbox_metered(quiet(spec))
    rows, cols = spec.sheet_rows, spec.sheet_cols
    sheet = render_photo(None, spec, np.random.default_rng(0), SMALL)
    film_spec = dataclasses.replace(spec, kind="film", sheet_rows=0, sheet_cols=0)
    film = render_photo(chest(ribs=False), film_spec, np.random.default_rng(0), SMALL)
    assert _bright_blobs(sheet, rows, cols) >= 0.8 * rows * cols
    assert _bright_blobs(film, rows, cols) <= 3


def test_film_needs_a_digital_image() -> None:
    with pytest.raises(ValueError):
        render_photo(None, sample_scene(np.random.default_rng(0)), np.random.default_rng(0), SMALL)


# ----------------------------------------------------------------------------------- rendering


def test_same_seed_same_photo_and_noise_only_differs_by_rng() -> None:
    spec = dataclasses.replace(sample_scene(np.random.default_rng(8)), reference=True)
    a = render_photo(chest(), spec, np.random.default_rng(1), SMALL)
    b = render_photo(chest(), spec, np.random.default_rng(1), SMALL)
    c = render_photo(chest(), spec, np.random.default_rng(2), SMALL)
    assert np.array_equal(a.image, b.image)
    assert a.reference is not None and b.reference is not None
    assert np.array_equal(a.reference, b.reference)
    assert not np.array_equal(a.image, c.image)
    assert np.abs(a.image.astype(int) - c.image.astype(int)).mean() < 6  # noise, not layout
    assert a.lung_glare == c.lung_glare


def test_reference_is_the_scene_without_the_film() -> None:
    spec = spec_where("film", lambda s: s.framing == "medium", 160)
    spec = lightbox_metered(quiet(spec, reference=True))
    ph = render_photo(chest(), spec, np.random.default_rng(0), SMALL)
    assert ph.reference is not None and ph.corners is not None
    assert ph.reference.shape == ph.image.shape and ph.reference.dtype == np.uint8
    img, ref = ph.image.astype(np.float32), ph.reference.astype(np.float32)
    outside = ~quad_mask(SMALL, ph.corners, grow=8)
    inside = quad_mask(SMALL, ph.corners, grow=-4)
    assert np.abs(img - ref)[outside].mean() < 4
    assert ref[inside].mean() > img[inside].mean() + 30
    no_ref = render_photo(
        chest(), dataclasses.replace(spec, reference=False), np.random.default_rng(0), SMALL
    )
    assert no_ref.reference is None


def test_jpeg_quality_changes_the_encoding() -> None:
    spec = sample_scene(np.random.default_rng(9))
    lo = render_photo(
        chest(), dataclasses.replace(spec, jpeg_quality=40), np.random.default_rng(0), SMALL
    )
    hi = render_photo(
        chest(), dataclasses.replace(spec, jpeg_quality=95), np.random.default_rng(0), SMALL
    )
    assert not np.array_equal(lo.image, hi.image)
    ok_lo, buf_lo = cv2.imencode(".jpg", lo.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    ok_hi, buf_hi = cv2.imencode(".jpg", hi.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok_lo and ok_hi and len(buf_lo) < len(buf_hi)  # low quality lost detail


def test_1080p_render_is_reasonably_fast() -> None:
    spec = dataclasses.replace(sample_scene(np.random.default_rng(10)), reference=False)
    render_photo(chest(), spec, np.random.default_rng(0))  # warm-up (imports, caches)
    t = time.process_time()
    ph = render_photo(chest(), spec, np.random.default_rng(0))
    assert ph.image.shape == (1080, 1920, 3)
    # The target is well under 0.5 s; the bound is loose for shared CI machines.
    assert time.process_time() - t < 2.0


def test_12mp_render_fits_in_memory() -> None:
    spec = dataclasses.replace(sample_scene(np.random.default_rng(12)), reference=True)
    tracemalloc.start()
    try:
        ph = render_photo(chest(), spec, np.random.default_rng(0), (2592, 4608))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ph.image.shape == (2592, 4608, 3)
    assert ph.reference is not None and ph.reference.shape == (2592, 4608, 3)
    assert peak < 1.5e9, peak
