"""Physically based synthetic photos of a film clipped on a clinic lightbox.

What it does
    ``sample_scene`` draws every parameter of one scene (lightbox, film, things on top, room
    glare, camera pose, lens, exposure, tone curve, JPEG quality) into a plain, JSON-serialisable
    ``SceneSpec``. ``render_photo`` turns a spec plus a digital chest radiograph into the photo a
    camera would take, with the ground truth other code needs (film corners, image-area corners,
    whether the film is in frame, how much of the lung region is clipped/crushed/glared), and
    optionally the technician's "rig reference" photo of the same scene without the film.

    The model, in linear light on the lightbox plane (centimetres, lightbox centre at the origin,
    x right, y down): panel luminance (tube banding, edge fall-off, colour tint, dim panels) times
    film transmittance 10^-D (H&D curve of the digital grey, margins, flash card, lead marker,
    slightly blue base), plus room light reflected by wall, housing, film and overlays (clips,
    magnets, tape, dust), plus specular glare. A pinhole camera (pitch/yaw/in-plane rotation)
    maps the plane to the sensor by a homography; then vignetting, blur, exposure (metered on
    the film, on the panel, or in between), shot + read noise, clipping, imperfect white balance,
    tone curve and a real cv2 JPEG round trip.

What it does NOT do
    It is not a radiograph simulator: the X-ray image is the caller's digital image (except for
    the CT/MR "sheet" scenes, whose tiles are crude procedural drawings). There is no lens
    distortion, no rolling shutter, no demosaicing, no camera denoising/sharpening, no film
    curl or sag (the film is flat on the plane), no inter-reflection between film and panel and
    no spectral rendering (three RGB channels only). It is written from a physical description
    only and deliberately shares no code with the project's other scene renderer, so the two can
    check each other.

Randomness: ``sample_scene`` consumes its generator; ``render_photo`` draws the layout details
(clip/dust/tape/glare positions, flash-card strokes, sheet tiles) from ``spec.layout_seed`` and
uses its own generator only for sensor noise, so one spec renders the same scene with fresh
noise for each generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

__all__ = ["Photo", "SceneSpec", "factors", "render_photo", "sample_scene"]

SceneKind = Literal["film", "empty", "sheet"]

# (short side, long side) in cm; chest films are mostly 35x43, smaller ones for children.
FILM_SIZES_CM: tuple[tuple[float, float], ...] = (
    (18.0, 24.0),
    (24.0, 30.0),
    (30.0, 40.0),
    (35.0, 43.0),
)
_FILM_SIZE_P = (0.12, 0.2, 0.23, 0.45)
# CT/MR sheets are printed on the large formats.
_SHEET_SIZES_CM: tuple[tuple[float, float], ...] = ((30.0, 40.0), (35.0, 43.0))
_SHEET_SIZE_P = (0.25, 0.75)

_FRAMING_FRAC = {"fills": (0.78, 0.95), "medium": (0.5, 0.78), "small": (0.25, 0.5)}
# For empty scenes the subject is the panel: "fills" means its edges leave the frame.
_EMPTY_FRAMING_FRAC = {"fills": (0.9, 1.3), "medium": (0.5, 0.9), "small": (0.22, 0.5)}

_LN10 = math.log(10.0)
_LUMA = (0.2126, 0.7152, 0.0722)
# Density an "average" chest film has in the lungs, used to meter when no film is present.
_NOMINAL_LUNG_DENSITY = 1.4
# Densities film metering may settle on (mid densities of a film).
_METER_DENSITY_RANGE = (0.8, 2.4)
_PANEL_REFLECTANCE = 0.7  # white acrylic diffuser
_FILM_GLOSS_REFLECTANCE = 0.02  # diffuse part of the film surface reflection
_TONE_LUT_SIZE = 16384


@dataclass(frozen=True)
class SceneSpec:
    """Every sampled parameter of one scene; plain numbers/strings/bools only.

    Lengths are in cm on the lightbox plane (origin at the lightbox centre, x right, y down),
    luminances in cd/m^2, angles in degrees. Film fields are zero / "none" for empty scenes.
    """

    kind: str  # "film" | "empty" | "sheet"
    cut_off: bool  # sampled so that part of the film is outside the frame
    layout_seed: int  # seeds the layout details drawn at render time
    aspect: float  # frame width / height the geometry was sampled for
    # --- camera pose and framing
    framing: str  # "fills" | "medium" | "small"
    subject_frac: float  # subject height / frame height at the subject centre
    center_x: float  # subject centre in the frame, fraction of width
    center_y: float  # subject centre in the frame, fraction of height
    aim_x_cm: float  # subject centre on the plane (film centre, or lightbox centre)
    aim_y_cm: float
    subject_h_cm: float  # film height, or panel height for empty scenes
    hfov_deg: float  # horizontal field of view at the sampled aspect
    pitch_deg: float  # camera tilt about the image x axis
    yaw_deg: float  # camera tilt about the image y axis ("roll" of the rig)
    rot_deg: float  # in-plane rotation about the optical axis
    # --- lightbox
    bays: int
    bay_w_cm: float
    bay_h_cm: float
    housing_cm: float
    divider_cm: float
    housing_reflectance: float
    wall_reflectance: float
    panel_cd_m2: float  # luminance as used (already dimmed for dim panels)
    panel_dim: bool
    ambient_cd_m2: float  # luminance of a white (reflectance 1) surface under the room light
    colour_temp_k: float
    tubes: int  # fluorescent tubes per bay (vertical)
    banding: float  # relative amplitude of the tube stripes
    tube_phase: float  # tube offset as a fraction of the tube pitch
    falloff: float  # relative luminance loss at the panel edges
    bay2_gain: float  # second bay luminance relative to the first
    # --- film
    orientation: str  # "portrait" | "landscape" | "none"
    film_w_cm: float  # as placed (horizontal extent)
    film_h_cm: float
    film_x_cm: float  # film centre on the plane
    film_y_cm: float
    film_rot_deg: float  # hung slightly crooked
    margin_kind: str  # "clear" | "black" | "grey" | "none"
    margin_density: float
    margin_left: float  # fraction of film width / height per side
    margin_top: float
    margin_right: float
    margin_bottom: float
    base_fog: float
    d_max: float
    film_gamma: float  # slope of the H&D curve at its midpoint
    log_e_range: float  # log10 exposure span of digital grey 1 -> 0
    mid_grey: float  # digital grey that lands at the curve's midpoint
    base_blue: float  # blue-minus-red density of the film base (negative tint)
    edge_blur_cm: float  # collimator/penumbra softness of the film image
    flash_card: bool
    flash_corner: str  # "tl" | "tr" | "bl" | "br" | "none"
    flash_density: float
    marker: str  # "R" | "L" | "none"
    marker_side: str  # "left" | "right" | "none"
    sheet_rows: int  # 0 unless kind == "sheet"
    sheet_cols: int
    # --- things on top
    clips: int
    magnets: int
    tape: int
    dust: int
    # --- room glare
    glare: str  # "none" | "faint" | "strong"
    glare_spots: int
    glare_bands: int
    glare_strength: float  # peak glare luminance relative to panel_cd_m2
    # --- exposure and camera pipeline
    metering: str  # "film" | "lightbox" | "between"
    metering_mix: float  # 0 = metered on film, 1 = on the panel (log-exposure interpolation)
    exposure_ev: float  # bias on top of the metered exposure
    film_target: float  # linear sensor level for the lung median when metered on the film
    box_target: float  # linear sensor level of the bright panel when metered on the panel
    vignetting: float  # exponent applied to the cos^4 law (lens shading correction leftover)
    blur_sigma: float  # Gaussian defocus sigma in px at 1080 rows
    motion_px: float  # motion blur length in px at 1080 rows (0 = none)
    motion_angle_deg: float
    full_well: float  # photo-electrons at full scale (shot noise)
    read_noise: float  # read noise as a fraction of full scale
    wb_correction: float  # fraction of the panel tint the camera white balance removes
    wb_error_r: float
    wb_error_b: float
    tone: str  # "srgb" | "gamma_s"
    s_curve: float
    jpeg_quality: int
    reference: bool  # a rig reference photo comes with this photo


@dataclass(frozen=True, eq=False)
class Photo:
    """A rendered photo and its ground truth (pixel centres at integer coordinates)."""

    image: np.ndarray  # RGB uint8 (H, W, 3)
    corners: np.ndarray | None  # (4, 2) float32 film corners TL, TR, BR, BL as seen
    image_corners: np.ndarray | None  # (4, 2) float32 radiograph image-area corners
    in_frame: bool  # the whole film sheet is inside the frame (False without a film)
    lung_clipped_frac: float  # central 60%x60% of the image area at 255 in any channel
    lung_crushed_frac: float  # same region at <= 3 in all channels
    lung_glare: float  # mean glare / mean transmitted luminance over that region
    reference: np.ndarray | None  # rig reference photo, RGB uint8, or None
    spec: SceneSpec


# ----------------------------------------------------------------------------------- sampling


def _choice(rng: np.random.Generator, options: tuple[str, ...], p: tuple[float, ...]) -> str:
    return options[int(rng.choice(len(options), p=np.asarray(p) / sum(p)))]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_scene(
    rng: np.random.Generator,
    kind: SceneKind = "film",
    *,
    cut_off: bool = False,
    aspect: float = 16.0 / 9.0,
) -> SceneSpec:
    """Sample one scene.

    ``kind="film"``: one chest film, fully inside the frame unless ``cut_off`` (then part of it
    is truly outside). ``"empty"``: the lightbox alone (maybe clips/magnets/dust). ``"sheet"``:
    a CT/MR sheet with a grid of tiles. ``aspect`` is the width/height of the frame the photo
    will be rendered at (the in-frame guarantee holds for that aspect).
    """
    if kind not in ("film", "empty", "sheet"):
        raise ValueError(f"unknown scene kind {kind!r}")
    if cut_off and kind == "empty":
        raise ValueError("cut_off needs a film (kind 'film' or 'sheet')")
    u = rng.uniform

    # Lightbox: standard 14x17" bays, one or two side by side.
    bays = 1 if rng.random() < 0.5 else 2
    bay_w, bay_h = float(u(35.0, 38.0)), float(u(42.0, 45.0))
    housing, divider = float(u(2.5, 6.0)), float(u(1.5, 3.5))
    panel_dim = bool(rng.random() < 0.2)
    panel = float(u(1000.0, 4000.0)) * (float(u(0.2, 0.4)) if panel_dim else 1.0)
    lightbox = {
        "bays": bays,
        "bay_w_cm": bay_w,
        "bay_h_cm": bay_h,
        "housing_cm": housing,
        "divider_cm": divider,
        "housing_reflectance": float(u(0.04, 0.35)),
        "wall_reflectance": float(u(0.2, 0.8)),
        "panel_cd_m2": panel,
        "panel_dim": panel_dim,
        "ambient_cd_m2": float(u(3.0, 50.0)),
        "colour_temp_k": float(u(3500.0, 7500.0)),
        "tubes": int(rng.integers(2, 5)),
        "banding": float(u(0.0, 0.12)),
        "tube_phase": float(u(-0.15, 0.15)),
        "falloff": float(u(0.05, 0.3)),
        "bay2_gain": float(u(0.85, 1.1)) if bays == 2 else 1.0,
    }
    panel_w_total = bays * bay_w + (bays - 1) * divider

    film: dict[str, float | int | str | bool]
    if kind == "empty":
        film = {
            "orientation": "none",
            "film_w_cm": 0.0,
            "film_h_cm": 0.0,
            "film_x_cm": 0.0,
            "film_y_cm": 0.0,
            "film_rot_deg": 0.0,
            "margin_kind": "none",
            "margin_density": 0.0,
            "margin_left": 0.0,
            "margin_top": 0.0,
            "margin_right": 0.0,
            "margin_bottom": 0.0,
            "base_fog": 0.0,
            "d_max": 0.0,
            "film_gamma": 0.0,
            "log_e_range": 0.0,
            "mid_grey": 0.0,
            "base_blue": 0.0,
            "edge_blur_cm": 0.0,
            "flash_card": False,
            "flash_corner": "none",
            "flash_density": 0.0,
            "marker": "none",
            "marker_side": "none",
            "sheet_rows": 0,
            "sheet_cols": 0,
        }
        fw = fh = 0.0
    else:
        sizes: tuple[tuple[float, float], ...]
        size_p: tuple[float, ...]
        if kind == "film":
            sizes, size_p, p_land = FILM_SIZES_CM, _FILM_SIZE_P, 0.25
        else:
            sizes, size_p, p_land = _SHEET_SIZES_CM, _SHEET_SIZE_P, 0.15
        short, long_ = sizes[int(rng.choice(len(sizes), p=size_p))]
        landscape = bool(rng.random() < p_land)
        fw, fh = (long_, short) if landscape else (short, long_)
        # Clipped at the top of one bay, or across the divider of a double box when it is wide.
        if bays == 2 and (fw > bay_w + 2.0 or rng.random() < 0.08):
            fx = float(u(-3.0, 3.0))
        else:
            bay = int(rng.integers(0, bays))
            fx = -panel_w_total / 2 + bay * (bay_w + divider) + bay_w / 2 + float(u(-3.0, 3.0))
        fy = -bay_h / 2 + float(u(-1.5, 3.0)) + fh / 2
        base_fog = float(u(0.15, 0.25))
        d_max = float(u(2.8, 3.6))
        margin_kind = _choice(rng, ("clear", "black", "grey"), (0.4, 0.35, 0.25))
        if margin_kind == "clear":
            margin_density = base_fog
        elif margin_kind == "black":
            margin_density = d_max * float(u(0.93, 1.0))
        else:
            margin_density = float(u(1.0, 2.0))
        margins = [0.0 if rng.random() < 0.25 else float(u(0.0, 0.08)) for _ in range(4)]
        flash = bool(rng.random() < (0.5 if kind == "film" else 0.2))
        marker = (
            _choice(rng, ("R", "L"), (0.5, 0.5))
            if kind == "film" and rng.random() < 0.5
            else "none"
        )
        rows = cols = 0
        if kind == "sheet":
            n1 = int(rng.integers(3, 6))
            n2 = max(4, n1 + int(rng.integers(0, 2)))
            # More tiles along the longer side of the image area.
            rows, cols = (max(n1, n2), min(n1, n2)) if fh >= fw else (min(n1, n2), max(n1, n2))
        film = {
            "orientation": "landscape" if landscape else "portrait",
            "film_w_cm": fw,
            "film_h_cm": fh,
            "film_x_cm": fx,
            "film_y_cm": fy,
            "film_rot_deg": float(u(-2.0, 2.0)),
            "margin_kind": margin_kind,
            "margin_density": margin_density,
            "margin_left": margins[0],
            "margin_top": margins[1],
            "margin_right": margins[2],
            "margin_bottom": margins[3],
            "base_fog": base_fog,
            "d_max": d_max,
            "film_gamma": float(u(2.0, 3.5)),
            "log_e_range": float(u(1.6, 2.4)),
            "mid_grey": float(u(0.3, 0.5)),
            "base_blue": float(u(0.02, 0.08)),
            "edge_blur_cm": float(u(0.0, 0.08)),
            "flash_card": flash,
            "flash_corner": _choice(rng, ("tl", "tr", "bl", "br"), (0.2, 0.3, 0.2, 0.3))
            if flash
            else "none",
            "flash_density": float(u(0.2, 0.9)) if flash else 0.0,
            "marker": marker,
            "marker_side": _choice(rng, ("left", "right"), (0.5, 0.5))
            if marker != "none"
            else "none",
            "sheet_rows": rows,
            "sheet_cols": cols,
        }

    has_film = kind != "empty"
    extras = {
        "clips": int(rng.integers(1, 4)) if rng.random() < (0.7 if has_film else 0.5) else 0,
        "magnets": int(rng.integers(1, 5)) if rng.random() < 0.25 else 0,
        "tape": int(rng.integers(1, 5)) if has_film and rng.random() < 0.25 else 0,
        "dust": int(rng.integers(1, 41)) if rng.random() < 0.4 else 0,
    }

    glare = _choice(rng, ("none", "faint", "strong"), (0.35, 0.35, 0.3))
    if glare == "none":
        spots = bands = 0
        strength = 0.0
    elif glare == "faint":
        spots, bands = int(rng.integers(1, 3)), int(rng.integers(0, 2))
        strength = float(u(0.003, 0.03))
    else:
        spots, bands = int(rng.integers(0, 3)), int(rng.integers(0, 3))
        if spots + bands == 0:
            spots = 1
        strength = _log_uniform(rng, 0.05, 0.6)

    metering = _choice(rng, ("film", "lightbox", "between"), (0.4, 0.3, 0.3))
    mix = {"film": 0.0, "lightbox": 1.0}.get(metering, float(u(0.25, 0.75)))
    blur_class = _choice(rng, ("sharp", "soft", "blurred"), (0.4, 0.35, 0.25))
    blur_sigma = float(
        u(*{"sharp": (0.0, 0.7), "soft": (0.7, 1.8), "blurred": (1.8, 3.0)}[blur_class])
    )
    motion = float(u(1.5, 8.0)) if rng.random() < 0.15 else 0.0
    tone = _choice(rng, ("srgb", "gamma_s"), (0.5, 0.5))
    camera = {
        "glare": glare,
        "glare_spots": spots,
        "glare_bands": bands,
        "glare_strength": strength,
        "metering": metering,
        "metering_mix": mix,
        "exposure_ev": float(u(-0.4, 0.4)),
        "film_target": float(u(0.14, 0.3)),
        "box_target": float(u(0.82, 0.95)),
        "vignetting": float(u(0.2, 1.0)),
        "blur_sigma": blur_sigma,
        "motion_px": motion,
        "motion_angle_deg": float(u(0.0, 180.0)) if motion > 0 else 0.0,
        "full_well": _log_uniform(rng, 1000.0, 8000.0),
        "read_noise": float(u(0.0005, 0.004)),
        "wb_correction": float(u(0.4, 1.0)),
        "wb_error_r": float(u(0.93, 1.07)),
        "wb_error_b": float(u(0.93, 1.07)),
        "tone": tone,
        "s_curve": float(u(0.0, 0.15)) if tone == "gamma_s" else 0.0,
        "jpeg_quality": int(rng.integers(40, 96)),
        "reference": bool(rng.random() < 0.5),
    }
    layout_seed = int(rng.integers(0, 2**31 - 1))

    framing, pose = _sample_pose(
        rng, kind, cut_off, aspect, fw, fh, film, float(lightbox["bay_h_cm"])
    )
    fields: dict[str, Any] = {
        "kind": kind,
        "cut_off": cut_off,
        "layout_seed": layout_seed,
        "aspect": float(aspect),
        "framing": framing,
    }
    for part in (pose, lightbox, film, extras, camera):
        fields.update(part)
    return SceneSpec(**fields)


def _sample_pose(
    rng: np.random.Generator,
    kind: str,
    cut_off: bool,
    aspect: float,
    fw: float,
    fh: float,
    film: dict[str, float | int | str | bool],
    bay_h: float,
) -> tuple[str, dict[str, float]]:
    """Rejection-sample the camera until the film is in frame (or cut off, as asked)."""
    u = rng.uniform
    h = 1000
    w = round(h * aspect)
    if kind == "empty":
        aim = (0.0, 0.0)
        subj_h = bay_h
        framing = _choice(rng, ("fills", "medium", "small"), (0.35, 0.4, 0.25))
    else:
        aim = (float(film["film_x_cm"]), float(film["film_y_cm"]))
        subj_h = fh
        framing = _choice(rng, ("fills", "medium", "small"), (0.35, 0.4, 0.25))
    for _ in range(5000):
        pitch, yaw, rot = float(u(-10.0, 10.0)), float(u(-10.0, 10.0)), float(u(-8.0, 8.0))
        hfov = float(u(55.0, 78.0))
        if kind == "empty":
            frac = float(u(*_EMPTY_FRAMING_FRAC[framing]))
            cx, cy = float(u(0.3, 0.7)), float(u(0.3, 0.7))
        elif cut_off:
            frac = float(u(0.55, 1.15))
            cx, cy = float(u(0.1, 0.9)), float(u(0.12, 0.88))
        else:
            frac = float(u(*_FRAMING_FRAC[framing]))
            # Rough footprint (with room for rotation) so most draws already fit.
            half_h = 0.55 * frac
            half_w = 0.55 * frac * (fw / fh) / aspect
            if half_h >= 0.5 or half_w >= 0.5:
                continue
            cx, cy = float(u(half_w, 1.0 - half_w)), float(u(half_h, 1.0 - half_h))
        pose = {
            "subject_frac": frac,
            "center_x": cx,
            "center_y": cy,
            "aim_x_cm": aim[0],
            "aim_y_cm": aim[1],
            "subject_h_cm": subj_h,
            "hfov_deg": hfov,
            "pitch_deg": pitch,
            "yaw_deg": yaw,
            "rot_deg": rot,
        }
        if kind == "empty":
            return framing, pose
        hm = _homography_from(pose, aspect, h, w)
        quad = _film_rect_plane(aim, fw, fh, float(film["film_rot_deg"]), (0.0, 0.0, fw, fh))
        pts, zs = _project(hm, quad)
        if np.any(zs <= 0):
            continue
        if not cut_off:
            m = 0.01 * h
            ok = pts[:, 0].min() >= m and pts[:, 0].max() <= w - 1 - m
            if ok and pts[:, 1].min() >= m and pts[:, 1].max() <= h - 1 - m:
                return framing, pose
        else:
            out = max(
                -pts[:, 0].min(),
                pts[:, 0].max() - (w - 1),
                -pts[:, 1].min(),
                pts[:, 1].max() - (h - 1),
            )
            ctr, _ = _project(hm, np.array([aim]))
            inside = 0.1 * w <= ctr[0, 0] <= 0.9 * w and 0.1 * h <= ctr[0, 1] <= 0.9 * h
            if out > 0.03 * h and inside:
                framing = "fills" if frac >= 0.78 else "medium" if frac >= 0.5 else "small"
                return framing, pose
    raise RuntimeError("could not sample a camera pose for this scene")  # pragma: no cover


# ----------------------------------------------------------------------------------- geometry


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _focal_rel(hfov_deg: float, aspect: float) -> float:
    """Focal length in units of the frame height."""
    return (aspect / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)


def _homography_from(pose: dict[str, float], aspect: float, h: int, w: int) -> np.ndarray:
    """Plane (cm) -> pixel homography of a pinhole camera aimed so the subject lands as asked."""
    f = _focal_rel(pose["hfov_deg"], aspect) * h
    k = np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    r = (
        _rz(math.radians(pose["rot_deg"]))
        @ _rx(math.radians(pose["pitch_deg"]))
        @ _ry(math.radians(pose["yaw_deg"]))
    )
    # The ray through the wanted pixel must hit the subject centre at the depth that gives
    # the wanted size: depth = f * size / projected size.
    ray_cam = np.linalg.solve(
        k, np.array([pose["center_x"] * w - 0.5, pose["center_y"] * h - 0.5, 1.0])
    )
    ray_world = r.T @ ray_cam
    depth = _focal_rel(pose["hfov_deg"], aspect) * pose["subject_h_cm"] / pose["subject_frac"]
    centre = np.array([pose["aim_x_cm"], pose["aim_y_cm"], 0.0]) - depth * ray_world
    hm = k @ np.column_stack([r[:, 0], r[:, 1], -r @ centre])
    return hm / hm[2, 2]


def _spec_homography(spec: SceneSpec, h: int, w: int) -> np.ndarray:
    pose = {
        "hfov_deg": spec.hfov_deg,
        "rot_deg": spec.rot_deg,
        "pitch_deg": spec.pitch_deg,
        "yaw_deg": spec.yaw_deg,
        "center_x": spec.center_x,
        "center_y": spec.center_y,
        "subject_h_cm": spec.subject_h_cm,
        "subject_frac": spec.subject_frac,
        "aim_x_cm": spec.aim_x_cm,
        "aim_y_cm": spec.aim_y_cm,
    }
    return _homography_from(pose, spec.aspect, h, w)


def _project(hm: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply a homography to (N, 2) points; also return the homogeneous scale (>0 = in front)."""
    p = np.asarray(pts, np.float64)
    q = np.column_stack([p, np.ones(len(p))]) @ hm.T
    return q[:, :2] / q[:, 2:3], q[:, 2]


def _film_rect_plane(
    centre: tuple[float, float], fw: float, fh: float, rot_deg: float, rect: tuple[float, ...]
) -> np.ndarray:
    """Plane coordinates of a film-local rectangle (u0, v0, u1, v1) as TL, TR, BR, BL."""
    u0, v0, u1, v1 = rect
    local = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]]) - [fw / 2.0, fh / 2.0]
    a = math.radians(rot_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return local @ rot.T + np.asarray(centre)


def _film_to_plane(spec: SceneSpec) -> np.ndarray:
    """3x3 affine matrix film-local cm (u from the left edge, v from the top) -> plane cm."""
    a = math.radians(spec.film_rot_deg)
    c, s = math.cos(a), math.sin(a)
    tx = spec.film_x_cm - (c * spec.film_w_cm / 2 - s * spec.film_h_cm / 2)
    ty = spec.film_y_cm - (s * spec.film_w_cm / 2 + c * spec.film_h_cm / 2)
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def _order_clockwise(pts: np.ndarray) -> np.ndarray:
    """TL, TR, BR, BL as seen: clockwise (y down) starting at the top-left-most corner."""
    c = pts.mean(axis=0)
    ang = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0])
    ordered = pts[np.argsort(ang)]
    start = int(np.argmin(ordered[:, 0] + ordered[:, 1]))
    return np.roll(ordered, -start, axis=0).astype(np.float32)


def _local_scale(hm: np.ndarray, pts: np.ndarray) -> float:
    """Largest pixels-per-cm of the homography over the given plane points."""
    best = 0.0
    for x, y in np.asarray(pts, np.float64):
        q = hm @ np.array([x, y, 1.0])
        jac = (hm[:2, :2] * q[2] - np.outer(q[:2], hm[2, :2])) / (q[2] ** 2)
        best = max(best, float(np.linalg.norm(jac, 2)))
    return best


def _image_area_cm(spec: SceneSpec) -> tuple[float, float, float, float]:
    fw, fh = spec.film_w_cm, spec.film_h_cm
    return (
        spec.margin_left * fw,
        spec.margin_top * fh,
        fw - spec.margin_right * fw,
        fh - spec.margin_bottom * fh,
    )


# ----------------------------------------------------------------------------------- film


def _to_grey(digital: np.ndarray) -> np.ndarray:
    """Digital radiograph -> float32 grey in [0, 1], bone bright."""
    a = np.asarray(digital)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=2) if a.shape[2] >= 3 else a[..., 0]
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"digital image must be (H, W) or (H, W, C), got {np.shape(digital)}")
    if a.dtype == np.uint8:
        g = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        g = a.astype(np.float32) / 65535.0
    else:
        g = a.astype(np.float32)
        # Floats are taken as [0, 1] unless they are obviously 0..255.
        if float(g.max()) > 1.5:
            g = g / 255.0
    return np.clip(g, 0.0, 1.0)


def _hd_density(v: np.ndarray, spec: SceneSpec) -> np.ndarray:
    """Characteristic curve: digital grey -> log exposure -> optical density (logistic H&D)."""
    log_e = (1.0 - v) * spec.log_e_range  # bright (bone) = little exposure
    mid = spec.log_e_range * (1.0 - spec.mid_grey)
    span = spec.d_max - spec.base_fog
    k = 4.0 * spec.film_gamma / span  # slope at the midpoint equals the film gamma
    d = span / (1.0 + np.exp(-k * (log_e - mid)))
    return (d + spec.base_fog).astype(np.float32)


def _sheet_grey(ih: int, iw: int, rows: int, cols: int, lay: np.random.Generator) -> np.ndarray:
    """Procedural CT/MR print: square tiles of cross-sections (bright = dense) on black."""
    v = np.zeros((ih, iw), np.float32)
    gap = 0.03 * min(iw / cols, ih / rows)
    s = min((iw - (cols + 1) * gap) / cols, (ih - (rows + 1) * gap) / rows)
    ox = (iw - cols * s - (cols - 1) * gap) / 2.0
    oy = (ih - rows * s - (rows - 1) * gap) / 2.0
    ct = bool(lay.random() < 0.6)
    for i in range(rows):
        for j in range(cols):
            cx = ox + j * (s + gap) + s / 2 + lay.uniform(-0.03, 0.03) * s
            cy = oy + i * (s + gap) + s / 2 + lay.uniform(-0.03, 0.03) * s
            c = (round(cx), round(cy))
            scale = lay.uniform(0.8, 1.0)
            if ct:  # chest/abdomen slice: wide body, dark lungs, bright spine and rim
                ax = (max(2, round(0.42 * s * scale)), max(2, round(0.3 * s * scale)))
                cv2.ellipse(v, c, ax, 0, 0, 360, float(lay.uniform(0.35, 0.55)), -1)
                cv2.ellipse(v, c, ax, 0, 0, 360, 0.8, max(1, round(0.02 * s)))
                lung = (max(1, round(0.14 * s * scale)), max(1, round(0.2 * s * scale)))
                for side in (-1, 1):
                    lc = (round(cx + side * 0.19 * s * scale), round(cy - 0.02 * s))
                    cv2.ellipse(v, lc, lung, 0, 0, 360, float(lay.uniform(0.04, 0.15)), -1)
                sc = (round(cx), round(cy + 0.17 * s * scale))
                cv2.circle(v, sc, max(1, round(0.05 * s)), 0.92, -1)
            else:  # head slice: bright skull ring around grey brain with darker ventricles
                ax = (max(2, round(0.36 * s * scale)), max(2, round(0.43 * s * scale)))
                cv2.ellipse(v, c, ax, 0, 0, 360, float(lay.uniform(0.4, 0.55)), -1)
                cv2.ellipse(v, c, ax, 0, 0, 360, 0.9, max(1, round(0.035 * s)))
                for _ in range(int(lay.integers(1, 4))):
                    bc = (
                        round(cx + lay.uniform(-0.12, 0.12) * s),
                        round(cy + lay.uniform(-0.15, 0.15) * s),
                    )
                    bax = (
                        max(1, round(lay.uniform(0.03, 0.08) * s)),
                        max(1, round(lay.uniform(0.03, 0.1) * s)),
                    )
                    cv2.ellipse(v, bc, bax, float(lay.uniform(0, 180)), 0, 360, 0.22, -1)
            # White annotation text in the tile corner (a few short strokes).
            tx, ty = ox + j * (s + gap) + 0.04 * s, oy + i * (s + gap) + 0.06 * s
            for line in range(int(lay.integers(1, 4))):
                x0 = round(tx)
                y0 = round(ty + line * 0.05 * s)
                x1 = round(tx + lay.uniform(0.08, 0.25) * s)
                cv2.rectangle(v, (x0, y0), (x1, y0 + max(1, round(0.02 * s))), 0.95, -1)
    v = np.asarray(cv2.GaussianBlur(v, (0, 0), 0.7), np.float32)
    v += lay.normal(0.0, 0.015, v.shape).astype(np.float32)
    return np.clip(v, 0.0, 1.0)


def _film_canvas(
    grey: np.ndarray | None, spec: SceneSpec, res: float, lay: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray]:
    """Film in its own coordinates: transmittance 10^-D (silver image + base + fog), coverage.

    Returns the planes (neutral transmittance, coverage) and the 3x3 matrix canvas px ->
    film-local cm.
    """
    fw, fh = spec.film_w_cm, spec.film_h_cm
    nw, nh = max(8, round(fw * res)), max(8, round(fh * res))
    sx, sy = nw / fw, nh / fh
    d = np.full((nh, nw), spec.margin_density, np.float32)
    u0, v0, u1, v1 = _image_area_cm(spec)
    x0, x1 = round(u0 * sx), max(round(u0 * sx) + 2, round(u1 * sx))
    y0, y1 = round(v0 * sy), max(round(v0 * sy) + 2, round(v1 * sy))
    x1, y1 = min(x1, nw), min(y1, nh)
    if spec.kind == "sheet":
        img = _sheet_grey(y1 - y0, x1 - x0, spec.sheet_rows, spec.sheet_cols, lay)
    else:
        assert grey is not None
        shrink = grey.shape[0] > (y1 - y0) and grey.shape[1] > (x1 - x0)
        img = cv2.resize(
            grey, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
    d[y0:y1, x0:x1] = _hd_density(img, spec)

    if spec.flash_card:
        # ~10x6 cm card (smaller on small films): unexposed paper label area with printed text.
        k = min(1.0, fw / 30.0, fh / 30.0)
        cw, ch = 10.0 * k, 6.0 * k
        inset = float(lay.uniform(0.3, 1.5))
        cu = inset if spec.flash_corner in ("tl", "bl") else fw - inset - cw
        cv_ = inset if spec.flash_corner in ("tl", "tr") else fh - inset - ch
        a0, a1 = round(cu * sx), round((cu + cw) * sx)
        b0, b1 = round(cv_ * sy), round((cv_ + ch) * sy)
        d[b0:b1, a0:a1] = spec.flash_density
        n_lines = int(lay.integers(3, 6))
        stroke = max(1, round(0.35 * k * sy))
        for line in range(n_lines):
            yy = round((cv_ + (line + 0.7) * ch / (n_lines + 0.5)) * sy)
            xx = cu + 0.5 * k
            while xx < cu + cw - 1.0 * k:
                wl = float(lay.uniform(0.8, 3.0)) * k
                xe = min(xx + wl, cu + cw - 0.5 * k)
                d[yy : yy + stroke, round(xx * sx) : round(xe * sx)] = spec.flash_density + float(
                    lay.uniform(0.6, 1.2)
                )
                xx = xe + 0.5 * k
    if spec.marker != "none":
        # Lead letter: blocks the X-rays, so the film stays at base+fog under it.
        hcm = float(lay.uniform(1.5, 2.5))
        inset = float(lay.uniform(0.8, 2.5))
        font = cv2.FONT_HERSHEY_SIMPLEX
        (tw, th), _ = cv2.getTextSize(spec.marker, font, 1.0, 2)
        scale = hcm * sy / th
        thick = max(1, round(hcm * sy / 7))
        left = u0 + inset if spec.marker_side == "left" else u1 - inset - tw * scale / sx
        org = (round(left * sx), round((v0 + inset) * sy + th * scale))
        mask = np.zeros((nh, nw), np.uint8)
        cv2.putText(mask, spec.marker, org, font, scale, 255, thick, cv2.LINE_AA)
        m = mask.astype(np.float32) / 255.0
        d += (spec.base_fog - d) * m
    sig = spec.edge_blur_cm * sx
    if sig > 0.3:
        d = np.asarray(cv2.GaussianBlur(d, (0, 0), sig), np.float32)
    d *= np.float32(-_LN10)
    ts = np.exp(d)
    pad = 2
    # Neutral transmittance (1 outside the film) and film coverage (0 in the padding, so the
    # warped edge is anti-aliased); the base's colour is applied where coverage is 1.
    planes = [
        cv2.copyMakeBorder(ts, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=1.0),
        cv2.copyMakeBorder(np.ones_like(ts), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0.0),
    ]
    # Canvas pixel centre (j, i) -> film cm: u = (j - pad + 0.5) / sx.
    to_cm = np.array([[1 / sx, 0.0, (0.5 - pad) / sx], [0.0, 1 / sy, (0.5 - pad) / sy], [0, 0, 1]])
    return planes, to_cm


# ----------------------------------------------------------------------------------- lightbox


def _tint(kelvin: float) -> np.ndarray:
    """Linear RGB gains (G = 1) of a black body (Tanner Helland's fit, then linearised)."""
    t = kelvin / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = (
        99.4708025861 * math.log(t) - 161.1195681661
        if t <= 66
        else 288.1221695283 * (t - 60) ** -0.0755148492
    )
    b = 255.0 if t >= 66 else 138.5177312231 * math.log(t - 10) - 305.0447927307
    rgb = np.clip(np.array([r, g, b]), 1.0, 255.0) / 255.0
    lin = rgb**2.2
    return (lin / lin[1]).astype(np.float64)


def _coverage_1d(centres: np.ndarray, half: float, lo: float, hi: float) -> np.ndarray:
    """Fraction of each pixel [c - half, c + half] covered by the interval [lo, hi]."""
    a = np.maximum(centres - half, lo)
    b = np.minimum(centres + half, hi)
    return np.clip((b - a) / (2 * half), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class _Canvas:
    x0: float  # plane cm of the canvas' left edge
    y0: float
    res: float  # px per cm
    nw: int
    nh: int

    def to_plane(self) -> np.ndarray:
        r = self.res
        return np.array(
            [[1 / r, 0.0, self.x0 + 0.5 / r], [0.0, 1 / r, self.y0 + 0.5 / r], [0, 0, 1]]
        )

    def px(self, pts: np.ndarray) -> np.ndarray:
        return (np.asarray(pts, np.float64) - [self.x0, self.y0]) * self.res - 0.5


def _poly(img: np.ndarray, pts: np.ndarray, value: float) -> None:
    """Fill a convex polygon given in (sub)pixel centres, 1/16 px precision."""
    cv2.fillConvexPoly(img, np.round(pts * 16).astype(np.int32), float(value), cv2.LINE_8, 4)


def _disc(img: np.ndarray, centre: np.ndarray, radius: float, value: float) -> None:
    c = (round(float(centre[0]) * 16), round(float(centre[1]) * 16))
    cv2.circle(img, c, max(1, round(radius * 16)), float(value), -1, cv2.LINE_8, 4)


def _lightbox_rects(
    spec: SceneSpec,
) -> tuple[list[tuple[float, float, float, float]], tuple[float, ...]]:
    total = spec.bays * spec.bay_w_cm + (spec.bays - 1) * spec.divider_cm
    bays = []
    for i in range(spec.bays):
        x0 = -total / 2 + i * (spec.bay_w_cm + spec.divider_cm)
        bays.append((x0, -spec.bay_h_cm / 2, x0 + spec.bay_w_cm, spec.bay_h_cm / 2))
    hs = spec.housing_cm
    housing = (-total / 2 - hs, -spec.bay_h_cm / 2 - hs, total / 2 + hs, spec.bay_h_cm / 2 + hs)
    return bays, housing


def _box_slices(cx: np.ndarray, cy: np.ndarray) -> tuple[slice, slice] | None:
    """Row/column slices of the non-zero part of separable 1-D coverages."""
    ix, iy = np.nonzero(cx)[0], np.nonzero(cy)[0]
    if len(ix) == 0 or len(iy) == 0:
        return None
    return slice(int(iy[0]), int(iy[-1]) + 1), slice(int(ix[0]), int(ix[-1]) + 1)


def _lightbox_canvas(
    spec: SceneSpec, cv: _Canvas
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Panel luminance, reflectance under room light, overlay transmission, overlay reflectance.

    Everything is separable per rectangle (exact pixel coverage of the edges), so it is built
    from 1-D profiles with outer products on the covered slice only.
    """
    xs = cv.x0 + (np.arange(cv.nw) + 0.5) / cv.res
    ys = cv.y0 + (np.arange(cv.nh) + 0.5) / cv.res
    half = 0.5 / cv.res
    bays, housing = _lightbox_rects(spec)
    lum = np.zeros((cv.nh, cv.nw), np.float32)
    refl = np.full((cv.nh, cv.nw), spec.wall_reflectance, np.float32)
    hx = _coverage_1d(xs, half, housing[0], housing[2])
    hy = _coverage_1d(ys, half, housing[1], housing[3])
    sl = _box_slices(hx, hy)
    if sl is not None:
        refl[sl] += np.outer(
            hy[sl[0]] * np.float32(spec.housing_reflectance - spec.wall_reflectance), hx[sl[1]]
        )
    for i, (bx0, by0, bx1, by1) in enumerate(bays):
        cx = _coverage_1d(xs, half, bx0, bx1)
        cy = _coverage_1d(ys, half, by0, by1)
        sl = _box_slices(cx, cy)
        if sl is None:
            continue
        bu = (xs[sl[1]] - (bx0 + bx1) / 2) / ((bx1 - bx0) / 2)
        bv = (ys[sl[0]] - (by0 + by1) / 2) / ((by1 - by0) / 2)
        # Vertical tubes behind the diffuser: Gaussian stripes across x, mean-normalised.
        pitch = 2.0 / spec.tubes
        tube_u = -1.0 + pitch * (np.arange(spec.tubes) + 0.5 + spec.tube_phase)
        stripes = np.exp(-0.5 * ((bu[:, None] - tube_u[None, :]) / (0.3 * pitch)) ** 2).sum(axis=1)
        band = 1.0 + spec.banding * (stripes / max(float(stripes.mean()), 1e-6) - 1.0)
        # Light escapes less near the walls of the box: smooth fall-off to the edges.
        gain = spec.panel_cd_m2 * (spec.bay2_gain if i == 1 else 1.0)
        fx = ((1.0 - spec.falloff * np.abs(bu) ** 3) * band * cx[sl[1]]).astype(np.float32)
        fy = (gain * (1.0 - spec.falloff * np.abs(bv) ** 3) * cy[sl[0]]).astype(np.float32)
        lum[sl] += np.outer(fy, fx)
        refl[sl] += np.outer(
            cy[sl[0]] * np.float32(_PANEL_REFLECTANCE - spec.housing_reflectance), cx[sl[1]]
        )
    tau = np.ones((cv.nh, cv.nw), np.float32)
    orefl = np.zeros((cv.nh, cv.nw), np.float32)
    return lum, refl, tau, orefl


def _draw_rig_items(
    spec: SceneSpec, cv: _Canvas, tau: np.ndarray, orefl: np.ndarray, lay: np.random.Generator
) -> None:
    """Clips (on the film's top edge or the panel's) and dust: they stay for the rig reference."""
    if spec.kind == "empty":
        bays, _ = _lightbox_rects(spec)
        left, right = bays[0][0], bays[-1][2]
        top_edge = [
            np.array(
                [left + (k + 0.5) * (right - left) / spec.clips + lay.uniform(-3, 3), bays[0][1]]
            )
            for k in range(spec.clips)
        ]
        angle = 0.0
    else:
        f2p = _film_to_plane(spec)
        top_edge = []
        for k in range(spec.clips):
            uu = (k + 0.5) * spec.film_w_cm / spec.clips + lay.uniform(-2.0, 2.0)
            p = f2p @ np.array([uu, 0.0, 1.0])
            top_edge.append(p[:2])
        angle = math.radians(spec.film_rot_deg)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    for p in top_edge:
        w, h = lay.uniform(2.0, 3.0), lay.uniform(1.5, 2.5)
        off = lay.uniform(-0.3, 0.5)  # straddles the edge, mostly above it
        box = np.array([[-w / 2, -h + off], [w / 2, -h + off], [w / 2, off], [-w / 2, off]])
        pts = cv.px(box @ rot.T + p)
        _poly(tau, pts, 0.0)
        _poly(orefl, pts, float(lay.uniform(0.1, 0.4)))
        # Specular ridge of the bent metal.
        ridge = np.array(
            [
                [-w / 2, -0.55 * h + off],
                [w / 2, -0.55 * h + off],
                [w / 2, -0.4 * h + off],
                [-w / 2, -0.4 * h + off],
            ]
        )
        _poly(orefl, cv.px(ridge @ rot.T + p), float(lay.uniform(0.5, 1.0)))
    if spec.kind == "empty":
        _draw_magnets(spec, cv, tau, orefl, lay)
    # Dust sits on the panel/film surface; small, darkish and partly translucent.
    bays, _ = _lightbox_rects(spec)
    for _ in range(spec.dust):
        p = np.array([lay.uniform(bays[0][0], bays[-1][2]), lay.uniform(bays[0][1], bays[0][3])])
        r = lay.uniform(0.03, 0.12) * cv.res
        c = cv.px(p[None])[0]
        _disc(tau, c, max(r, 0.6), float(lay.uniform(0.1, 0.6)))
        _disc(orefl, c, max(r, 0.6), 0.05)


def _draw_magnets(
    spec: SceneSpec, cv: _Canvas, tau: np.ndarray, orefl: np.ndarray, lay: np.random.Generator
) -> None:
    if spec.kind == "empty":
        bays, _ = _lightbox_rects(spec)
        anchors = [
            np.array([lay.uniform(bays[0][0], bays[-1][2]), lay.uniform(bays[0][1], bays[0][3])])
            for _ in range(spec.magnets)
        ]
    else:
        f2p = _film_to_plane(spec)
        anchors = []
        for _ in range(spec.magnets):
            # On the film border, where they hold it: a corner or the middle of a side.
            uu = spec.film_w_cm * float(lay.choice([0.0, 0.5, 1.0])) + lay.uniform(-1.0, 1.0)
            vv = spec.film_h_cm * float(lay.choice([0.0, 0.5, 1.0])) + lay.uniform(-1.0, 1.0)
            anchors.append((f2p @ np.array([uu, vv, 1.0]))[:2])
    for p in anchors:
        r = lay.uniform(1.0, 2.0) * cv.res
        c = cv.px(p[None])[0]
        _disc(tau, c, r, 0.0)
        _disc(orefl, c, r, float(lay.uniform(0.05, 0.6)))


def _draw_film_items(
    spec: SceneSpec, cv: _Canvas, tau: np.ndarray, orefl: np.ndarray, lay: np.random.Generator
) -> None:
    """Tape and magnets holding the film: removed with the film for the rig reference."""
    f2p = _film_to_plane(spec)
    for _ in range(spec.tape):
        uu = spec.film_w_cm * float(lay.choice([0.0, 1.0])) + lay.uniform(-0.5, 0.5)
        vv = spec.film_h_cm * float(lay.choice([0.0, 0.3, 0.7, 1.0])) + lay.uniform(-0.5, 0.5)
        centre = (f2p @ np.array([uu, vv, 1.0]))[:2]
        ln, wd = lay.uniform(5.0, 10.0), lay.uniform(2.0, 2.6)
        a = math.radians(lay.uniform(-60.0, 60.0))
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        box = np.array([[-ln / 2, -wd / 2], [ln / 2, -wd / 2], [ln / 2, wd / 2], [-ln / 2, wd / 2]])
        pts = cv.px(box @ rot.T + centre)
        _poly(tau, pts, float(lay.uniform(0.8, 0.93)))
        _poly(orefl, pts, float(lay.uniform(0.03, 0.12)))  # slightly glossy
    _draw_magnets(spec, cv, tau, orefl, lay)


# ----------------------------------------------------------------------------------- camera


def _lowres_field(h: int, w: int, fn: object, step: int = 8) -> np.ndarray:
    """Evaluate a smooth field fn(x, y) (full-res pixel coords) on a coarse grid and upsample."""
    lh, lw = max(2, -(-h // step)), max(2, -(-w // step))
    xs = (np.arange(lw, dtype=np.float32) + 0.5) * (w / lw) - 0.5
    ys = (np.arange(lh, dtype=np.float32) + 0.5) * (h / lh) - 0.5
    gx, gy = np.meshgrid(xs, ys)
    low = np.asarray(fn(gx, gy), np.float32)  # type: ignore[operator]
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)


def _glare_shape(
    spec: SceneSpec, h: int, w: int, target: np.ndarray | None, lay: np.random.Generator
) -> np.ndarray | None:
    """Sum of soft specular spots and elongated bands (peak 1 each, times a random share)."""
    if spec.glare == "none":
        return None
    if target is not None:  # reflections only matter where the glossy film is
        lo, hi = target.min(axis=0), target.max(axis=0)
        span = hi - lo
        lo, hi = lo - 0.2 * span, hi + 0.2 * span
        # Reflected lamps/windows scale with the film (same viewing distance), not the frame.
        size = float(span[1])
    else:
        lo, hi = np.array([0.1 * w, 0.1 * h]), np.array([0.9 * w, 0.9 * h])
        size = 0.6 * h
    blobs = []
    for i in range(spec.glare_spots + spec.glare_bands):
        cx, cy = lay.uniform(lo[0], hi[0]), lay.uniform(lo[1], hi[1])
        peak = lay.uniform(0.5, 1.0)
        if i < spec.glare_spots:
            sa = sb = lay.uniform(0.05, 0.25) * size
            ang = 0.0
        else:
            sa, sb = lay.uniform(0.5, 1.6) * size, lay.uniform(0.03, 0.12) * size
            ang = math.radians(lay.uniform(0.0, 180.0))
        blobs.append((cx, cy, sa, sb, ang, peak))

    def fn(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.zeros_like(x)
        for cx, cy, sa, sb, ang, peak in blobs:
            dx, dy = x - cx, y - cy
            a = dx * math.cos(ang) + dy * math.sin(ang)
            b = -dx * math.sin(ang) + dy * math.cos(ang)
            out += peak * np.exp(-0.5 * ((a / sa) ** 2 + (b / sb) ** 2))
        return out

    return _lowres_field(h, w, fn)


def _tone_lut(spec: SceneSpec) -> np.ndarray:
    x = np.linspace(0.0, 1.0, _TONE_LUT_SIZE)
    if spec.tone == "srgb":
        y = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    else:
        y = np.power(x, 1 / 2.2)
        y = y - spec.s_curve * np.sin(2 * np.pi * y) / (2 * np.pi)  # mild contrast S
    return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)


def _white_balance(spec: SceneSpec, tint: np.ndarray) -> np.ndarray:
    """Camera white-balance gains: partly undo the panel tint, with a small error.

    Normalised so the smallest gain is 1, as cameras do: a clipped raw channel then stays
    clipped (255) after white balance instead of turning into a grey below full scale.
    """
    wb = (1.0 / tint) ** spec.wb_correction * np.array([spec.wb_error_r, 1.0, spec.wb_error_b])
    return wb / wb.min()


def _norm_ppf(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF (Acklam's rational approximation, |rel err| < 1.2e-9)."""
    a = (
        -39.69683028665376,
        220.9460984245205,
        -275.9285104469687,
        138.3577518672690,
        -30.66479806614716,
        2.506628277459239,
    )
    b = (
        -54.47609879822406,
        161.5858368580409,
        -155.6989798598866,
        66.80131188771972,
        -13.28068155288572,
    )
    c = (
        -0.007784894002430293,
        -0.3223964580411365,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    )
    d = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    p = np.asarray(p, np.float64)
    out = np.empty_like(p)
    lo = p < 0.02425
    hi = p > 1 - 0.02425
    mid = ~(lo | hi)
    q = p[mid] - 0.5
    r = q * q
    num = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
    den = ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1
    out[mid] = num / den
    for sel, sign in ((lo, 1.0), (hi, -1.0)):
        pp = p[sel] if sign > 0 else 1 - p[sel]
        q = np.sqrt(-2 * np.log(pp))
        num = ((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]
        den = (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        out[sel] = sign * num / den
    return out


# Quantised Gaussian: drawing uint16 indices and looking them up is ~2.5x faster than
# standard_normal, and 65536 quantiles are plenty for sensor noise (tails to +-4.3 sigma).
_NORMAL_TABLE = _norm_ppf((np.arange(65536) + 0.5) / 65536).astype(np.float32)
_NOISE_STRIDE = 7919  # prime offset between the noise windows of successive planes


def _noise_pool(rng: np.random.Generator, n_pixels: int, planes: int) -> np.ndarray:
    """One fresh N(0, 1) pool; plane k uses the window starting at k * _NOISE_STRIDE.

    Windows are shifted by several rows plus a fraction of a row, so channels and the
    reference photo get uncorrelated noise at every pixel while the render draws only one
    pool (sensor noise generation otherwise dominates the render time).
    """
    idx = rng.integers(0, 65536, n_pixels + planes * _NOISE_STRIDE, dtype=np.uint16)
    return np.take(_NORMAL_TABLE, idx)


def _develop(
    planes: list[np.ndarray],
    spec: SceneSpec,
    wb: np.ndarray,
    noise: np.ndarray,
    first_window: int,
) -> np.ndarray:
    """Sensor planes (R, G, B) -> camera JPEG round trip, RGB uint8. Consumes ``planes``.

    Each plane arrives exposed and scaled by ``wb[c] * (N - 1)`` (N = tone LUT size): sensor
    full scale is then ``wb[c] * (N - 1)`` and the post-white-balance full scale ``N - 1``, so
    both clips and the LUT index collapse into one clip. Blur is linear, so it may come after
    the exposure scaling; noise is added after the blur, as on a real sensor.
    """
    h, w = planes[0].shape
    s = h / 1080.0
    sigma = spec.blur_sigma * s
    motion = None
    if spec.motion_px * s >= 1.5:
        ln = spec.motion_px * s
        k = math.ceil(ln) | 1
        kern = np.zeros((k, k), np.float32)
        a = math.radians(spec.motion_angle_deg)
        c0 = (k - 1) / 2.0
        dx, dy = math.cos(a) * (ln - 1) / 2, math.sin(a) * (ln - 1) / 2
        p0 = (round((c0 - dx) * 16), round((c0 - dy) * 16))
        p1 = (round((c0 + dx) * 16), round((c0 + dy) * 16))
        cv2.line(kern, p0, p1, 1.0, 1, cv2.LINE_AA, 4)
        motion = kern / max(float(kern.sum()), 1e-6)
    lut = _tone_lut(spec)
    top = _TONE_LUT_SIZE - 1
    out: list[np.ndarray] = []
    for c in range(3):
        plane = planes[c]
        planes[c] = np.empty(0, np.float32)  # release as we go (12 MP)
        if sigma >= 0.3:
            plane = np.asarray(cv2.GaussianBlur(plane, (0, 0), sigma), np.float32)
        if motion is not None:
            plane = np.asarray(
                cv2.filter2D(plane, -1, motion, borderType=cv2.BORDER_REFLECT), np.float32
            )
        scale = float(wb[c]) * top
        # Shot noise (Poisson, Gaussian approx.) + read noise, in these scaled sensor units.
        std = plane * np.float32(scale / spec.full_well)
        std += np.float32((scale * spec.read_noise) ** 2)
        np.sqrt(std, out=std)
        start = (first_window + c) * _NOISE_STRIDE
        std *= noise[start : start + h * w].reshape(h, w)
        plane += std
        del std
        np.clip(plane, 0.0, min(scale, top), out=plane)
        out.append(np.take(lut, plane.astype(np.uint16)))
        del plane
    bgr = cv2.merge([out[2], out[1], out[0]])
    del out
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(spec.jpeg_quality)])
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding failed")
    del bgr
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if dec is None:  # pragma: no cover
        raise RuntimeError("JPEG decoding failed")
    return np.asarray(cv2.cvtColor(dec, cv2.COLOR_BGR2RGB))


def _warp(
    planes: list[np.ndarray], m: np.ndarray, w: int, h: int, borders: tuple[float, ...]
) -> list[np.ndarray]:
    """Warp single-channel float canvases into the photo.

    One warp per plane: cv2's single-channel path is fast and this avoids the merge/split
    copies (and fresh-page faults) an interleaved canvas would cost.
    """
    return [
        np.asarray(
            cv2.warpPerspective(
                p, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=b
            ),
            np.float32,
        )
        for p, b in zip(planes, borders, strict=True)
    ]


# ----------------------------------------------------------------------------------- render


def render_photo(
    digital: np.ndarray | None,
    spec: SceneSpec,
    rng: np.random.Generator,
    size: tuple[int, int] = (1080, 1920),
) -> Photo:
    """Render the photo of ``spec`` at ``size`` = (height, width).

    ``digital``: the chest radiograph (grey or RGB, uint8/uint16/float, bone bright; any size,
    stretched to the image area). Required for "film", ignored for "sheet" and "empty".
    ``rng`` is used for sensor noise only (the layout comes from ``spec.layout_seed``).
    """
    h, w = int(size[0]), int(size[1])
    if h < 16 or w < 16:
        raise ValueError("size too small")
    has_film = spec.kind != "empty"
    grey = None
    if spec.kind == "film":
        if digital is None:
            raise ValueError("a 'film' scene needs a digital radiograph")
        grey = _to_grey(digital)
    lay = np.random.default_rng(spec.layout_seed)
    hm = _spec_homography(spec, h, w)
    tint = _tint(spec.colour_temp_k)
    wb = _white_balance(spec, tint)
    amb = spec.ambient_cd_m2
    panel = spec.panel_cd_m2

    # ---- lightbox canvas: only the part of the (padded) lightbox the camera can see.
    frame = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    vis, _ = _project(np.linalg.inv(hm), frame)
    _, housing = _lightbox_rects(spec)
    pad = 6.0
    x0, x1 = max(vis[:, 0].min(), housing[0] - pad), min(vis[:, 0].max(), housing[2] + pad)
    y0, y1 = max(vis[:, 1].min(), housing[1] - pad), min(vis[:, 1].max(), housing[3] + pad)
    if x1 <= x0 or y1 <= y0:
        x1, y1 = x0 + 1.0, y0 + 1.0
    res = _local_scale(hm, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    # About one canvas pixel per photo pixel where the plane is nearest; capped for 12 MP.
    res = min(res, math.sqrt(1.5 * h * w / ((x1 - x0) * (y1 - y0))))
    cvs = _Canvas(
        x0, y0, res, max(2, math.ceil((x1 - x0) * res)), max(2, math.ceil((y1 - y0) * res))
    )
    lum, refl, tau_r, refl_r = _lightbox_canvas(spec, cvs)
    _draw_rig_items(spec, cvs, tau_r, refl_r, lay)
    lum *= tau_r
    refl *= tau_r
    m_box = hm @ cvs.to_plane()
    # lt: panel luminance left by the rig overlays (clips, dust); rt: room-light reflectance
    # under them; rr: the overlays' own reflectance.
    # Planes that would be all zero are not warped (a warp is a large share of the time).
    has_rig = spec.clips > 0 or spec.dust > 0 or (not has_film and spec.magnets > 0)
    lt, rt = _warp([lum, refl], m_box, w, h, (0.0, spec.wall_reflectance))
    rr = _warp([refl_r], m_box, w, h, (0.0,))[0] if has_rig else None
    del lum, refl, tau_r, refl_r
    pw = None
    if spec.glare != "none":
        # How glossy each spot is for glare, relative to the film: the lit acrylic panel about
        # half, the housing and wall (matte) nothing.
        pw = np.minimum(lt, np.float32(0.5 * panel))
        pw *= np.float32(1.0 / panel)

    f = _focal_rel(spec.hfov_deg, spec.aspect) * h
    cx0, cy0 = (w - 1) / 2.0, (h - 1) / 2.0
    vexp = -2.0 * spec.vignetting  # cos^4 = (1 + r^2/f^2)^-2, softened by lens shading correction
    vig = _lowres_field(h, w, lambda x, y: (1.0 + ((x - cx0) ** 2 + (y - cy0) ** 2) / f**2) ** vexp)

    # ---- meter on the panel: brightest visible panel level (before any film).
    sub3 = (slice(None, None, 3), slice(None, None, 3))
    lum_s = lt[sub3]
    panel_px = lum_s > 0.05 * panel
    if np.any(panel_px):
        box_level = float(np.percentile((lum_s * vig[sub3])[panel_px], 99.5))
        panel_median = float(np.median(lum_s[panel_px]))
    else:
        box_level = panel_median = panel
    del lum_s, panel_px
    # WB gains are >= 1, so the post-WB clip binds first: keep the brightest channel below it.
    chan_peak = float(np.max(tint * wb))
    gain_box = spec.box_target / max(box_level * chan_peak, 1e-9)

    # Rig reference radiance = tint_c * lt + ref_refl (no film, tape, magnets or glare).
    ref_refl = None
    if spec.reference:
        ref_refl = rt * np.float32(amb) if rr is None else cv2.addWeighted(rt, amb, rr, amb, 0.0)

    corners = image_corners = None
    in_frame = False
    lung_sel = None
    lung_glare = 0.0
    glare_rgb = 1.0 + lay.uniform(-0.05, 0.05, 3)
    # The film base is faintly blue: a little less density in blue than in red.
    base_c = 10.0 ** (-spec.base_blue * np.array([0.5, 0.0, -0.5]))
    if has_film:
        film_quad = _film_rect_plane(
            (spec.film_x_cm, spec.film_y_cm),
            spec.film_w_cm,
            spec.film_h_cm,
            spec.film_rot_deg,
            (0.0, 0.0, spec.film_w_cm, spec.film_h_cm),
        )
        fres = _local_scale(hm, film_quad)
        fres = min(fres, math.sqrt(1.5 * h * w / (spec.film_w_cm * spec.film_h_cm)))
        film_planes, to_cm = _film_canvas(grey, spec, fres, lay)
        m_film = hm @ _film_to_plane(spec) @ to_cm
        ts, cov = _warp(film_planes, m_film, w, h, (1.0, 0.0))
        del film_planes
        lt_film = lt
        if spec.tape > 0 or spec.magnets > 0:
            tau_i = np.ones((cvs.nh, cvs.nw), np.float32)
            refl_i = np.zeros((cvs.nh, cvs.nw), np.float32)
            _draw_film_items(spec, cvs, tau_i, refl_i, lay)
            ti, ri = _warp([tau_i, refl_i], m_box, w, h, (1.0, 0.0))
            del tau_i, refl_i
            # The reference keeps the bare-panel lt (tape and magnets leave with the film).
            lt_film = lt * ti if spec.reference else np.multiply(lt, ti, out=lt)
            rt *= ti
            if rr is None:
                rr = ri
            else:
                rr += ri
            del ti, ri

        pts, _ = _project(hm, film_quad)
        corners = _order_clockwise(pts)
        ia = _image_area_cm(spec)
        centre = (spec.film_x_cm, spec.film_y_cm)
        fw, fh, frot = spec.film_w_cm, spec.film_h_cm, spec.film_rot_deg
        ipts, _ = _project(hm, _film_rect_plane(centre, fw, fh, frot, ia))
        image_corners = _order_clockwise(ipts)
        in_frame = bool(
            corners[:, 0].min() >= 0
            and corners[:, 0].max() <= w - 1
            and corners[:, 1].min() >= 0
            and corners[:, 1].max() <= h - 1
        )
        du, dv = ia[2] - ia[0], ia[3] - ia[1]
        lung_rect = (ia[0] + 0.2 * du, ia[1] + 0.2 * dv, ia[0] + 0.8 * du, ia[1] + 0.8 * dv)
        lpts, _ = _project(hm, _film_rect_plane(centre, fw, fh, frot, lung_rect))
        lung_mask = np.zeros((h, w), np.uint8)
        _poly(lung_mask, lpts, 1)
        lung_sel = lung_mask.view(bool)

        glare = _glare_shape(spec, h, w, pts, lay)
        if glare is not None and pw is not None:
            # Glossy film reflects fully, the panel by pw, wall and housing not at all.
            wgt = pw + cov
            wgt -= pw * cov
            glare *= wgt
            del wgt
        # Room light: panel/housing reflectance seen through the film (twice), the film's
        # own surface reflection, and the overlays on top. Outside the film ts = 1.
        reflected = ts * ts
        reflected *= rt
        reflected = np.asarray(cv2.scaleAdd(cov, _FILM_GLOSS_REFLECTANCE, reflected), np.float32)
        if rr is not None:
            reflected += rr
        del rt, rr, pw

        # Lung statistics and film metering (on a 2x subsample: plenty of pixels).
        sub2 = (slice(None, None, 2), slice(None, None, 2))
        sel2 = lung_sel[sub2]
        if np.any(sel2):
            lt2 = lt_film[sub2][sel2] * ts[sub2][sel2]
            cov2 = cov[sub2][sel2]
            trans2 = [lt2 * (1.0 + cov2 * (base_c[c] - 1.0)) * tint[c] for c in range(3)]
            refl2 = reflected[sub2][sel2] * amb
            vig2 = vig[sub2][sel2]
            film_level = float(np.median((trans2[1] + refl2) * vig2))
            # "Metered on the film" means its mid densities are well exposed: clamp the metered
            # density to a mid range, or a mostly black CT sheet (or a mostly clear region)
            # would drive the exposure to absurd values.
            bare = float(np.median(lt_film[sub2][sel2] * vig2)) * float(tint[1])
            if bare > 0:
                lo, hi = _METER_DENSITY_RANGE
                film_level = min(max(film_level, bare * 10.0**-hi), bare * 10.0**-lo)
            if glare is not None:
                trans_y = sum(_LUMA[c] * trans2[c] for c in range(3))
                g_y = float(np.dot(_LUMA, glare_rgb)) * spec.glare_strength * panel
                lung_glare = float(
                    g_y * glare[sub2][sel2].mean() / max(float(np.mean(trans_y)), 1e-12)
                )
            del lt2, cov2, trans2, refl2, vig2
        else:
            film_level = panel_median * 10.0**-_NOMINAL_LUNG_DENSITY
        trans_v = lt_film * vig
        del lt_film
        trans_v *= ts  # neutral transmitted luminance
        ctrans_v = trans_v * cov  # the part that went through the (slightly blue) base
        del ts, cov
    else:
        glare = _glare_shape(spec, h, w, None, lay)
        if glare is not None and pw is not None:
            glare *= pw
        del pw
        reflected = rt if rr is None else rt + rr
        del rt, rr
        film_level = panel_median * 10.0**-_NOMINAL_LUNG_DENSITY
        lt_v = lt * vig

    gain_film = spec.film_target / max(film_level * float(wb[1]), 1e-12)
    mix = spec.metering_mix
    gain = math.exp((1.0 - mix) * math.log(gain_film) + mix * math.log(gain_box))
    gain *= 2.0**spec.exposure_ev

    # Exposed sensor planes, scaled for the LUT (see _develop): k_c * vig * radiance_c.
    k = gain * wb * (_TONE_LUT_SIZE - 1)
    reflected *= vig
    if glare is not None:
        glare *= vig
    planes = []
    for c in range(3):
        if has_film:
            wt = float(tint[c] * k[c])
            p = cv2.addWeighted(trans_v, wt, ctrans_v, wt * float(base_c[c] - 1.0), 0.0)
            p = cv2.scaleAdd(reflected, float(amb * k[c]), p)
        else:
            p = cv2.addWeighted(lt_v, float(tint[c] * k[c]), reflected, float(amb * k[c]), 0.0)
        if glare is not None:
            p = cv2.scaleAdd(glare, float(glare_rgb[c] * spec.glare_strength * panel * k[c]), p)
        planes.append(np.asarray(p, np.float32))
    del reflected, glare
    if has_film:
        del trans_v, ctrans_v
    else:
        del lt_v
    noise = _noise_pool(rng, h * w, 6 if spec.reference else 3)
    image = _develop(planes, spec, wb, noise, 0)

    clipped = crushed = 0.0
    if lung_sel is not None:
        if np.any(lung_sel):
            px = image[lung_sel]
            clipped = float(np.mean((px == 255).any(axis=1)))
            crushed = float(np.mean((px <= 3).all(axis=1)))
            del px
        else:
            clipped = crushed = float("nan")  # lung region entirely out of frame
        del lung_sel

    reference = None
    if ref_refl is not None:
        lt *= vig
        ref_refl *= vig
        ref_planes = [
            np.asarray(
                cv2.addWeighted(lt, float(tint[c] * k[c]), ref_refl, float(k[c]), 0.0), np.float32
            )
            for c in range(3)
        ]
        del ref_refl
        reference = _develop(ref_planes, spec, wb, noise, 3)

    return Photo(
        image=image,
        corners=corners,
        image_corners=image_corners,
        in_frame=in_frame,
        lung_clipped_frac=clipped,
        lung_crushed_frac=crushed,
        lung_glare=lung_glare,
        reference=reference,
        spec=spec,
    )


# ----------------------------------------------------------------------------------- report


def factors(spec: SceneSpec) -> dict[str, str]:
    """Coarse, human-readable scene factors for per-factor reporting."""
    blur_eff = max(spec.blur_sigma, spec.motion_px / 2.5)
    extras = [
        name
        for name, on in (
            ("clips", spec.clips > 0),
            ("tape", spec.tape > 0),
            ("magnets", spec.magnets > 0),
            ("dust", spec.dust > 0),
            ("flash", spec.flash_card),
            ("marker", spec.marker != "none"),
        )
        if on
    ]
    return {
        "kind": spec.kind,
        "cut_off": "yes" if spec.cut_off else "no",
        "framing": spec.framing,
        "metering": spec.metering,
        "margin": spec.margin_kind,
        "glare": spec.glare,
        "panel": "dim" if spec.panel_dim else "normal",
        "bays": str(spec.bays),
        "tilt": "high" if max(abs(spec.pitch_deg), abs(spec.yaw_deg)) >= 5.0 else "low",
        "blur": "sharp" if blur_eff < 0.7 else "soft" if blur_eff < 1.8 else "blurred",
        "jpeg": "high" if spec.jpeg_quality >= 75 else "low",
        "reference": "yes" if spec.reference else "no",
        "orientation": spec.orientation,
        "extras": "+".join(extras) if extras else "none",
    }
