"""The hub's CSV export (``/results.csv``): one row per finding, safe to open in a spreadsheet.

Rows are streamed from one read transaction, so a large hub never builds the whole file in
memory. Text that came from a kiosk and starts with ``=``, ``+``, ``-``, ``@`` (or a tab or
carriage return) gets a leading ``'``: spreadsheets would otherwise run it as a formula
(CSV injection). Numbers are written as numbers and never changed.

The last columns say whether the result's probabilities were calibrated, with the same names
and values as the kiosk's CSV export: ``calibrated`` (1, 0, or empty from a kiosk older than
the field), ``calibration_kind`` ("site" or "factory") and ``calibration_date``.

What this module does not do: the kiosk's own exports for a USB stick (``kiosk.sync.export``),
or reading exports back (``importer``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from sqlalchemy import and_, select

from kiosk.hub.schema import diagnoses, findings, results
from kiosk.hub.store import HubStore

CSV_HEADER = [
    "result_id",
    "device_id",
    "created_at",
    "received_at",
    "status",
    "model_id",
    "model_version",
    "calibration_id",
    "finding",
    "raw",
    "probability",
    "threshold",
    "positive",
    "confirmed_label",
    "calibrated",
    "calibration_kind",
    "calibration_date",
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ROWS_PER_FETCH = 1000


def neutralise(cell: Any) -> Any:
    """A text cell that a spreadsheet would treat as a formula, prefixed with ``'``."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def csv_rows(
    store: HubStore, since: str | None = None, until: str | None = None
) -> Iterator[list[Any]]:
    """One row per finding of each result created in [since, until) (kiosk time); a result
    without findings gets one row. Values as stored, not neutralised, except ``calibrated``:
    1 or 0, empty when the kiosk did not say (as in the kiosk's own CSV export)."""
    stmt = (
        select(
            results.c.id,
            results.c.device_id,
            results.c.created_at,
            results.c.received_at,
            results.c.status,
            results.c.model_id,
            results.c.model_version,
            results.c.calibration_id,
            findings.c.code,
            findings.c.raw,
            findings.c.probability,
            findings.c.threshold,
            findings.c.positive,
            diagnoses.c.label.label("confirmed_label"),
            results.c.calibrated,
            results.c.calibration_kind,
            results.c.calibration_date,
        )
        .select_from(
            results.outerjoin(findings, findings.c.result_id == results.c.id).outerjoin(
                diagnoses,
                and_(diagnoses.c.result_id == results.c.id, diagnoses.c.code == findings.c.code),
            )
        )
        .order_by(results.c.created_at, results.c.id, findings.c.code)
    )
    if since:
        stmt = stmt.where(results.c.created_at >= since)
    if until:
        stmt = stmt.where(results.c.created_at < until)
    with store.read() as conn:
        for row in conn.execution_options(yield_per=ROWS_PER_FETCH).execute(stmt):
            *cells, calibrated, kind, date = row
            yield [*cells, "" if calibrated is None else int(calibrated), kind, date]


def csv_text(rows: Iterator[list[Any]], header: list[str] = CSV_HEADER) -> Iterator[str]:
    """CSV lines (header first) with every cell neutralised, a chunk at a time."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for n, row in enumerate(rows, start=1):
        writer.writerow([neutralise(c) for c in row])
        if n % ROWS_PER_FETCH == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()
