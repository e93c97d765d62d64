"""Photo-crop cache and photo fine-tuning helpers on tiny generated data (issue 17).

No image from ../shared is used: the films are ``phantom_chest`` drawings, rendered small.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk.camera.scene import phantom_chest
from kiosk.lab.train.augment import AugmentConfig
from kiosk.lab.train.data import Sample
from kiosk.lab.train.photo_data import build_cache, chunk_path, load_crops, photo_crop
from kiosk.lab.train.photo_tune import cosine_with_warmup, mixed_batch
from kiosk.stats import patient_bootstrap_auroc

SMALL = (180, 320)


def _phantom(seed: int) -> np.ndarray:
    img = phantom_chest(np.random.default_rng(seed), (128, 128))
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


@pytest.mark.parametrize("generator", ["A", "B"])
def test_photo_crop_is_a_developed_film(generator: str) -> None:
    digital = _phantom(1)
    crop, _ = photo_crop(digital, generator, np.random.default_rng(0), 64, SMALL)
    assert crop.shape == (64, 64) and crop.dtype == np.uint8
    assert crop.std() > 10  # a film, not a flat field
    again, _ = photo_crop(digital, generator, np.random.default_rng(0), 64, SMALL)
    assert np.array_equal(crop, again)  # seeded: the cache is reproducible


def test_cache_is_chunked_resumable_and_ordered(tmp_path: Path) -> None:
    samples = []
    for i in range(5):
        p = tmp_path / f"person{i}_x.png"
        cv2.imwrite(str(p), _phantom(i))
        samples.append(Sample(p, p.name, f"person{i}", (float(i % 2),), (1.0,), split="val"))
    cache = tmp_path / "cache"
    stats = build_cache(
        samples,
        cache,
        order=[("A", "val")],
        workers=1,
        size=32,
        photo_size=SMALL,
        chunk_images=2,
    )
    assert stats["rendered"] == 5 and stats["failed"] == 0
    assert chunk_path(cache, "A", "val", 2).exists()
    crops, ok = load_crops(cache, "A", "val", 5, size=32)
    assert crops.shape == (5, 32, 32) and ok.all()
    again = build_cache(samples, cache, order=[("A", "val")], workers=1, chunk_images=2)
    assert again["rendered"] == 0  # nothing recomputed
    chunk_path(cache, "A", "val", 1).unlink()
    with pytest.raises(FileNotFoundError):
        load_crops(cache, "A", "val", 5, size=32)
    part, part_ok = load_crops(cache, "A", "val", 5, size=32, partial=True)
    assert part_ok.tolist() == [True, True, False, False, True]
    assert np.array_equal(part[part_ok], crops[part_ok])


def test_mixed_batch_share_and_failed_crops_stay_digital() -> None:
    rng = np.random.default_rng(0)
    digital = np.zeros((8, 16, 16), np.uint8)
    photos = np.full((8, 16, 16), 200, np.uint8)
    ok = np.ones(8, bool)
    ok[0] = False
    off = AugmentConfig(enabled=False)
    batch, is_photo = mixed_batch(np.arange(8), digital, photos, ok, 0.5, rng, off)
    assert not is_photo[0]
    assert is_photo.sum() in (3, 4)
    assert np.array_equal(batch[is_photo].max(axis=(1, 2)), np.full(is_photo.sum(), 200))
    assert batch[~is_photo].max() == 0


def test_mixed_batch_draws_from_both_generators_where_their_crop_developed() -> None:
    rng = np.random.default_rng(1)
    digital = np.zeros((64, 8, 8), np.uint8)
    photos = np.stack([np.full((64, 8, 8), 100, np.uint8), np.full((64, 8, 8), 200, np.uint8)])
    ok = np.ones((2, 64), bool)
    ok[1, :32] = False  # generator B failed on the first half: those photos must come from A
    ok[:, 63] = False  # neither developed: stays digital
    off = AugmentConfig(enabled=False)
    batch, is_photo = mixed_batch(np.arange(64), digital, photos, ok, 1.0, rng, off)
    values = batch.max(axis=(1, 2))
    assert not is_photo[63] and values[63] == 0
    assert set(values[:32].tolist()) == {100}
    assert set(values[32:63].tolist()) == {100, 200}


def test_schedule_warms_up_and_decays_to_zero() -> None:
    assert cosine_with_warmup(0, 10, 100) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 10, 100) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.09)))
    assert cosine_with_warmup(100, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_patient_bootstrap_is_paired_and_keeps_patients_together() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0.0, 1.0], 40)
    good = y + rng.normal(0, 0.5, y.size)
    patients = [f"p{i // 2}" for i in range(y.size)]
    boot = patient_bootstrap_auroc(y, [good, good], patients, n_boot=200)
    assert boot.shape[1] == 2 and len(boot) > 150
    assert np.array_equal(boot[:, 0], boot[:, 1])
