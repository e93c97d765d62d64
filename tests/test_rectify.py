"""Rectifier on real simulator renderings with real OpenCV: geometry, density, quality gate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk.camera.scene import SceneParams, phantom_chest, random_params, render, render_empty
from kiosk.capture.rig import RigReference
from kiosk.errors import ImageError
from kiosk.imaging.geometry import quad_iou
from kiosk.model.localiser import load_localiser, localiser_manifest
from kiosk.rectify.gates import check_digital, looks_like_photo
from kiosk.rectify.locate import Detection, MaskModel, mask_crispness
from kiosk.rectify.rectifier import rectify
from kiosk.rectify.result import RectifyResult

SIZE = (540, 960)


def _scene(seed: int, difficulty: float = 0.4, **changes: object) -> SceneParams:
    params = random_params(np.random.default_rng(seed), difficulty=difficulty)
    return replace(params, **changes)  # type: ignore[arg-type]


def _corner_error_fraction(found: np.ndarray, truth: np.ndarray) -> float:
    diag = float(np.hypot(*(truth[2] - truth[0])))
    return float(np.linalg.norm(found - truth, axis=1).max()) / diag


@pytest.mark.parametrize("seed", range(6))
def test_corners_are_accurate_without_reference(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    shot = render(phantom_chest(rng, (384, 384)), _scene(seed, glare_strength=0.0), rng, SIZE)
    assert shot.corners is not None
    res = rectify(shot.image)
    assert res.status == "ok", res.quality
    assert res.corners is not None and res.corners.shape == (4, 2)
    assert res.corners.dtype == np.float32
    assert _corner_error_fraction(res.corners, shot.corners) < 0.005
    assert quad_iou(res.corners, shot.corners, SIZE) > 0.98
    assert set(res.timings_ms) >= {"detect_ms", "refine_ms", "develop_ms", "total_ms"}


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_corners_are_accurate_with_reference_and_hard_scenes(seed: int) -> None:
    params = _scene(seed, difficulty=0.8)
    rng = np.random.default_rng(seed)
    reference = RigReference.from_empty_frames(
        [render_empty(params, rng, SIZE, exposure_scale=0.8)], {"exposure_scale": 0.8}
    )
    shot = render(phantom_chest(rng, (384, 384)), params, rng, SIZE)
    assert shot.corners is not None
    res = rectify(shot.image, reference)
    assert res.corners is not None
    assert res.quality.metrics["reference_used"] == 1.0
    assert _corner_error_fraction(res.corners, shot.corners) < 0.005


def test_glare_over_the_lungs_refuses_and_glare_beside_them_is_a_note() -> None:
    rng = np.random.default_rng(6)
    digital = phantom_chest(rng, (384, 384))
    # a broad reflection over most of the lungs (a window); limit: docs/rectify.md
    over = _scene(
        6, glare_strength=0.6, glare_width=0.5, glare_angle_deg=70.0, glare_center=(0.5, 0.5)
    )
    shot = render(digital, over, np.random.default_rng(6), SIZE)
    assert shot.corners is not None
    res = rectify(shot.image)
    assert res.status == "rejected" and "glare" in res.quality.flags
    value, limit = res.quality.checks["lung_glare_fraction"]
    assert value > limit
    # a narrow band: most of the lungs stay readable, the reflection around is noted
    faint = rectify(
        render(digital, replace(over, glare_strength=0.35, glare_width=0.05), rng, SIZE).image
    )
    assert faint.status == "ok", faint.quality
    assert "glare_beside_film" in faint.quality.notes
    assert faint.corners is not None  # and the corners survive the band
    assert _corner_error_fraction(faint.corners, shot.corners) < 0.01
    calm = rectify(render(digital, replace(over, glare_strength=0.0), rng, SIZE).image)
    assert "glare" not in calm.quality.flags and "glare_beside_film" not in calm.quality.notes


def test_clip_and_fingers_do_not_move_the_corners() -> None:
    params = _scene(3, clip=True, fingers=True, glare_strength=0.0)
    rng = np.random.default_rng(3)
    shot = render(phantom_chest(rng, (384, 384)), params, rng, SIZE)
    assert shot.corners is not None
    res = rectify(shot.image)
    assert res.corners is not None
    assert _corner_error_fraction(res.corners, shot.corners) < 0.005


def test_density_recovery_correlates_with_the_digital_source_and_is_upright() -> None:
    rng = np.random.default_rng(7)
    digital = phantom_chest(rng, (512, 512))
    digital[20:90, 20:140] = 250  # a bright (bone-like, clear film) block at the top left
    params = _scene(7, glare_strength=0.0, clip=False, fingers=False, second_film=False)
    reference = RigReference.from_empty_frames([render_empty(params, rng, SIZE)], {})
    shot = render(digital, params, rng, SIZE)
    for ref in (None, reference):
        res = rectify(shot.image, ref)
        assert res.status == "ok" and res.film is not None
        film = res.film
        assert film.dtype == np.uint8 and film.ndim == 2
        src = cv2.resize(digital, (film.shape[1], film.shape[0]), interpolation=cv2.INTER_AREA)
        r = np.corrcoef(film.ravel().astype(float), src.ravel().astype(float))[0, 1]
        assert r > 0.9, r
        flipped = np.corrcoef(film[::-1].ravel().astype(float), src.ravel().astype(float))[0, 1]
        assert flipped < r - 0.2  # upright: the top of the photo is the top of the film
        h, w = film.shape
        assert film[: h // 6, : w // 4].mean() > film[h // 6 : h // 2, w // 4 : w // 2].mean()


def test_rejects_an_empty_lightbox() -> None:
    rng = np.random.default_rng(1)
    for seed in range(3):
        res = rectify(render(None, _scene(seed), rng, SIZE).image)
        assert res.status == "rejected"
        assert "no_film" in res.quality.flags
        assert res.quality.reason and res.quality.advice
        assert res.film is None


def test_rejects_a_film_cut_off_by_the_frame() -> None:
    rng = np.random.default_rng(2)
    params = _scene(2, film_offset=(0.42, 0.0), second_film=False)
    res = rectify(render(phantom_chest(rng, (256, 256)), params, rng, SIZE).image)
    assert res.status == "rejected"
    assert res.quality.flags[0] == "cut_off"


def test_rejects_a_blurred_photo() -> None:
    rng = np.random.default_rng(4)
    params = _scene(4, blur_sigma_px=14.0, glare_strength=0.0)
    res = rectify(render(phantom_chest(rng, (256, 256)), params, rng, SIZE).image)
    assert res.status == "rejected"
    assert "blurred" in res.quality.flags
    sharp = rectify(
        render(phantom_chest(rng, (256, 256)), replace(params, blur_sigma_px=0.5), rng, SIZE).image
    )
    assert "blurred" not in sharp.quality.flags


def test_rejects_a_colourful_picture_on_the_lightbox() -> None:
    rng = np.random.default_rng(5)
    params = _scene(5, glare_strength=0.0, clip=False, fingers=False)
    shot = render(phantom_chest(rng, (256, 256)), params, rng, SIZE)
    assert shot.corners is not None
    # paste a colourful poster over the film's image area (margins stay visible)
    blocks = rng.integers(0, 170, size=(6, 6, 3), dtype=np.uint8)
    poster = cv2.resize(blocks, (300, 300), interpolation=cv2.INTER_NEAREST)
    centre = shot.corners.mean(axis=0)
    inner = centre + (shot.corners - centre) * 0.88
    src = np.array([[0, 0], [300, 0], [300, 300], [0, 300]], np.float32)
    m = cv2.getPerspectiveTransform(src, inner.astype(np.float32))
    warped = cv2.warpPerspective(poster, m, (SIZE[1], SIZE[0]))
    mask = cv2.warpPerspective(np.ones((300, 300), np.uint8), m, (SIZE[1], SIZE[0])) > 0
    image = shot.image.copy()
    image[mask] = warped[mask]
    res = rectify(image)
    assert res.status == "rejected"
    assert "not_xray" in res.quality.flags
    assert res.quality.metrics["colour_detail"] > 0.25


def _tinted(grey: np.ndarray, left: tuple[float, ...], right: tuple[float, ...]) -> np.ndarray:
    """A grey film lit by light whose colour drifts from ``left`` to ``right`` across it."""
    t = np.linspace(0.0, 1.0, grey.shape[1], dtype=np.float32)[None, :, None]
    light = np.asarray(left, np.float32) * (1 - t) + np.asarray(right, np.float32) * t
    return np.clip(grey[..., None].astype(np.float32) * light, 0, 255).astype(np.uint8)


def test_a_film_under_drifting_light_is_not_a_colour_picture() -> None:
    from tests.images import colourful

    phantom = phantom_chest(np.random.default_rng(1), (512, 512))
    # a warm tube on the left, a cool one on the right: strongly coloured by the old measure
    drifting = _tinted(phantom, (1.0, 0.8, 0.55), (0.6, 0.8, 1.0))
    verdict = check_digital(drifting)
    assert verdict.ok, verdict.flags
    assert verdict.metrics["colour_detail"] < 0.1
    assert verdict.metrics["colourfulness"] > 12  # what used to refuse such a photo
    holiday = check_digital(colourful(0))
    assert "not_xray" in holiday.flags
    assert holiday.metrics["colour_detail"] > 0.25 and holiday.metrics["colour_field"] > 0.5


def _ct_sheet(rows: int, cols: int, size: tuple[int, int] = (600, 480)) -> np.ndarray:
    """A film sheet of rows x cols CT slices: bright ovals (a ring and mid-grey inside) on black."""
    h, w = size
    sheet = np.zeros((h, w), np.uint8)
    ch, cw = h // rows, w // cols
    for r in range(rows):
        for c in range(cols):
            centre = (c * cw + cw // 2, r * ch + ch // 2)
            axes = (int(cw * 0.4), int(ch * 0.3))
            cv2.ellipse(sheet, centre, axes, 0, 0, 360, 120, -1)
            cv2.ellipse(sheet, centre, axes, 0, 0, 360, 230, 3)
    return sheet


def test_a_ct_sheet_is_refused_for_its_grid_and_a_chest_is_not() -> None:
    from kiosk.rectify.sheet import similar_regions

    sheet = _ct_sheet(4, 4)
    assert similar_regions(sheet) == 16
    verdict = check_digital(sheet)
    assert "not_xray" in verdict.flags and verdict.metrics["similar_regions"] == 16
    assert similar_regions(_ct_sheet(1, 2)) == 2  # two large slices: below the limit
    for seed in range(3):
        phantom = phantom_chest(np.random.default_rng(seed), (512, 420))
        assert similar_regions(phantom) <= 2
        assert check_digital(phantom).ok


def test_check_digital() -> None:
    phantom = phantom_chest(np.random.default_rng(0), (512, 512))
    assert check_digital(phantom).ok
    assert check_digital(cv2.cvtColor(phantom, cv2.COLOR_GRAY2RGB)).ok
    # a radiograph photographed on a warm panel (a uniform colour cast) is still a radiograph
    warm = cv2.cvtColor(phantom, cv2.COLOR_GRAY2RGB).astype(np.float32) * [1.0, 0.86, 0.66]
    assert check_digital(warm.astype(np.uint8)).ok
    assert "too_small" in check_digital(phantom[:64, :64]).flags
    assert "blank" in check_digital(np.full((512, 512), 128, np.uint8)).flags
    colourful = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    verdict = check_digital(colourful)
    assert not verdict.ok and "not_xray" in verdict.flags
    assert verdict.reason and verdict.advice


def test_looks_like_photo() -> None:
    rng = np.random.default_rng(0)
    phantom = phantom_chest(rng, (512, 512))
    assert not looks_like_photo(phantom)
    assert not looks_like_photo(cv2.cvtColor(phantom, cv2.COLOR_GRAY2RGB))
    for seed in range(3):
        shot = render(phantom, _scene(seed), rng, SIZE)
        assert looks_like_photo(shot.image)


def test_bad_input_and_method() -> None:
    with pytest.raises(ImageError):
        rectify(np.zeros((100, 100), np.uint8))
    with pytest.raises(ValueError, match="method"):
        rectify(np.zeros((100, 100, 3), np.uint8), method="magic")


def test_reference_of_another_framing_is_ignored_not_fatal() -> None:
    rng = np.random.default_rng(9)
    params = _scene(9)
    reference = RigReference.from_empty_frames([render_empty(params, rng, (480, 480))], {})
    shot = render(phantom_chest(rng, (256, 256)), params, rng, SIZE)
    res = rectify(shot.image, reference)
    assert res.corners is not None
    assert res.quality.metrics["reference_used"] == 0.0


def _localiser_or_skip() -> MaskModel:
    models_dir = Path(__file__).resolve().parents[1] / "models"
    localiser = load_localiser(models_dir)
    if localiser is None:
        pytest.skip(f"film localiser not shipped ({localiser_manifest(models_dir)} missing)")
    return localiser


@pytest.mark.parametrize("method", ["learned", "combined"])
def test_learned_localiser_finds_the_film(method: str) -> None:
    localiser = _localiser_or_skip()
    for seed in (20, 21, 22):
        rng = np.random.default_rng(seed)
        params = _scene(seed, difficulty=0.6, glare_strength=0.0)
        shot = render(phantom_chest(rng, (384, 384)), params, rng, SIZE)
        assert shot.corners is not None
        res = rectify(shot.image, method=method, localiser=localiser)
        assert res.corners is not None, res.quality
        assert _corner_error_fraction(res.corners, shot.corners) < 0.01
        if method == "learned":  # the localiser's quad first, refined on the edges
            assert res.quality.metrics["localiser_used"] == 1.0
            assert res.quality.metrics["edge_points"] > 0
    empty = rectify(
        render(None, _scene(1), np.random.default_rng(1), SIZE).image,
        method=method,
        localiser=localiser,
    )
    assert "no_film" in empty.quality.flags


def _film_on_dark_housing(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A film that covers its whole bay: no lit panel around it, only the dark housing.
    Returns the photo and the film sheet's corners."""
    rng = np.random.default_rng(seed)
    # the drawn phantom is smoother than anatomy: add lung and bone texture (band-limited noise)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (512, 420)).astype(np.float32), (0, 0), 2.0)
    digital = np.clip(phantom_chest(rng, (512, 420)) + 60 * texture, 0, 255).astype(np.uint8)
    # transmitted light: the radiograph (bone bright) seen through the film, as a camera
    # metered on the film would deliver it; a clear margin around it
    film = np.full((560, 468), 235, np.uint8)
    film[24:-24, 24:-24] = (40 + digital.astype(np.float32) * 0.75).astype(np.uint8)
    h, w = SIZE
    corners = np.array([[330, 60], [660, 70], [652, 470], [322, 462]], np.float32)
    src = np.array([[0, 0], [468, 0], [468, 560], [0, 560]], np.float32) - 0.5
    m = cv2.getPerspectiveTransform(src, corners)
    warped = cv2.warpPerspective(film, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=18)
    photo = np.repeat(warped[..., None], 3, axis=2)
    photo = np.clip(photo + rng.normal(0, 1.5, photo.shape), 0, 255).astype(np.uint8)
    return photo, corners


@pytest.mark.parametrize("seed", [11, 14])
def test_a_film_covering_its_bay_is_found_by_its_texture(seed: int) -> None:
    photo, sheet = _film_on_dark_housing(seed)
    res = rectify(photo)
    assert res.status == "ok", res.quality
    assert res.quality.metrics["located_by_texture"] == 1.0
    assert "film_edges_not_seen" in res.quality.notes
    assert res.corners is not None and res.film is not None
    assert quad_iou(res.corners, sheet, SIZE) > 0.85


def test_an_empty_dark_housing_is_no_film() -> None:
    rng = np.random.default_rng(12)
    photo = np.clip(rng.normal(18, 1.5, (*SIZE, 3)), 0, 255).astype(np.uint8)
    res = rectify(photo)
    assert res.status == "rejected" and res.quality.flags[-1] == "no_film"


def test_a_clipped_lightbox_is_a_note_not_a_refusal() -> None:
    """Metered on the film: the bare lightbox clips; the lungs are fine, so it is read."""
    rng = np.random.default_rng(13)
    params = _scene(13, glare_strength=0.0, exposure_scale=2.0)
    shot = render(phantom_chest(rng, (384, 384)), params, rng, SIZE)
    res = rectify(shot.image)
    assert res.quality.metrics["lightbox_clipped_fraction"] > 0.5
    assert res.status == "ok", res.quality
    assert "lightbox_clipped" in res.quality.notes


def test_develop_with_known_corners_gives_the_film_the_kiosk_would() -> None:
    from kiosk.rectify.develop import develop

    rng = np.random.default_rng(14)
    digital = phantom_chest(rng, (384, 384))
    shot = render(digital, _scene(14, glare_strength=0.0), rng, SIZE)
    assert shot.corners is not None
    film = develop(shot.image, shot.corners)
    found = rectify(shot.image)
    assert found.film is not None and film.dtype == np.uint8
    assert abs(film.shape[0] - found.film.shape[0]) <= 0.03 * found.film.shape[0]
    # the developed film is the radiograph: it correlates with the digital original
    small = cv2.resize(film, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float64)
    truth = cv2.resize(digital, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float64)
    assert np.corrcoef(small.ravel(), truth.ravel())[0, 1] > 0.8


def test_learned_method_refuses_a_film_running_out_of_the_frame() -> None:
    localiser = _localiser_or_skip()
    rng = np.random.default_rng(2)
    params = _scene(2, film_offset=(0.42, 0.0), second_film=False)
    shot = render(phantom_chest(rng, (384, 384)), params, rng, SIZE)
    res = rectify(shot.image, method="learned", localiser=localiser)
    assert res.status == "rejected"
    assert "cut_off" in res.quality.flags


def test_a_localiser_quad_runs_out_only_where_its_mask_says() -> None:
    quad = np.array([[-3, 10], [100, 10], [100, 90], [-3, 90]], np.float32)
    assert Detection(quad, 1.0, 0.3).runs_out((120, 200))  # judged by the quad
    assert not Detection(quad, 1.0, 0.3, cut_off=False).runs_out((120, 200))  # by the mask
    inside = np.array([[10, 10], [100, 10], [100, 90], [10, 90]], np.float32)
    assert Detection(inside, 1.0, 0.3, cut_off=True).runs_out((120, 200))


def test_mask_crispness_ignores_the_outline_and_sees_a_hesitant_mask() -> None:
    prob = np.zeros((72, 128), np.float32)
    prob[10:60, 30:90] = 1.0
    prob = cv2.GaussianBlur(prob, (0, 0), 1.0)  # a soft outline, as the network gives
    assert mask_crispness(prob) > 0.99
    grey = prob * 0.5 + 0.25  # the same film, but every cell unsure
    assert mask_crispness(grey) < 0.5


def test_a_mostly_white_colour_picture_is_a_photo_and_a_grey_radiograph_is_not() -> None:
    rng = np.random.default_rng(4)
    radiograph = np.repeat(phantom_chest(rng, (384, 384))[..., None], 3, axis=2)
    assert not looks_like_photo(radiograph)
    # a film beside an empty, clipped lightbox bay, on a dark housing, white-balanced grey
    photo = np.full((540, 960, 3), 30, np.uint8)
    photo[60:480, 500:900] = 255
    photo[80:460, 120:440] = radiograph[::1, ::1][:380, :320]
    assert looks_like_photo(photo)


def _film_over_frame_edge(
    x0: float, seed: int = 11, d_range: tuple[float, float] = (0.3, 2.3), margins: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """A film with black margins on a lightbox lit up to the frame's right edge, placed so
    that its sheet's right edge (x0 + 520) lies beyond the frame; its radiograph spans
    x0 + 50 .. x0 + 470. Rendered in linear light: panel x film transmittance + room light."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    texture = cv2.GaussianBlur(rng.normal(0, 1, (512, 420)).astype(np.float32), (0, 0), 2.0)
    digital = np.clip(phantom_chest(rng, (512, 420)) + 60 * texture, 0, 255)
    t_film = np.full((600, 520), 0.004, np.float32)  # black margin: density 2.4
    lo, hi = d_range
    t_film[44:-44, 50:-50] = 10 ** -(lo + (255 - digital) / 255 * (hi - lo))
    if not margins:  # the image fills the sheet
        t_film = cv2.resize(t_film[44:-44, 50:-50], (520, 600), interpolation=cv2.INTER_LINEAR)
    corners = np.array([[x0, 30], [x0 + 520, 40], [x0 + 515, 520], [x0 - 6, 512]], np.float32)
    src = np.array([[0, 0], [520, 0], [520, 600], [0, 600]], np.float32) - 0.5
    m = cv2.getPerspectiveTransform(src, corners)
    t = cv2.warpPerspective(t_film, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=1.0)
    panel = np.zeros((h, w), np.float32)
    panel[20:520, 80:] = 0.9
    lin = panel * t + 0.004
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    photo = np.repeat((srgb * 255)[..., None], 3, axis=2)
    photo = np.clip(photo + rng.normal(0, 1.2, photo.shape), 0, 255).astype(np.uint8)
    return photo, corners


def test_a_film_whose_margin_alone_leaves_the_frame_is_read_and_one_whose_image_does_is_not() -> (
    None
):
    """Only what lies at the frame's edge decides "cut off": the film's dark margin there is
    no reason to refuse; its image there is."""
    localiser = _localiser_or_skip()
    photo, sheet = _film_over_frame_edge(460)  # image ends at x = 930 of 960
    res = rectify(photo, method="auto", localiser=localiser)
    assert res.status == "ok", res.quality
    assert "film_at_frame_edge" in res.quality.notes
    assert res.quality.metrics["frame_edge_content"] <= 0.4
    assert res.corners is not None and quad_iou(res.corners, sheet, SIZE) > 0.9
    cut, _ = _film_over_frame_edge(560)  # image runs to x = 1030: cut by the frame
    res = rectify(cut, method="auto", localiser=localiser)
    assert res.status == "rejected" and res.quality.flags[0] == "cut_off"
    assert res.quality.metrics["frame_edge_content"] > 1.0


def test_edge_content_sees_image_or_dark_at_the_frame_edge() -> None:
    from kiosk.rectify.frame_edge import edge_content

    lum = np.full((100, 160), 0.004, np.float32)  # dark surround
    lum[10:90, 60:150] = 0.05  # the film's image, median 0.05
    at_edge = np.array([[75, 10], [165, 10], [165, 90], [75, 90]], np.float32)
    middle = np.array([[40, 25], [110, 25], [110, 75], [40, 75]], np.float32)
    assert np.isnan(edge_content(lum, middle))  # no frame edge near the quad
    # the quad reaches the right edge, where only the dark surround lies
    assert edge_content(lum, at_edge) == pytest.approx(0.004 / 0.05, rel=0.01)
    lum[10:90, 150:] = 0.08  # now the image runs to the frame's edge
    assert edge_content(lum, at_edge) > 1.0
    assert edge_content(lum, np.zeros((4, 2), np.float32)) == float("inf")  # no interior


def test_edge_content_reaches_past_a_mask_that_bled_over_the_dark_surround() -> None:
    """The localiser's mask can run from the film's black margin over the dark housing to the
    frame's edge, 16 px beyond its quad: what lies at the edge there, within the mask's
    reach, says whether the film runs on."""
    from kiosk.rectify.frame_edge import edge_content

    lum = np.full((100, 160), 0.004, np.float32)  # dark surround
    lum[30:76, 40:144] = 0.05  # the film, its right side 16 px from the frame's edge
    lum[92:, 60:120] = 0.9  # lit panel at the bottom edge, 22 px below the film
    quad = np.array([[40, 30], [143, 30], [143, 75], [40, 75]], np.float32)
    assert np.isnan(edge_content(lum, quad))  # too far for the frame-edge check
    # the mask ran out at the right edge: only there is the check reached out to
    assert edge_content(lum, quad, ("right",)) == pytest.approx(0.004 / 0.05, rel=0.01)
    assert edge_content(lum, quad, ("right", "bottom")) > 10  # (the panel, were it asked)
    lum[30:76, 144:] = 0.06  # the image runs on to the frame's edge
    assert edge_content(lum, quad, ("right",)) > 1.0


def test_beyond_unlit_sides_sees_dark_housing_or_film_running_on() -> None:
    """A quad inside the frame whose top side has no lit panel beyond it: dark housing out
    to the frame's edge (the film ends, or hangs over the housing in view) or the film's dim
    image there (it may run on out of the frame)."""
    from kiosk.rectify.frame_edge import beyond_unlit_sides

    lum = np.full((100, 160), 0.004, np.float32)  # the dark housing and room
    lum[30:, 20:140] = 0.9  # the lit panel, from row 30 down to the frame's bottom
    lum[30:80, 50:110] = 0.05  # the film's image (median 0.05), its top on the panel's top
    bright = lum > 0.4 * 0.9
    film = np.array([[50, 30], [110, 30], [110, 80], [50, 80]], np.float32)
    assert beyond_unlit_sides(lum, bright, film) == pytest.approx(0.004 / 0.05, rel=0.01)
    lum[:30, 50:110] = 0.03  # the film goes on over the housing, dimly lit, to the top edge
    assert beyond_unlit_sides(lum, bright, film) > 0.4
    inside = np.array([[55, 40], [105, 40], [105, 75], [55, 75]], np.float32)
    assert np.isnan(beyond_unlit_sides(lum, lum > 0.01, inside))  # lit all round: NaN


def test_the_panel_level_is_not_a_dense_film_covering_its_bay() -> None:
    """A lit region that is mostly a dense film (its bay's panel only a thin frame round it):
    the lightbox model follows the panel, not the film's most common level."""
    from kiosk.rectify.photometry import lightbox_model

    lum = np.full((270, 480), 0.002, np.float32)  # the housing
    lum[20:250, 100:380] = 0.65  # the panel
    lum[30:240, 110:370] = 0.003  # a dense film over nearly all of it (black margin, lungs)
    lum[60:200, 150:330] = np.linspace(0.003, 0.2, 180, dtype=np.float32)  # its image
    lit = np.zeros(lum.shape, bool)
    lit[20:250, 100:380] = True
    model, kind = lightbox_model(lum, lit, None)
    assert kind == "smooth"
    assert 0.5 < float(np.median(model[30:240, 110:370])) < 0.8


def test_a_film_in_a_bay_the_panel_model_was_not_fitted_to_is_measured_as_such() -> None:
    """Two bays: a large empty one and a brighter one the film nearly covers. The lit panel
    (the largest bright region) is the empty bay; the film's quad lies off it, so the panel
    model under the film is an extrapolation and is not used to judge the film."""
    rng = np.random.default_rng(3)
    h, w = SIZE
    texture = cv2.GaussianBlur(rng.normal(0, 1, (512, 420)).astype(np.float32), (0, 0), 2.0)
    digital = np.clip(phantom_chest(rng, (512, 420)) + 60 * texture, 0, 255)
    t_film = np.full((560, 460), 0.004, np.float32)  # black margin
    t_film[24:-24, 20:-20] = 10 ** -(0.3 + (255 - digital) / 255 * 2.0)
    panel = np.zeros((h, w), np.float32)
    panel[40:500, 30:450] = 0.45  # the empty bay
    panel[60:480, 520:900] = 0.9  # the film's bay, twice as bright
    corners = np.array([[540, 80], [880, 84], [878, 462], [538, 458]], np.float32)
    src = np.array([[0, 0], [460, 0], [460, 560], [0, 560]], np.float32) - 0.5
    m = cv2.getPerspectiveTransform(src, corners)
    t = cv2.warpPerspective(t_film, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=1.0)
    lin = panel * t + 0.004
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    photo = np.repeat((np.clip(srgb, 0, 1) * 255)[..., None], 3, axis=2)
    photo = np.clip(photo + rng.normal(0, 1.2, photo.shape), 0, 255).astype(np.uint8)
    res = rectify(photo, method="auto", localiser=_localiser_or_skip())
    assert res.status == "ok", res.quality
    assert res.quality.metrics["film_on_panel_fraction"] < 0.5
    assert np.isnan(res.quality.metrics["lung_glare_fraction"])  # not judged on the model
    assert res.corners is not None and quad_iou(res.corners, corners, SIZE) > 0.9


def test_bay_boxes_are_the_other_bays_of_the_lightbox() -> None:
    """The closer look at each bay: boxes (frame pixels) round every bright region but the
    largest that is at least a quarter of it; small bright things are no bay."""
    from kiosk.rectify.light import measure_light
    from kiosk.rectify.second_look import bay_boxes

    photo = np.full((540, 960, 3), 20, np.uint8)
    photo[40:500, 40:440] = 240  # the largest bay (an empty one)
    photo[140:400, 560:800] = 240  # another bay: 34 % of it
    photo[460:500, 880:920] = 240  # a bright patch (a lamp): no bay
    boxes = bay_boxes(measure_light(photo, None))
    assert len(boxes) == 1
    x0, y0, x1, y1 = boxes[0]
    assert 540 <= x0 < 560 and 120 <= y0 < 140 and 800 < x1 <= 820 and 400 < y1 <= 420
    photo[140:400, 560:800] = 20
    assert bay_boxes(measure_light(photo, None)) == []


def _small_film_far_away(
    seed: int, film: bool = True, *, film_scale: float = 0.5, panel_scale: float = 1.3
) -> tuple[np.ndarray, np.ndarray]:
    """A small lightbox far from the camera: the film covers 3 % of the frame (117 px on its
    short side, just above ``gates.MIN_FILM_SIDE_PX``). Rendered in
    linear light (panel x film transmittance + room light), a clear margin round the image.
    ``panel_scale``: the lit panel's size over the film's (below 1 the film overhangs it)."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    texture = cv2.GaussianBlur(rng.normal(0, 1, (256, 210)).astype(np.float32), (0, 0), 1.5)
    digital = np.clip(phantom_chest(rng, (256, 210)) + 50 * texture, 0, 255)
    t_film = np.full((280, 234), 0.6, np.float32)
    t_film[12:-12, 12:-12] = 10 ** -(0.3 + (255 - digital) / 255 * 2.0)
    fw, fh = 234 * film_scale, 280 * film_scale
    cx, cy = 480, 270
    corners = np.array(
        [
            [cx - fw / 2, cy - fh / 2],
            [cx + fw / 2, cy - fh / 2 + 3],
            [cx + fw / 2 - 2, cy + fh / 2],
            [cx - fw / 2 + 1, cy + fh / 2 - 2],
        ],
        np.float32,
    )
    src = np.array([[0, 0], [234, 0], [234, 280], [0, 280]], np.float32) - 0.5
    m = cv2.getPerspectiveTransform(src, corners)
    t = cv2.warpPerspective(t_film, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=1.0)
    panel = np.zeros((h, w), np.float32)
    pw, ph = fw * (panel_scale + 0.05), fh * (panel_scale - 0.05)
    panel[int(cy - ph / 2) : int(cy + ph / 2), int(cx - pw / 2) : int(cx + pw / 2)] = 0.85
    lin = panel * (t if film else 1.0) + 0.003
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    photo = np.repeat((srgb * 255)[..., None], 3, axis=2) * np.array([1.0, 0.97, 0.92])
    photo = np.clip(photo + rng.normal(0, 1.2, photo.shape), 0, 255).astype(np.uint8)
    return photo, corners


def test_a_small_film_far_away_is_found_by_a_closer_look() -> None:
    from kiosk.capture.bracket import FilmCapture
    from kiosk.rectify.rectifier import _rectify_once

    photo, sheet = _small_film_far_away(3)
    first, _ = _rectify_once(FilmCapture.single(photo), None, "classical", None)
    assert first.status == "rejected" and "no_film" in first.quality.flags  # too few pixels
    res = rectify(photo, method="classical")
    assert res.status == "ok", res.quality
    assert "film_small_in_frame" in res.quality.notes
    assert res.corners is not None and quad_iou(res.corners, sheet, SIZE) > 0.95
    empty, _ = _small_film_far_away(3, film=False)
    refused = rectify(empty, method="classical")
    assert refused.status == "rejected" and "no_film" in refused.quality.flags


def test_a_texture_find_is_kept_when_the_closer_look_sees_no_edge_either() -> None:
    """A film hanging over its small panel shows no lightbox edge: found by its texture. The
    closer look (tried for texture finds too) finds it only by texture again, so the first
    find stands; the lit part of the sheet is what is read."""
    from kiosk.capture.bracket import FilmCapture
    from kiosk.rectify.rectifier import _rectify_once

    photo, sheet = _small_film_far_away(3, film_scale=0.6, panel_scale=0.9)
    first, _ = _rectify_once(FilmCapture.single(photo), None, "classical", None)
    assert first.status == "ok" and first.quality.metrics["located_by_texture"] == 1.0
    res = rectify(photo, method="classical")
    assert res.status == "ok" and "zoomed" not in res.quality.metrics
    assert res.corners is not None and first.corners is not None
    assert np.array_equal(res.corners, first.corners)
    assert quad_iou(res.corners, sheet, SIZE) > 0.8


def test_develop_never_crops_into_the_image_against_a_base_that_is_no_clear_film() -> None:
    """Margins are cropped where they are as clear as the film's clear base. A measured "base"
    darker than clear film (a black or grey margin, or none) is no base: measured against it, a
    thin radiograph reads as "clear" from its edge inwards and would be cut (as developed
    training crops of such generator-B films once were)."""
    from kiosk.capture.bracket import FilmCapture
    from kiosk.rectify.develop import develop_film
    from kiosk.rectify.light import measure_light
    from kiosk.rectify.warp import film_size

    # a thin (under-exposed) radiograph filling its sheet, density 0.05-0.3
    photo, sheet = _film_over_frame_edge(300, d_range=(0.05, 0.3), margins=False)
    light = measure_light(photo, None)
    w, h = film_size(sheet)
    for dark_base in (0.4, 0.2):  # what clear_film_level reports for black or grey margins
        grey = develop_film(FilmCapture.single(photo), sheet, light, dark_base).grey
        assert grey.shape[0] >= 0.95 * h and grey.shape[1] >= 0.95 * w, dark_base
    # a film with a real clear margin loses it
    rng = np.random.default_rng(14)
    shot = render(phantom_chest(rng, (384, 384)), _scene(14, glare_strength=0.0), rng, SIZE)
    assert shot.corners is not None
    from kiosk.rectify.develop import develop

    clear = develop(shot.image, shot.corners)
    cw, ch = film_size(shot.corners)
    assert clear.shape[0] < 0.97 * ch or clear.shape[1] < 0.97 * cw


class _FakeLocaliser:
    """A localiser that answers with a given mask (the real one's interface, MaskModel)."""

    def __init__(self, mask: np.ndarray) -> None:
        self._mask = mask.astype(np.float32)
        h, w = mask.shape
        self.manifest = type(
            "M", (), {"input": type("I", (), {"width": w, "height": h, "mean": 0.0, "std": 1.0})}
        )()

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {"mask": self._mask[None, ..., None]}


@pytest.mark.parametrize(
    ("top_row", "runs_out"),
    [(0, True), (1, False), (6, True)],  # on the edge / next to it / a clip reaching past it
)
def test_a_film_next_to_the_frame_edge_is_whole(top_row: int, runs_out: bool) -> None:
    from kiosk.rectify.locate import learned_detection

    mask = np.zeros((72, 128), np.uint8)
    mask[top_row:60, 20:100] = 1
    mask[0 : top_row + 1, 56:62] = 1  # a clip on the film's top edge, up to the frame's edge
    found = learned_detection(_FakeLocaliser(mask), np.zeros((270, 480, 3), np.uint8), (270, 480))
    assert found is not None
    assert found.runs_out((270, 480)) is runs_out
    assert found.out_edges == (("top",) if runs_out else ())


def _panel_with_film(mediastinum: bool = False) -> np.ndarray:
    """Work-copy luminance (270x480): a flat panel at 1.0, a textured film at 0.2-0.4 over
    x 120-360, y 40-200 (optionally with a flat, clipped "mediastinum" inside it)."""
    rng = np.random.default_rng(0)
    lum = np.ones((270, 480), np.float32)
    lum[40:200, 120:360] = rng.uniform(0.2, 0.4, (160, 240))
    if mediastinum:
        lum[70:170, 220:260] = 1.0
    return lum


def test_panel_reach_is_bare_panel_the_mask_bleeds_onto_not_the_film() -> None:
    from kiosk.rectify.locate import panel_reach

    lum = _panel_with_film(mediastinum=True)
    mask = np.zeros((72, 128), bool)  # the mask grid: a cell is 3.75 work px
    mask[11:53, 32:96] = True  # the film ...
    mask[53:64, 32:96] = True  # ... and a strip of bare panel below it
    reach = panel_reach(lum, mask)
    assert reach[55:64, 34:94].all()  # the strip is panel joined to the panel outside
    assert not reach[12:52, 33:95].any()  # the film and its clipped mediastinum are not


def test_a_localiser_mask_bleeding_onto_the_panel_is_cut_back_to_the_film() -> None:
    from kiosk.rectify.locate import learned_detection, rectangular

    lum = _panel_with_film()
    mask = np.zeros((72, 128), np.uint8)
    mask[11:53, 32:96] = 1
    mask[53:64, 32:96] = 1  # bleeding 11 cells (41 work px) onto the panel below
    fake, photo = _FakeLocaliser(mask), np.zeros((270, 480, 3), np.uint8)
    bled = learned_detection(fake, photo, (270, 480))
    cut = learned_detection(fake, photo, (270, 480), lum)
    assert bled is not None and cut is not None
    assert bled.quad_work[:, 1].max() > 235  # without the light: down to the strip's end
    assert abs(float(cut.quad_work[:, 1].max()) - 199.5) < 4  # with it: the film's edge
    assert rectangular(cut.quad_work)
    skewed = np.array([[0, 0], [100, 0], [140, 80], [40, 80]], np.float32)  # 63 degrees
    assert not rectangular(skewed)


def test_a_glare_band_joined_to_the_panel_does_not_cut_the_film_in_two() -> None:
    from kiosk.rectify.locate import learned_detection

    lum = _panel_with_film()
    lum[62:82, 110:370] = 1.0  # clipped glare across the film, out onto the panel each side
    mask = np.zeros((72, 128), np.uint8)
    mask[11:53, 32:96] = 1  # the whole film
    fake, photo = _FakeLocaliser(mask), np.zeros((270, 480, 3), np.uint8)
    whole = learned_detection(fake, photo, (270, 480))
    found = learned_detection(fake, photo, (270, 480), lum)
    assert whole is not None and found is not None
    # the band's cells are "bare panel" and split the mask; the larger half alone would be
    # a filled right-angled quad, but it holds too little of the rest: the whole mask's quad
    np.testing.assert_allclose(found.quad_work, whole.quad_work)
    assert found.quad_work[:, 1].min() < 45 and found.quad_work[:, 1].max() > 195


def _film_by_the_top_edge(top_y: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tilted film on a lit panel that fills a 720x1280 frame, its top-left corner at
    ``top_y`` (negative: cut off by the frame's top edge). Returns the photo, the film's
    corners and a localiser mask of it (72x128, as the real one answers: the film's cells,
    a cell wider, clipped to the frame)."""
    rng = np.random.default_rng(5)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (480, 400)).astype(np.float32), (0, 0), 2.0)
    digital = np.clip(phantom_chest(rng, (480, 400)) + 60 * texture, 0, 255).astype(np.uint8)
    film = (30 + digital.astype(np.float32) * 0.6).astype(np.uint8)
    corners = np.array(
        [[400, top_y], [860, top_y + 100], [780, top_y + 680], [320, top_y + 585]], np.float32
    )
    src = np.array([[0, 0], [400, 0], [400, 480], [0, 480]], np.float32) - 0.5
    m = cv2.getPerspectiveTransform(src, corners)
    grey = cv2.warpPerspective(film, m, (1280, 720), flags=cv2.INTER_LINEAR, borderValue=230)
    photo = np.clip(
        np.repeat(grey[..., None], 3, axis=2) + rng.normal(0, 1.5, (720, 1280, 3)), 0, 255
    )
    mask = np.zeros((72, 128), np.uint8)
    cv2.fillPoly(mask, [np.round((corners + 0.5) / 10 - 0.5).astype(np.int32)], 1)
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    return photo.astype(np.uint8), corners, mask


@pytest.mark.parametrize(("top_y", "read"), [(6.0, True), (-8.0, False)])
def test_a_film_corner_next_to_the_frame_edge_is_measured_not_guessed(
    top_y: float, read: bool
) -> None:
    # the mask runs along the frame's top edge for a few cells either way; the corner's two
    # sides, measured in the photo, say whether the corner is in the frame (read) or not
    photo, corners, mask = _film_by_the_top_edge(top_y)
    first = int(np.argmax(mask[0]))
    mask[0, first + 8 :] = 0  # a mask that touches the edge over 8 cells at most
    run = int(mask[0].sum())
    assert 4 <= run < 12
    res = rectify(photo, method="learned", localiser=_FakeLocaliser(mask))
    if read:
        assert res.status == "ok", res.quality
        assert res.quality.metrics["film_near_frame_edge"] == 1.0
        assert res.corners is not None
        assert np.abs(res.corners - corners).max() < 2.0
    else:
        assert res.status == "rejected"
        assert "cut_off" in res.quality.flags


def _as_jpeg_file_decodes(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``photo`` saved as a JPEG and decoded as the kiosk decodes a photo file: (full colour,
    a FilmCapture of its luma plus the reduced colour preview)."""
    from kiosk.capture.bracket import FilmCapture
    from kiosk.imaging.decode import decode_image

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    assert ok
    full = decode_image(buf.tobytes()).pixels
    split = decode_image(buf.tobytes(), preview_long_side=480)
    assert split.preview is not None and split.pixels.ndim == 2
    return full, FilmCapture.single(split.pixels, preview=split.preview)


@pytest.mark.parametrize("seed", range(4))
def test_a_photo_decoded_as_luma_and_preview_rectifies_as_the_colour_photo(seed: int) -> None:
    """The file path's decode (full-size luma, colour at a quarter) gives the same corners,
    verdict and film as the full colour photo: the film is developed from the luma either way
    and the colour is needed only at the work size."""
    from kiosk.rectify.rectifier import rectify_capture

    rng = np.random.default_rng(300 + seed)
    shot = render(phantom_chest(rng, (384, 384)), _scene(seed), rng, SIZE)
    full, capture = _as_jpeg_file_decodes(shot.image)
    colour = rectify(full, method="classical")
    split = rectify_capture(capture, method="classical")
    assert split.status == colour.status
    assert split.quality.flags == colour.quality.flags
    if colour.corners is not None:
        assert split.corners is not None
        assert float(np.abs(split.corners - colour.corners).max()) < 0.5
    if colour.film is not None:
        assert split.film is not None and split.film.shape == colour.film.shape
        assert float(np.abs(split.film.astype(np.int16) - colour.film).mean()) < 1.0


def test_the_closer_look_works_from_luma_and_preview() -> None:
    """A small film far away is found by the closer look also when the photo came as luma plus
    a reduced colour preview (the crop gets its colour back under the full-size luma)."""
    from kiosk.rectify.rectifier import rectify_capture

    photo, sheet = _small_film_far_away(3)
    _, capture = _as_jpeg_file_decodes(photo)
    res = rectify_capture(capture, method="classical")
    assert res.status == "ok", res.quality
    assert "film_small_in_frame" in res.quality.notes
    assert res.corners is not None and quad_iou(res.corners, sheet, SIZE) > 0.95


def test_rectify_refuses_grey_frames_without_a_colour_preview() -> None:
    from kiosk.capture.bracket import FilmCapture
    from kiosk.rectify.rectifier import rectify_capture

    grey = np.full((SIZE[0], SIZE[1]), 128, np.uint8)
    with pytest.raises(ImageError, match="RGB"):
        rectify_capture(FilmCapture.single(grey), method="classical")


def test_a_film_too_small_in_the_picture_is_refused_first() -> None:
    """Below ``MIN_FILM_SIDE_PX`` on its shorter side nothing on the film can be read: the
    refusal comes first, with its own reason; at the limit the film passes that check."""
    from kiosk.rectify.gates import MIN_FILM_SIDE_PX, judge_photo

    fine = {"film_short_side_px": MIN_FILM_SIDE_PX, "contrast": 2.0}
    assert judge_photo(fine).ok
    small = {**fine, "film_short_side_px": MIN_FILM_SIDE_PX - 1, "lung_clipped_fraction": 0.9}
    verdict = judge_photo(small)
    assert not verdict.ok and verdict.flags[:2] == ("film_too_small", "overexposed")
    assert verdict.reason is not None and "too small in the picture" in verdict.reason
    assert verdict.checks["film_short_side_px_min"] == (MIN_FILM_SIDE_PX - 1, MIN_FILM_SIDE_PX)


def test_a_film_found_by_the_closer_look_but_too_small_says_so() -> None:
    """A film 70 px across: the closer look finds it, and the refusal says it is too small in
    the picture (move the camera closer), not that there is no film."""
    photo, sheet = _small_film_far_away(3, film_scale=0.3)
    res = rectify(photo, method="classical")
    assert res.status == "rejected" and res.quality.flags[0] == "film_too_small", res.quality
    assert res.quality.advice is not None and "closer" in res.quality.advice
    assert res.corners is not None and quad_iou(res.corners, sheet, SIZE) > 0.9


def _tilted_mask(cells_w: int, cells_h: int, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """A localiser-sized mask (72x128 cells) holding one tilted film, and its corners (cells)."""
    centre = np.array([64.0, 36.0])
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [cells_w / 2, cells_h / 2]
    corners = (half @ rot.T + centre).astype(np.float32)
    mask = np.zeros((72, 128), np.uint8)
    cv2.fillConvexPoly(mask, np.round(corners * 16).astype(np.int32), 1, shift=4)
    return mask, corners


@pytest.mark.parametrize(("cells_w", "cells_h"), [(18, 26), (24, 30), (60, 50)])
def test_a_small_film_on_the_localiser_mask_gets_its_quad(cells_w: int, cells_h: int) -> None:
    """A film a few dozen mask cells across (a small lightbox far from the camera) has an
    outline of about 80 points, its short sides 15: all four sides are still found."""
    from kiosk.rectify.locate import component_quad

    mask, corners = _tilted_mask(cells_w, cells_h, 4.0)
    det = component_quad(mask > 0, mask.shape)
    assert det is not None
    assert np.abs(det.quad_work - corners).max() < 1.5  # cells


def _look(status: str, flags: tuple[str, ...] = (), **metrics: float) -> RectifyResult:
    from kiosk.rectify.result import Quality

    quad = np.array([[10, 10], [60, 10], [60, 80], [10, 80]], np.float32)
    quality = Quality(status == "ok", None, None, flags, dict(metrics))
    film = np.full((70, 50), 128, np.uint8) if status == "ok" else None
    return RectifyResult(status, quad, film, quality, {})  # type: ignore[arg-type]


def test_a_closer_look_replaces_a_first_find_only_with_a_better_one() -> None:
    """A small film the localiser found on the whole frame is looked at again, closer; that
    look is read when it finds the film by its edges or mask, never when it finds it only by
    texture or refuses a film the first look read."""
    from kiosk.rectify.second_look import in_whole_frame

    box = (100, 50, 400, 300)
    first = _look("ok", localiser_used=1.0, film_area_fraction=0.06)
    by_mask = in_whole_frame(_look("ok", localiser_used=1.0), box, first, "zoomed")
    assert by_mask is not None and by_mask.status == "ok" and by_mask.corners is not None
    assert by_mask.quality.metrics["zoomed"] == 1.0 and by_mask.corners[0].tolist() == [110, 60]
    assert in_whole_frame(_look("ok", located_by_texture=1.0), box, first, "zoomed") is None
    too_small = _look("rejected", ("film_too_small",), film_short_side_px=30.0)
    assert in_whole_frame(too_small, box, first, "zoomed") is None
    # nothing found at first: the closer look's texture find or "too small" is the answer
    nothing = _look("rejected", ("no_film",))
    texture = in_whole_frame(_look("ok", located_by_texture=1.0), box, nothing, "zoomed")
    assert texture is not None and texture.status == "ok"
    small = in_whole_frame(too_small, box, nothing, "zoomed")
    assert small is not None and small.status == "rejected"


def test_a_dark_region_with_no_right_angles_is_doubted_not_read_as_the_film() -> None:
    """A film covering its bay leaves no lit panel round it; its darkest filled region may be
    a lung, a quad with corners far from right angles (a film's are within the camera's
    tilt). Such a detection is doubtful: the localiser is asked (``combined``)."""
    from kiosk.rectify.light import measure_light
    from kiosk.rectify.rectifier import _doubtful

    photo = np.full((270, 480, 3), 230, np.uint8)
    photo[60:210, 140:340] = 205  # a film's clear margin on the panel ...
    photo[72:198, 152:328] = 60  # ... round its dark image
    lung = np.array([[200, 70], [250, 62], [262, 200], [170, 196]], np.float32)  # 70-100 deg
    # (a "lung" whose rim reads as clear as a margin, the panel model being the film's own
    # bright parts when the film covers its bay: by its rim alone it would pass)
    cv2.fillConvexPoly(photo, lung.astype(np.int32), (200, 200, 200))
    core = lung.mean(axis=0) + (lung - lung.mean(axis=0)) * 0.8
    cv2.fillConvexPoly(photo, core.astype(np.int32), (40, 40, 40))
    light = measure_light(photo, None)
    film = np.array([[140, 60], [339, 60], [339, 209], [140, 209]], np.float32)
    assert not _doubtful(Detection(film, 1.0, 0.23), 0.0, light, (270, 480))
    assert _doubtful(Detection(lung, 1.0, 0.06), 0.0, light, (270, 480))


def test_light_measured_from_the_preview_rectifies_exactly_as_light_measured_in_rectify() -> None:
    """The pipeline measures the light on a photo file's preview while its luma decodes and
    hands it to rectify: same corners, verdict and film to the bit. A light measured for
    another frame size is not used."""
    from kiosk.rectify.light import measure_light_preview
    from kiosk.rectify.rectifier import rectify_capture

    rng = np.random.default_rng(311)
    shot = render(phantom_chest(rng, (384, 384)), _scene(1), rng, SIZE)
    _full, capture = _as_jpeg_file_decodes(shot.image)
    assert capture.preview is not None
    light = measure_light_preview(capture.preview, capture.base.shape[:2], None)
    assert light.fits(capture.base.shape[:2]) and not light.fits((SIZE[0] // 2, SIZE[1] // 2))
    own = rectify_capture(capture, method="classical")
    given = rectify_capture(capture, method="classical", light=light)
    assert given.status == own.status and given.quality.flags == own.quality.flags
    assert own.corners is not None and given.corners is not None
    assert np.array_equal(given.corners, own.corners)
    assert own.film is not None and given.film is not None
    assert np.array_equal(given.film, own.film)
    other = measure_light_preview(capture.preview[::2, ::2], (SIZE[0] // 2, SIZE[1] // 2), None)
    again = rectify_capture(capture, method="classical", light=other)
    assert again.corners is not None and np.array_equal(again.corners, own.corners)
