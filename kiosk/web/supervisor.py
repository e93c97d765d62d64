"""Supervisor pages: confirmed diagnoses (form and CSV import), calibration, sync and exports.

Confirmed diagnoses feed the site calibration loop: when enough arrived since the active
calibration (``should_propose_refit``) the calibration page offers to fit a new one. Fitting
and activating go through :mod:`kiosk.calibration.workflow`, exactly as `kiosk calibrate`
does (same record file, reliability diagram, checks and audit line): the new record is stored
inactive and shown with its held-out before/after metrics, and only an explicit "Activate"
makes the pipeline use it, which is refused, with the reasons shown, when the calibration is
worse than none on held-out cases or has too few cases of a class. "Use no site calibration"
and activating an older record are the roll-backs.
"""

from __future__ import annotations

import csv
import io
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any, cast

import numpy as np
from flask import Blueprint, Response, abort, flash, redirect, render_template, request
from flask.typing import ResponseReturnValue

from kiosk.calibration import workflow
from kiosk.calibration.drift import calibration_drift, should_propose_refit
from kiosk.calibration.records import CalibrationRecord
from kiosk.calibration.selection import activation_refusals
from kiosk.errors import KioskError
from kiosk.web import context, render
from kiosk.web.params import FIRST_DAY, day_arg, int_arg
from kiosk.web.security import SVG_IMAGE_POLICY, principal, require

logger = logging.getLogger(__name__)

bp = Blueprint("supervisor", __name__, url_prefix="/supervisor")

DIAGNOSES_PAGE_SIZE = 20
MAX_PAGE = 1_000_000
DRIFT_MIN_CASES = 30
MAX_CSV_ERRORS_SHOWN = 10
QUARANTINE_SHOWN = 20


def _actor() -> str:
    who = principal()
    return who.name if who is not None else "?"


def _codes() -> list[str]:
    return [f.code for f in context().appliance.pipeline.manifest.findings]


@bp.get("/")
@require("supervisor")
def index() -> ResponseReturnValue:
    return redirect("/supervisor/diagnoses")


# -- confirmed diagnoses ----------------------------------------------------------------------


@bp.get("/diagnoses")
@require("supervisor")
def diagnoses() -> str:
    store = context().appliance.store
    page = int_arg(request.args, "page", 1, 1, MAX_PAGE)
    rows, total = store.list_results(
        status="ok", limit=DIAGNOSES_PAGE_SIZE, offset=(page - 1) * DIAGNOSES_PAGE_SIZE
    )
    return render_template(
        "sup_diagnoses.html",
        page="supervisor",
        rows=[(r, render.findings_view(r)) for r in rows],
        total=total,
        page_no=page,
        pages=max(1, -(-total // DIAGNOSES_PAGE_SIZE)),
        codes=_codes(),
    )


@bp.post("/diagnoses/<result_id>")
@require("supervisor")
def confirm(result_id: str) -> ResponseReturnValue:
    store = context().appliance.store
    if store.get_result(result_id) is None:
        abort(404)
    saved = 0
    for code in _codes():
        value = request.form.get(f"label_{code}", "")
        if value in ("0", "1"):
            store.confirm_diagnosis(result_id, code, int(value), by=_actor(), source="page")
            saved += 1
    if saved:
        flash(f"Diagnosis saved for result #{result_id[:8]}.", "ok")
    else:
        flash("Nothing saved: choose Present or Absent for at least one finding.", "error")
    return redirect(f"/results/{result_id}")


def import_csv(text: str, actor: str) -> tuple[int, list[str]]:
    """Apply ``result_id,<code>...`` rows (0/1, blank = skip); returns (labels saved, errors)."""
    store = context().appliance.store
    codes = set(_codes())
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header or header[0] != "result_id":
        return 0, ["the first column must be named result_id (header: result_id,<finding>...)"]
    unknown = [h for h in header[1:] if h not in codes]
    if unknown:
        return 0, [
            f"unknown finding column(s): {', '.join(unknown)}; known: {', '.join(sorted(codes))}"
        ]
    saved, errors = 0, []
    for line_no, row in enumerate(reader, start=2):
        result_id = (row.get("result_id") or "").strip()
        if store.get_result(result_id) is None:
            errors.append(f"line {line_no}: no result with id {result_id!r}")
            continue
        for code in header[1:]:
            value = (row.get(code) or "").strip()
            if value == "":
                continue
            if value not in ("0", "1"):
                errors.append(f"line {line_no}: {code} must be 0 or 1, not {value!r}")
                continue
            store.confirm_diagnosis(result_id, code, int(value), by=actor, source="csv")
            saved += 1
    return saved, errors


@bp.post("/diagnoses/import")
@require("supervisor")
def diagnoses_import() -> ResponseReturnValue:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        flash("Choose a CSV file first.", "error")
        return redirect("/supervisor/diagnoses")
    try:
        text = upload.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        flash("The file is not UTF-8 text: save it as CSV (UTF-8) and try again.", "error")
        return redirect("/supervisor/diagnoses")
    saved, errors = import_csv(text, _actor())
    flash(f"{saved} confirmed label(s) imported.", "ok" if not errors else "error")
    for message in errors[:MAX_CSV_ERRORS_SHOWN]:
        flash(message, "error")
    if len(errors) > MAX_CSV_ERRORS_SHOWN:
        flash(f"… and {len(errors) - MAX_CSV_ERRORS_SHOWN} more problems.", "error")
    return redirect("/supervisor/diagnoses")


# -- calibration ------------------------------------------------------------------------------


def _labelled_matrix(
    cases: list[dict[str, Any]], codes: list[str]
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """(logits (n, C), labels (n, C) with NaN = not confirmed, cases used)."""
    used = [c for c in cases if c.get("logits") and len(c["logits"]) == len(codes)]
    logits = np.array([c["logits"] for c in used], dtype=np.float64).reshape(-1, len(codes))
    labels = np.full(logits.shape, np.nan)
    for i, case in enumerate(used):
        for j, code in enumerate(codes):
            diagnosis = case["diagnoses"].get(code)
            if diagnosis is not None:
                labels[i, j] = float(diagnosis["label"])
    return logits, labels, used


def _since_active(
    cases: list[dict[str, Any]], active: dict[str, Any] | None
) -> list[dict[str, Any]]:
    if active is None:
        return cases
    since = str(active.get("created_at") or "")
    return [c for c in cases if str(c["created_at"]) > since]


def refit_proposal(cases: list[dict[str, Any]], active: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether to offer a refit, with the reason in words (per finding)."""
    codes = _codes()
    recent = _since_active(cases, active)
    _, labels, _ = _labelled_matrix(recent, codes)
    messages, ready = [], False
    for j, code in enumerate(codes):
        column = labels[:, j] if labels.size else np.array([])
        column = column[~np.isnan(column)]
        positives = int(column.sum())
        propose, why = should_propose_refit(
            int(column.size), positives, int(column.size) - positives
        )
        ready = ready or propose
        messages.append(f"{code}: {why}")
    return ready, " ".join(messages)


def drift_reports(cases: list[dict[str, Any]], active: dict[str, Any] | None) -> list[str]:
    """One sentence per finding on calibration drift / score shift, or why it cannot be checked."""
    if active is None:
        return ["No calibration is active, so there is nothing to check for drift."]
    codes = _codes()
    recent = [c for c in _since_active(cases, active) if c.get("calibration_id") == active["id"]]
    baseline = [c for c in cases if c not in _since_active(cases, active)]
    out = []
    for j, code in enumerate(codes):
        probs, labels, raw = [], [], []
        for case in recent:
            diagnosis = case["diagnoses"].get(code)
            finding = next((f for f in case["findings"] if f["code"] == code), None)
            if diagnosis is None or finding is None or not case.get("logits"):
                continue
            probs.append(float(finding["probability"]))
            labels.append(int(diagnosis["label"]))
            raw.append(float(case["logits"][j]))
        base = [float(c["logits"][j]) for c in baseline if c.get("logits")]
        if len(probs) < DRIFT_MIN_CASES or len(base) < DRIFT_MIN_CASES:
            out.append(
                f"{code}: not enough confirmed cases to check drift yet "
                f"({len(probs)} recent, {len(base)} baseline; {DRIFT_MIN_CASES} of each needed)."
            )
            continue
        report = calibration_drift(probs, labels, raw, base)
        flag = "DRIFT: " if report.flagged else ""
        out.append(f"{code}: {flag}{' '.join(report.reasons)}")
    return out


@bp.get("/calibration")
@require("supervisor")
def calibration() -> str:
    appliance = context().appliance
    sha = appliance.pipeline.manifest.sha256
    records = []
    for row in appliance.store.list_calibrations(sha):
        data = appliance.store.get_calibration(row["id"])
        record = CalibrationRecord.from_dict(data) if data else None
        refusals = activation_refusals(record) if record else ["the record cannot be read"]
        records.append((row, record, refusals))
    cases = appliance.store.labelled_cases(sha)
    active = appliance.store.active_calibration(sha)
    propose, why = refit_proposal(cases, active)
    return render_template(
        "sup_calibration.html",
        page="supervisor",
        records=records,
        active=active,
        factory=appliance.pipeline.factory_calibration,
        n_cases=len(cases),
        propose=propose,
        why=why,
        drift=drift_reports(cases, active),
    )


@bp.get("/calibration/<calibration_id>/diagram.svg")
@require("supervisor")
def diagram(calibration_id: str) -> Response:
    """The reliability diagram written when the record was fitted (held-out predictions)."""
    appliance = context().appliance
    data = appliance.store.get_calibration(calibration_id)
    if data is None or not data.get("diagram_path"):
        abort(404)
    data_dir = appliance.config.data_dir.resolve()
    path = (data_dir / str(data["diagram_path"])).resolve()
    if not path.is_relative_to(data_dir) or not path.is_file():
        abort(404)
    response = Response(path.read_bytes(), mimetype="image/svg+xml")
    response.headers["Content-Security-Policy"] = SVG_IMAGE_POLICY
    return response


def _reload_pipeline() -> None:
    context().appliance.pipeline.reload_calibration()


@bp.post("/calibration/<calibration_id>/activate")
@require("supervisor")
def activate(calibration_id: str) -> ResponseReturnValue:
    appliance = context().appliance
    try:
        workflow.activate(
            appliance.store, calibration_id, appliance.pipeline.manifest, actor=_actor()
        )
    except KioskError as exc:
        flash(f"Not activated: {exc.message}", "error")
        return redirect("/supervisor/calibration")
    _reload_pipeline()
    flash(f"Calibration {calibration_id} is now active for new results.", "ok")
    return redirect("/supervisor/calibration")


def _without_site() -> str:
    factory = context().appliance.pipeline.factory_calibration
    if factory is None:
        return "new results show raw model probabilities"
    return f"new results use the {factory.label} calibration shipped with the model"


@bp.post("/calibration/rollback")
@require("supervisor")
def rollback() -> ResponseReturnValue:
    appliance = context().appliance
    now = appliance.store.rollback_calibration(appliance.pipeline.manifest.sha256, actor=_actor())
    _reload_pipeline()
    if now is None:
        flash(f"Rolled back: no site calibration is active, {_without_site()}.", "ok")
    else:
        flash(f"Rolled back: calibration {now} is active again for new results.", "ok")
    return redirect("/supervisor/calibration")


@bp.post("/calibration/deactivate")
@require("supervisor")
def deactivate() -> ResponseReturnValue:
    appliance = context().appliance
    appliance.store.deactivate_calibrations(appliance.pipeline.manifest.sha256, actor=_actor())
    _reload_pipeline()
    flash(f"No site calibration is active: {_without_site()}.", "ok")
    return redirect("/supervisor/calibration")


@bp.post("/calibration/fit")
@require("supervisor")
def fit() -> ResponseReturnValue:
    appliance = context().appliance
    manifest = appliance.pipeline.manifest
    cases = workflow.collect_from_store(appliance.store, manifest)
    try:
        outcome = workflow.fit_and_save(
            appliance.store,
            appliance.config.data_dir,
            manifest,
            cases,
            created_by=_actor(),
            notes="fitted on the supervisor page from confirmed cases",
        )
    except KioskError as exc:
        flash(f"No new calibration: {exc} ({cases.summary}).", "error")
        return redirect("/supervisor/calibration")
    problems = activation_refusals(outcome.record)
    if problems:
        flash(
            f"New calibration {outcome.record.id} ({cases.summary}) cannot be activated: "
            + "; ".join(problems),
            "error",
        )
    else:
        flash(
            f"New calibration {outcome.record.id} ({cases.summary}). Compare before/after "
            "below and activate it if it is better.",
            "ok",
        )
    return redirect("/supervisor/calibration")


# -- sync and exports -------------------------------------------------------------------------

_push_lock = threading.Lock()


def _push_in_background() -> None:
    from kiosk.sync.client import push

    ctx = context()
    store, config, extra = ctx.appliance.store, ctx.appliance.config, ctx.extra

    def run() -> None:
        try:
            report = push(store, config)
            extra["last_push"] = report.to_dict()
        except KioskError as exc:
            extra["last_push"] = {"error": str(exc)}
        except Exception as exc:  # a failed push must not take the page down
            logger.exception("push failed")
            extra["last_push"] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            _push_lock.release()

    threading.Thread(target=run, name="kiosk-push-now", daemon=True).start()


@bp.get("/sync")
@require("supervisor")
def sync() -> str:
    ctx = context()
    return render_template(
        "sup_sync.html",
        page="supervisor",
        counts=ctx.appliance.store.outbox_counts(),
        quarantined=ctx.appliance.store.quarantined(QUARANTINE_SHOWN),
        hub=ctx.appliance.config.sync.url,
        last_push=ctx.extra.get("last_push"),
        pushing=_push_lock.locked(),
        exports=_export_formats(),
    )


@bp.post("/sync/push")
@require("supervisor")
def push_now() -> ResponseReturnValue:
    config = context().appliance.config
    if not config.sync.url or not config.sync.token:
        flash(
            "No hub is configured (sync.url and sync.token): results stay on this kiosk.", "error"
        )
        return redirect("/supervisor/sync")
    if not _push_lock.acquire(blocking=False):
        flash("A push is already running.", "error")
        return redirect("/supervisor/sync")
    _push_in_background()
    context().appliance.store.audit(_actor(), "sync.push_requested", None, None)
    flash("Push started; reload this page in a moment to see the outcome.", "ok")
    return redirect("/supervisor/sync")


def _export_formats() -> list[str]:
    try:
        from kiosk.sync import export
    except ImportError:
        return []
    return list(export.FORMATS)


EXPORT_SUFFIX = {"jsonl": "jsonl", "csv": "csv", "sqlite": "sqlite", "fhir": "fhir.json"}
EXPORT_MIMETYPE = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
    "sqlite": "application/vnd.sqlite3",
    "fhir": "application/fhir+json",
}


@bp.get("/exports")
@require("supervisor")
def export_download() -> ResponseReturnValue:
    from kiosk.sync import export

    fmt = request.args.get("fmt", "")
    if fmt not in _export_formats():
        abort(404)
    appliance = context().appliance
    first = day_arg(request.args, "from")
    last = day_arg(request.args, "to")
    since = (first or FIRST_DAY).isoformat()
    until = last.isoformat() if last is not None else None
    filename = f"kiosk-{appliance.config.device_id}-{since}.{EXPORT_SUFFIX.get(fmt, fmt)}"
    with tempfile.TemporaryDirectory(prefix="kiosk-export-") as tmp:
        out = Path(tmp) / filename
        try:
            manifest = export.export_results(
                appliance.store,
                appliance.config,
                since=since,
                until=until,
                fmt=cast(export.ExportFormat, fmt),
                out=out,
            )
        except KioskError as exc:
            flash(f"Export failed: {exc}", "error")
            return redirect("/supervisor/sync")
        data = out.read_bytes()
    appliance.store.audit(
        _actor(), "export.downloaded", None, {"format": fmt, "results": manifest.counts["results"]}
    )
    return Response(
        data,
        mimetype=EXPORT_MIMETYPE.get(fmt, "application/octet-stream"),
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
