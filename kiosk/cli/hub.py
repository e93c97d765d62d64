"""`kiosk hub serve|migrate|add-device|devices|admin-token|import|copy|fleet`.

Thin: every command calls kiosk.hub. The database is ``--database-url``, else
``hub.database_url`` (env ``KIOSK_HUB_DATABASE_URL``), else SQLite ``hub.db`` in
``KIOSK_DATA_DIR``. Exit status 0 when the work is done, 1 when an import left results out,
2 for configuration and system errors (a KioskError, printed with its fix).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kiosk.errors import KioskError

EXIT_INCOMPLETE = 1
EXIT_SYSTEM_ERROR = 2

F = TypeVar("F", bound=Callable[..., Any])


def _fail(exc: KioskError) -> None:
    # SystemExit, not click's Exit: `kiosk.cli.main` runs click with standalone_mode=False.
    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_SYSTEM_ERROR)


def database_option(func: F) -> F:
    return click.option(
        "--database-url",
        default=None,
        metavar="URL",
        help="sqlite:///PATH or postgresql://USER@HOST/DB "
        "(default: hub.database_url, else hub.db in KIOSK_DATA_DIR).",
    )(func)


def _url(obj: Any, flag: str | None) -> str:
    from kiosk.hub.database import resolve_url

    config = obj.config
    return resolve_url(flag, config.hub.database_url, config.data_dir)


def _hub_store(obj: Any, flag: str | None) -> Any:
    from kiosk.hub.store import HubStore

    return HubStore(_url(obj, flag))


@click.group("hub")
def hub_group() -> None:
    """The supervisor's hub: receive pushes, import exports, show the fleet."""


@hub_group.command("serve")
@database_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, type=int, show_default=True, help="0 = any free port.")
@click.option("--threads", default=4, type=int, show_default=True)
@click.pass_obj
def hub_serve(obj: Any, database_url: str | None, host: str, port: int, threads: int) -> None:
    """Run the hub (waitress). Put an HTTPS reverse proxy in front of it."""
    from waitress import create_server

    from kiosk.hub.app import MAX_CONTENT_LENGTH_BYTES, create_hub_app

    try:
        store = _hub_store(obj, database_url)
        app = create_hub_app(store)
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
    click.echo(f"hub listening on http://{host}:{server.effective_port}")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    store.close()


@hub_group.command("migrate")
@database_option
@click.option("--check", is_flag=True, help="Only list pending migrations; exit 1 if any.")
@click.pass_obj
def hub_migrate(obj: Any, database_url: str | None, check: bool) -> None:
    """Bring the hub database to the newest schema (also done by `serve` at start)."""
    from kiosk.hub import migrate
    from kiosk.hub.database import redact
    from kiosk.hub.store import HubStore

    try:
        url = _url(obj, database_url)
        store = HubStore(url, upgrade=False)
        try:
            todo = migrate.pending(store.engine)
            if check:
                click.echo(f"{redact(url)}: pending migrations: {', '.join(todo) or 'none'}")
                if todo:
                    sys.exit(EXIT_INCOMPLETE)
                return
            done = migrate.upgrade(store.engine)
            head = migrate.current_revision(store.engine)
        finally:
            store.close()
    except KioskError as exc:
        _fail(exc)
        return
    applied = f"applied {', '.join(done)}" if done else "nothing to do"
    click.echo(f"{redact(url)}: at migration {head} ({applied})")


@hub_group.command("add-device")
@database_option
@click.argument("name")
@click.pass_obj
def hub_add_device(obj: Any, database_url: str | None, name: str) -> None:
    """Register kiosk NAME (its device_id) and print its new token, once."""
    try:
        hub = _hub_store(obj, database_url)
        try:
            token = hub.add_device(name)
        finally:
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
@database_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def hub_devices(obj: Any, database_url: str | None, as_json: bool) -> None:
    """Kiosks known to the hub, with last contact and counts."""
    try:
        hub = _hub_store(obj, database_url)
        try:
            devices = hub.devices()
        finally:
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
@database_option
@click.pass_obj
def hub_admin_token(obj: Any, database_url: str | None) -> None:
    """Print a new password for the supervisor page (user 'supervisor'); the old one stops."""
    try:
        hub = _hub_store(obj, database_url)
        try:
            token = hub.set_admin_token()
        finally:
            hub.close()
    except KioskError as exc:
        _fail(exc)
        return
    click.echo(token)


@hub_group.command("import")
@database_option
@click.option(
    "--device",
    required=True,
    metavar="NAME",
    help="The kiosk the export comes from (its device_id); must match the manifest.",
)
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def hub_import(obj: Any, database_url: str | None, device: str, path: Path) -> None:
    """Import a kiosk export (data file or its manifest); importing twice adds nothing."""
    from kiosk.hub.importer import import_export

    try:
        hub = _hub_store(obj, database_url)
        try:
            report = import_export(hub, path, device)
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


@hub_group.command("copy")
@click.option("--from", "source", required=True, metavar="URL", help="The hub to copy.")
@click.option("--to", "dest", required=True, metavar="URL", help="The database to fill.")
def hub_copy(source: str, dest: str) -> None:
    """Copy a whole hub to another database (e.g. SQLite to PostgreSQL); safe to re-run."""
    from kiosk.hub.copy import copy_hub

    try:
        report = copy_hub(source, dest)
    except KioskError as exc:
        _fail(exc)
        return
    for table, n in report.source_rows.items():
        click.echo(f"{table}: {n} rows ({report.copied_rows[table]} new in the destination)")
    click.echo("copy verified: same rows and the same results on both sides")


@hub_group.command("fleet")
@database_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def hub_fleet(obj: Any, database_url: str | None, as_json: bool) -> None:
    """Each kiosk's state, and which need a visit (the /fleet page as text or JSON)."""
    from kiosk.hub.fleet import fleet

    try:
        hub = _hub_store(obj, database_url)
        try:
            kiosks = fleet(hub)
        finally:
            hub.close()
    except KioskError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps([k.to_dict() for k in kiosks]))
        return
    for k in kiosks:
        visit = "; ".join(k.needs_visit) or "ok"
        click.echo(
            f"{k.name}: last contact {k.last_contact_at or 'never'}, "
            f"software {k.kiosk_version or '?'}, model {k.model_id or '?'} "
            f"{k.model_version or ''}, waiting {k.backlog if k.backlog is not None else '?'}: "
            f"{visit}"
        )


COMMANDS: list[click.Command] = [hub_group]
