"""The hub's Flask app: kiosks push to it, the supervisor looks at it.

- ``POST /api/v1/ingest`` (bearer token of the kiosk): one batch, upserted in one transaction;
  the 200 answer lists the accepted ids and is sent only after the commit. Errors are JSON
  ``{"error", "field"}``: 400 invalid (the field named), 401 token, 403 device mismatch,
  413 too large, 422 schema version, 503 database unavailable (the kiosk retries).
- ``GET /`` summary page, ``GET /fleet`` fleet page, ``GET /api/v1/fleet`` the same as JSON,
  ``GET /results.csv`` (basic auth: user ``supervisor``, password from ``kiosk hub admin-token``).
- ``GET /api/v1/health``: no auth, says nothing but ok.

What this module does not do: SQL (``store``, ``ingest``, ``fleet``, ``exports``), or decide
who is who (``auth``). Run it behind an HTTPS reverse proxy (docs/sync.md).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Flask, Response, jsonify, render_template, request, stream_with_context
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from kiosk.clock import utcnow
from kiosk.errors import KioskError
from kiosk.hub import auth
from kiosk.hub.exports import csv_rows, csv_text
from kiosk.hub.fleet import fleet
from kiosk.hub.ingest import DeviceReport, check_unique_codes
from kiosk.hub.store import HubStore
from kiosk.sync.export import parse_time
from kiosk.sync.payload import PayloadError, parse_batch

logger = logging.getLogger(__name__)

MAX_CONTENT_LENGTH_BYTES = 8 * 1024 * 1024
# The deepest JSON a real batch has is 5 (batch > results > result > corners > point); any
# kiosk-supplied object (quality) gets a few levels more. Deeper is refused before validation.
MAX_JSON_DEPTH = 12
USER_AGENT_VERSION = re.compile(r"\blightbox-kiosk/([0-9A-Za-z.+_-]{1,40})")


def _error(status: int, message: str, field_name: str | None = None) -> tuple[Response, int]:
    body: dict[str, Any] = {"error": message}
    if field_name is not None:
        body["field"] = field_name
    return jsonify(body), status


def json_depth(value: Any) -> int:
    """Nesting depth of decoded JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            deepest = max(deepest, depth + 1)
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
            deepest = max(deepest, depth + 1)
    return deepest


def decode_body(data: bytes) -> Any:
    """The JSON body, or PayloadError("") when it is not JSON or nested too deeply."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise PayloadError("", "the body is not valid JSON (or is nested too deeply)") from exc
    if json_depth(body) > MAX_JSON_DEPTH:
        raise PayloadError("", f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    return body


def kiosk_version(user_agent: str | None) -> str | None:
    """The kiosk's software version from ``User-Agent: lightbox-kiosk/<version>``."""
    found = USER_AGENT_VERSION.search(user_agent or "")
    return found.group(1) if found else None


def _period() -> tuple[str | None, str | None]:
    since, until = request.args.get("since"), request.args.get("until")
    return (
        parse_time(since) if since else None,
        parse_time(until, end_of_day=True) if until else None,
    )


def create_hub_app(store: HubStore, *, max_content_length: int = MAX_CONTENT_LENGTH_BYTES) -> Flask:
    """The hub's app over an open store (the caller closes the store)."""
    app = Flask(__name__, template_folder="templates")
    app.config["MAX_CONTENT_LENGTH"] = max_content_length
    app.extensions["hub_store"] = store
    hub = store
    app.after_request(auth.add_security_headers)

    @app.errorhandler(413)
    def too_large(_exc: Exception) -> tuple[Response, int]:
        logger.warning("hub: refused a request larger than %d bytes", max_content_length)
        return _error(
            413,
            f"request larger than {max_content_length} bytes; send fewer results per batch "
            "(sync.batch_size) or without thumbnails",
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return _error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(SQLAlchemyError)
    def database_error(exc: SQLAlchemyError) -> tuple[Response, int]:
        logger.error("hub: database error: %s", str(exc).splitlines()[0])
        return _error(503, "the hub's database is unavailable; the kiosk will retry")

    @app.errorhandler(KioskError)
    def kiosk_error(exc: KioskError) -> tuple[Response, int]:
        return _error(400, str(exc))

    @app.post("/api/v1/ingest")
    def ingest() -> tuple[Response, int]:
        token = auth.bearer_token(request)
        if token is None:
            logger.warning("hub: ingest without a bearer token refused")
            resp, status = _error(401, "missing 'Authorization: Bearer <token>' header")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp, status
        device = hub.device_for_token(token)
        if device is None:
            logger.warning("hub: ingest with an unknown token refused")
            resp, status = _error(401, "unknown token; issue one with `kiosk hub add-device`")
            resp.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return resp, status
        try:
            batch = parse_batch(decode_body(request.get_data()))
            check_unique_codes(batch.results)
        except PayloadError as exc:
            logger.warning("hub: invalid batch from %s: %s", device, exc.field or exc.message)
            return _error(400 if exc.field != "schema_version" else 422, str(exc), exc.field)
        if batch.device_id != device:
            logger.warning("hub: token of %s used for device_id %s", device, batch.device_id)
            return _error(
                403,
                f"device_id {batch.device_id!r} does not match this token's device",
                "device_id",
            )
        outcome = hub.ingest(
            device,
            batch.results,
            report=DeviceReport(
                outbox=batch.outbox.model_dump() if batch.outbox else None,
                kiosk_sent_at=batch.sent_at,
                kiosk_version=kiosk_version(request.headers.get("User-Agent")),
            ),
        )
        logger.info(
            "hub: %s sent %d results (%d new, %d updated, %d unchanged)",
            device,
            len(batch.results),
            outcome.inserted,
            outcome.updated,
            outcome.unchanged,
        )
        return jsonify(outcome.to_dict()), 200

    @app.get("/api/v1/health")
    def health() -> tuple[Response, int]:
        return jsonify({"ok": True}), 200

    @app.get("/")
    def index() -> Response | str:
        if not auth.supervisor_ok(request, hub):
            return auth.ask_login()
        summary = hub.summary()
        max_day = max((d["n"] for d in summary["per_day"]), default=1)
        return render_template("hub_index.html", s=summary, max_day=max_day, now=utcnow())

    @app.get("/fleet")
    def fleet_page() -> Response | str:
        if not auth.supervisor_ok(request, hub):
            return auth.ask_login()
        kiosks = fleet(hub)
        max_day = max((d["n"] for k in kiosks for d in k.results_per_day), default=0) or 1
        return render_template("hub_fleet.html", kiosks=kiosks, max_day=max_day, now=utcnow())

    @app.get("/api/v1/fleet")
    def fleet_json() -> Response | tuple[Response, int]:
        if not auth.supervisor_ok(request, hub):
            return auth.ask_login()
        kiosks = fleet(hub)
        return jsonify({"generated_at": utcnow(), "kiosks": [k.to_dict() for k in kiosks]}), 200

    @app.get("/results.csv")
    def results_csv() -> Response:
        if not auth.supervisor_ok(request, hub):
            return auth.ask_login()
        since, until = _period()
        return Response(
            stream_with_context(csv_text(csv_rows(hub, since, until))),
            200,
            {
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": "attachment; filename=hub-results.csv",
            },
        )

    return app
