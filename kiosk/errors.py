"""Errors a user can act on.

Every error the kiosk raises on purpose says what was wrong and, where there is one, what to do
about it. Command-line and web layers print ``str(error)``; nothing else is needed to help.
"""

from __future__ import annotations


class KioskError(Exception):
    """Base class: ``message`` says what was wrong, ``fix`` says what to do."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message} ({self.fix})"
        return self.message


class ConfigError(KioskError):
    """The configuration file or a KIOSK_* variable is invalid."""


class ImageError(KioskError):
    """An input image cannot be read or is not acceptable."""


class ModelError(KioskError):
    """A model file or manifest is missing, corrupt or inconsistent."""


class CalibrationError(KioskError):
    """A calibration cannot be fitted or applied."""


class CameraError(KioskError):
    """The camera is missing, busy or failed."""


class StoreError(KioskError):
    """The database or data directory cannot be used (full disk, permissions, corruption)."""


class SyncError(KioskError):
    """Talking to the hub failed."""
