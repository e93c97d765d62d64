"""The ``kiosk`` command line: a thin layer over the Python API.

Every command loads the one configuration (``--config`` / ``KIOSK_CONFIG`` / ``KIOSK_*``),
and a :class:`~kiosk.errors.KioskError` becomes a one-line message with the fix and exit
status 2, instead of a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import click

from kiosk.config import KioskConfig, load_config
from kiosk.errors import KioskError

EXIT_SYSTEM_ERROR = 2


class CliContext:
    """Lazily loaded configuration shared by the subcommands."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self._config: KioskConfig | None = None

    @property
    def config(self) -> KioskConfig:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


@click.group()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (default: $KIOSK_CONFIG, else built-in defaults).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages to stderr.")
@click.version_option(package_name="lightbox-kiosk")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: bool) -> None:
    """Lightbox kiosk: chest X-ray film photos in, calibrated findings out."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = CliContext(config_path)


COMMAND_MODULES = ("analyze", "calibrate", "hub", "model", "ops", "serve", "sync", "users")


def _register() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"kiosk.cli.{name}")
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    try:
        # standalone_mode=False returns an Exit's code instead of raising it.
        code = cli(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KioskError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_SYSTEM_ERROR)
    if isinstance(code, int) and code:
        sys.exit(code)
