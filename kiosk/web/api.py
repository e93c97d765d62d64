"""JSON API for scripts: ``/api/v1/...``, only with ``Authorization: Bearer <token>``.

Neither a session cookie nor the loopback autologin opens the API: any process on the kiosk (or
behind a local reverse proxy, any client) would otherwise read results without a token, and a
cookie-authenticated API would need CSRF checks too. Tokens: ``kiosk token add|list|revoke``.

Every result says whether its probabilities are calibrated: ``calibrated`` (true only when a
calibration for its model was applied) and ``calibration`` (``id``, ``kind`` "site" or
"factory", ``date``; null when not calibrated).

Results are returned without the ``source`` path, the patient reference, the raw features and
the activation map (``/results/<id>/cam.png`` draws that).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request

from kiosk.errors import KioskError
from kiosk.web import context
from kiosk.web.health import readiness
from kiosk.web.params import int_arg
from kiosk.web.results import history_filters
from kiosk.web.security import principal, require

logger = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_PAGE_SIZE = 200
MAX_OFFSET = 10_000_000
PUBLIC_FIELDS = (
    "id",
    "created_at",
    "device_id",
    "input_kind",
    "status",
    "reason",
    "quality",
    "model_id",
    "model_version",
    "model_sha256",
    "calibration_id",
    "timings_ms",
    "findings",
)


def public_result(row: dict[str, Any]) -> dict[str, Any]:
    """A result as the API shows it (no source path, patient reference, features or CAM)."""
    out = {key: row.get(key) for key in PUBLIC_FIELDS}
    out["diagnoses"] = {
        code: {"label": d["label"], "confirmed_at": d["confirmed_at"]}
        for code, d in (row.get("diagnoses") or {}).items()
    }
    out["has_image"] = bool(row.get("image_path"))
    out["calibrated"] = bool(row.get("calibration_id"))
    out["calibration"] = (
        {
            "id": row["calibration_id"],
            "kind": row.get("calibration_kind") or "site",
            "date": row.get("calibration_date"),
        }
        if row.get("calibration_id")
        else None
    )
    return out


@bp.before_request
def _tokens_only() -> Response | None:
    who = principal()
    if who is not None and who.kind == "token":
        return None
    response = jsonify(
        error="the API needs an API token",
        fix="send Authorization: Bearer <token> (make one with `kiosk token add NAME --role ...`)",
    )
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="kiosk"'
    return response


@bp.get("/results")
@require("staff")
def results() -> Response:
    limit = int_arg(request.args, "limit", 50, 1, MAX_PAGE_SIZE)
    offset = int_arg(request.args, "offset", 0, 0, MAX_OFFSET)
    rows, total = context().appliance.store.list_results(
        limit=limit, offset=offset, **history_filters(request.args)
    )
    return jsonify(
        total=total, limit=limit, offset=offset, results=[public_result(r) for r in rows]
    )


@bp.get("/results/<result_id>")
@require("staff")
def result(result_id: str) -> Response | tuple[Response, int]:
    row = context().appliance.store.get_result(result_id)
    if row is None:
        return jsonify(error=f"no result with id {result_id}"), 404
    return jsonify(public_result(row))


@bp.get("/health")
@require("staff")
def health() -> tuple[Response, int]:
    ready, checks = readiness()
    service = context().service
    body: dict[str, Any] = {"ready": ready, "checks": checks}
    if service is not None:
        status = service.status()
        body["status"] = {k: status[k] for k in ("state", "message", "camera", "queue_depth")}
    return jsonify(body), 200 if ready else 503


@bp.post("/capture")
@require("technician")
def capture() -> tuple[Response, int]:
    service = context().service
    if service is None:
        return jsonify(error="the camera is not running", fix="start `kiosk serve`"), 503
    try:
        service.capture_now()
    except KioskError as exc:
        return jsonify(error=exc.message, fix=exc.fix), 503
    who = principal()
    context().appliance.store.audit(who.name if who else "?", "capture.api", None, None)
    return jsonify(ok=True, message="capture requested"), 202
