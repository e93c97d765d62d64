"""`kiosk serve`: the appliance process, with systemd readiness and watchdog.

Start-up order matters for systemd's ``Type=notify``: the model is loaded and verified, the
database migrated, the web server's socket bound, the camera and pipeline threads started —
and only then ``READY=1``. From then on ``WATCHDOG=1`` is sent only while the camera thread,
the pipeline worker and the web server all show signs of life (see :mod:`kiosk.heartbeat`).
SIGTERM stops the server, the threads and the database cleanly.
"""

from __future__ import annotations

import logging
import signal
import threading
import urllib.request
from types import FrameType
from typing import TYPE_CHECKING, Any

import waitress

from kiosk.app import sdnotify
from kiosk.app.appliance import Appliance
from kiosk.app.heartbeat import HeartbeatRegistry, WatchdogPinger
from kiosk.app.service import KioskService
from kiosk.config import KioskConfig
from kiosk.web import MAX_UPLOAD_BYTES, create_app
from kiosk.web.live import MAX_SSE_STREAMS

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger(__name__)

WEB_PROBE_INTERVAL_S = 5.0
WEB_MAX_SILENCE_S = 30.0
WEB_PROBE_TIMEOUT_S = 5.0
# Each open live page holds one thread for its event stream; at most MAX_SSE_STREAMS do, so
# the other threads are always there for /healthz, the pages and the API.
SERVER_THREADS = 8
# The largest legitimate request body is the supervisor's CSV of confirmed diagnoses
# (MAX_UPLOAD_BYTES, enforced by Flask) in a multipart form; models are installed from the
# command line, never uploaded. Waitress refuses anything larger with 413 as soon as it reads
# the Content-Length (or the chunks exceed it), before buffering the body to a temp file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_REQUEST_BODY_BYTES = MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES
assert MAX_SSE_STREAMS <= SERVER_THREADS // 2


def create_web_server(app: Flask, host: str, port: int) -> Any:
    """The waitress server ``kiosk serve`` runs (thread count and body limit as above); bound
    but not yet running: call ``run()``, and ``close()`` to stop."""
    return waitress.create_server(
        app,
        host=host,
        port=port,
        threads=SERVER_THREADS,
        max_request_body_size=MAX_REQUEST_BODY_BYTES,
    )


def _probe_web(url: str, registry: HeartbeatRegistry, stop: threading.Event) -> None:
    """Beat for the web server only when it really answers /healthz."""
    while not stop.wait(WEB_PROBE_INTERVAL_S):
        try:
            with urllib.request.urlopen(url, timeout=WEB_PROBE_TIMEOUT_S) as response:
                if response.status == 200:
                    registry.beat("web")
        except OSError as exc:
            logger.warning("web server did not answer its health probe: %s", exc)


def serve(config: KioskConfig) -> int:
    """Run until SIGTERM/SIGINT. Returns the process exit status."""
    sdnotify.status("loading model and database")
    appliance = Appliance.open(config)
    registry = HeartbeatRegistry()
    service = KioskService(appliance, heartbeats=registry)
    app = create_app(appliance, service)
    host, port = config.web.host, config.web.port
    server = create_web_server(app, host, port)
    bound_port = int(getattr(server, "effective_port", port))
    stop = threading.Event()
    registry.register("web", WEB_MAX_SILENCE_S)
    registry.beat("web")
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    prober = threading.Thread(
        target=_probe_web,
        args=(f"http://{probe_host}:{bound_port}/healthz", registry, stop),
        name="web-probe",
        daemon=True,
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: stopping", signum)
        raise SystemExit(0)  # the finally block below tells systemd and cleans up

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    pinger = WatchdogPinger(registry)
    try:
        service.start()
        prober.start()
        pinger.start()
        url = f"http://{host}:{bound_port}/"
        sdnotify.ready(f"listening on {url}")
        logger.warning("kiosk %s serving on %s", config.device_id, url)
        server.run()
    finally:
        sdnotify.stopping()
        stop.set()
        pinger.stop()
        service.stop()
        server.close()
        appliance.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logger.warning("kiosk stopped")
    return 0
