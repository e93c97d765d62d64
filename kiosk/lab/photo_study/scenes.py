"""The two scene generators: photos of films, empty lightboxes, cut-off films and sheets.

Generator "a" is the project's own renderer (``kiosk.camera.scene``), generator "b" the
independently written ``kiosk.lab.photoscene``; both yield a ``Shot`` (the photo and its
ground truth) with the digital film it shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from kiosk.camera import scene
from kiosk.lab import photoscene
from kiosk.lab.film_photos import scene_truth
from kiosk.lab.photo_study.films import FilmRef, load_film


@dataclass
class Shot:
    """One rendered photo and its ground truth."""

    kind: str  # "film" | "empty" | "cut_off" | "sheet"
    image: np.ndarray
    corners: np.ndarray | None  # true film sheet corners TL TR BR BL (may leave the frame)
    image_corners: np.ndarray | None  # true radiograph image-area corners
    in_frame: bool
    reference: np.ndarray | None  # empty-lightbox photo for the rig reference
    factors: dict[str, str]
    truth: dict[str, float] = field(default_factory=dict)


def _in_frame(corners: np.ndarray | None, size: tuple[int, int]) -> bool:
    if corners is None:
        return False
    h, w = size
    return bool(
        corners[:, 0].min() >= 0
        and corners[:, 1].min() >= 0
        and corners[:, 0].max() <= w - 1
        and corners[:, 1].max() <= h - 1
    )


def image_area_a(
    corners: np.ndarray, params: scene.SceneParams, digital_shape: tuple[int, int], h: int
) -> np.ndarray:
    """Generator A's radiograph image-area corners from the sheet corners and its margins.

    Mirrors ``scene._film_density_canvas``: the digital image (scaled to about the on-screen
    film height) padded by ``margin_frac`` = (top, right, bottom, left) of the image size; the
    canvas's pixel edges map to the sheet corners by a homography.
    """
    ih, iw = digital_shape
    mt, mr, mb, ml = params.margin_frac
    fh = params.film_height_frac * h
    scale = min(1.0, max(fh, 16.0) / (ih * (1 + mt + mb)))
    nh, nw = max(8, round(ih * scale)), max(8, round(iw * scale))
    top, bottom, left, right = round(mt * nh), round(mb * nh), round(ml * nw), round(mr * nw)
    ch, cw = nh + top + bottom, nw + left + right
    src = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32) - 0.5
    hom = cv2.getPerspectiveTransform(src, np.asarray(corners, np.float32))
    area = (
        np.array(
            [[left, top], [left + nw, top], [left + nw, top + nh], [left, top + nh]], np.float64
        )
        - 0.5
    )
    out = cv2.perspectiveTransform(area.reshape(-1, 1, 2), hom).reshape(-1, 2)
    return out.astype(np.float32)


def _bin(value: float, edges: tuple[float, ...], names: tuple[str, ...]) -> str:
    for edge, name in zip(edges, names, strict=False):
        if value < edge:
            return name
    return names[-1]


def factors_a(p: scene.SceneParams, difficulty: float, reference: bool) -> dict[str, str]:
    """Coarse scene factors of a generator-A scene, for per-factor reporting."""
    extras = [
        n
        for n, on in (("clip", p.clip), ("fingers", p.fingers), ("second_film", p.second_film))
        if on
    ]
    return {
        "difficulty": _bin(difficulty, (1 / 3, 2 / 3), ("low", "mid", "high")),
        "glare": "none"
        if p.glare_strength <= 0
        else _bin(p.glare_strength, (0.15,), ("faint", "strong")),
        "blur": _bin(p.blur_sigma_px, (0.7, 1.8), ("sharp", "soft", "blurred")),
        "exposure": _bin(p.exposure_scale, (0.85,), ("dim", "normal")),
        "tilt": "high" if max(abs(p.tilt_x_deg), abs(p.tilt_y_deg)) >= 5.0 else "low",
        "film_rotation": "crooked" if abs(p.film_rotation_deg) >= 4.0 else "straight",
        "film_size": _bin(p.film_height_frac, (0.72,), ("small", "large")),
        "lightbox": "fills" if min(p.lightbox_size) >= 1.0 else "partly_in_view",
        "vignetting": _bin(p.vignetting, (0.4,), ("low", "high")),
        "room_light": _bin(p.room_luminance, (0.06,), ("dark", "bright")),
        "jpeg": "high" if p.jpeg_quality >= 75 else "low",
        "reference": "yes" if reference else "no",
        "extras": "+".join(extras) if extras else "none",
    }


def scenes_a(
    n: int, seed: int, size: tuple[int, int], films: list[FilmRef]
) -> Iterator[tuple[Shot, FilmRef | None]]:
    """Generator A: N in-frame films, N/5 empty lightboxes, N/10 cut-off films.

    Every other photo (by index) comes with the empty lightbox at the same exposure as its rig
    reference.
    """
    plan = [("film", i) for i in range(n)]
    plan += [("empty", i) for i in range(max(1, n // 5))]
    plan += [("cut_off", i) for i in range(max(1, n // 10))]
    for j, (kind, i) in enumerate(plan):
        rng = np.random.default_rng([seed, 0xA, j])
        difficulty = float(rng.uniform(0.0, 1.0))
        params = scene.random_params(rng, difficulty=difficulty)
        with_ref = j % 2 == 1
        film: FilmRef | None = None
        digital = None
        if kind == "cut_off":
            side = 1.0 if rng.random() < 0.5 else -1.0
            params = replace(params, film_offset=(0.45 * side, 0.0), second_film=False)
        if kind in ("film", "cut_off"):
            film = films[(i if kind == "film" else n + i) % len(films)]
            digital = load_film(film)
        shot = scene.render(digital, params, rng, size)
        ref = scene.render_empty(params, rng, size) if with_ref else None
        corners = None if shot.corners is None else shot.corners.astype(np.float32)
        area = None
        if corners is not None and digital is not None:
            area = image_area_a(corners, params, digital.shape[:2], size[0])
        f = factors_a(params, difficulty, with_ref)
        yield (
            Shot(
                kind,
                shot.image,
                corners,
                area,
                _in_frame(corners, size),
                ref,
                f,
                {"difficulty": difficulty, "glare_strength": params.glare_strength},
            ),
            film,
        )


def scenes_b(
    n: int, seed: int, size: tuple[int, int], films: list[FilmRef]
) -> Iterator[tuple[Shot, FilmRef | None]]:
    """Generator B: N in-frame films, N/5 empty lightboxes, N/10 cut-off films, N/10 sheets."""
    plan = [("film", i) for i in range(n)]
    plan += [("empty", i) for i in range(max(1, n // 5))]
    plan += [("cut_off", i) for i in range(max(1, n // 10))]
    plan += [("sheet", i) for i in range(max(1, n // 10))]
    aspect = size[1] / size[0]
    for j, (kind, i) in enumerate(plan):
        rng = np.random.default_rng([seed, 0xB, j])
        skind = "film" if kind == "cut_off" else kind
        spec = photoscene.sample_scene(rng, skind, cut_off=kind == "cut_off", aspect=aspect)  # type: ignore[arg-type]
        film: FilmRef | None = None
        digital = None
        if kind in ("film", "cut_off"):
            film = films[(i if kind == "film" else n + i) % len(films)]
            digital = load_film(film)
        photo = photoscene.render_photo(digital, spec, rng, size)
        truth = scene_truth(photo)
        yield (
            Shot(
                kind,
                photo.image,
                photo.corners,
                photo.image_corners,
                bool(photo.in_frame),
                photo.reference,
                dict(photoscene.factors(spec)),
                truth,
            ),
            film,
        )
