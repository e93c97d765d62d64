"""Push the kiosk's outbox to the supervisor's hub, batch by batch, losing and doubling nothing.

The outbox table is the cursor: a result leaves it (state ``sent``) only after the hub listed
its id as accepted, so a crash, a cut cable or a killed process at any moment means the batch
is sent again on the next run, and the hub's idempotent upsert makes that harmless.

A diagnosis confirmed while a batch is in flight re-queues its result with a newer
``enqueued_at``; ``mark_sent(..., enqueued_before=...)`` then leaves it pending, so the new
version goes out in the next batch. ``enqueued_at`` is read before the result itself, inside
one database transaction, so the version sent is never older than the one marked sent.

Uses only the standard library (``urllib.request``): no extra dependency on the Pi.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any

from pydantic import ValidationError

from kiosk import __version__
from kiosk.backoff import Backoff
from kiosk.clock import utcnow
from kiosk.config import KioskConfig
from kiosk.errors import SyncError
from kiosk.store import Store
from kiosk.sync.payload import (
    LATER_FIELDS,
    SCHEMA_VERSION,
    PayloadError,
    ResultPayload,
    describe_validation_error,
    image_paths,
    make_thumbnail,
    read_results,
)

logger = logging.getLogger(__name__)

INGEST_PATH = "/api/v1/ingest"
MAX_ATTEMPTS = 5


@dataclass
class PushReport:
    """What one push run did. ``complete`` means nothing is left waiting in the outbox."""

    sent: int = 0
    batches: int = 0
    retries: int = 0
    rejected: int = 0
    remaining: int = 0
    complete: bool = False
    error: str | None = None
    duration_s: float = 0.0
    rejected_ids: list[str] = field(default_factory=list)
    # Stored rows that break the wire schema: kept out of every later push (see the outbox).
    quarantined_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "batches": self.batches,
            "retries": self.retries,
            "rejected": self.rejected,
            "quarantined": len(self.quarantined_ids),
            "remaining": self.remaining,
            "complete": self.complete,
            "error": self.error,
            "duration_s": round(self.duration_s, 3),
        }


class _HubReplyError(Exception):
    """A failed POST: ``retry`` says whether trying the same batch again can help."""

    def __init__(self, message: str, *, retry: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.status = status


def ingest_url(base_url: str) -> str:
    """``{sync.url}/api/v1/ingest``; a url that already ends in /api/v1 is accepted too."""
    base = base_url.rstrip("/")
    if base.endswith("/api/v1"):
        base = base[: -len("/api/v1")]
    return base + INGEST_PATH


# "equal jitter": each delay between half and all of 1, 2, 4 ... 60 s
PUSH_BACKOFF = Backoff(initial_s=0.75, max_s=45.0, jitter=1 / 3)


def backoff_delay_s(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Delay before retry ``attempt + 1`` of a push (``attempt`` counts from 0)."""
    return PUSH_BACKOFF.delay_s(attempt + 1, rand)


def _post(url: str, token: str, body: bytes, timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            # The hub's fleet view shows each kiosk's software version from this.
            "User-Agent": f"lightbox-kiosk/{__version__}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            data = response.read()
    except urllib.error.HTTPError as exc:
        detail = ""
        with contextlib.suppress(ValueError, OSError, HTTPException):
            detail = json.loads(exc.read() or b"{}").get("error", "")
        detail = detail or exc.reason or ""
        if exc.code in (401, 403):
            raise _HubReplyError(
                f"the hub refused this kiosk (HTTP {exc.code}: {detail}); check sync.token "
                "and device_id against `kiosk hub devices` on the hub",
                retry=False,
                status=exc.code,
            ) from exc
        if exc.code == 413:
            raise _HubReplyError(f"batch too large: {detail}", retry=False, status=413) from exc
        if exc.code in (408, 429) or exc.code >= 500:
            raise _HubReplyError(f"hub error HTTP {exc.code}: {detail}", retry=True) from exc
        raise _HubReplyError(
            f"the hub rejected the batch (HTTP {exc.code}: {detail})", retry=False, status=exc.code
        ) from exc
    except (urllib.error.URLError, TimeoutError, OSError, HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _HubReplyError(f"cannot reach the hub at {url}: {reason}", retry=True) from exc
    try:
        reply = json.loads(data)
    except ValueError as exc:
        raise _HubReplyError(
            "the hub's answer was not JSON (a proxy error page?)", retry=True
        ) from exc
    if not isinstance(reply, dict) or not isinstance(reply.get("accepted"), list):
        raise _HubReplyError("the hub's answer has no 'accepted' list", retry=True)
    return reply


def _payloads(store: Store, ids: list[str]) -> tuple[list[ResultPayload], dict[str, str]]:
    """Wire objects for ``ids``, and the error of each stored row that breaks the wire schema.

    One bad row must not hold back the others: when the batch as a whole does not build, each
    row is built alone and the ones that fail are returned with the field that is wrong (never
    its value: a bad value may be anything).
    """
    try:
        return read_results(store, ids), {}
    except (PayloadError, ValueError, TypeError, KeyError):
        pass
    results: list[ResultPayload] = []
    broken: dict[str, str] = {}
    for rid in ids:
        try:
            results.extend(read_results(store, [rid]))
        except ValidationError as exc:
            broken[rid] = str(describe_validation_error(exc, "result"))
        except (PayloadError, ValueError, TypeError, KeyError) as exc:
            broken[rid] = f"the stored result cannot be read ({type(exc).__name__})"
    return results, broken


def _read_batch(
    store: Store, limit: int, skip: set[str]
) -> tuple[list[ResultPayload], dict[str, str], dict[str, str]]:
    """Results to send, the ``enqueued_at`` each had when read (one consistent snapshot), and
    the rows that cannot be sent as stored, with why."""
    with store.transaction():
        ids = [i for i in store.outbox_batch(limit + len(skip)) if i not in skip][:limit]
        if not ids:
            return [], {}, {}
        marks = ",".join("?" * len(ids))
        enqueued = {
            r["result_id"]: r["enqueued_at"]
            for r in store.db.query(
                f"select result_id, enqueued_at from outbox where result_id in ({marks})", ids
            )
        }
        results, broken = _payloads(store, ids)
    return results, enqueued, broken


def _with_thumbnails(
    store: Store, config: KioskConfig, results: list[ResultPayload]
) -> list[ResultPayload]:
    paths = image_paths(store, [r.id for r in results])
    out = []
    for result in results:
        rel = paths.get(result.id)
        thumb = make_thumbnail(config.data_dir / rel) if rel else None
        out.append(result.model_copy(update={"thumbnail": thumb}) if thumb else result)
    return out


def build_body(
    config: KioskConfig, store: Store, results: list[ResultPayload], *, older_hub: bool = False
) -> bytes:
    """The JSON body of one push (schema version, device, the kiosk's outbox counts, results).

    ``older_hub``: leave out the fields a hub older than them refuses (``LATER_FIELDS``).
    """
    counts = store.outbox_counts()
    exclude = set(LATER_FIELDS) if older_hub else None
    body = {
        "schema_version": SCHEMA_VERSION,
        "device_id": config.device_id,
        "sent_at": utcnow(),
        "outbox": {k: counts[k] for k in ("pending", "failed", "sent")},
        "results": [r.model_dump(mode="json", exclude_none=True, exclude=exclude) for r in results],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _refuses_later_fields(exc: _HubReplyError) -> bool:
    """A 400 from a hub that does not know one of the fields added after schema version 1."""
    text = str(exc)
    return (
        exc.status == 400
        and "is not a known field" in text
        and any(f".{name}:" in text or f".{name}." in text for name in LATER_FIELDS)
    )


def _mark_acknowledged(store: Store, ids: list[str], enqueued: dict[str, str]) -> None:
    groups: dict[str, list[str]] = defaultdict(list)
    for rid in ids:
        groups[enqueued[rid]].append(rid)
    for enqueued_at, group in groups.items():
        store.mark_sent(group, enqueued_before=enqueued_at)


def push(
    store: Store,
    config: KioskConfig,
    *,
    max_batches: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_attempts: int = MAX_ATTEMPTS,
    rand: Callable[[], float] = random.random,
) -> PushReport:
    """Send pending results to the hub until the outbox is empty, a batch fails for good,
    or ``max_batches`` were sent. Never raises for hub trouble: the report says what happened.

    Raises SyncError only when there is nothing to push to (no ``sync.url`` / ``sync.token``).
    """
    if not config.sync.url:
        raise SyncError(
            "no hub is configured (sync.url is empty)", "set sync.url or KIOSK_SYNC_URL"
        )
    if not config.sync.token:
        raise SyncError(
            "sync.token is empty",
            "ask the supervisor for this kiosk's token (`kiosk hub add-device NAME` on the hub) "
            "and set sync.token or KIOSK_SYNC_TOKEN",
        )
    url = ingest_url(config.sync.url)
    report = PushReport()
    started = time.monotonic()
    skip: set[str] = set()
    older_hub = False
    batch_size = config.sync.batch_size
    while max_batches is None or report.batches < max_batches:
        results, enqueued, broken = _read_batch(store, batch_size, skip)
        for rid, problem in broken.items():
            store.quarantine(rid, problem)
            report.quarantined_ids.append(rid)
            logger.warning("result %s quarantined, it breaks the wire schema: %s", rid, problem)
        if not results:
            if broken:
                continue
            break
        if config.sync.include_thumbnail:
            results = _with_thumbnails(store, config, results)
        ids = [r.id for r in results]
        body = build_body(config, store, results, older_hub=older_hub)
        reply: dict[str, Any] | None = None
        for attempt in range(max_attempts):
            try:
                reply = _post(url, config.sync.token, body, config.sync.timeout_s)
                break
            except _HubReplyError as exc:
                if exc.status == 413 and len(ids) > 1:
                    batch_size = max(1, len(ids) // 2)
                    logger.warning("hub: batch too large, trying %d results per batch", batch_size)
                    break
                if exc.status == 413:
                    store.mark_failed(ids, str(exc))
                    skip.update(ids)
                    report.rejected += 1
                    report.rejected_ids.extend(ids)
                    logger.warning("result %s alone is larger than the hub accepts", ids[0])
                    break
                if not older_hub and _refuses_later_fields(exc):
                    older_hub = True
                    logger.warning(
                        "the hub is older than this kiosk: results go without %s",
                        ", ".join(sorted(LATER_FIELDS)),
                    )
                    break
                if not exc.retry or attempt == max_attempts - 1:
                    store.mark_failed(ids, str(exc))
                    report.error = str(exc)
                    logger.warning("push stopped after %d batches: %s", report.batches, exc)
                    return _finish(store, report, started)
                delay = backoff_delay_s(attempt, rand)
                report.retries += 1
                logger.info("push: %s; retry %d in %.1f s", exc, attempt + 1, delay)
                sleep(delay)
        if reply is None:
            continue  # batch shrunk after a 413, or the hub is older: read again
        accepted = [i for i in reply["accepted"] if i in enqueued]
        _mark_acknowledged(store, accepted, enqueued)
        missing = [i for i in ids if i not in set(accepted)]
        if missing:
            reasons = {r.get("id"): r.get("error") for r in reply.get("rejected", []) or []}
            store.mark_failed(missing, "hub did not accept: " + str(reasons.get(missing[0])))
            skip.update(missing)
            report.rejected += len(missing)
            report.rejected_ids.extend(missing)
            logger.warning("hub did not accept %d results, e.g. %s", len(missing), missing[0])
        report.sent += len(accepted)
        report.batches += 1
        logger.info("push: batch %d, %d results acknowledged", report.batches, len(accepted))
    return _finish(store, report, started)


def _finish(store: Store, report: PushReport, started: float) -> PushReport:
    counts = store.outbox_counts()
    report.remaining = counts["pending"] + counts["failed"]
    if report.quarantined_ids and report.error is None:
        # Not complete: someone has to look at these rows, and this run's exit status says so.
        report.error = (
            f"{len(report.quarantined_ids)} stored results break the wire schema and were "
            "quarantined (see kiosk sync status)"
        )
    report.complete = report.remaining == 0 and report.error is None
    if report.rejected and report.error is None:
        report.error = f"the hub did not accept {report.rejected} results (see kiosk sync status)"
    report.duration_s = time.monotonic() - started
    return report
