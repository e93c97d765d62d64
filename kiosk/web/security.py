"""Who is asking, may they, and is the request genuine: host, sessions, tokens, CSRF, headers.

The first ``before_request`` hook refuses a ``Host`` header that is not one of the kiosk's names
(``localhost``, the host name, ``<host name>.local``, any IP address, ``web.allowed_hosts``), so a
web page on another site cannot reach the kiosk through DNS rebinding. The next identifies the
caller (``g.principal``): an API token (``Authorization: Bearer ...``), a signed-in session whose
user is enabled and whose session version is the user's current one (sign-out, disabling and a
new password bump it), or, only for requests from the kiosk's own loopback address *and* only
when ``web.local_autologin`` is set, the local screen as ``staff`` (pages only: the API takes
tokens, see ``kiosk.web.api``). A third hook refuses state-changing requests without the
session's CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``); token-authenticated
API calls carry no cookies, so they need none. Every response gets the security headers.

What this module does not do: store users or check passwords (``kiosk.store.accounts``).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlencode

from flask import Flask, Response, current_app, g, jsonify, redirect, render_template, request
from flask import session as flask_session

from kiosk.config import WebConfig
from kiosk.web import auth

logger = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
AUTOLOGIN_NAME = "kiosk-screen"
SECRET_KEY_FILE = "secret_key"
CSRF_FIELD = "csrf_token"
SESSION_USER_KEY = "user"
SESSION_VERSION_KEY = "sv"
ANY_HOST = "*"
CSRF_HEADER = "X-CSRF-Token"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# Reliability diagrams are standalone SVG documents shown with <img>: no script can run there.
SVG_IMAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    name: str
    role: auth.Role
    kind: Literal["session", "token", "autologin"]

    def can(self, role: auth.Role) -> bool:
        return auth.has_role(self.role, role)


def load_secret_key(data_dir: Path) -> bytes:
    """The session-signing key from ``<data_dir>/secret_key`` (0600), created on first start."""
    path = Path(data_dir) / SECRET_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < 32:
            raise auth.AuthError(
                f"{path} is too short to be a secret key",
                "delete it and restart the kiosk (everyone will have to sign in again)",
            ) from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    logger.info("new session secret key written to %s", path)
    return key


def client_address() -> str:
    """The direct peer's address (no X-Forwarded-For: a proxy must not widen autologin)."""
    return request.remote_addr or "unknown"


def allowed_host_names(web: WebConfig, hostname: str | None = None) -> frozenset[str]:
    """The Host names the kiosk answers to (lower case); IP addresses are always allowed."""
    host = (hostname if hostname is not None else socket.gethostname()).lower().rstrip(".")
    names = {"localhost", *(h.lower().rstrip(".") for h in web.allowed_hosts)}
    if host:
        names.update({host, f"{host}.local", host.split(".")[0]})
    if web.host and not _is_ip(web.host):
        names.add(web.host.lower())
    return frozenset(names)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(host_header: str, names: frozenset[str]) -> bool:
    """True for ``name[:port]`` with a known name, or any IPv4 / ``[IPv6]`` address."""
    if ANY_HOST in names:
        return True
    host = host_header.strip().lower()
    if host.startswith("["):
        literal, _, _ = host[1:].partition("]")
        return _is_ip(literal)
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.rstrip(".")
    return bool(name) and (name in names or _is_ip(name))


def _check_host() -> Response | None:
    names: frozenset[str] = current_app.extensions["kiosk"].extra["allowed_hosts"]
    host = request.headers.get("Host", "")
    if host_allowed(host, names):
        return None
    logger.warning("refused a request for host %r from %s", host[:100], client_address())
    return Response(
        "Unknown host name. Open the kiosk by its IP address or add the name to "
        "web.allowed_hosts in the kiosk's configuration.\n",
        status=400,
        mimetype="text/plain",
    )


def csrf_token() -> str:
    """This session's CSRF token (created on first use)."""
    token = flask_session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        flask_session["csrf"] = token
    return token


def principal() -> Principal | None:
    return cast(Principal | None, g.get("principal"))


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _identify() -> Response | None:
    store = current_app.extensions["kiosk"].appliance.store
    g.principal = None
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        token = auth.token_lookup(store, value.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            logger.warning("invalid API token from %s for %s", client_address(), request.path)
            response = jsonify(error="invalid or unknown API token", fix="check the token")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="kiosk"'
            return response
        g.principal = Principal(token.name, token.role, "token")
        return None
    username = flask_session.get(SESSION_USER_KEY)
    if isinstance(username, str):
        user = auth.get_user(store, username)
        if (
            user is None
            or user.disabled
            or flask_session.get(SESSION_VERSION_KEY) != user.session_version
        ):
            flask_session.clear()
        else:
            g.principal = Principal(user.username, user.role, "session")
            return None
    config = current_app.extensions["kiosk"].appliance.config
    if config.web.local_autologin and client_address() in LOOPBACK:
        g.principal = Principal(AUTOLOGIN_NAME, "staff", "autologin")
    return None


def _check_csrf() -> Response | None:
    if request.method in SAFE_METHODS:
        return None
    who = principal()
    if who is not None and who.kind == "token":
        return None
    expected = flask_session.get("csrf")
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    if isinstance(expected, str) and given and hmac.compare_digest(expected, given):
        return None
    logger.warning(
        "CSRF check failed from %s for %s %s", client_address(), request.method, request.path
    )
    message = "This form has expired or did not come from this kiosk's page."
    fix = "Go back, reload the page and try again."
    if wants_json():
        response = jsonify(error=message, fix=fix)
        response.status_code = 400
        return response
    return Response(
        render_template("error.html", title="Please try again", message=message, fix=fix),
        status=400,
    )


def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def start_session(user: auth.User) -> None:
    """Sign ``user`` in on this browser: a new session bound to the user's session version."""
    flask_session.clear()
    flask_session.permanent = True
    flask_session[SESSION_USER_KEY] = user.username
    flask_session[SESSION_VERSION_KEY] = user.session_version
    flask_session["csrf"] = secrets.token_urlsafe(32)


def install(app: Flask) -> None:
    """Register the host, identification, CSRF and header hooks on ``app``."""
    ctx = app.extensions["kiosk"]
    ctx.extra["allowed_hosts"] = allowed_host_names(ctx.appliance.config.web)
    app.before_request(_check_host)
    app.before_request(_identify)
    app.before_request(_check_csrf)
    app.after_request(_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["principal"] = principal


def require(role: auth.Role) -> Callable[[F], F]:
    """View decorator: 401/redirect to sign-in without a caller, 403 without ``role``."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            who = principal()
            if who is None:
                if wants_json():
                    response = jsonify(error="sign in or send an API token", fix="see /login")
                    response.status_code = 401
                    return response
                return redirect("/login?" + urlencode({"next": request.full_path.rstrip("?")}))
            if not who.can(role):
                logger.warning(
                    "%s (%s) refused %s: needs %s", who.name, who.role, request.path, role
                )
                message = f"This page is for the {role} role; you are signed in as {who.role}."
                if wants_json():
                    response = jsonify(error=message)
                    response.status_code = 403
                    return response
                return Response(
                    render_template(
                        "error.html",
                        title="Not allowed",
                        message=message,
                        fix="Sign in as a user with that role.",
                    ),
                    status=403,
                )
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
