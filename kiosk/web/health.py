"""Health endpoints for systemd, load balancers and Prometheus: no sign-in, no patient data.

``/healthz``: the process answers. ``/readyz``: the model is loaded, the database takes a write
lock and the camera works (200, or 503 with the reasons). ``/metrics``: Prometheus text
exposition format, written by hand.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from typing import Any

from flask import Blueprint, Response, jsonify

from kiosk.errors import KioskError
from kiosk.web import context

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

STARTED_AT = time.time()


def readiness() -> tuple[bool, dict[str, dict[str, Any]]]:
    """(ready, {check: {"ok": bool, "detail": str}}) for model, database and camera."""
    ctx = context()
    checks: dict[str, dict[str, Any]] = {}
    manifest = ctx.appliance.pipeline.manifest
    checks["model"] = {"ok": True, "detail": f"{manifest.id} {manifest.version}"}
    try:
        with ctx.appliance.store.transaction():
            pass  # BEGIN IMMEDIATE takes the write lock: the database is writable
        free_mb = ctx.appliance.store.free_mb()
        critical = ctx.appliance.config.storage.critical_free_mb
        if free_mb < critical:
            checks["database"] = {"ok": False, "detail": f"only {free_mb:.0f} MB free"}
        else:
            checks["database"] = {"ok": True, "detail": "writable"}
    except KioskError as exc:
        checks["database"] = {"ok": False, "detail": exc.message}
    service = ctx.service
    if service is None:
        checks["camera"] = {"ok": False, "detail": "no camera service is running"}
    else:
        camera = service.status()["camera"]
        detail = "ok" if camera["ok"] else (camera["error"] or "camera not open yet")
        checks["camera"] = {"ok": bool(camera["ok"]), "detail": detail}
    return all(c["ok"] for c in checks.values()), checks


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="alive", uptime_s=round(time.time() - STARTED_AT, 1))


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    ready, checks = readiness()
    reasons = [f"{name}: {c['detail']}" for name, c in checks.items() if not c["ok"]]
    return jsonify(ready=ready, checks=checks, reasons=reasons), 200 if ready else 503


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def metrics_text() -> str:
    """The exposition text: what the service measured, or the store's numbers without one."""
    ctx = context()
    service = ctx.service
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

    if service is not None:
        m = service.metrics()
        buckets = [
            (f'{{le="{_number(le)}"}}', float(n)) for le, n in m["inference_seconds_buckets"]
        ]
        lines.append("# HELP kiosk_inference_seconds Model inference latency per analysed film.")
        lines.append("# TYPE kiosk_inference_seconds histogram")
        lines.extend(f"kiosk_inference_seconds_bucket{lb} {_number(v)}" for lb, v in buckets)
        lines.append(f"kiosk_inference_seconds_sum {_number(m['inference_seconds_sum'])}")
        lines.append(f"kiosk_inference_seconds_count {_number(m['inference_seconds_count'])}")
        metric(
            "kiosk_results_total",
            "counter",
            "Analyses since start, by status.",
            [(f'{{status="{s}"}}', float(n)) for s, n in sorted(m["results_by_status"].items())],
        )
        metric(
            "kiosk_queue_depth", "gauge", "Stills waiting for analysis.", [("", m["queue_depth"])]
        )
        metric(
            "kiosk_stills_dropped_total",
            "counter",
            "Stills dropped because the analysis queue was full.",
            [("", m["stills_dropped"])],
        )
        metric(
            "kiosk_camera_errors_total",
            "counter",
            "Camera failures since start.",
            [("", m["camera_errors"])],
        )
        metric("kiosk_camera_up", "gauge", "1 when the camera works.", [("", int(m["camera_ok"]))])
        disk_free = float(m["disk_free_bytes"])
        outbox = float(m["outbox_size"])
    else:
        try:
            disk_free = float(shutil.disk_usage(ctx.appliance.config.data_dir).free)
        except OSError:
            disk_free = 0.0
        counts = ctx.appliance.store.outbox_counts()
        outbox = float(counts["pending"] + counts["failed"])
    metric("kiosk_disk_free_bytes", "gauge", "Free bytes on the data disk.", [("", disk_free)])
    metric("kiosk_outbox_size", "gauge", "Results waiting to be synced.", [("", outbox)])
    metric(
        "kiosk_uptime_seconds",
        "gauge",
        "Seconds since the web app started.",
        [("", round(time.time() - STARTED_AT, 1))],
    )
    return "\n".join(lines) + "\n"


@bp.get("/metrics")
def metrics() -> Response:
    return Response(metrics_text(), content_type="text/plain; version=0.0.4; charset=utf-8")
