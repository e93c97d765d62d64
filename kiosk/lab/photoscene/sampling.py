"""Drawing a scene: lightbox, film, things on top, room glare, camera pose and pipeline."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiosk.lab.photoscene.geometry import _film_rect_plane, _homography_from, _project
from kiosk.lab.photoscene.spec import SceneKind, SceneSpec

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
