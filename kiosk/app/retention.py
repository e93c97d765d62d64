"""Retention: delete old film images, keep every result row.

Images are the bulky, identifying part; results (scores, model, calibration) are small and
are what the supervisor's statistics need, so they are never deleted here.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kiosk.errors import ConfigError
from kiosk.store import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeReport:
    images: int
    bytes: int


def purge_images(store: Store, data_dir: Path, days: int, *, dry_run: bool = False) -> PurgeReport:
    """Delete film images of results older than ``days`` and clear their image_path.

    ``days == 0`` keeps every image (``retention.image_days = 0`` means "keep forever");
    negative days raise ConfigError instead of deleting everything.
    """
    if days < 0:
        raise ConfigError(
            f"retention days must be 0 (keep forever) or more, not {days}",
            "set retention.image_days (or --days) to 0 or a positive number of days",
        )
    if days == 0:
        logger.info("retention: image_days is 0, every image is kept")
        return PurgeReport(0, 0)
    cutoff = (datetime.now(UTC) - timedelta(days=days)).isoformat().replace("+00:00", "Z")
    rows = list(
        store.db.query(
            "select id, image_path from results where image_path is not null and created_at < ?",
            [cutoff],
        )
    )
    count = size = 0
    for row in rows:
        path = data_dir / row["image_path"]
        with contextlib.suppress(FileNotFoundError):
            size += path.stat().st_size
        count += 1
        if dry_run:
            continue
        path.unlink(missing_ok=True)
        with store.transaction() as db:
            db.execute("update results set image_path = null where id = ?", [row["id"]])
    if not dry_run and count:
        store.audit("retention", "images.purged", None, {"images": count, "days": days})
        logger.info("retention: deleted %d images older than %d days", count, days)
    return PurgeReport(count, size)
