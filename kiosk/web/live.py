"""The staff live page: camera preview, status in big type, "Capture now", latest result.

The page updates itself from ``/events`` (server-sent events: status changes and new results)
and refreshes ``/preview.jpg`` about once a second; ``/status.json`` is the polling fallback.

Each open stream holds one of waitress's threads, so streams are rationed: at most
``MAX_SSE_STREAMS`` at once (well below ``kiosk.app.server.SERVER_THREADS``, so ``/healthz``, the
pages and the API always find a free thread) and each ends after ``SSE_STREAM_S``; the browser's
EventSource reconnects by itself. Beyond the cap ``/events`` answers 503 with ``Retry-After``
and the page keeps itself up to date by polling ``/status.json``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, stream_with_context

from kiosk.errors import KioskError
from kiosk.web import context, render
from kiosk.web.security import principal, require

logger = logging.getLogger(__name__)

bp = Blueprint("live", __name__)

SSE_STREAM_S = 25.0
SSE_KEEPALIVE_S = 10.0
MAX_SSE_STREAMS = 3
SSE_RETRY_AFTER_S = 15
NO_SERVICE_STATUS: dict[str, Any] = {
    "state": "problem",
    "message": "The camera is not running",
    "advice": "Restart the kiosk. If this stays, call the technician.",
    "camera": {"ok": False, "error": "no camera service", "backend": None},
    "latest_result_id": None,
    "queue_depth": 0,
}


def current_status() -> dict[str, Any]:
    service = context().service
    return service.status() if service is not None else dict(NO_SERVICE_STATUS)


def latest_result() -> dict[str, Any] | None:
    store = context().appliance.store
    status = current_status()
    result_id = status.get("latest_result_id")
    if result_id:
        return store.get_result(result_id)
    rows, _ = store.list_results(limit=1)
    return rows[0] if rows else None


def _latest_fragment() -> str:
    result = latest_result()
    return render_template(
        "_latest.html",
        result=result,
        findings=render.findings_view(result) if result else [],
        calibration=render.calibration_view(result) if result else None,
    )


@bp.get("/")
@require("staff")
def live_page() -> str:
    return render_template(
        "live.html", status=current_status(), latest=_latest_fragment(), page="live"
    )


@bp.get("/live/latest")
@require("staff")
def latest_fragment() -> str:
    return _latest_fragment()


@bp.get("/status.json")
@require("staff")
def status_json() -> Response:
    return jsonify(current_status())


@bp.get("/preview.jpg")
@require("staff")
def preview() -> Response:
    service = context().service
    data = service.preview_jpeg() if service is not None else None
    if data is None:
        return Response("no preview yet", status=503, mimetype="text/plain")
    return Response(data, mimetype="image/jpeg", headers={"Cache-Control": "no-store"})


@bp.post("/capture")
@require("staff")
def capture() -> tuple[Response, int]:
    service = context().service
    who = principal()
    if service is None:
        return jsonify(error="the camera is not running", fix="restart the kiosk"), 503
    try:
        service.capture_now()
    except KioskError as exc:
        return jsonify(error=exc.message, fix=exc.fix), 503
    context().appliance.store.audit(who.name if who else "?", "capture.manual", None, None)
    return jsonify(ok=True, message="Taking the photo…"), 202


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _stream_slots() -> threading.BoundedSemaphore:
    slots = context().extra.setdefault("sse_slots", threading.BoundedSemaphore(MAX_SSE_STREAMS))
    assert isinstance(slots, threading.BoundedSemaphore)
    return slots


@bp.get("/events")
@require("staff")
def events() -> Response:
    service = context().service
    slots = _stream_slots()
    if not slots.acquire(blocking=False):
        logger.info("live stream refused: %d streams already open", MAX_SSE_STREAMS)
        return Response(
            "Too many live pages are open; this one updates by polling.\n",
            status=503,
            mimetype="text/plain",
            headers={"Retry-After": str(SSE_RETRY_AFTER_S), "Cache-Control": "no-store"},
        )

    def stream() -> Iterator[str]:
        yield "retry: 2000\n\n"
        yield _sse("status", current_status())
        if service is None:
            return
        q = service.subscribe()
        deadline = time.monotonic() + SSE_STREAM_S
        try:
            while time.monotonic() < deadline:
                try:
                    event = q.get(timeout=SSE_KEEPALIVE_S)
                except queue.Empty:
                    yield _sse("status", service.status())
                    continue
                if event.get("type") == "result":
                    yield _sse("result", event)
                else:
                    yield _sse("status", event.get("status", {}))
        finally:
            service.unsubscribe(q)

    response = Response(
        stream_with_context(stream()),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    # On close, not in the generator: a response that is never iterated must free its slot too.
    response.call_on_close(slots.release)
    return response
