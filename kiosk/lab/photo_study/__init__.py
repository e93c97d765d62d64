"""Photo study: what the photo path accepts, how well it finds the film, and what it costs.

``python -m kiosk.lab.photo_study --generator a|b --n N --seed S --size HxW --out FILE.json``
renders ``N`` photos of in-frame films (one per held-out Kermany film of the model's split,
cycling, in a seeded order), ``N/5`` empty lightboxes, ``N/10`` cut-off films and, for
generator B only, ``N/10`` CT/MR film sheets. Generator "a" is the project's own scene renderer
(``kiosk.camera.scene``, difficulty drawn uniformly in 0..1, the empty lightbox at the same
exposure as the rig reference of every other photo); generator "b" is the independently written
``kiosk.lab.photoscene`` (its own rig reference when the scene has one). Each photo is
rectified (with the reference when there is one and ``RigReference`` accepts it); every
developed film is classified (+ the OOD distance), and so is the film's digital original
(cached per film), so the photo AUROC can be compared with the digital AUROC on exactly the same
films.

Written: per-photo records (kind, factors, status, refusal flags, notes, every quality metric,
quad IoU against the true film sheet and against the radiograph's image area, corner errors,
probabilities, OOD) and a summary (acceptance by refusal reason, IoU counting refusals as 0,
corner error, refusal of empties / cut-off films / sheets, AUROC with bootstrap 95% CIs, per
scene factor, and per gate the curve "share accepted" vs "AUROC on accepted" when only that
gate's threshold moves). A compact markdown summary goes to stdout and next to the JSON.

What it does not do: tune anything, or write outside ``--out`` (and its ``.md`` sibling).
Without the shared Kermany images it falls back to phantom chests and reports no AUROC.
"""

# Modules, in the order a study uses them: films (the held-out films), scenes (generators A
# and B), records (rectify + classify one photo, collect them all), auroc (AUROC with CIs),
# gates (gate curves), summary (summarise), report (markdown), study (run_study) and cli
# (main, run by __main__).

from __future__ import annotations

from kiosk.lab.photo_study.auroc import auroc_ci, paired_diff_ci
from kiosk.lab.photo_study.cli import _clean, main
from kiosk.lab.photo_study.films import (
    LABELS,
    MANIFEST,
    SPLIT_CSV,
    FilmRef,
    holdout_films,
    load_film,
)
from kiosk.lab.photo_study.gates import GATES, current_limits, gate_curves
from kiosk.lab.photo_study.records import Models, collect, measure
from kiosk.lab.photo_study.report import to_markdown
from kiosk.lab.photo_study.scenes import Shot, factors_a, image_area_a, scenes_a, scenes_b
from kiosk.lab.photo_study.study import rectify_source_digest, run_study
from kiosk.lab.photo_study.summary import (
    LEGIBLE_MAX_CLIPPED,
    LEGIBLE_MAX_CRUSHED,
    LEGIBLE_MAX_GLARE,
    summarise,
)

# bootstrap resamples for every CI (read at call time: tests set it lower on the package)
N_BOOT = 2000

__all__ = [
    "GATES",
    "LABELS",
    "LEGIBLE_MAX_CLIPPED",
    "LEGIBLE_MAX_CRUSHED",
    "LEGIBLE_MAX_GLARE",
    "MANIFEST",
    "N_BOOT",
    "SPLIT_CSV",
    "FilmRef",
    "Models",
    "Shot",
    "_clean",
    "auroc_ci",
    "collect",
    "current_limits",
    "factors_a",
    "gate_curves",
    "holdout_films",
    "image_area_a",
    "load_film",
    "main",
    "measure",
    "paired_diff_ci",
    "rectify_source_digest",
    "run_study",
    "scenes_a",
    "scenes_b",
    "summarise",
    "to_markdown",
]
