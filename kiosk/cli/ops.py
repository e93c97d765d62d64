"""`kiosk doctor`, `kiosk bench`, `kiosk retention run`: the technician's commands."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from kiosk.cli import CliContext
from kiosk.errors import KioskError

COMMANDS: list[click.Command] = []


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--no-camera", is_flag=True, help="Skip opening the camera (it may be in use).")
@click.pass_obj
def doctor(obj: CliContext, as_json: bool, no_camera: bool) -> None:
    """Check config, data directory, disk, database, model and camera; say how to fix problems."""
    from kiosk.app.doctor import run_checks

    checks = run_checks(obj.config, camera=not no_camera)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        for c in checks:
            mark = {"ok": "OK  ", "warn": "WARN", "fail": "FAIL"}[c.status]
            click.echo(f"[{mark}] {c.name}: {c.detail}")
            if c.fix and c.status != "ok":
                click.echo(f"       fix: {c.fix}")
    if any(c.status == "fail" for c in checks):
        raise click.exceptions.Exit(1)


@click.command()
@click.option("--runs", default=30, show_default=True, help="Repetitions per stage.")
@click.option(
    "--soak", default=0, show_default=True, help="Full analyses to run while sampling memory."
)
@click.option("--engines", is_flag=True, help="Also compare inference engines (train extra).")
@click.option(
    "--capture",
    "capture_path",
    is_flag=True,
    help="The capture path instead: 12 MP bracket in memory -> result committed.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def bench(
    obj: CliContext, runs: int, soak: int, engines: bool, capture_path: bool, as_json: bool
) -> None:
    """Per-stage latency medians, model load time and memory on this machine."""
    if capture_path:
        from kiosk.lab.capture_bench import format_capture_report, run_capture_bench

        capture_report = run_capture_bench(obj.config, runs=min(runs, 15))
        if engines:  # the engines in the same run, to compare the shipped model's speed
            capture_report["engines"] = _engine_timings(runs, obj.config.threads)
        click.echo(
            json.dumps(capture_report, indent=2)
            if as_json
            else format_capture_report(capture_report)
        )
        return
    from kiosk.lab.bench import format_report, run_bench

    report = run_bench(obj.config, runs=runs, soak=soak)
    if engines:
        report["engines"] = _engine_timings(runs, obj.config.threads)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


def _engine_timings(runs: int, threads: int) -> list[dict[str, Any]]:
    """``kiosk model engines``' table as dicts (the train extra exports and quantises)."""
    try:
        from kiosk.lab.train.engines import compare_engines
    except ImportError as exc:
        raise KioskError(
            f"engine comparison needs the train extra ({exc})",
            "pip install 'lightbox-kiosk[train]'",
        ) from exc
    return [dataclasses.asdict(e) for e in compare_engines(runs=runs, threads=threads)]


@click.group()
def retention() -> None:
    """Delete old film images (results are kept)."""


@retention.command("run")
@click.option(
    "--days",
    type=click.IntRange(min=0),
    default=None,
    help="Override retention.image_days (0 = keep every image).",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.pass_obj
def retention_run(obj: CliContext, days: int | None, dry_run: bool) -> None:
    """Delete film images older than the configured number of days."""
    from kiosk.app.retention import purge_images
    from kiosk.store import Store

    config = obj.config
    store = Store(config.db_path)
    try:
        report = purge_images(
            store,
            config.data_dir,
            days if days is not None else config.retention.image_days,
            dry_run=dry_run,
        )
    finally:
        store.close()
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {report.images} images ({report.bytes / 1e6:.1f} MB), kept all results")


COMMANDS.extend([doctor, bench, retention])
