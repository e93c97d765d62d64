"""`kiosk calibrate LABELS.csv` and `kiosk calibration list|show|activate|rollback|off`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from kiosk.cli import CliContext
from kiosk.errors import CalibrationError
from kiosk.model.manifest import Manifest
from kiosk.store import Store

COMMANDS: list[click.Command] = []

METRIC_KEYS = ("n", "positives", "ece", "brier", "nll", "auroc", "sensitivity", "specificity")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return "n/a" if value is None else str(value)


@click.command()
@click.argument("labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--method",
    type=click.Choice(["auto", "temperature", "platt", "isotonic", "refit"]),
    default="auto",
    show_default=True,
)
@click.option("--activate", is_flag=True, help="Use this calibration from now on.")
@click.option(
    "--input",
    "input_kind",
    type=click.Choice(["photo", "digital", "auto"]),
    default="photo",
    show_default=True,
)
@click.option("--target-sensitivity", type=click.FloatRange(0.5, 0.999), default=0.90)
@click.option(
    "--threshold-rule", type=click.Choice(["sensitivity", "youden"]), default="sensitivity"
)
@click.option("--by", "created_by", default="cli", help="Who made it (kept in the record).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def calibrate(
    obj,
    labels_csv: Path,
    method: str,
    activate: bool,
    input_kind: str,
    target_sensitivity: float,
    threshold_rule: str,
    created_by: str,
    as_json: bool,
) -> None:
    """Fit calibrators on labelled photos (CSV: path,<finding>...) and store the record."""
    from kiosk.app.appliance import Appliance
    from kiosk.calibration.workflow import collect_from_photos, fit_and_save, read_labels_csv

    appliance = Appliance.open(obj.config)
    try:
        manifest = appliance.classifier.manifest
        rows = read_labels_csv(labels_csv, manifest.finding_codes)
        cases = collect_from_photos(
            appliance.pipeline,
            rows,
            input_kind=input_kind,  # type: ignore[arg-type]
        )
        record, diagram = fit_and_save(
            appliance.store,
            obj.config.data_dir,
            manifest,
            cases,
            method=method,
            target_sensitivity=target_sensitivity,
            threshold_rule=threshold_rule,
            created_by=created_by,
            activate=activate,
        )
    finally:
        appliance.close()
    summary = {
        "id": record.id,
        "model": {"id": record.model_id, "sha256": record.model_sha256},
        "activated": activate,
        "methods": record.methods,
        "reasons": record.reasons,
        "thresholds": record.thresholds,
        "metrics": record.metrics,
        "used": int(cases.logits.shape[0]),
        "skipped": [{"source": s, "reason": r} for s, r in cases.skipped],
        "diagram": str(diagram),
    }
    if as_json:
        click.echo(json.dumps(summary, default=str))
        return
    state = "active" if activate else "stored, not active"
    click.echo(f"calibration {record.id} for {record.model_id} ({state})")
    click.echo(f"photos used: {summary['used']}, skipped: {len(cases.skipped)}")
    for source, reason in cases.skipped[:10]:
        click.echo(f"  skipped {source}: {reason}")
    for code in record.codes:
        click.echo(f"\n{code}: {record.methods[code]} — {record.reasons[code]}")
        t = record.thresholds[code]
        click.echo(f"  threshold {t['value']:.4f} ({t['rule']})")
        click.echo(f"  {'metric':12} {'before':>10} {'after':>10}   (held-out folds)")
        m = record.metrics[code]
        for key in METRIC_KEYS:
            click.echo(
                f"  {key:12} {_fmt(m['before'].get(key)):>10} {_fmt(m['after'].get(key)):>10}"
            )
    click.echo(f"\nreliability diagram: {diagram}")
    if not activate:
        click.echo(f"activate with: kiosk calibration activate {record.id}")


@click.group()
def calibration() -> None:
    """List, show, activate and roll back calibration records."""


def _store_and_manifest(obj: CliContext) -> tuple[Store, Manifest]:
    from kiosk.app.appliance import load_manifest
    from kiosk.store import Store

    return Store(obj.config.db_path), load_manifest(obj.config)


@calibration.command("list")
@click.option("--all-models", is_flag=True, help="Include records of other model files.")
@click.pass_obj
def list_cmd(obj: CliContext, all_models: bool) -> None:
    """Calibration records of the current model, newest first."""
    store, manifest = _store_and_manifest(obj)
    try:
        rows = store.list_calibrations(None if all_models else manifest.sha256)
    finally:
        store.close()
    if not rows:
        click.echo("no calibrations yet: run `kiosk calibrate LABELS.csv`")
    for r in rows:
        mark = "*" if r["active"] else " "
        click.echo(f"{mark} {r['id']}  {r['created_at']}  by {r['created_by']}  {r['method']}")


@calibration.command()
@click.argument("calibration_id")
@click.pass_obj
def show(obj: CliContext, calibration_id: str) -> None:
    """Print one record as JSON."""
    store, _ = _store_and_manifest(obj)
    try:
        record = store.get_calibration(calibration_id)
    finally:
        store.close()
    if record is None:
        raise CalibrationError(f"no calibration {calibration_id}", "see `kiosk calibration list`")
    click.echo(json.dumps(record, indent=2))


@calibration.command()
@click.argument("calibration_id")
@click.option("--by", "actor", default="cli")
@click.pass_obj
def activate(obj: CliContext, calibration_id: str, actor: str) -> None:
    """Make a record the active one (it must belong to the current model file)."""
    store, manifest = _store_and_manifest(obj)
    try:
        record = store.get_calibration(calibration_id)
        if record is None:
            raise CalibrationError(
                f"no calibration {calibration_id}", "see `kiosk calibration list`"
            )
        if record["model_sha256"] != manifest.sha256:
            raise CalibrationError(
                f"calibration {calibration_id} belongs to model {record['model_id']} "
                f"(sha256 {record['model_sha256'][:12]}…), not the current model "
                f"{manifest.id} ({manifest.sha256[:12]}…)",
                "fit a new calibration for the current model",
            )
        store.activate_calibration(calibration_id, actor=actor)
    finally:
        store.close()
    click.echo(f"{calibration_id} is now active; restart the kiosk service to use it")


@calibration.command()
@click.option("--by", "actor", default="cli")
@click.pass_obj
def rollback(obj: CliContext, actor: str) -> None:
    """Go back to the calibration that was active before the current one (or none)."""
    store, manifest = _store_and_manifest(obj)
    try:
        now_active = store.rollback_calibration(manifest.sha256, actor=actor)
    finally:
        store.close()
    click.echo(f"active calibration: {now_active or 'none (raw model probabilities)'}")


@calibration.command()
@click.option("--by", "actor", default="cli")
@click.pass_obj
def off(obj: CliContext, actor: str) -> None:
    """Use no calibration for the current model (raw model probabilities)."""
    store, manifest = _store_and_manifest(obj)
    try:
        store.deactivate_calibrations(manifest.sha256, actor=actor)
    finally:
        store.close()
    click.echo("no calibration active")


COMMANDS.extend([calibrate, calibration])
