"""Liveness of the appliance's threads, and the systemd watchdog pings that depend on it.

Each long-running component (camera thread, pipeline worker, web server) registers a name and
the longest it may stay silent, then calls ``beat(name)`` from its own loop. A component that
waits for work (the pipeline worker on an empty queue) must wait with a timeout and beat on
every wake-up, so "idle" and "stuck" look different.

``WatchdogPinger`` sends ``WATCHDOG=1`` to systemd only while every registered component is
alive. A stuck camera thread therefore stops the pings, and systemd (``WatchdogSec=`` in
``kiosk.service``) kills and restarts the whole process: the one recovery that also frees a
wedged camera driver. A process that merely keeps its main thread running is not "alive".

What this module does not do: it does not restart anything itself and does not inspect
threads; it only trusts beats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kiosk.app import sdnotify

logger = logging.getLogger(__name__)

# sd_watchdog_enabled(3) recommends pinging every half of the timeout.
WATCHDOG_FRACTION = 0.5


@dataclass
class Component:
    """One monitored component: its name, its allowed silence and its last beat."""

    name: str
    max_age_s: float
    last_beat_s: float  # on the registry's monotonic clock


class HeartbeatRegistry:
    """Thread-safe table of components and their last beat.

    ``clock`` returns monotonic seconds; tests may pass a fake one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._components: dict[str, Component] = {}

    def register(self, name: str, max_age_s: float) -> None:
        """Start watching ``name``; registering counts as its first beat.

        Registering an existing name replaces its ``max_age_s`` and refreshes its beat.
        """
        if max_age_s <= 0:
            raise ValueError(f"max_age_s for {name!r} must be > 0, got {max_age_s}")
        with self._lock:
            self._components[name] = Component(name, max_age_s, self._clock())

    def unregister(self, name: str) -> None:
        """Stop watching ``name`` (it shuts down on purpose); unknown names are ignored."""
        with self._lock:
            self._components.pop(name, None)

    def beat(self, name: str) -> None:
        """Record that ``name`` is alive now. Raises KeyError if it was never registered."""
        with self._lock:
            component = self._components.get(name)
            if component is None:
                raise KeyError(
                    f"heartbeat from unregistered component {name!r}; call register first"
                )
            component.last_beat_s = self._clock()

    def all_alive(self) -> tuple[bool, list[str]]:
        """(True, []) if every component beat within its max_age_s, else (False, stale names)."""
        now = self._clock()
        with self._lock:
            stale = sorted(
                c.name for c in self._components.values() if now - c.last_beat_s > c.max_age_s
            )
        return (not stale, stale)

    def names(self) -> list[str]:
        """Registered component names, sorted."""
        with self._lock:
            return sorted(self._components)


class WatchdogPinger:
    """Background thread that pings the systemd watchdog while the registry is all alive.

    ``interval_s`` defaults to ``WATCHDOG_FRACTION`` of the timeout systemd announced in
    ``$WATCHDOG_USEC``; when there is none (not under systemd, or no ``WatchdogSec=``),
    ``start()`` returns False and no thread runs. ``ping`` is the function that sends one
    keep-alive (``sdnotify.watchdog_ping`` unless a test substitutes one).
    """

    def __init__(
        self,
        registry: HeartbeatRegistry,
        interval_s: float | None = None,
        ping: Callable[[], bool] = sdnotify.watchdog_ping,
        set_status: Callable[[str], bool] = sdnotify.status,
    ) -> None:
        if interval_s is None:
            timeout_s = sdnotify.watchdog_interval_s()
            interval_s = timeout_s * WATCHDOG_FRACTION if timeout_s is not None else None
        if interval_s is not None and interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self._registry = registry
        self._ping = ping
        self._set_status = set_status
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._stale: list[str] = []

    def start(self) -> bool:
        """Start the thread; False (and nothing started) when the watchdog is disabled."""
        if self.interval_s is None:
            logger.info("systemd watchdog not enabled; not sending keep-alives")
            return False
        if self._thread is not None:
            return True
        self._thread = threading.Thread(
            target=self._run, args=(self.interval_s,), name="watchdog-pinger", daemon=True
        )
        self._thread.start()
        logger.info("pinging the systemd watchdog every %.1f s", self.interval_s)
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and wait up to ``timeout_s`` for it to end."""
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def check_once(self) -> bool:
        """One round: ping if every component is alive. Returns whether a ping was sent.

        Logs and updates the systemd status line once per transition (alive -> stale, a
        different set of stale components, or recovery), not on every round.
        """
        alive, stale = self._registry.all_alive()
        if stale != self._stale:
            if stale:
                logger.error("components stale, withholding watchdog pings: %s", ", ".join(stale))
                self._set_status(f"stale: {', '.join(stale)}; watchdog will restart the service")
            else:
                logger.warning("all components alive again; resuming watchdog pings")
                self._set_status("running")
            self._stale = stale
        if not alive:
            return False
        return self._ping()

    def _run(self, interval_s: float) -> None:
        while True:
            self.check_once()
            if self._stop_event.wait(interval_s):
                break
