"""Bearer tokens of the kiosk's API and the hub: only their sha256 is ever stored.

What this module does not do: decide who may use a token (accounts and the hub's device table
do), or compare hashes (callers use ``hmac.compare_digest`` on what they look up).
"""

from __future__ import annotations

import hashlib
import secrets


def hash_token(token: str) -> str:
    """sha256 hex of a token: what is stored instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(prefix: str = "") -> str:
    """A new random token (256 bits, URL-safe), with an optional readable prefix."""
    return prefix + secrets.token_urlsafe(32)
