"""Accounts: users, roles, passwords and API tokens, as stored in the kiosk database.

The CLI (``kiosk user ...``, ``kiosk token ...``) and the web layer share these functions, so
everything about who may do what is stored and checked in one file. Passwords are hashed with
scrypt (``werkzeug.security``); API tokens are random 256-bit secrets stored as SHA-256 hashes
(``kiosk.tokens``), so the database never holds anything that could be replayed.

Roles are ordered: ``staff < technician < supervisor``; a higher role may do everything a lower
one may. What this module does not do: sessions, cookies, CSRF (``kiosk.web.security``) or
rate-limiting sign-ins (``kiosk.web.auth``).
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from werkzeug.security import check_password_hash, generate_password_hash

from kiosk.clock import utcnow
from kiosk.errors import KioskError
from kiosk.tokens import hash_token, new_token

if TYPE_CHECKING:
    from kiosk.store import Store

logger = logging.getLogger(__name__)

Role = Literal["staff", "technician", "supervisor"]
ROLES: tuple[Role, ...] = ("staff", "technician", "supervisor")
PASSWORD_METHOD = "scrypt"
MIN_PASSWORD_CHARS = 8
USERNAME_MAX_CHARS = 40
TOKEN_PREFIX = "lbk_"
TOKEN_ID_CHARS = 12
# A token's last use is written at most this often, not on every API call.
TOKEN_USE_RESOLUTION_S = 60
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
    # Bumped by sign-out, disabling and a new password: older sessions stop working.
    session_version: int = 0


@dataclass(frozen=True)
class ApiToken:
    """A script's credential (the secret itself is never stored).

    ``id`` is the first characters of the token's SHA-256: enough to name one token in
    ``kiosk token revoke``, useless for using it.
    """

    name: str
    role: Role
    created_at: str
    id: str = ""
    last_used_at: str | None = None


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
        session_version=int(str(row.get("session_version") or 0)),
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
    """Stop a user from signing in and end their sessions (kept for the audit trail); raises
    AuthError if unknown."""
    with store.transaction() as db:
        if not list(db.query("select 1 from users where username = ?", [username])):
            raise AuthError(f"no user {username!r}", "see `kiosk user list`")
        db.execute(
            "update users set disabled = 1, session_version = session_version + 1 "
            "where username = ?",
            [username],
        )
    store.audit(actor, "user.disabled", username)
    logger.info("user %s disabled", username)


def set_password(store: Store, username: str, password: str, *, actor: str = "cli") -> None:
    """Give a user a new password and end all their sessions; raises AuthError if unknown or
    the password is too short."""
    password_hash = hash_password(password)
    with store.transaction() as db:
        if not list(db.query("select 1 from users where username = ?", [username])):
            raise AuthError(f"no user {username!r}", "see `kiosk user list`")
        db.execute(
            "update users set password_hash = ?, session_version = session_version + 1 "
            "where username = ?",
            [password_hash, username],
        )
    store.audit(actor, "user.password_changed", username)
    logger.info("password of user %s changed; their sessions ended", username)


def end_sessions(store: Store, username: str) -> None:
    """End every session of ``username`` (signing out ends them on all browsers at once)."""
    with store.transaction() as db:
        db.execute(
            "update users set session_version = session_version + 1 where username = ?",
            [username],
        )


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
    token = new_token(TOKEN_PREFIX)
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


def _token(row: dict[str, object]) -> ApiToken:
    return ApiToken(
        name=str(row["name"]),
        role=check_role(str(row["role"])),
        created_at=str(row["created_at"]),
        id=str(row["token_hash"])[:TOKEN_ID_CHARS],
        last_used_at=str(row["last_used_at"]) if row.get("last_used_at") else None,
    )


def token_lookup(store: Store, token: str) -> ApiToken | None:
    """The token's name and role, or None for an unknown token. Notes its use (at most once a
    minute, so API calls do not each cost a database write)."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    wanted = hash_token(token)
    rows = list(store.db.query("select * from api_tokens where token_hash = ?", [wanted]))
    if not rows or not hmac.compare_digest(str(rows[0]["token_hash"]), wanted):
        return None
    found = _token(rows[0])
    now = utcnow()
    if found.last_used_at is None or _seconds_between(found.last_used_at, now) >= (
        TOKEN_USE_RESOLUTION_S
    ):
        with store.transaction() as db:
            db.execute("update api_tokens set last_used_at = ? where token_hash = ?", [now, wanted])
    return found


def _seconds_between(earlier: str, later: str) -> float:
    try:
        start = datetime.fromisoformat(earlier.replace("Z", "+00:00"))
        end = datetime.fromisoformat(later.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    return (end - start).total_seconds()


def list_tokens(store: Store) -> list[ApiToken]:
    """Every API token's name, role, id, creation and last use (never the secret)."""
    return [_token(r) for r in store.db.query("select * from api_tokens order by created_at, name")]


def revoke_token(store: Store, which: str, *, actor: str = "cli") -> ApiToken:
    """Delete the token whose id (see :func:`list_tokens`) or unique name is ``which``.

    Raises AuthError when nothing matches, or when a name belongs to several tokens (then the
    id says which). Scripts using the token get 401 from their next call on.
    """
    key = which.strip()
    matches = [t for t in list_tokens(store) if key and key in (t.id, t.name)]
    if not matches:
        raise AuthError(f"no API token with id or name {key!r}", "see `kiosk token list`")
    if len(matches) > 1:
        raise AuthError(
            f"{len(matches)} API tokens are called {key!r}",
            "revoke one by its id: " + ", ".join(t.id for t in matches),
        )
    token = matches[0]
    with store.transaction() as db:
        db.execute(
            "delete from api_tokens where substr(token_hash, 1, ?) = ?", [TOKEN_ID_CHARS, token.id]
        )
    store.audit(actor, "token.revoked", token.name, {"id": token.id, "role": token.role})
    logger.info("API token %s (%s) revoked", token.name, token.id)
    return token
