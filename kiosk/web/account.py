"""Signing in and out (rate-limited), and the first-start hint when no user exists yet.

What is logged about a failed sign-in: the user name only when it is a real account's; anything
else was typed by someone (sometimes a password typed in the wrong box) and is logged as
"an unknown user name".
"""

from __future__ import annotations

import logging
import math
from urllib.parse import urlsplit

from flask import Blueprint, Response, redirect, render_template, request, session
from flask.typing import ResponseReturnValue

from kiosk.store import Store
from kiosk.web import auth, context
from kiosk.web.security import client_address, principal, start_session

logger = logging.getLogger(__name__)

bp = Blueprint("account", __name__)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect a signed-in user to another site.

    Browsers drop tabs and newlines from URLs and read a backslash as ``/``, so
    ``/%09/evil.example`` (a tab, decoded) is ``//evil.example`` to them: any control character,
    space or backslash, and anything with a scheme or a host, sends the user to ``/`` instead.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _name_for_log(store: Store, username: str) -> str:
    """The typed name if it is an account's, else a placeholder (it may be a password)."""
    return username if username and auth.get_user(store, username) else "an unknown user name"


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
        logger.warning(
            "sign-in refused (rate limit) for %s from %s",
            _name_for_log(store, username),
            client_address(),
        )
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
        logger.warning(
            "failed sign-in for %s from %s", _name_for_log(store, username), client_address()
        )
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
    start_session(user)
    store.audit(user.username, "user.login", None, {"role": user.role})
    logger.info("%s signed in (%s)", user.username, user.role)
    return redirect(target)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    who = principal()
    if who is not None and who.kind == "session":
        store = context().appliance.store
        # Ends this user's sessions everywhere, so a copied cookie is worthless from now on.
        auth.end_sessions(store, who.name)
        store.audit(who.name, "user.logout", None, None)
    session.clear()
    return redirect("/login")
