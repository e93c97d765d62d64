"""``kiosk model train|export|evaluate|engines``: build and check the bundled classifier.

Thin click commands over :mod:`kiosk.lab.train`. torch and TensorFlow are imported inside
the command bodies only (they come with the ``train`` extra), so ``kiosk`` starts fast on the
Pi without them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from kiosk.config import BUNDLED_MODELS_DIR, KERMANY_DIR
from kiosk.errors import KioskError

logger = logging.getLogger(__name__)

DEFAULT_MODELS = BUNDLED_MODELS_DIR
DEFAULT_DATA = KERMANY_DIR
DEFAULT_ID = "cxr-pneumonia-effl0"
LICENCE = (
    "Weights: trained on Kermany et al. 2018 (CC BY 4.0, doi:10.17632/rscbjbr9sj.2) from the "
    "Apache-2.0 EfficientNet-Lite0 ImageNet checkpoint; see the model card."
)
KERMANY_PROVENANCE = (
    "Kermany, Zhang, Goldbaum 2018, Mendeley Data V2, doi:10.17632/rscbjbr9sj.2 (CC BY 4.0): "
    "train split only, de-duplicated by content hash, split by patient"
)


def _need_train_extra() -> None:
    try:
        import tensorflow  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            f"training needs the `train` extra ({exc.name} is not installed): "
            "pip install 'lightbox-kiosk[train]'"
        ) from exc


def _release(
    weights: Path, record_path: Path, data_root: Path, out: Path, model_id: str
) -> dict[str, Any]:
    from kiosk.lab.train.release import build_release

    record = json.loads(record_path.read_text(encoding="utf-8"))
    cfg = record["config"]
    findings = [(f["code"], f["label"]) for f in record["findings"]]
    provenance = {
        "data": KERMANY_PROVENANCE if cfg.get("labels_csv") is None else str(cfg["labels_csv"]),
        "split": f"{model_id}.split.csv",
        "split_sha256": record.get("split_sha256", {}),
        "training_run": record_path.name,
        "weights": weights.name,
    }
    res = build_release(
        weights,
        out / f"{model_id}.split.csv",
        data_root,
        out,
        model_id,
        findings,
        image_size=int(cfg["image_size"]),
        threads=int(cfg.get("threads", 2)),
        provenance=provenance,
        licence=LICENCE,
        card=f"{model_id}.md",
    )
    release = {
        "port_check": asdict(res.export.port),
        "thresholds": list(res.thresholds),
        "threshold_rule": "Youden's J on the validation split (int8 model)",
        "ood_threshold": res.ood_threshold,
        "ood_val_flagged": res.ood_val_flagged,
        "int8_bytes": res.export.int8_tflite.stat().st_size,
        "f32_bytes": res.export.f32_tflite.stat().st_size,
    }
    record["release"] = release
    record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return release


@click.command("train")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Kermany-style folder with NORMAL/ and PNEUMONIA/.",
)
@click.option(
    "--labels-csv",
    type=click.Path(path_type=Path),
    default=None,
    help="CheXpert/MIMIC-style CSV: Path column + finding columns (1/0/-1/blank).",
)
@click.option("--finding", "findings", multiple=True, help="Finding column to use (repeat).")
@click.option(
    "--uncertain",
    type=click.Choice(["ones", "zeros", "ignore"]),
    default="ignore",
    show_default=True,
    help="What -1 (uncertain) labels become.",
)
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_MODELS, show_default=True)
@click.option("--model-id", default=DEFAULT_ID, show_default=True)
@click.option("--epochs", type=int, default=7, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option(
    "--freeze-blocks",
    type=int,
    default=5,
    show_default=True,
    help="MBConv blocks (of 16) kept frozen with the stem.",
)
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option("--max-minutes", type=float, default=50.0, show_default=True)
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--no-pretrained", is_flag=True, help="Start from random weights (tests only).")
@click.option("--no-release", is_flag=True, help="Only train; skip export/threshold/OOD.")
def train_command(
    data: Path | None,
    labels_csv: Path | None,
    findings: tuple[str, ...],
    uncertain: str,
    out: Path,
    model_id: str,
    epochs: int,
    batch_size: int,
    freeze_blocks: int,
    image_size: int,
    max_minutes: float,
    seed: int,
    threads: int,
    no_pretrained: bool,
    no_release: bool,
) -> None:
    """Train, export (int8 + float32 TFLite), choose thresholds and fit the OOD reference."""
    _need_train_extra()
    from kiosk.lab.train.trainer import TrainConfig, train

    if data is None and labels_csv is None:
        data = DEFAULT_DATA
    if data is not None and not data.is_dir():
        raise click.ClickException(
            f"training data folder {data} does not exist: pass --data (the kermany-train "
            "folder) or --labels-csv"
        )
    cfg = TrainConfig(
        out_dir=out,
        model_id=model_id,
        data=data if labels_csv is None else None,
        labels_csv=labels_csv,
        findings=findings,
        uncertain=uncertain,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        freeze_blocks=freeze_blocks,
        max_minutes=max_minutes,
        seed=seed,
        threads=threads,
        pretrained=not no_pretrained,
    )
    try:
        res = train(cfg)
        click.echo(
            f"trained {model_id} in {res.seconds / 60:.1f} min: best epoch "
            f"{res.best_epoch}, val AUROC {res.best_val_auroc:.4f}"
        )
        if not no_release:
            root = labels_csv.parent if labels_csv is not None else data
            assert root is not None
            rel = _release(res.state_path, res.record_path, root, out, model_id)
            click.echo(
                f"exported: thresholds {rel['thresholds']}, OOD threshold "
                f"{rel['ood_threshold']:.2f}; now run `kiosk model evaluate`"
            )
    except KioskError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("export")
@click.option(
    "--models",
    "models_dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_MODELS,
    show_default=True,
    help="Folder with <id>.pt, <id>.run.json and <id>.split.csv.",
)
@click.option("--model-id", default=DEFAULT_ID, show_default=True)
@click.option("--data", type=click.Path(path_type=Path), default=DEFAULT_DATA, show_default=True)
def export_command(models_dir: Path, model_id: str, data: Path) -> None:
    """Re-export committed weights: TFLite pair, manifests, thresholds, OOD reference."""
    _need_train_extra()
    if not data.is_dir():
        raise click.ClickException(f"data folder {data} does not exist: pass --data")
    try:
        rel = _release(
            models_dir / f"{model_id}.pt",
            models_dir / f"{model_id}.run.json",
            data,
            models_dir,
            model_id,
        )
    except (KioskError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(rel, indent=2))


@click.command("evaluate")
@click.option(
    "--models",
    "models_dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_MODELS,
    show_default=True,
)
@click.option(
    "--model-id",
    "model_ids",
    multiple=True,
    default=[DEFAULT_ID],
    show_default=True,
    help="Repeat to evaluate several models side by side (e.g. the shipped and a new one).",
)
@click.option("--data", type=click.Path(path_type=Path), default=DEFAULT_DATA, show_default=True)
@click.option("--resamples", type=int, default=2000, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--update-card", is_flag=True, help="Write the tables into the model card.")
def evaluate_command(
    models_dir: Path,
    model_ids: tuple[str, ...],
    data: Path,
    resamples: int,
    threads: int,
    as_json: bool,
    update_card: bool,
) -> None:
    """Reproduce the model card's numbers from the committed models, split CSV and data."""
    from kiosk.lab.train.evaluate import evaluate, render_markdown, render_side_by_side
    from kiosk.lab.train.evaluate import update_card as write_card

    if not data.is_dir():
        raise click.ClickException(
            f"the evaluation data {data} is not there: the card's numbers need the Kermany "
            "train images named in the split CSV; pass --data FOLDER"
        )
    reports = {}
    for model_id in model_ids:
        try:
            reports[model_id] = evaluate(
                models_dir, model_id, data, resamples=resamples, threads=threads
            )
        except KioskError as exc:
            raise click.ClickException(str(exc)) from exc
    for model_id, report in reports.items():
        text = render_markdown(report)
        if as_json and len(reports) == 1:
            click.echo(json.dumps(asdict(report), indent=2, default=str))
        elif not as_json:
            click.echo(text if len(reports) == 1 else f"## {model_id}\n\n{text}")
        if update_card:
            write_card(models_dir / f"{model_id}.md", text)
            click.echo(f"updated {model_id}.md")
    if as_json and len(reports) > 1:
        click.echo(json.dumps({k: asdict(v) for k, v in reports.items()}, indent=2, default=str))
    elif len(reports) > 1:
        click.echo(render_side_by_side(reports))


@click.command("engines")
@click.option("--runs", type=int, default=50, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option(
    "--models",
    "models_dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_MODELS,
    show_default=True,
)
@click.option("--data", type=click.Path(path_type=Path), default=DEFAULT_DATA, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def engines_command(runs: int, threads: int, models_dir: Path, data: Path, as_json: bool) -> None:
    """Median latency of the bundled network on LiteRT, ONNX Runtime and PyTorch."""
    _need_train_extra()
    from kiosk.lab.train.engines import compare_engines, count_macs, render_table

    try:
        timings = compare_engines(runs, threads, models_dir=models_dir, data_dir=data)
    except KioskError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps([asdict(t) for t in timings], indent=2))
    else:
        click.echo(render_table(timings, count_macs()))
