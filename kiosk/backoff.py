"""Exponential backoff with jitter: the one retry policy (camera reopening, hub pushes).

What this module does not do: sleep or retry by itself; callers wait ``delay_s`` their own way
(the camera thread keeps its watchdog heartbeat going while it waits).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays that double from ``initial_s`` up to ``max_s``, each spread by +-``jitter``."""

    initial_s: float = 0.5
    max_s: float = 30.0
    jitter: float = 0.25  # fraction of each delay

    def delay_s(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before attempt number ``failures`` (1 = the first retry); ``rand`` in [0, 1)."""
        base = min(self.max_s, self.initial_s * 2.0 ** max(0, failures - 1))
        return max(0.0, base * (1.0 + self.jitter * (2.0 * rand() - 1.0)))
