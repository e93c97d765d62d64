"""Technician pages: rig set-up wizard, model information, health checks, API tokens, logs."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, flash, redirect, render_template, request
from flask.typing import ResponseReturnValue

from kiosk.app.doctor import Check, run_checks
from kiosk.capture.rig import RigReference
from kiosk.errors import KioskError
from kiosk.web import auth, context
from kiosk.web.security import principal, require

logger = logging.getLogger(__name__)

bp = Blueprint("tech", __name__, url_prefix="/tech")

LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _actor() -> str:
    who = principal()
    return who.name if who is not None else "?"


@bp.get("/")
@require("technician")
def index() -> ResponseReturnValue:
    return redirect("/tech/health")


def health_checks() -> list[Check]:
    """The doctor's checks (without opening the camera: the service owns it) plus the camera."""
    ctx = context()
    checks = run_checks(ctx.appliance.config, camera=False)
    service = ctx.service
    if service is None:
        checks.append(Check("camera", "fail", "no camera service is running", "restart the kiosk"))
    else:
        status = service.status()
        camera = status["camera"]
        if camera["ok"]:
            checks.append(Check("camera", "ok", f"{camera['backend']} camera working"))
        else:
            checks.append(
                Check(
                    "camera",
                    "fail",
                    f"{camera['backend']} camera: {camera['error'] or 'not open yet'}",
                    "check the cable and `journalctl -u kiosk`; the kiosk retries by itself",
                )
            )
    return checks


@bp.get("/health")
@require("technician")
def health() -> str:
    service = context().service
    status = service.status() if service is not None else None
    uptime_s = status["uptime_s"] if status else None
    return render_template(
        "tech_health.html",
        page="tech",
        checks=health_checks(),
        status=status,
        uptime=_duration(uptime_s) if uptime_s is not None else "not running",
    )


def _duration(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h {minutes} min" if days else f"{hours} h {minutes} min"


@bp.get("/rig")
@require("technician")
def rig() -> str:
    ctx = context()
    try:
        reference = RigReference.load(ctx.appliance.config.rig_dir)
        problem = None
    except KioskError as exc:
        reference, problem = None, str(exc)
    return render_template(
        "tech_rig.html",
        page="tech",
        rig=reference,
        problem=problem,
        bracket=ctx.appliance.config.camera.bracket_evs,
        has_service=ctx.service is not None,
    )


@bp.post("/rig/reference")
@require("technician")
def rig_reference() -> ResponseReturnValue:
    service = context().service
    if service is None:
        flash("The camera is not running: restart the kiosk first.", "error")
        return redirect("/tech/rig")
    started = time.monotonic()
    try:
        reference = service.set_up_rig()
    except KioskError as exc:
        flash(f"Rig set-up failed: {exc}", "error")
        return redirect("/tech/rig")
    context().appliance.store.audit(_actor(), "rig.set_up", None, {"at": reference.created_at})
    flash(f"Empty-lightbox reference saved in {time.monotonic() - started:.1f} s.", "ok")
    return redirect("/tech/rig")


@bp.post("/rig/test")
@require("technician")
def rig_test() -> ResponseReturnValue:
    service = context().service
    if service is None:
        flash("The camera is not running: restart the kiosk first.", "error")
        return redirect("/tech/rig")
    try:
        result = service.test_capture()
    except KioskError as exc:
        flash(f"Test capture failed: {exc}", "error")
        return redirect("/tech/rig")
    context().appliance.store.audit(_actor(), "rig.test_capture", result.result_id, None)
    return redirect(f"/results/{result.result_id}")


@bp.get("/model")
@require("technician")
def model() -> str:
    appliance = context().appliance
    manifest = appliance.pipeline.manifest
    calibration = appliance.pipeline.calibration
    return render_template(
        "tech_model.html",
        page="tech",
        manifest=manifest,
        calibration=calibration,
        rig=appliance.pipeline.rig,
    )


@bp.get("/tokens")
@require("technician")
def tokens() -> str:
    return render_template(
        "tech_tokens.html", page="tech", tokens=auth.list_tokens(context().appliance.store)
    )


@bp.post("/tokens/<token_id>/revoke")
@require("technician")
def revoke_token(token_id: str) -> ResponseReturnValue:
    store = context().appliance.store
    if not any(t.id == token_id for t in auth.list_tokens(store)):
        flash("That token does not exist any more.", "error")
        return redirect("/tech/tokens")
    token = auth.revoke_token(store, token_id, actor=_actor())
    flash(f"Token {token.name} revoked: scripts using it now get 401.", "ok")
    return redirect("/tech/tokens")


@bp.get("/logs")
@require("technician")
def logs() -> str:
    ctx = context()
    level = request.args.get("level", "info")
    lines = ctx.logs.lines(limit=200, min_level=LOG_LEVELS.get(level, logging.INFO))
    return render_template(
        "tech_logs.html",
        page="tech",
        lines=lines,
        level=level,
        audit=ctx.appliance.store.audit_log(100),
    )
