"""Key-value settings kept in the database (strings only).

What this module does not do: validate values or know any key; callers own their meaning.
"""

from __future__ import annotations

from kiosk.store.db import StoreBase


class SettingsMixin(StoreBase):
    """Key-value settings."""

    def get_setting(self, key: str) -> str | None:
        with self._lock:
            rows = list(self.db.query("select value from settings where key = ?", [key]))
        return rows[0]["value"] if rows else None

    def set_setting(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.table("settings").upsert({"key": key, "value": value}, pk="key")
