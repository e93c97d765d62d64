"""Who may talk to the hub: kiosks by bearer token, the supervisor by HTTP basic auth.

- A kiosk sends ``Authorization: Bearer <token>``; the token's device must be the batch's
  ``device_id`` (checked by the app). Only a sha256 of each token is stored.
- The supervisor signs in with user ``supervisor`` and the admin token as password. Both the
  user name and the password are checked, each with a constant-time comparison, and both are
  always compared, so the answer's timing says nothing about which one was wrong.
- Every answer carries ``Content-Security-Policy`` (no scripts, nothing from elsewhere, no
  framing), ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff`` and
  ``Referrer-Policy: no-referrer``.

What this module does not do: issue tokens (``store``), or log in anyone at the kiosk's own
web app (``kiosk.web``).
"""

from __future__ import annotations

import hmac
import logging

from flask import Request, Response

from kiosk.hub.store import HubStore

logger = logging.getLogger(__name__)

ADMIN_USER = "supervisor"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def supervisor_ok(request: Request, hub: HubStore) -> bool:
    """Whether the request carries the supervisor's basic-auth user name and admin token."""
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    user_ok = hmac.compare_digest((auth.username or "").encode(), ADMIN_USER.encode())
    password_ok = hub.check_admin_token(auth.password or "")
    return user_ok and password_ok


def ask_login() -> Response:
    """401 with the basic-auth challenge and what to type."""
    logger.warning("hub: supervisor page request without valid credentials")
    return Response(
        f"supervisor login required (user '{ADMIN_USER}', password: `kiosk hub admin-token`)\n",
        401,
        {"WWW-Authenticate": 'Basic realm="kiosk hub", charset="UTF-8"'},
    )


def add_security_headers(response: Response) -> Response:
    """Set the headers above on one answer (an ``after_request`` hook)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
