"""Users, roles, passwords, API tokens and the login rate limiter (no Flask state here).

The CLI (``kiosk user ...``, ``kiosk token ...``) and the web layer share these functions, so
everything about who may do what lives in one file. Passwords are hashed with scrypt
(``werkzeug.security``); API tokens are random 256-bit secrets stored as SHA-256 hashes, so
the database never holds anything that could be replayed.

Roles are ordered: ``staff < technician < supervisor``; a higher role may do everything a lower
one may. What this module does not do: sessions, cookies or CSRF (see ``kiosk.web.security``).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from werkzeug.security import check_password_hash, generate_password_hash

from kiosk.clock import utcnow
from kiosk.errors import KioskError
from kiosk.store import Store
from kiosk.tokens import hash_token

logger = logging.getLogger(__name__)

Role = Literal["staff", "technician", "supervisor"]
ROLES: tuple[Role, ...] = ("staff", "technician", "supervisor")
PASSWORD_METHOD = "scrypt"
MIN_PASSWORD_CHARS = 8
USERNAME_MAX_CHARS = 40
TOKEN_PREFIX = "lbk_"
LOGIN_MAX_FAILURES = 5
LOGIN_WINDOW_S = 300.0
# Compared against when the user does not exist, so timing does not reveal valid names.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method=PASSWORD_METHOD)


class AuthError(KioskError):
    """A user or token operation was refused (bad name, weak password, unknown user)."""


@dataclass(frozen=True)
class User:
    """A person who can sign in."""

    username: str
    role: Role
    created_at: str
    disabled: bool = False


@dataclass(frozen=True)
class ApiToken:
    """A script's credential (the secret itself is never stored)."""

    name: str
    role: Role
    created_at: str


def role_rank(role: str) -> int:
    """0 for staff, 1 technician, 2 supervisor; -1 for anything else."""
    return ROLES.index(role) if role in ROLES else -1


def has_role(role: str | None, needed: Role) -> bool:
    """True when ``role`` is ``needed`` or higher."""
    return role is not None and role_rank(role) >= role_rank(needed) >= 0


def check_role(role: str) -> Role:
    """Validate a role name; raises AuthError naming the allowed ones."""
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r}", f"use one of: {', '.join(ROLES)}")
    return role


def _check_username(username: str) -> str:
    name = username.strip()
    if (
        not name
        or len(name) > USERNAME_MAX_CHARS
        or not all(c.isalnum() or c in "._-" for c in name)
    ):
        raise AuthError(
            f"invalid user name {username!r}",
            f"use 1-{USERNAME_MAX_CHARS} letters, digits, '.', '_' or '-'",
        )
    return name


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password``; refuses passwords shorter than 8 characters."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise AuthError(
            f"the password is too short ({len(password)} characters)",
            f"use at least {MIN_PASSWORD_CHARS} characters",
        )
    return generate_password_hash(password, method=PASSWORD_METHOD)


def _user(row: dict[str, object]) -> User:
    return User(
        username=str(row["username"]),
        role=check_role(str(row["role"])),
        created_at=str(row["created_at"]),
        disabled=bool(row["disabled"]),
    )


def add_user(store: Store, username: str, role: str, password: str, *, actor: str = "cli") -> User:
    """Create a user; raises AuthError when the name exists or the input is invalid."""
    name = _check_username(username)
    user = User(name, check_role(role), utcnow())
    password_hash = hash_password(password)
    with store.transaction() as db:
        if list(db.query("select 1 from users where username = ?", [name])):
            raise AuthError(
                f"user {name!r} already exists", "pick another name, or disable the old user"
            )
        db.table("users").insert(
            {
                "username": name,
                "role": user.role,
                "password_hash": password_hash,
                "created_at": user.created_at,
                "disabled": 0,
            }
        )
    store.audit(actor, "user.added", name, {"role": user.role})
    logger.info("user %s added with role %s", name, user.role)
    return user


def get_user(store: Store, username: str) -> User | None:
    """The user (disabled ones included), or None."""
    rows = list(store.db.query("select * from users where username = ?", [username]))
    return _user(rows[0]) if rows else None


def list_users(store: Store) -> list[User]:
    """All users, by name."""
    return [_user(r) for r in store.db.query("select * from users order by username")]


def has_users(store: Store) -> bool:
    """True once at least one enabled user exists."""
    return bool(list(store.db.query("select 1 from users where disabled = 0 limit 1")))


def disable_user(store: Store, username: str, *, actor: str = "cli") -> None:
    """Stop a user from signing in (kept for the audit trail); raises AuthError if unknown."""
    with store.transaction() as db:
        if not list(db.query("select 1 from users where username = ?", [username])):
            raise AuthError(f"no user {username!r}", "see `kiosk user list`")
        db.execute("update users set disabled = 1 where username = ?", [username])
    store.audit(actor, "user.disabled", username)
    logger.info("user %s disabled", username)


def authenticate(store: Store, username: str, password: str) -> User | None:
    """The enabled user whose password matches, else None (same cost either way)."""
    rows = list(store.db.query("select * from users where username = ?", [username]))
    stored = str(rows[0]["password_hash"]) if rows else _DUMMY_HASH
    ok = check_password_hash(stored, password)
    if not rows or not ok or rows[0]["disabled"]:
        return None
    return _user(rows[0])


def add_token(store: Store, name: str, role: str, *, actor: str = "cli") -> str:
    """Create an API token and return the secret; only its hash is stored (shown once)."""
    label = _check_username(name)
    checked = check_role(role)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store.transaction() as db:
        db.table("api_tokens").insert(
            {
                "token_hash": hash_token(token),
                "name": label,
                "role": checked,
                "created_at": utcnow(),
            }
        )
    store.audit(actor, "token.added", label, {"role": checked})
    return token


def token_lookup(store: Store, token: str) -> ApiToken | None:
    """The token's name and role, or None for an unknown token."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    wanted = hash_token(token)
    rows = list(store.db.query("select * from api_tokens where token_hash = ?", [wanted]))
    if not rows or not hmac.compare_digest(str(rows[0]["token_hash"]), wanted):
        return None
    return ApiToken(
        str(rows[0]["name"]), check_role(str(rows[0]["role"])), str(rows[0]["created_at"])
    )


class LoginRateLimiter:
    """Refuses further attempts after ``max_failures`` failures within ``window_s``.

    Keys are free-form (``"user:NAME"``, ``"addr:IP"``); one refusal on any key refuses the
    attempt. In memory only: a restart forgets, which is acceptable for a kiosk on a LAN.
    """

    def __init__(
        self,
        max_failures: int = LOGIN_MAX_FAILURES,
        window_s: float = LOGIN_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and now - times[0] > self.window_s:
            times.popleft()
        return times

    def retry_after_s(self, keys: list[str]) -> float:
        """0 when an attempt is allowed, else seconds until the oldest failure expires."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if len(times) >= self.max_failures:
                    wait = max(wait, self.window_s - (now - times[0]))
        return wait

    def failed(self, keys: list[str]) -> None:
        """Record one failed attempt under every key."""
        now = self._clock()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def succeeded(self, keys: list[str]) -> None:
        """Forget the failures of these keys (a correct password was given)."""
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
