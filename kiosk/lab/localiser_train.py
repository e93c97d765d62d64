"""Train the small int8 film localiser on simulator renderings (needs the ``train`` extra).

The network sees the photo at 256x144 (RGB, stretched) and predicts a film mask at 128x72:
the probability that each cell lies inside the film's outer boundary. ``rectify`` turns the
mask into a quadrilateral (robust line fits) and refines its corners at full resolution with
the same edge profiles as the classical detector, so the network only has to be roughly right,
and robust where the classical lightbox model is not (glare, strong fall-off).

Training data are renderings by either scene generator (A: ``kiosk.camera.scene`` across its
whole difficulty range; B: ``kiosk.lab.photoscene``, written independently) with their true
corners, plus empty lightboxes (an all-zero mask), CT/MR sheets (B) and films running out of
the frame (the visible part is the mask): phantom chests, and real digital X-rays of the
classifier's training split from ``../shared/data/kermany-train`` when that folder exists
(rendered in memory, never written). Augmentation is the generators' own randomness (framing,
metering, margins, lightbox, glare, blur, noise, JPEG, clips, tape, markers, second films), a
fifth of the photos at 4:3, plus horizontal flips. ``--generators A`` or ``B`` trains on one
generator only, to measure the other (cross-generator).

``train_localiser`` writes ``film-localiser-int8.tflite`` (full-integer quantised with a
representative set of renderings) and its manifest ``film-localiser.json`` into ``out_dir``.
TensorFlow is imported inside the function: nothing here is needed at run time.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kiosk.camera import scene
from kiosk.config import BUNDLED_MODELS_DIR, KERMANY_DIR

logger = logging.getLogger(__name__)

INPUT_HW = (144, 256)  # network input (height, width)
MASK_HW = (72, 128)  # predicted mask (height, width)
MODEL_FILE = "film-localiser-int8.tflite"
MANIFEST_FILE = "film-localiser.json"
_KERMANY = KERMANY_DIR
SPLIT_CSV = BUNDLED_MODELS_DIR / "cxr-pneumonia-effl0.split.csv"


def _train_films(split_csv: Path = SPLIT_CSV) -> list[Path]:
    """The classifier's *training* films (never its val/holdout films, which the photo study
    renders): the localiser learns no film the studies report on."""
    if not _KERMANY.is_dir() or not split_csv.is_file():
        return []
    with split_csv.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    return [_KERMANY / r["filename"] for r in rows if (_KERMANY / r["filename"]).is_file()]


def _digital(rng: np.random.Generator, files: list[Path]) -> np.ndarray:
    if files and rng.random() < 0.7:
        img = cv2.imread(str(files[int(rng.integers(len(files)))]), cv2.IMREAD_GRAYSCALE)
        if img is not None:
            return img
    return scene.phantom_chest(rng, (256, 256))


def _render_a(
    rng: np.random.Generator, digital: np.ndarray, render_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Generator A: the simulator across its whole difficulty range; 10 % films running out
    of the frame, 10 % empty lightboxes."""
    params = scene.random_params(rng, difficulty=float(rng.uniform(0.0, 1.0)))
    if rng.random() < 0.1:  # a film running out of the frame: the mask is what is seen
        side = float(rng.choice([-1.0, 1.0]))
        params = replace(params, film_offset=(side * float(rng.uniform(0.3, 0.45)), 0.0))
    empty = rng.random() < 0.1
    shot = scene.render(None if empty else digital, params, rng, render_hw)
    return shot.image, shot.corners


def _render_b(
    rng: np.random.Generator, digital: np.ndarray, render_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Generator B (``kiosk.lab.photoscene``): 10 % empty lightboxes, 8 % CT/MR sheets (a film
    too: the mask marks it; the "not a chest X-ray" gate refuses it later), 12 % films running
    out of the frame, the rest films in frame."""
    from kiosk.lab import photoscene

    u = rng.random()
    kind = "empty" if u < 0.1 else "sheet" if u < 0.18 else "film"
    cut_off = kind != "empty" and rng.random() < 0.12
    spec = photoscene.sample_scene(
        rng,
        kind,  # type: ignore[arg-type]
        cut_off=cut_off,
        aspect=render_hw[1] / render_hw[0],
    )
    photo = photoscene.render_photo(digital, spec, rng, size=render_hw)
    return photo.image, photo.corners


RENDERERS = {"A": _render_a, "B": _render_b}


def make_dataset(n_images: int, seed: int, generators: str = "A") -> tuple[np.ndarray, np.ndarray]:
    """Rendered photos (n, 144, 256, 3) uint8 and film masks (n, 72, 128, 1) float32, drawn
    from the scene ``generators`` ("A", "B" or "AB") in turn."""
    if not generators or any(g not in RENDERERS for g in generators):
        raise ValueError(f"generators must be A, B or AB, not {generators!r}")
    rng = np.random.default_rng(seed)
    files = _train_films()
    xs = np.zeros((n_images, *INPUT_HW, 3), np.uint8)
    ys = np.zeros((n_images, *MASK_HW, 1), np.float32)
    # render at 2x the input and area-average down: closer to a downscaled real photo; a
    # fifth of the photos at 4:3 (stretched to the input like any other aspect)
    for i in range(n_images):
        render_hw = (INPUT_HW[0] * 2, INPUT_HW[1] * 2)
        if rng.random() < 0.2:
            render_hw = (384, 512)
        render = RENDERERS[generators[i % len(generators)]]
        image, corners = render(rng, _digital(rng, files), render_hw)
        img = cv2.resize(image, (INPUT_HW[1], INPUT_HW[0]), interpolation=cv2.INTER_AREA)
        mask = np.zeros(MASK_HW, np.uint8)
        if corners is not None:
            scale = np.array([MASK_HW[1] / render_hw[1], MASK_HW[0] / render_hw[0]])
            pts = (corners + 0.5) * scale - 0.5
            cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_AA, shift=4)
        if rng.random() < 0.5:
            img, mask = img[:, ::-1], mask[:, ::-1]
        xs[i] = img
        ys[i, ..., 0] = mask
    return xs, ys


def _build_model(tf: Any) -> Any:
    layers = tf.keras.layers
    inp = layers.Input((*INPUT_HW, 3), name="photo")

    def conv(x: Any, filters: int, stride: int = 1, dilation: int = 1) -> Any:
        x = layers.Conv2D(
            filters, 3, strides=stride, dilation_rate=dilation, padding="same", use_bias=False
        )(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU(6.0)(x)

    c1 = conv(inp, 8, 2)  # 72x128
    c2 = conv(c1, 16, 2)  # 36x64
    c3 = conv(conv(c2, 24, 2), 24)  # 18x32
    c4 = conv(conv(c3, 32, 2), 32, dilation=2)  # 9x16, wide context
    u3 = conv(layers.Concatenate()([layers.UpSampling2D(2)(c4), c3]), 24)
    u2 = conv(layers.Concatenate()([layers.UpSampling2D(2)(u3), c2]), 16)
    u1 = conv(layers.Concatenate()([layers.UpSampling2D(2)(u2), c1]), 8)
    out = layers.Conv2D(1, 1, activation="sigmoid", name="mask")(u1)
    return tf.keras.Model(inp, out, name="film_localiser")


def train_localiser(
    out_dir: Path,
    n_images: int,
    epochs: int,
    seed: int,
    generators: str = "AB",
    version: str = "2.0.0",
) -> Path:
    """Render ``n_images`` scenes, train for ``epochs``, export full-int8 TFLite + manifest.

    Returns the manifest path. Deterministic data for a given ``seed``; TensorFlow training
    itself is seeded but not bit-reproducible across machines.
    """
    import tensorflow as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    xs, ys = make_dataset(n_images, seed, generators)
    logger.info("rendered %d training scenes in %.0f s", n_images, time.perf_counter() - t0)
    n_val = max(1, n_images // 10)
    x_norm = (xs.astype(np.float32) - 127.0) / 128.0
    model = _build_model(tf)

    def dice_bce(y_true: Any, y_pred: Any) -> Any:
        bce = tf.reduce_mean(tf.keras.losses.binary_crossentropy(y_true, y_pred))
        inter = tf.reduce_sum(y_true * y_pred, axis=[1, 2, 3])
        union = tf.reduce_sum(y_true + y_pred, axis=[1, 2, 3])
        dice = 1.0 - (2.0 * inter + 1.0) / (union + 1.0)
        return bce + tf.reduce_mean(dice)

    batch = 32
    steps = epochs * -(-(n_images - n_val) // batch)
    # cosine decay to zero; the epoch with the lowest validation loss is kept (its loss jumps
    # from epoch to epoch while the rate is high)
    rate = tf.keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps)
    model.compile(optimizer=tf.keras.optimizers.Adam(rate), loss=dice_bce)
    best = tf.keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=epochs, restore_best_weights=True
    )
    history = model.fit(
        x_norm[n_val:],
        ys[n_val:],
        validation_data=(x_norm[:n_val], ys[:n_val]),
        batch_size=batch,
        epochs=epochs,
        verbose=2,
        callbacks=[best],
    )
    val_loss = float(min(history.history["val_loss"]))

    def representative() -> Any:
        for k in range(min(200, n_images)):
            yield [x_norm[k : k + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    blob = converter.convert()
    model_path = out_dir / MODEL_FILE
    model_path.write_bytes(blob)
    manifest = {
        "schema_version": 1,
        "id": "film-localiser",
        "version": version,
        "kind": "localiser",
        "file": MODEL_FILE,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "quantization": "int8",
        "input": {
            "size": list(INPUT_HW),
            "colour": "rgb",
            "mean": [127.0, 127.0, 127.0],
            "std": [128.0, 128.0, 128.0],
            "resize": "stretch",
        },
        "outputs": {"mask": {"index": 0}},
        "provenance": {
            "data": (
                f"{n_images} renderings by scene generator(s) {generators} "
                "(A kiosk.camera.scene, B kiosk.lab.photoscene; seed "
                f"{seed}): phantom chests"
                + (
                    " and Kermany digital chest X-rays of the classifier's training split"
                    if _KERMANY.is_dir()
                    else ""
                )
            ),
            "training_run": (
                f"python -m kiosk.lab.localiser_train --n-images {n_images} --epochs {epochs} "
                f"--seed {seed} --generators {generators}; final val loss (BCE + Dice) "
                f"{val_loss:.4f}"
            ),
        },
        "licence": (
            "Weights trained from scratch by the project on simulator renderings"
            + (
                " of phantom chests and of Kermany et al. 2018 images (CC BY 4.0, "
                "doi:10.17632/rscbjbr9sj.2)"
                if _KERMANY.is_dir()
                else " of phantom chests"
            )
            + "; see the model card."
        ),
        "card": "film-localiser.md",
    }
    manifest_path = out_dir / MANIFEST_FILE
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    logger.info(
        "wrote %s (%d bytes) and %s in %.0f s",
        model_path,
        len(blob),
        manifest_path,
        time.perf_counter() - t0,
    )
    return manifest_path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Train the int8 film localiser")
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--n-images", type=int, default=1600)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generators", default="AB", help="A, B or AB")
    parser.add_argument("--version", default="2.0.0", help="the manifest's version")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train_localiser(args.out, args.n_images, args.epochs, args.seed, args.generators, args.version)
