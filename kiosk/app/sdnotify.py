"""sd_notify(3) with the standard library: tell systemd we are ready, alive, or stopping.

The protocol is one AF_UNIX datagram of newline-separated ``KEY=value`` lines sent to the
socket named in ``$NOTIFY_SOCKET`` (a file path, or an abstract-namespace name when it starts
with ``@``). Outside systemd the variable is unset and every function here is a no-op that
returns False, so the same code runs on a laptop, in tests and under ``Type=notify``.

What this module does not do: it never unsets the environment (child processes such as a
``sqlite3`` backup never see ``WATCHDOG_PID`` set to their own pid, so they stay quiet), it
sends no file descriptors, and it never raises on a send failure: losing a notification must
not take the appliance down; the watchdog will notice if pings keep failing.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
US_PER_S = 1_000_000


def _socket_address() -> str | None:
    """The address from ``$NOTIFY_SOCKET`` as ``socket.connect`` wants it, or None."""
    path = os.environ.get(NOTIFY_SOCKET_ENV, "")
    if path.startswith("@"):
        return "\0" + path[1:]
    if path.startswith("/"):
        return path
    if path:
        logger.warning(
            "ignoring %s=%r: not an absolute path or @abstract name", NOTIFY_SOCKET_ENV, path
        )
    return None


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"`` or several lines) to systemd.

    Returns True when the datagram was sent, False when ``$NOTIFY_SOCKET`` is unset or the send
    failed (logged at debug level: outside systemd this is the normal case).
    """
    address = _socket_address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as error:
        logger.debug("sd_notify %r to %r failed: %s", state, address, error)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """Tell systemd start-up is complete (``READY=1``), optionally with a status line."""
    if status is None:
        return notify("READY=1")
    return notify(f"READY=1\nSTATUS={_one_line(status)}")


def stopping() -> bool:
    """Tell systemd the service is shutting down on purpose (``STOPPING=1``)."""
    return notify("STOPPING=1")


def watchdog_ping() -> bool:
    """Send one keep-alive (``WATCHDOG=1``); call it at about half of ``watchdog_interval_s``."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """Set the free-form status line ``systemctl status`` shows (``STATUS=...``)."""
    return notify(f"STATUS={_one_line(text)}")


def watchdog_interval_s() -> float | None:
    """The watchdog timeout systemd expects pings within, in seconds, or None when disabled.

    Same rules as sd_watchdog_enabled(3): ``$WATCHDOG_USEC`` must be a positive integer, and
    when ``$WATCHDOG_PID`` is set it must be this process's pid (otherwise the variables were
    inherited from a parent and the watchdog is not ours). Invalid values count as disabled.
    """
    raw_usec = os.environ.get(WATCHDOG_USEC_ENV)
    if not raw_usec:
        return None
    raw_pid = os.environ.get(WATCHDOG_PID_ENV)
    if raw_pid:
        try:
            pid = int(raw_pid)
        except ValueError:
            logger.warning("ignoring the watchdog: %s=%r is not a pid", WATCHDOG_PID_ENV, raw_pid)
            return None
        if pid != os.getpid():
            return None
    try:
        usec = int(raw_usec)
    except ValueError:
        logger.warning(
            "ignoring the watchdog: %s=%r is not an integer", WATCHDOG_USEC_ENV, raw_usec
        )
        return None
    if usec <= 0:
        return None
    return usec / US_PER_S


def _one_line(text: str) -> str:
    """Newlines would start a new ``KEY=value`` assignment; keep status text on one line."""
    return " ".join(text.splitlines())
