"""One result (film, where the model looked, calibrated findings) and the history of results.

Pages show result ids and times, never the ``source`` path an image came from.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import cv2
from flask import Blueprint, Response, abort, render_template, request

from kiosk.errors import ImageError
from kiosk.web import context, render
from kiosk.web.params import choice_arg, day_arg, int_arg
from kiosk.web.security import require

logger = logging.getLogger(__name__)

bp = Blueprint("results", __name__)

HISTORY_PAGE_SIZE = 20
MAX_PAGE = 1_000_000
DISCLAIMER = "A clinician must read the film and decide."


def get_result_or_404(result_id: str) -> dict[str, Any]:
    result = context().appliance.store.get_result(result_id)
    if result is None:
        abort(404)
    return result


def film_path(result: dict[str, Any]) -> Path | None:
    """The stored film image, only if it lies inside the data directory and exists."""
    relative = result.get("image_path")
    if not relative:
        return None
    data_dir = context().appliance.config.data_dir.resolve()
    path = (data_dir / str(relative)).resolve()
    if not path.is_relative_to(data_dir) or not path.is_file():
        return None
    return path


@bp.get("/results/<result_id>")
@require("staff")
def result_page(result_id: str) -> str:
    result = get_result_or_404(result_id)
    findings = render.findings_view(result)
    calibration = render.calibration_view(result)
    return render_template(
        "result.html",
        result=result,
        findings=findings,
        notes=render.quality_notes(result),
        has_film=film_path(result) is not None,
        has_cam=bool(result.get("cam")) and film_path(result) is not None,
        status_text=render.STATUS_TEXT.get(result["status"], result["status"]),
        calibration=calibration,
        disclaimer=DISCLAIMER,
        model_sha=(result.get("model_sha256") or "")[:12],
    )


@bp.get("/results/<result_id>/film.jpg")
@require("staff")
def film(result_id: str) -> Response:
    path = film_path(get_result_or_404(result_id))
    if path is None:
        abort(404)
    return Response(path.read_bytes(), mimetype="image/jpeg")


@bp.get("/results/<result_id>/cam.png")
@require("staff")
def cam(result_id: str) -> Response:
    result = get_result_or_404(result_id)
    path = film_path(result)
    if not result.get("cam") or path is None:
        abort(404)
    codes = [f["code"] for f in result["findings"]]
    code = request.args.get("finding") or (codes[0] if codes else "")
    index = codes.index(code) if code in codes else 0
    film_image = cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_4)
    if film_image is None:
        abort(404)
    try:
        overlay = render.cam_overlay_rgba(result["cam"], film_image.shape[:2], index)
        data = render.encode_rgba_png(overlay)
    except ImageError as exc:
        logger.warning("no overlay for result %s: %s", result_id, exc)
        abort(404)
    return Response(data, mimetype="image/png")


def _day_start_utc(day: date) -> str:
    """A local calendar day -> its start as the store's UTC timestamp text."""
    local = datetime(day.year, day.month, day.day).astimezone()
    return local.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def history_filters(args: Any) -> dict[str, Any]:
    """Validated filters from query arguments; a bad value raises ParamError (answered 400)."""
    filters: dict[str, Any] = {}
    since = day_arg(args, "from")
    if since is not None:
        filters["since"] = _day_start_utc(since)
    until = day_arg(args, "to")
    if until is not None:
        filters["until"] = _day_start_utc(until + timedelta(days=1))
    status = choice_arg(args, "status", ("ok", "rejected", "error"))
    if status is not None:
        filters["status"] = status
    codes = {f.code for f in context().appliance.pipeline.manifest.findings}
    finding = choice_arg(args, "finding", codes)
    if finding is not None:
        filters["finding"] = finding
    positive = choice_arg(args, "positive", ("1", "0"))
    if positive is not None:
        filters["positive"] = positive == "1"
    return filters


@bp.get("/history")
@require("staff")
def history() -> str:
    store = context().appliance.store
    filters = history_filters(request.args)
    page = int_arg(request.args, "page", 1, 1, MAX_PAGE)
    rows, total = store.list_results(
        limit=HISTORY_PAGE_SIZE, offset=(page - 1) * HISTORY_PAGE_SIZE, **filters
    )
    pages = max(1, -(-total // HISTORY_PAGE_SIZE))
    args = {k: v for k, v in request.args.items() if k != "page" and v}
    return render_template(
        "history.html",
        rows=[(r, render.findings_view(r)) for r in rows],
        total=total,
        page=page,
        pages=pages,
        args=args,
        page_url=lambda n: "?" + urlencode({**args, "page": n}),
        findings=context().appliance.pipeline.manifest.findings,
        status_text=render.STATUS_TEXT,
    )
