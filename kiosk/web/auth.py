"""Rate-limiting sign-ins, and the account names the web layer uses.

Users, roles, passwords and API tokens are stored and checked in ``kiosk.store.accounts``; the
names the pages and the API use are re-exported here so ``auth.authenticate`` and friends read
as before. What this module does not do: store anything, or sessions, cookies and CSRF
(``kiosk.web.security``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from kiosk.store.accounts import ROLES as ROLES
from kiosk.store.accounts import TOKEN_PREFIX as TOKEN_PREFIX
from kiosk.store.accounts import USERNAME_MAX_CHARS as USERNAME_MAX_CHARS
from kiosk.store.accounts import AuthError as AuthError
from kiosk.store.accounts import Role as Role
from kiosk.store.accounts import User as User
from kiosk.store.accounts import add_token as add_token
from kiosk.store.accounts import add_user as add_user
from kiosk.store.accounts import authenticate as authenticate
from kiosk.store.accounts import disable_user as disable_user
from kiosk.store.accounts import end_sessions as end_sessions
from kiosk.store.accounts import get_user as get_user
from kiosk.store.accounts import has_role as has_role
from kiosk.store.accounts import has_users as has_users
from kiosk.store.accounts import list_tokens as list_tokens
from kiosk.store.accounts import revoke_token as revoke_token
from kiosk.store.accounts import set_password as set_password
from kiosk.store.accounts import token_lookup as token_lookup

LOGIN_MAX_FAILURES = 5
LOGIN_WINDOW_S = 300.0


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
