"""`kiosk serve`: run the appliance (web page, camera, pipeline)."""

from __future__ import annotations

import logging

import click

from kiosk.cli import CliContext

COMMANDS: list[click.Command] = []


@click.command()
@click.option("--demo", is_flag=True, help="Simulator camera and bundled model: runs anywhere.")
@click.option("--host", default=None, help="Address to listen on (default: web.host).")
@click.option("--port", type=int, default=None, help="Port (default: web.port; 0 = any free).")
@click.pass_obj
def serve(obj: CliContext, demo: bool, host: str | None, port: int | None) -> None:
    """Run the kiosk: live page, auto-capture, analysis, storage."""
    from kiosk.app.server import serve as run
    from kiosk.config import BUNDLED_MODELS_DIR, DEMO_FILMS_DIR

    config = obj.config
    logging.getLogger().setLevel(config.log_level)
    if demo:
        # The demo always shows the bundled model on the simulated lightbox, and the browser
        # on this machine is signed in as staff so the live page works without set-up.
        config.camera.backend = "simulator"
        config.models_dir = BUNDLED_MODELS_DIR
        config.web.local_autologin = True
        if config.camera.folder is None and DEMO_FILMS_DIR.is_dir():
            # real films (demo/films), so the "not a chest X-ray" gate stays on
            config.camera.folder = DEMO_FILMS_DIR
        if config.camera.folder is None:
            # Without them the simulator draws phantoms, not X-rays: the out-of-distribution
            # gate would (rightly) reject them all.
            config.ood_gate = False
    if host is not None:
        config.web.host = host
    if port is not None:
        config.web.port = port
    raise SystemExit(run(config))


COMMANDS.append(serve)
