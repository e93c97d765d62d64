"""One random lightbox photograph of a film, by either scene generator: the lab's one copy.

Generator "A" is the demo camera's renderer (``kiosk.camera.scene``, the rectifier was tuned
beside it); "B" is the independently written ``kiosk.lab.photoscene``. Training crops, the
factory calibration and the OOD refit all draw their photos here, so the same seed gives the
same photo whichever of them asks.

What this module does not do: rectify or develop the photo (``kiosk.rectify``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

GENERATORS = ("A", "B")
PHOTO_SIZE = (540, 960)  # (height, width): the model reads 224 px, this saves CPU


@dataclass(frozen=True)
class FilmPhoto:
    """A rendered photo, the film's true corners (None without a film) and, when the scene
    has one, the photo of the empty lightbox (the rig reference's frame)."""

    image: np.ndarray
    corners: np.ndarray | None
    reference: np.ndarray | None = None
    # what the scene knows about the lungs' legibility (generator B; ``scene_truth``)
    truth: dict[str, float] = field(default_factory=dict)


def scene_truth(photo: Any) -> dict[str, float]:
    """A generator-B rendering's truth about the lung region: its clipped and crushed shares
    and the glare over it."""
    return {
        "lung_clipped_frac": float(photo.lung_clipped_frac),
        "lung_crushed_frac": float(photo.lung_crushed_frac),
        "lung_glare": float(photo.lung_glare),
    }


def render_film_photo(
    digital: np.ndarray | None,
    generator: str,
    rng: np.random.Generator,
    photo_size: tuple[int, int] = PHOTO_SIZE,
    kind: str = "film",
) -> FilmPhoto:
    """A random scene of ``kind`` ("film"; B also "empty" and "sheet") with ``digital`` (grey
    uint8) on the lightbox, rendered by ``generator`` at ``photo_size`` (height, width)."""
    if generator == "A":
        from kiosk.camera import scene

        if kind != "film":
            raise ValueError(f"generator A renders film scenes only, not {kind!r}")
        params = scene.random_params(rng, difficulty=float(rng.uniform(0.0, 1.0)))
        rendering = scene.render(digital, params, rng, size=photo_size)
        return FilmPhoto(rendering.image, rendering.corners)
    if generator == "B":
        from kiosk.lab import photoscene

        spec = photoscene.sample_scene(rng, kind, aspect=photo_size[1] / photo_size[0])  # type: ignore[arg-type]
        photo = photoscene.render_photo(digital, spec, rng, size=photo_size)
        return FilmPhoto(photo.image, photo.corners, photo.reference, scene_truth(photo))
    raise ValueError(f"unknown scene generator {generator!r}; use one of {GENERATORS}")
