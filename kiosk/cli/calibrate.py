"""`kiosk calibrate LABELS.csv` and `kiosk calibration list|show|activate|rollback|off`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kiosk.cli import CliContext
from kiosk.errors import CalibrationError
from kiosk.model.manifest import Manifest
from kiosk.store import Store

if TYPE_CHECKING:
    from kiosk.calibration.records import CalibrationRecord

COMMANDS: list[click.Command] = []

METRIC_KEYS = ("n", "positives", "ece", "brier", "nll", "auroc", "sensitivity", "specificity")
EXIT_NOT_ACTIVATED = 3
"""`kiosk calibrate --activate` stored the record but refused to activate it (reasons printed)."""


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return "n/a" if value is None else str(value)


def _interval(m: dict[str, object], key: str) -> str:
    lo, hi = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
    if isinstance(lo, float) and isinstance(hi, float):
        return f" [{lo:.3f}, {hi:.3f}]"
    return ""


def print_outcome(record: CalibrationRecord, activated: bool, refusals: list[str]) -> None:
    """The human summary of a fitted record (shared by `calibrate` and `calibration show`)."""
    state = "active" if activated else "stored, not active"
    click.echo(f"calibration {record.id} for {record.model_id} ({state})")
    if record.data.get("summary"):
        click.echo(str(record.data["summary"]))
    for code in record.codes:
        click.echo(f"\n{code}: {record.methods[code]} — {record.reasons[code]}")
        m = record.metrics[code]
        t = record.thresholds[code]
        after = m["after"]
        click.echo(f"  threshold {t['value']:.4f} ({t['rule']})")
        if t.get("target_sensitivity"):
            click.echo(
                f"  at target sensitivity {t['target_sensitivity']:.2f}: held-out sensitivity "
                f"{_fmt(after.get('sensitivity'))}{_interval(after, 'sensitivity')}, expected "
                f"specificity {_fmt(after.get('specificity'))}{_interval(after, 'specificity')}"
            )
        click.echo(f"  {'metric':12} {'before':>10} {'after':>10}   (held-out, nested CV)")
        for key in METRIC_KEYS:
            click.echo(f"  {key:12} {_fmt(m['before'].get(key)):>10} {_fmt(after.get(key)):>10}")
    intervals = record.evaluation.get("intervals")
    if intervals:
        click.echo(f"\n{intervals}.")
    for problem in refusals:
        click.echo(f"NOT ACTIVATED: {problem}", err=True)


@click.command()
@click.argument("labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--method",
    type=click.Choice(["auto", "temperature", "platt", "isotonic", "refit"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--activate",
    is_flag=True,
    help="Use this calibration from now on, if it passes the checks (exit 3 when refused).",
)
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
    obj: CliContext,
    labels_csv: Path,
    method: str,
    activate: bool,
    input_kind: str,
    target_sensitivity: float,
    threshold_rule: str,
    created_by: str,
    as_json: bool,
) -> None:
    """Fit calibrators on labelled photos (CSV: path,<finding>...) and store the record.

    Metrics are measured by nested cross-validation. With --activate, a calibration whose
    held-out NLL or ECE is worse than none (or whose NLL gain is within its standard error),
    or with fewer than 50 cases or 10 positives or negatives per finding, is stored but not
    activated: the reasons are printed and the exit status is 3.
    """
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
        outcome = fit_and_save(
            appliance.store,
            obj.config.data_dir,
            manifest,
            cases,
            method=method,
            target_sensitivity=target_sensitivity,
            threshold_rule=threshold_rule,
            created_by=created_by,
            activate=activate,
            notes=f"kiosk calibrate {labels_csv.name}",
        )
    finally:
        appliance.close()
    record = outcome.record
    if as_json:
        summary = {
            "id": record.id,
            "model": {"id": record.model_id, "sha256": record.model_sha256},
            "activated": outcome.activated,
            "refusals": outcome.refusals,
            "methods": record.methods,
            "reasons": record.reasons,
            "thresholds": record.thresholds,
            "metrics": record.metrics,
            "evaluation": record.evaluation,
            "labelled": cases.labelled,
            "used": cases.used,
            "skipped_by_reason": cases.skipped_by_reason(),
            "skipped": [
                {"source": s.source, "reason": s.reason, "category": s.category}
                for s in cases.skipped
            ],
            "diagram": str(outcome.diagram),
        }
        click.echo(json.dumps(summary, default=str))
    else:
        print_outcome(record, outcome.activated, outcome.refusals)
        click.echo(f"\nreliability diagram: {outcome.diagram}")
        if not activate:
            click.echo(f"activate with: kiosk calibration activate {record.id}")
    if outcome.refusals:
        sys.exit(EXIT_NOT_ACTIVATED)


@click.group()
def calibration() -> None:
    """List, show, activate and roll back calibration records."""


def _factory(manifest: Manifest) -> CalibrationRecord | None:
    from kiosk.calibration.factory import load_factory

    return load_factory(manifest)


def _without_site(manifest: Manifest) -> str:
    """What new results get when no site calibration is active."""
    factory = _factory(manifest)
    if factory is None:
        return "none (raw model probabilities)"
    return f"none; the {factory.label} calibration {factory.id} applies"


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
        click.echo("no site calibrations yet: run `kiosk calibrate LABELS.csv`")
    for r in rows:
        mark = "*" if r["active"] else " "
        click.echo(f"{mark} {r['id']}  {r['created_at']}  by {r['created_by']}  {r['method']}")
    factory = _factory(manifest)
    if factory is not None:
        mark = " " if any(r["active"] for r in rows) else "*"
        click.echo(
            f"{mark} {factory.id}  {factory.created_at}  {factory.label}: shipped with the model, "
            "used while no site calibration is active"
        )


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
    """Make a record the active one (it must belong to the current model file and pass the
    checks: held-out NLL and ECE no worse than none, enough cases of each class)."""
    from kiosk.calibration.workflow import activate as activate_checked

    store, manifest = _store_and_manifest(obj)
    try:
        activate_checked(store, calibration_id, manifest, actor=actor)
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
    click.echo(f"active calibration: {now_active or _without_site(manifest)}")


@calibration.command()
@click.option("--by", "actor", default="cli")
@click.pass_obj
def off(obj: CliContext, actor: str) -> None:
    """Use no site calibration for the current model (its factory one, if it ships one)."""
    store, manifest = _store_and_manifest(obj)
    try:
        store.deactivate_calibrations(manifest.sha256, actor=actor)
    finally:
        store.close()
    click.echo(f"no site calibration active: {_without_site(manifest)}")


COMMANDS.extend([calibrate, calibration])
