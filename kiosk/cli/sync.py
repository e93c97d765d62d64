"""`kiosk sync push|status`, `kiosk export`, `kiosk hub serve|import|add-device|devices|...`.

Thin: every command calls kiosk.sync. Exit status 0 when the work is done, 1 when a push
stopped with results still waiting (nothing is lost: the next run continues), 2 for
configuration and system errors (a KioskError, printed with its fix).
"""

from __future__ import annotations

import contextlib
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
        finally:
            store.close()
    except KioskError as exc:
        _fail(exc)
        return
    counts["hub"] = config.sync.url
    if as_json:
        click.echo(json.dumps(counts))
        return
    click.echo(f"hub:     {config.sync.url or '(none configured)'}")
    click.echo(f"pending: {counts['pending']}")
    click.echo(f"failed:  {counts['failed']}")
    click.echo(f"sent:    {counts['sent']}")
    if counts["last_error"]:
        click.echo(f"last error ({counts['last_error_at']}): {counts['last_error']}")


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
@click.pass_obj
def export_cmd(obj: Any, since: str, until: str | None, fmt: Any, out: Path) -> None:
    """Write results to OUT (+ OUT.manifest.json) for a USB stick; `kiosk hub import` reads it."""
    from kiosk.store import Store
    from kiosk.sync.export import export_results, manifest_path

    try:
        config = obj.config
        store = Store(config.db_path)
        try:
            manifest = export_results(store, config, since=since, until=until, fmt=fmt, out=out)
        finally:
            store.close()
    except KioskError as exc:
        _fail(exc)
        return
    click.echo(f"wrote {manifest.counts['results']} results to {out} and {manifest_path(out).name}")


@click.group("hub")
def hub_group() -> None:
    """The supervisor's hub: receive pushes, import exports, show a summary."""


def _hub_store(obj: Any) -> Any:
    from kiosk.sync.hub import HUB_DB_NAME, HubStore

    return HubStore(obj.config.data_dir / HUB_DB_NAME)


@hub_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, type=int, show_default=True, help="0 = any free port.")
@click.option("--threads", default=4, type=int, show_default=True)
@click.pass_obj
def hub_serve(obj: Any, host: str, port: int, threads: int) -> None:
    """Run the hub (waitress). Put an HTTPS reverse proxy in front of it."""
    from waitress import create_server

    from kiosk.sync.hub import MAX_CONTENT_LENGTH_BYTES, create_hub_app

    try:
        app = create_hub_app(obj.config.data_dir, store=_hub_store(obj))
    except KioskError as exc:
        _fail(exc)
        return
    try:
        server: Any = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            max_request_body_size=2 * MAX_CONTENT_LENGTH_BYTES,
        )
    except OSError as exc:
        _fail(KioskError(f"cannot listen on {host}:{port} ({exc})", "choose another --port"))
        return
    click.echo(f"hub listening on http://{host}:{server.effective_port}", err=False)
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


@hub_group.command("add-device")
@click.argument("name")
@click.pass_obj
def hub_add_device(obj: Any, name: str) -> None:
    """Register kiosk NAME (its device_id) and print its new token, once."""
    try:
        hub = _hub_store(obj)
        token = hub.add_device(name)
        hub.close()
    except KioskError as exc:
        _fail(exc)
        return
    click.echo(token)
    click.echo(
        f"set this as sync.token on kiosk {name} (device_id = {name}); "
        "it is not shown again and only its hash is stored",
        err=True,
    )


@hub_group.command("devices")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def hub_devices(obj: Any, as_json: bool) -> None:
    """Kiosks known to the hub, with last contact and counts."""
    try:
        hub = _hub_store(obj)
        devices = hub.devices()
        hub.close()
    except KioskError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(devices))
        return
    for d in devices:
        click.echo(
            f"{d['name']}: {d['results']} results, last contact {d['last_contact_at'] or 'never'}"
            f", reported waiting {d['reported_pending']}"
        )


@hub_group.command("admin-token")
@click.pass_obj
def hub_admin_token(obj: Any) -> None:
    """Print a new password for the supervisor page (user 'supervisor'); the old one stops."""
    try:
        hub = _hub_store(obj)
        token = hub.set_admin_token()
        hub.close()
    except KioskError as exc:
        _fail(exc)
        return
    click.echo(token)


@hub_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def hub_import(obj: Any, path: Path) -> None:
    """Import a kiosk export (data file or its manifest); importing twice adds nothing."""
    from kiosk.sync.export import import_export

    try:
        hub = _hub_store(obj)
        try:
            report = import_export(hub, path)
        finally:
            hub.close()
    except KioskError as exc:
        _fail(exc)
        return
    again = " (this file was imported before)" if report.already_imported else ""
    click.echo(
        f"{report.device_id}: {report.results} results read, {report.inserted} new, "
        f"{report.updated} updated, {report.unchanged} already here{again}"
    )
    if report.rejected:
        click.echo(f"error: {report.rejected} results belong to another device", err=True)
        sys.exit(EXIT_INCOMPLETE)


COMMANDS: list[click.Command] = [sync_group, export_cmd, hub_group]
