"""Signing in and out (rate-limited), and the first-start hint when no user exists yet."""

from __future__ import annotations

import logging
import math
import secrets

from flask import Blueprint, Response, redirect, render_template, request, session
from flask.typing import ResponseReturnValue

from kiosk.web import auth, context
from kiosk.web.security import client_address, principal

logger = logging.getLogger(__name__)

bp = Blueprint("account", __name__)


def _safe_next(target: str | None) -> str:
    """Only local paths: never redirect a signed-in user to another site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@bp.get("/login")
def login_form() -> str:
    store = context().appliance.store
    return render_template(
        "login.html",
        no_users=not auth.has_users(store),
        next=_safe_next(request.args.get("next")),
        error=None,
    )


@bp.post("/login")
def login() -> ResponseReturnValue:
    ctx = context()
    store = ctx.appliance.store
    username = request.form.get("username", "").strip()[: auth.USERNAME_MAX_CHARS + 1]
    password = request.form.get("password", "")
    target = _safe_next(request.form.get("next"))
    keys = [f"user:{username.lower()}", f"addr:{client_address()}"]
    wait_s = ctx.limiter.retry_after_s(keys)
    if wait_s > 0:
        minutes = max(1, math.ceil(wait_s / 60))
        logger.warning("sign-in refused (rate limit) for %r from %s", username, client_address())
        page = render_template(
            "login.html",
            no_users=False,
            next=target,
            error=(
                f"Too many wrong passwords. Wait {minutes} minute{'s' if minutes > 1 else ''} "
                "and try again, or ask a supervisor to check your account."
            ),
        )
        response = Response(page, status=429)
        response.headers["Retry-After"] = str(math.ceil(wait_s))
        return response
    user = auth.authenticate(store, username, password)
    if user is None:
        ctx.limiter.failed(keys)
        logger.warning("failed sign-in for %r from %s", username, client_address())
        return (
            render_template(
                "login.html",
                no_users=not auth.has_users(store),
                next=target,
                error="Wrong user name or password.",
            ),
            401,
        )
    ctx.limiter.succeeded(keys[:1])
    session.clear()
    session.permanent = True
    session["user"] = user.username
    session["csrf"] = secrets.token_urlsafe(32)
    store.audit(user.username, "user.login", None, {"role": user.role})
    logger.info("%s signed in (%s)", user.username, user.role)
    return redirect(target)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    who = principal()
    if who is not None and who.kind == "session":
        context().appliance.store.audit(who.name, "user.logout", None, None)
    session.clear()
    return redirect("/login")
