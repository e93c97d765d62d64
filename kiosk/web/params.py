"""Query parameters from outside: numbers and days, checked before they reach SQL or datetime.

A page number of ``99999999999999999999`` overflows SQLite's integers and ``to=9999-12-31``
overflows ``datetime`` when a day is added; both used to be 500s. Every view reads such
parameters through :func:`int_arg` and :func:`day_arg`, which raise :class:`ParamError`; the app
answers it with 400 and the message (JSON for the API, a page otherwise).

What this module does not do: decide what a parameter means (the views do).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date

from flask import Flask, Response, jsonify, render_template

from kiosk.errors import KioskError
from kiosk.web.security import wants_json

logger = logging.getLogger(__name__)

# Results are stored with UTC times of this century; anything outside is a typo or a probe.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2999, 12, 31)


class ParamError(KioskError):
    """A query parameter is malformed or out of range; answered with 400."""


def int_arg(args: Mapping[str, str], name: str, default: int, lowest: int, highest: int) -> int:
    """``args[name]`` as an integer in [lowest, highest]; ``default`` when absent or empty."""
    text = (args.get(name) or "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ParamError(f"{name} must be a whole number, not {text[:40]!r}") from None
    if not lowest <= value <= highest:
        raise ParamError(
            f"{name} must be from {lowest} to {highest}", f"for example {name}={default}"
        )
    return value


def day_arg(args: Mapping[str, str], name: str) -> date | None:
    """``args[name]`` as a calendar day ``YYYY-MM-DD`` between 1970 and 2999, or None if empty."""
    text = (args.get(name) or "").strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise ParamError(f"{name} must be a day written YYYY-MM-DD, not {text[:40]!r}")
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ParamError(f"{name} must be a day from {FIRST_DAY} to {LAST_DAY}, not {text}")
    return day


def choice_arg(
    args: Mapping[str, str], name: str, allowed: set[str] | tuple[str, ...]
) -> str | None:
    """``args[name]`` if it is one of ``allowed``; None when absent or empty."""
    text = args.get(name) or ""
    if not text:
        return None
    if text not in allowed:
        raise ParamError(f"{name} must be one of {', '.join(sorted(allowed))}, not {text[:40]!r}")
    return text


def _bad_request(exc: ParamError) -> Response:
    logger.info("bad query parameter: %s", exc.message)
    if wants_json():
        response = jsonify(error=exc.message, fix=exc.fix)
    else:
        response = Response(
            render_template(
                "error.html",
                title="That address is not right",
                message=exc.message,
                fix=exc.fix or "Go back and use the page's own links and forms.",
            )
        )
    response.status_code = 400
    return response


def install(app: Flask) -> None:
    """Answer every :class:`ParamError` with 400 and its message."""
    app.register_error_handler(ParamError, _bad_request)
