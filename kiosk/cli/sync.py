"""`kiosk sync push|status`, `kiosk export` (the kiosk's side; `kiosk hub ...` is cli/hub.py).

Thin: every command calls kiosk.sync. Exit status 0 when the work is done, 1 when a push
stopped with results still waiting (nothing is lost: the next run continues), 2 for
configuration and system errors (a KioskError, printed with its fix).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from kiosk.errors import KioskError

logger = logging.getLogger(__name__)

EXIT_INCOMPLETE = 1
EXIT_SYSTEM_ERROR = 2
QUARANTINE_SHOWN = 20


def _fail(exc: KioskError) -> None:
    # SystemExit, not click's Exit: `kiosk.cli.main` runs click with standalone_mode=False,
    # where click returns an Exit's code instead of exiting with it.
    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_SYSTEM_ERROR)


@click.group("sync")
def sync_group() -> None:
    """Send stored results to the supervisor's hub."""


@sync_group.command("push")
@click.option("--max-batches", type=int, default=None, help="Stop after this many batches.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def sync_push(obj: Any, max_batches: int | None, as_json: bool) -> None:
    """Push every waiting result to the hub (one run; safe to interrupt at any moment)."""
    from kiosk.store import Store
    from kiosk.sync.client import push

    try:
        config = obj.config
        store = Store(config.db_path)
        try:
            report = push(store, config, max_batches=max_batches)
        finally:
            store.close()
    except KioskError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        click.echo(
            f"sent {report.sent} results in {report.batches} batches; "
            f"{report.remaining} still waiting"
        )
    if not report.complete:
        if report.error:
            click.echo(f"error: {report.error}", err=True)
        click.echo(
            "nothing was lost: waiting results stay in the outbox and go with the next push",
            err=True,
        )
        sys.exit(EXIT_INCOMPLETE)


@sync_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_obj
def sync_status(obj: Any, as_json: bool) -> None:
    """Results waiting, failed and sent, and the last error."""
    from kiosk.store import Store

    try:
        config = obj.config
        store = Store(config.db_path)
        try:
            counts = store.outbox_counts()
            quarantined = store.quarantined(QUARANTINE_SHOWN)
        finally:
            store.close()
    except KioskError as exc:
        _fail(exc)
        return
    counts["hub"] = config.sync.url
    if as_json:
        click.echo(json.dumps({**counts, "quarantined_results": quarantined}))
        return
    click.echo(f"hub:     {config.sync.url or '(none configured)'}")
    click.echo(f"pending: {counts['pending']}")
    click.echo(f"failed:  {counts['failed']}")
    click.echo(f"sent:    {counts['sent']}")
    click.echo(f"quarantined: {counts['quarantined']}")
    if counts["last_error"]:
        click.echo(f"last error ({counts['last_error_at']}): {counts['last_error']}")
    for row in quarantined:
        click.echo(f"quarantined {row['result_id']} ({row['quarantined_at']}): {row['error']}")
    if quarantined:
        click.echo(
            "quarantined results are not sent: they break the wire schema as stored; "
            "report them with `kiosk sync status --json`",
            err=True,
        )


@click.command("export")
@click.option("--since", required=True, help="First day or time (UTC), e.g. 2026-11-01.")
@click.option("--until", default=None, help="Last day (inclusive) or time (exclusive), UTC.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "sqlite", "fhir"]),
    default="jsonl",
    show_default=True,
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Data file."
)
@click.option("--force", is_flag=True, help="Replace OUT (and its manifest) if they exist.")
@click.pass_obj
def export_cmd(obj: Any, since: str, until: str | None, fmt: Any, out: Path, force: bool) -> None:
    """Write results to OUT (+ OUT.manifest.json) for a USB stick; `kiosk hub import` reads it.

    An existing OUT is replaced only with --force; the kiosk's own database never is."""
    from kiosk.store import Store
    from kiosk.sync.export import export_results, manifest_path

    try:
        config = obj.config
        store = Store(config.db_path)
        try:
            manifest = export_results(
                store, config, since=since, until=until, fmt=fmt, out=out, overwrite=force
            )
        finally:
            store.close()
    except KioskError as exc:
        _fail(exc)
        return
    click.echo(f"wrote {manifest.counts['results']} results to {out} and {manifest_path(out).name}")


COMMANDS: list[click.Command] = [sync_group, export_cmd]
