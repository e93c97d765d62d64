"""Photo-crop cache: every split image photographed on a lightbox and developed with true corners.

For each image of the committed patient split, one photo per scene generator (A:
``kiosk.camera.scene``, B: ``kiosk.lab.photoscene``, film scenes only, each generator's full
randomisation) is rendered, the film is developed through ``kiosk.rectify.develop.develop``
with the TRUE film corners ("what a perfect rectifier hands the model") and stretched to
``size`` x ``size``. Generator B's rig reference photo, when the scene has one, is turned into
a ``RigReference`` as the kiosk would use it.

Crops are stored as uint8 arrays in chunk files ``<cache>/<gen>/<split>/chunk_NNN.npz``
(``crops``, ``index`` into the split's sorted sample list, ``ok``, ``reference``), written one
chunk at a time so a crash loses at most one chunk; an existing chunk is never recomputed.
Every photo's scene is seeded by (seed, generator, split, index): the cache is reproducible.

What this module does not do: locate the film (that is the rectifier's job; here the corners
are known), or judge quality (no gate is applied: every developed crop is kept).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from kiosk.lab.film_photos import GENERATORS, PHOTO_SIZE, render_film_photo
from kiosk.lab.train.data import SPLITS, Sample

logger = logging.getLogger(__name__)

CHUNK_IMAGES = 128
CACHE_SEED = 17  # the crop cache's scenes; tools that render them again use it too


@dataclass(frozen=True)
class CropJob:
    """One chunk of one split for one generator."""

    generator: str
    split: str
    chunk: int
    indices: tuple[int, ...]
    paths: tuple[str, ...]
    out: Path
    seed: int
    size: int
    photo_size: tuple[int, int]


def photo_crop(
    digital: np.ndarray,
    generator: str,
    rng: np.random.Generator,
    size: int = 224,
    photo_size: tuple[int, int] = PHOTO_SIZE,
) -> tuple[np.ndarray, bool]:
    """Render one random film photo of ``digital`` (uint8 grey) and develop it with its true
    corners; returns ``(grey uint8 (size, size), rig reference used)``."""
    from kiosk.capture.rig import RigReference
    from kiosk.errors import KioskError
    from kiosk.rectify.develop import develop

    photo = render_film_photo(digital, generator, rng, photo_size)
    if photo.corners is None:
        raise ValueError("the film scene rendered without film corners")
    reference = None
    if photo.reference is not None:
        try:
            reference = RigReference.from_empty_frames([photo.reference], {})
        except KioskError:  # e.g. an over-exposed empty panel: the kiosk would refuse it
            reference = None
    image, corners = photo.image, photo.corners
    grey = develop(image, corners, reference)
    out = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out, dtype=np.uint8), reference is not None


def scene_rng(seed: int, generator: str, split: str, index: int) -> np.random.Generator:
    """The random stream of one film's photo in the cache: the same (seed, generator, split,
    index) gives the same scene to every tool that renders it again."""
    return np.random.default_rng([seed, GENERATORS.index(generator), SPLITS.index(split), index])


def _run_job(job: CropJob) -> tuple[str, str, int, int, int, float]:
    t0 = time.time()
    n = len(job.indices)
    crops = np.zeros((n, job.size, job.size), np.uint8)
    ok = np.zeros(n, bool)
    ref = np.zeros(n, bool)
    for k, (idx, path) in enumerate(zip(job.indices, job.paths, strict=True)):
        rng = scene_rng(job.seed, job.generator, job.split, idx)
        digital = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if digital is None:
            logger.warning("cannot decode %s; crop left empty", path)
            continue
        try:
            crops[k], ref[k] = photo_crop(digital, job.generator, rng, job.size, job.photo_size)
            ok[k] = True
        except Exception:  # one bad scene must not stop the cache; it is counted as not ok
            logger.exception("photo crop failed: generator %s %s", job.generator, path)
    job.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = job.out.with_name(job.out.stem + ".tmp.npz")
    np.savez(tmp, crops=crops, index=np.asarray(job.indices), ok=ok, reference=ref)
    os.replace(tmp, job.out)
    return job.generator, job.split, job.chunk, n, int(ok.sum()), time.time() - t0


def _worker_init() -> None:
    cv2.setNumThreads(1)
    logging.basicConfig(level=logging.WARNING)


def chunk_path(cache: Path, generator: str, split: str, chunk: int) -> Path:
    """Where one chunk of crops lives."""
    return Path(cache) / generator / split / f"chunk_{chunk:03d}.npz"


def split_samples(samples: Sequence[Sample], split: str) -> list[Sample]:
    """The samples of one split in the cache's order (sorted by name)."""
    return sorted((s for s in samples if s.split == split), key=lambda s: s.name)


def build_cache(
    samples: Sequence[Sample],
    cache: Path,
    *,
    order: Sequence[tuple[str, str]] | None = None,
    workers: int = 2,
    seed: int = CACHE_SEED,
    size: int = 224,
    photo_size: tuple[int, int] = PHOTO_SIZE,
    chunk_images: int = CHUNK_IMAGES,
) -> dict[str, float]:
    """Render and develop every missing chunk; ``order`` lists (generator, split) pairs in the
    order to fill them (default: A then B, train/val/holdout). Returns counts and seconds."""
    order = list(order or [(g, s) for g in GENERATORS for s in SPLITS])
    jobs: list[CropJob] = []
    for gen, split in order:
        items = split_samples(samples, split)
        for c, start in enumerate(range(0, len(items), chunk_images)):
            out = chunk_path(cache, gen, split, c)
            if out.exists():
                continue
            part = items[start : start + chunk_images]
            jobs.append(
                CropJob(
                    gen,
                    split,
                    c,
                    tuple(range(start, start + len(part))),
                    tuple(str(s.path) for s in part),
                    out,
                    seed,
                    size,
                    photo_size,
                )
            )
    total = sum(len(j.indices) for j in jobs)
    logger.info("photo-crop cache %s: %d chunks (%d images) to render", cache, len(jobs), total)
    t0 = time.time()
    done = failed = 0
    # "spawn": a forked child of a process whose OpenCV / BLAS threads already ran can deadlock
    with get_context("spawn").Pool(max(1, workers), initializer=_worker_init) as pool:
        for gen, split, chunk, n, n_ok, secs in pool.imap(_run_job, jobs):
            done += n
            failed += n - n_ok
            elapsed = time.time() - t0
            logger.info(
                "%s/%s chunk %d: %d crops (%d failed) in %.0f s; %d/%d done, %.0f s elapsed, "
                "about %.0f s left",
                gen,
                split,
                chunk,
                n,
                n - n_ok,
                secs,
                done,
                total,
                elapsed,
                elapsed / max(done, 1) * (total - done),
            )
    return {"rendered": done, "failed": failed, "seconds": round(time.time() - t0, 1)}


def load_crops(
    cache: Path, generator: str, split: str, n: int, *, partial: bool = False, size: int = 224
) -> tuple[np.ndarray, np.ndarray]:
    """All crops of one split and generator: ``(crops (n, size, size) uint8, ok (n,) bool)``.

    Raises FileNotFoundError when a chunk is missing (the cache is not complete), unless
    ``partial``: then the missing films come back as zeros with ``ok`` False.
    """
    folder = Path(cache) / generator / split
    crops = np.zeros((n, size, size), np.uint8)
    ok = np.zeros(n, bool)
    seen = np.zeros(n, bool)
    for f in sorted(folder.glob("chunk_[0-9][0-9][0-9].npz")):
        with np.load(f) as z:
            idx = z["index"]
            crops[idx], ok[idx], seen[idx] = z["crops"], z["ok"], True
    if not seen.all() and not partial:
        raise FileNotFoundError(
            f"{folder} holds {int(seen.sum())} of the split's {n} crops; finish the cache first"
        )
    return crops, ok
