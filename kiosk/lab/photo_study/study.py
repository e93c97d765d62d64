"""One study run: collect every photo's record, summarise them, and say how it was run."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from kiosk.lab.photo_study.auroc import n_boot
from kiosk.lab.photo_study.films import SPLIT_CSV, FilmRef, holdout_films
from kiosk.lab.photo_study.records import Models, collect
from kiosk.lab.photo_study.summary import summarise


def run_study(
    generator: str,
    n: int,
    seed: int,
    size: tuple[int, int],
    films: list[FilmRef] | None = None,
    models: Models | None = None,
    log_every: int = 25,
) -> dict[str, Any]:
    """Collect the records and summarise them; a JSON-able dict (meta, summary, records)."""
    t0 = time.perf_counter()
    digest = rectify_source_digest()  # at the start: others edit the gate while this runs
    films = films if films is not None else holdout_films(seed)
    models = models or Models()
    records = collect(generator, n, seed, size, models, films, log_every)
    meta = {
        "generator": generator,
        "generator_module": {"a": "kiosk.camera.scene", "b": "kiosk.lab.photoscene"}[generator],
        "n": n,
        "seed": seed,
        "size": list(size),
        "films_source": "phantoms (AUROC not available)"
        if films[0].label is None
        else f"Kermany holdout of {SPLIT_CSV.name} ({len(films)} films, seeded order)",
        "model": models.manifest_path.name,
        "rectify_method": models.method,
        "input_form": models.input_form,
        "localiser_sha256": None if models.localiser is None else models.localiser.manifest.sha256,
        "ood_threshold": None if models.ood is None else models.ood.threshold,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU, "
        f"Python {platform.python_version()}",
        "load_average_1min": os.getloadavg()[0],
        "wall_s": time.perf_counter() - t0,
        "rectify_source_sha256": digest,
        "n_boot": n_boot(),
        "bootstrap": "stratified by class, per photo (films of one patient are not grouped)",
    }
    return {"meta": meta, "summary": summarise(records), "records": records}


def rectify_source_digest() -> str:
    """A digest of kiosk/rectify/*.py as imported (the gate changes while it is tuned)."""
    import hashlib

    import kiosk.rectify

    h = hashlib.sha256()
    for path in sorted(Path(kiosk.rectify.__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]
