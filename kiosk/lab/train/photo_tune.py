"""Fine-tune trained weights on digital films mixed with developed photo crops (issue 17).

Starts from a trained ``state_dict`` (the shipped ``cxr-pneumonia-effl0.pt``), keeps the
shipped recipe's frozen stem + first blocks and frozen batch-norm statistics, and trains on
batches in which a fixed share of the images (``photo_fraction``) is replaced by the same
film's photo crop from the chosen scene generators (``photo_data`` cache; ``generator`` "A",
"B" or "AB", in which case each photo is drawn from either generator at random). The existing
photographed-film augmentations (``augment``) are applied to both kinds. An epoch is one pass
over the training images; the warm-up + cosine schedule spans all planned epochs and always
runs to the end (no early stopping: the run is sized to finish). Each epoch is scored on the
validation split, digital and photo crops of the same generator(s); the epoch with the best
mean of the AUROCs is kept.

What this module does not do: touch a generator's crops it was not asked to train on (held out
for evaluation), export, or choose thresholds (``release`` / ``photo_release`` do).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.lab.train.augment import AugmentConfig, augment
from kiosk.lab.train.data import SPLITS, load_grey, read_split_csv, split_digest
from kiosk.lab.train.photo_data import load_crops, split_samples
from kiosk.lab.train.trainer import (
    _freeze_bn,
    _json_default,
    environment,
    predict,
    to_tensor_batch,
)
from kiosk.stats import auroc_or_nan as auroc

logger = logging.getLogger(__name__)


@dataclass
class PhotoTuneConfig:
    """Everything that decides a photo fine-tuning run (stored verbatim in the run record)."""

    out_dir: Path
    init: Path
    split_csv: Path
    data: Path
    cache: Path
    model_id: str = "cxr-pneumonia-effl0-photo"
    generator: str = "A"  # one letter per scene generator trained on: "A", "B" or "AB"
    photo_fraction: float = 0.5
    image_size: int = 224
    epochs: float = 2.0  # fractional: the last pass stops part-way, with the schedule's end
    batch_size: int = 32
    lr_head: float = 5e-4
    lr_backbone: float = 2e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    freeze_blocks: int = 5
    dropout: float = 0.2
    seed: int = 1234
    threads: int = 2
    evaluate_init: bool = True
    validate: bool = True  # PyTorch val AUROC after each pass (selection among passes)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def mixed_batch(
    idx: np.ndarray,
    digital: np.ndarray,
    photos: np.ndarray,
    photo_ok: np.ndarray,
    photo_fraction: float,
    rng: np.random.Generator,
    cfg: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Augmented uint8 batch for training images ``idx``: ``round(photo_fraction * len)`` of
    them (chosen at random) as a photo crop, the rest digital; returns (batch, is_photo).

    ``photos`` is ``(n, size, size)`` for one generator or ``(G, n, size, size)`` for several
    (``photo_ok`` ``(n,)`` or ``(G, n)`` alike); with several, each photo comes from one of the
    generators whose crop of that film developed, at random. A film with no developed crop
    stays digital.
    """
    if photos.ndim == 3:
        photos, photo_ok = photos[None], photo_ok[None]
    n = len(idx)
    is_photo = np.zeros(n, bool)
    is_photo[rng.permutation(n)[: round(photo_fraction * n)]] = True
    ok = photo_ok[:, idx]  # (G, n)
    is_photo &= ok.any(axis=0)
    images = []
    for k, (j, p) in enumerate(zip(idx, is_photo, strict=True)):
        if p:
            g = rng.choice(np.flatnonzero(ok[:, k]))
            images.append(augment(photos[g, j], rng, cfg))
        else:
            images.append(augment(digital[j], rng, cfg))
    return np.stack(images), is_photo


def load_generators(
    cache: Path, generators: str, split: str, n: int, size: int = 224
) -> tuple[np.ndarray, np.ndarray]:
    """Crops of every generator in ``generators`` ("A", "B", "AB"):
    ``(crops (G, n, size, size), ok (G, n))``."""
    if not generators or any(g not in "AB" for g in generators):
        raise ValueError(f"generator must be A, B or AB, not {generators!r}")
    loaded = [load_crops(cache, g, split, n, size=size) for g in generators]
    return np.stack([c for c, _ in loaded]), np.stack([o for _, o in loaded])


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up, then half a cosine from 1 to 0 at ``total``."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def _val_scores(model: Any, val: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    out = {}
    for kind, imgs in val.items():
        logits, _ = predict(model, imgs)
        out[f"val_auroc_{kind}"] = auroc(y, logits[:, 0])
    out["val_auroc_mean"] = float(np.mean(list(out.values())))
    return out


def photo_tune(cfg: PhotoTuneConfig) -> dict[str, Any]:
    """Run the fine-tuning; writes ``<id>.pt`` (best epoch), per-epoch checkpoints and
    ``<id>.run.json`` (rewritten after every epoch). Returns the run record."""
    import torch

    from kiosk.lab.train.effnet_torch import EfficientNetLite0

    t_start = time.time()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    samples = read_split_csv(cfg.split_csv, cfg.data)
    train_s, val_s = split_samples(samples, "train"), split_samples(samples, "val")
    digital = load_grey(train_s, cfg.image_size)
    photos, photo_ok = load_generators(cfg.cache, cfg.generator, "train", len(train_s))
    val_photos, val_ok = load_generators(cfg.cache, cfg.generator, "val", len(val_s))
    y_train = np.array([s.labels[0] for s in train_s], np.float32)[:, None]
    y_val = np.array([s.labels[0] for s in val_s], np.float32)
    val_sets = {"digital": load_grey(val_s, cfg.image_size)}
    val_sets |= {f"photo_{g}": val_photos[i] for i, g in enumerate(cfg.generator)}
    logger.info(
        "loaded %d train (%d photo crops ok) and %d val images (%d ok) in %.0f s",
        len(train_s),
        int(photo_ok.any(axis=0).sum()),
        len(val_s),
        int(val_ok.any(axis=0).sum()),
        time.time() - t_start,
    )

    model = EfficientNetLite0(1, cfg.dropout)
    state = torch.load(cfg.init, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise ValueError(f"{cfg.init} does not fit the model: {missing=} {unexpected=}")
    k = cfg.freeze_blocks
    for module in (model._conv_stem, model._bn0, *model._blocks[:k]):
        for p in module.parameters():
            p.requires_grad_(False)
    head = [*model._fc.parameters()]
    backbone = [p for p in model.parameters() if p.requires_grad and all(p is not h for h in head)]
    opt = torch.optim.AdamW(
        [{"params": backbone, "lr": cfg.lr_backbone}, {"params": head, "lr": cfg.lr_head}],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train_s) / cfg.batch_size)
    total = max(1, round(steps_per_epoch * cfg.epochs))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_with_warmup(s, cfg.warmup_steps, total)
    )

    def forward_train(xb: Any) -> Any:
        with torch.no_grad():
            h = torch.nn.functional.relu6(model._bn0(model._conv_stem(xb)))
            for block in model._blocks[:k]:
                h = block(h)
        fmap = model.forward_map(h, start_block=k)
        return model._fc(model._dropout(fmap.mean(dim=(2, 3))))

    record: dict[str, Any] = {
        "model_id": cfg.model_id,
        "kind": "photo fine-tune (kiosk.lab.train.photo_tune)",
        "config": asdict(cfg),
        "split_sha256": {sp: split_digest(samples, sp) for sp in SPLITS},
        "data": {
            "train_images": len(train_s),
            "train_photo_crops_ok": {
                g: int(photo_ok[i].sum()) for i, g in enumerate(cfg.generator)
            },
            "val_images": len(val_s),
            "val_photo_crops_ok": {
                g: int(o.sum()) for g, o in zip(cfg.generator, val_ok, strict=True)
            },
        },
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "epochs": [],
        "environment": environment(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
    }
    record_path = out_dir / f"{cfg.model_id}.run.json"

    def save_record() -> None:
        record["seconds_total"] = round(time.time() - t_start, 1)
        record_path.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")

    best_score = -1.0
    if cfg.evaluate_init:
        t0 = time.time()
        init_scores = _val_scores(model, val_sets, y_val)
        record["init_val"] = {**init_scores, "seconds": round(time.time() - t0, 1)}
        logger.info("initial weights on val: %s", record["init_val"])
        save_record()
    step = 0
    for epoch in range(math.ceil(total / steps_per_epoch)):
        t0 = time.time()
        model.train()
        _freeze_bn(model)
        order = rng.permutation(len(train_s))
        losses: list[float] = []
        n_photo = 0
        for i in range(0, len(order), cfg.batch_size):
            if step >= total:
                break
            idx = order[i : i + cfg.batch_size]
            batch, is_photo = mixed_batch(
                idx, digital, photos, photo_ok, cfg.photo_fraction, rng, cfg.augment
            )
            n_photo += int(is_photo.sum())
            logits = forward_train(to_tensor_batch(batch))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, torch.from_numpy(y_train[idx])
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            if step % 10 == 0:
                logger.info(
                    "epoch %d step %d/%d loss %.4f lr %.2e (%.0f s, %.1f s/step)",
                    epoch + 1,
                    step,
                    total,
                    np.mean(losses[-10:]),
                    opt.param_groups[0]["lr"],
                    time.time() - t0,
                    (time.time() - t0) / (len(losses)),
                )
        train_s_secs = time.time() - t0
        scores = _val_scores(model, val_sets, y_val) if cfg.validate else {}
        row = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "steps": len(losses),
            "photo_share": n_photo / (len(losses) * cfg.batch_size),
            **scores,
            "train_seconds": round(train_s_secs, 1),
            "epoch_seconds": round(time.time() - t0, 1),
        }
        record["epochs"].append(row)
        logger.info("epoch %d: %s", epoch + 1, row)
        state_now = {kk: v.detach().clone() for kk, v in model.state_dict().items()}
        torch.save(state_now, out_dir / f"{cfg.model_id}.epoch{epoch + 1}.pt")
        # without validation the last pass is kept (the schedule has ended there)
        if not cfg.validate or scores["val_auroc_mean"] > best_score:
            best_score = scores.get("val_auroc_mean", math.nan)
            record["best_epoch"] = epoch + 1
            record["best_val_auroc_mean"] = best_score
            torch.save(
                {kk: v for kk, v in state_now.items() if not kk.endswith("num_batches_tracked")},
                out_dir / f"{cfg.model_id}.pt",
            )
        save_record()
    logger.info(
        "photo fine-tune done in %.0f s; best epoch %s",
        time.time() - t_start,
        record.get("best_epoch"),
    )
    return record
