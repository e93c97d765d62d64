"""How often ``kiosk analyze --input auto`` guesses right: photo or digital radiograph.

``python -m kiosk.lab.photo_guess [--radiographs 600] [--photos 150] [--seed 2]`` draws
radiographs from ``../shared/data/kermany-train`` (as 3-channel pictures, the harder case: a
grey file is digital at once) and renders photos of the first ``--photos`` of them by each
scene generator (540x960), then counts what ``looks_like_photo`` calls each. Prints JSON.

What this module does not do: rectify or classify anything.
"""

from __future__ import annotations

import argparse
import json
import random

import numpy as np

from kiosk.config import KERMANY_DIR
from kiosk.imaging.decode import read_image
from kiosk.lab.film_photos import GENERATORS, PHOTO_SIZE, render_film_photo
from kiosk.rectify.gates import looks_like_photo


def count_guesses(radiographs: int, photos: int, seed: int) -> dict[str, object]:
    """Radiographs called photos, and each generator's photos called photos."""
    files = sorted(KERMANY_DIR.glob("*/*.jpeg"))
    if not files:
        raise SystemExit(f"no images in {KERMANY_DIR}")
    random.seed(seed)
    files = random.sample(files, min(radiographs, len(files)))
    greys = []
    wrong = 0
    for f in files:
        grey = read_image(f).pixels
        grey = grey if grey.ndim == 2 else grey[..., 0]
        greys.append(grey)
        wrong += looks_like_photo(np.repeat(grey[..., None], 3, axis=2))
    out: dict[str, object] = {"radiographs": len(files), "radiographs_called_photo": wrong}
    rng = np.random.default_rng(seed + 9)
    for gen in GENERATORS:
        hits = sum(
            looks_like_photo(render_film_photo(g, gen, rng, PHOTO_SIZE).image)
            for g in greys[:photos]
        )
        out[f"photos_{gen}"] = min(photos, len(greys))
        out[f"photos_{gen}_called_photo"] = int(hits)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kiosk.lab.photo_guess", description=__doc__)
    ap.add_argument("--radiographs", type=int, default=600)
    ap.add_argument("--photos", type=int, default=150)
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args(argv)
    print(json.dumps(count_guesses(args.radiographs, args.photos, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
