"""An in-memory ring buffer of recent log records, for the technician's log page.

Installed once on the root logger by :func:`install`; holds the last ``capacity`` records as
plain dataclasses (already formatted, so a page never touches live LogRecord objects).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 500


@dataclass(frozen=True)
class LogLine:
    """One formatted log record."""

    at: str  # ISO 8601 UTC
    level: str
    name: str
    message: str


class RingBufferHandler(logging.Handler):
    """Keeps the newest ``capacity`` records; thread-safe; never raises into the caller."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._lines: deque[LogLine] = deque(maxlen=capacity)
        self._lines_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                message = f"{message} [{type(exc).__name__}: {exc}]"
            line = LogLine(
                at=datetime.fromtimestamp(record.created, UTC).isoformat(timespec="seconds"),
                level=record.levelname,
                name=record.name,
                message=message,
            )
        except Exception:
            self.handleError(record)
            return
        with self._lines_lock:
            self._lines.append(line)

    def lines(self, limit: int = 200, min_level: int = logging.NOTSET) -> list[LogLine]:
        """Newest first, at most ``limit``, at or above ``min_level``."""
        with self._lines_lock:
            lines = list(self._lines)
        wanted = [ln for ln in reversed(lines) if logging.getLevelName(ln.level) >= min_level]
        return wanted[:limit]


_installed: RingBufferHandler | None = None
_install_lock = threading.Lock()


def install(capacity: int = DEFAULT_CAPACITY) -> RingBufferHandler:
    """The process-wide handler on the root logger (added on first call, reused afterwards)."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = RingBufferHandler(capacity)
            # The root logger's level (set by `kiosk serve` from log_level) decides what
            # reaches this handler; it is not changed here.
            logging.getLogger().addHandler(_installed)
        return _installed
