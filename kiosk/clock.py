"""The one clock format of the kiosk and the hub: UTC, ISO 8601 with a Z, milliseconds.

What this module does not do: time zones for display (the page formats local time itself).
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> str:
    """Current UTC time as ISO 8601 with a Z, millisecond precision."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
