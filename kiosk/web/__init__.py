"""The kiosk's web pages and JSON API: a Flask app factory over one :class:`Appliance`.

``create_app(appliance, service)`` builds the app; ``kiosk serve`` runs it on waitress. The
pages: the staff live page (``/``), results (``/results/<id>``), history, technician pages
(``/tech/...``), supervisor pages (``/supervisor/...``), the token-authenticated JSON API
(``/api/v1/...``) and unauthenticated health endpoints (``/healthz``, ``/readyz``,
``/metrics``) that carry no patient data. Everything the browser loads is served from here:
no CDN, no web fonts, no inline scripts (the CSP forbids them).

Without a ``service`` (no camera: tests, or a history-only viewer) the live page says the camera
is not running and capture endpoints answer 503.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from kiosk.web import auth, logbuffer

if TYPE_CHECKING:  # the CLI imports kiosk.web.auth without loading Flask, the model or cv2
    from flask import Flask

    from kiosk.app.appliance import Appliance
    from kiosk.app.service import KioskService

logger = logging.getLogger(__name__)

SESSION_HOURS = 12
MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # CSV imports


@dataclass
class WebContext:
    """What every view needs, stored in ``app.extensions["kiosk"]``."""

    appliance: Appliance
    service: KioskService | None
    limiter: auth.LoginRateLimiter
    logs: logbuffer.RingBufferHandler
    extra: dict[str, object] = field(default_factory=dict)


def context() -> WebContext:
    """The current app's :class:`WebContext`."""
    from flask import current_app

    ctx: WebContext = current_app.extensions["kiosk"]
    return ctx


def create_app(
    appliance: Appliance, service: KioskService | None = None, *, testing: bool = False
) -> Flask:
    """The kiosk's Flask app. ``testing`` only turns on Flask's testing mode (errors propagate)."""
    from flask import Flask

    from kiosk.web import (
        account,
        api,
        health,
        live,
        params,
        render,
        results,
        security,
        supervisor,
        tech,
    )

    app = Flask(__name__)
    app.testing = testing
    config = appliance.config
    app.secret_key = security.load_secret_key(config.data_dir)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.web.secure_cookies,
        SESSION_COOKIE_NAME="kiosk_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
        SEND_FILE_MAX_AGE_DEFAULT=0,
        JSON_SORT_KEYS=False,
    )
    app.extensions["kiosk"] = WebContext(
        appliance=appliance,
        service=service,
        limiter=auth.LoginRateLimiter(),
        logs=logbuffer.install(),
    )
    security.install(app)
    params.install(app)
    app.jinja_env.filters["local_time"] = render.local_time
    app.jinja_env.filters["short_id"] = render.short_id
    app.jinja_env.globals["device_id"] = config.device_id
    for module in (account, live, results, api, health, tech, supervisor):
        app.register_blueprint(module.bp)
    logger.info("web app ready (service %s)", "running" if service is not None else "absent")
    return app


__all__ = ["WebContext", "context", "create_app"]
