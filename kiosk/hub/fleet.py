"""The fleet view: per kiosk, what a supervisor needs to decide which one needs a visit.

For each kiosk: last contact (hub time), software version (from the push's ``User-Agent``),
model and calibration it runs (from its newest pushed result; whether that result was
calibrated, and the calibration's kind and date, from its newest analysed result, see
``HubStore.devices``), results per day over the last 7 days (by the kiosk's ``created_at``
date), its outbox backlog, and a drift check per finding.

Backlog: each push carries the kiosk's outbox counts read *before* that batch was sent, so the
results still waiting after it are ``pending + failed - results in that push`` (never below 0).

Drift: the confirmed diagnoses the kiosk sent (``diagnoses``, joined to the calibrated
probability of the same finding) over the last 90 days of hub time, newest 500 per finding.
If the calibration still holds, the number of confirmed positives ``O`` is close to the sum of
the calibrated probabilities ``E``; the check flags ``|O - E| / sqrt(sum p(1 - p)) >= 3``
(calibration in the large, a z-score) once there are at least 30 cases. It is a screening
signal for a visit, not the kiosk's full check (ECE with a bootstrap CI and a score-shift test
on its supervisor page), which needs raw scores of the calibration set the hub does not have.
Cases whose result says it was not calibrated are counted and named in the check's note: their
probabilities are raw model scores, and a drift on them says little about a calibration.

What this module does not do: store anything, or contact a kiosk.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select

from kiosk.hub.schema import diagnoses, findings, ingests, results
from kiosk.hub.store import HubStore

DAYS_SHOWN = 7
STALE_CONTACT_H = 48
BACKLOG_VISIT = 500
CLOCK_SKEW_VISIT_H = 24
DRIFT_WINDOW_DAYS = 90
DRIFT_MAX_CASES = 500
DRIFT_MIN_CASES = 30
DRIFT_Z_LIMIT = 3.0


@dataclass
class DriftCheck:
    """Calibration in the large for one finding on one kiosk."""

    code: str
    n: int
    observed_positives: int
    expected_positives: float
    z: float | None
    flagged: bool
    note: str
    uncalibrated: int = 0  # cases whose result said its probabilities were not calibrated


@dataclass
class KioskStatus:
    """One row of the fleet view."""

    name: str
    last_contact_at: str | None
    kiosk_version: str | None
    model_id: str | None
    model_version: str | None
    calibration_id: str | None
    calibrated: bool | None  # None: the kiosk did not say (older than the field)
    calibration_kind: str | None
    calibration_date: str | None
    results_total: int
    results_per_day: list[dict[str, Any]]
    backlog: int | None
    reported_failed: int | None
    drift: list[DriftCheck] = field(default_factory=list)
    needs_visit: list[str] = field(default_factory=list)

    @property
    def drift_flag(self) -> bool:
        return any(d.flagged for d in self.drift)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drift_flag"] = self.drift_flag
        return out


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def drift_check(code: str, cases: list[tuple[float, int]], uncalibrated: int = 0) -> DriftCheck:
    """The z-score check of the module docstring on (calibrated probability, label) pairs;
    ``uncalibrated`` of the cases had probabilities that were not calibrated (said in the
    note)."""
    n = len(cases)
    observed = sum(label for _, label in cases)
    expected = sum(p for p, _ in cases)
    variance = sum(p * (1.0 - p) for p, _ in cases)
    raw = f"; {uncalibrated} of {n} not calibrated (raw model scores)" if uncalibrated else ""
    if n < DRIFT_MIN_CASES:
        note = f"{n} confirmed; {DRIFT_MIN_CASES} needed{raw}"
        return DriftCheck(code, n, observed, expected, None, False, note, uncalibrated)
    z = (observed - expected) / math.sqrt(variance) if variance > 0 else 0.0
    flagged = abs(z) >= DRIFT_Z_LIMIT
    note = (
        f"{observed} of {n} confirmed positive, calibration expected {expected:.1f} "
        f"(z={z:+.1f}){raw}"
    )
    return DriftCheck(
        code, n, observed, round(expected, 2), round(z, 2), flagged, note, uncalibrated
    )


def fleet(store: HubStore, now: datetime | None = None) -> list[KioskStatus]:
    """The fleet view, one status per known kiosk, by name."""
    now = now or datetime.now(UTC)
    today = now.astimezone(UTC).date()
    days = [today - timedelta(days=k) for k in range(DAYS_SHOWN - 1, -1, -1)]
    day_col = func.substr(results.c.created_at, 1, 10).label("day")
    per_day_stmt = (
        select(results.c.device_id, day_col, func.count().label("n"))
        .where(
            results.c.created_at >= days[0].isoformat(),
            results.c.created_at < (today + timedelta(days=1)).isoformat(),
        )
        .group_by(results.c.device_id, day_col)
    )
    last_push = (
        select(func.max(ingests.c.id))
        .where(ingests.c.via == "push")
        .group_by(ingests.c.device_id)
        .scalar_subquery()
    )
    last_push_stmt = select(ingests.c.device_id, ingests.c.results).where(
        ingests.c.id.in_(last_push)
    )
    drift_stmt = (
        select(
            results.c.device_id,
            diagnoses.c.code,
            findings.c.probability,
            diagnoses.c.label,
            results.c.calibrated,
        )
        .select_from(
            diagnoses.join(results, results.c.id == diagnoses.c.result_id).join(
                findings,
                and_(
                    findings.c.result_id == diagnoses.c.result_id,
                    findings.c.code == diagnoses.c.code,
                ),
            )
        )
        .where(results.c.updated_at >= _iso(now - timedelta(days=DRIFT_WINDOW_DAYS)))
        .order_by(results.c.created_at.desc())
    )
    per_day: dict[str, dict[str, int]] = defaultdict(dict)
    cases: dict[str, dict[str, list[tuple[float, int]]]] = defaultdict(lambda: defaultdict(list))
    uncalibrated: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with store.read() as conn:
        for row in conn.execute(per_day_stmt):
            per_day[row.device_id][row.day] = int(row.n)
        pushed = {row.device_id: int(row.results or 0) for row in conn.execute(last_push_stmt)}
        for row in conn.execute(drift_stmt):
            kept = cases[row.device_id][row.code]
            if len(kept) < DRIFT_MAX_CASES and row.probability is not None:
                kept.append((float(row.probability), int(row.label)))
                if row.calibrated is False:
                    uncalibrated[row.device_id][row.code] += 1
    out = []
    for d in store.devices():
        name = d["name"]
        backlog = None
        if d["reported_pending"] is not None:
            waiting = d["reported_pending"] + (d["reported_failed"] or 0) - pushed.get(name, 0)
            backlog = max(0, waiting)
        status = KioskStatus(
            name=name,
            last_contact_at=d["last_contact_at"],
            kiosk_version=d["kiosk_version"],
            model_id=d["model_id"],
            model_version=d["model_version"],
            calibration_id=d["calibration_id"],
            calibrated=d["calibrated"],
            calibration_kind=d["calibration_kind"],
            calibration_date=d["calibration_date"],
            results_total=int(d["results"]),
            results_per_day=[
                {"day": day.isoformat(), "n": per_day[name].get(day.isoformat(), 0)} for day in days
            ],
            backlog=backlog,
            reported_failed=d["reported_failed"],
            drift=[
                drift_check(code, c, uncalibrated[name][code])
                for code, c in sorted(cases[name].items())
            ],
        )
        status.needs_visit = _visit_reasons(status, d["last_kiosk_time"], now)
        out.append(status)
    return out


def _visit_reasons(status: KioskStatus, last_kiosk_time: str | None, now: datetime) -> list[str]:
    reasons = []
    contact = _parse(status.last_contact_at)
    if contact is None:
        reasons.append("never pushed")
    elif now - contact > timedelta(hours=STALE_CONTACT_H):
        hours = (now - contact).total_seconds() / 3600
        reasons.append(f"no contact for {hours:.0f} h")
    if status.backlog is not None and status.backlog >= BACKLOG_VISIT:
        reasons.append(f"{status.backlog} results waiting on the kiosk")
    for check in status.drift:
        if check.flagged:
            reasons.append(f"drift in {check.code}: {check.note}")
    kiosk_time = _parse(last_kiosk_time)
    if contact is not None and kiosk_time is not None:
        skew_h = abs((kiosk_time - contact).total_seconds()) / 3600
        if skew_h >= CLOCK_SKEW_VISIT_H:
            reasons.append(f"kiosk clock off by {skew_h:.0f} h")
    return reasons
