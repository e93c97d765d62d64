"""The site calibration workflow, the one path from labelled cases to a stored, checked record.

Both `kiosk calibrate LABELS.csv` (labelled photos) and the supervisor's calibration page
(confirmed diagnoses of past results) go through here, so they produce the same things:

1. the labelled cases (:func:`collect_from_photos` or :func:`collect_from_store`), with the
   ones that could not be used counted by reason (:attr:`LabelledCases.summary`);
2. :func:`fit_and_save`: the record (nested cross-validation, :mod:`kiosk.calibration.fitting`),
   ``<data_dir>/calibrations/<id>.json`` and the reliability diagram ``<id>.svg`` (before, and
   after on the held-out predictions) next to it, the record in the database with one
   ``calibration.stored`` audit line saying where it came from;
3. :func:`activate`: the checks of :func:`~kiosk.calibration.selection.activation_refusals`
   (never a calibration worse than none on held-out cases, never below the per-class minimum);
   a refusal is audited (``calibration.activation_refused``) and raised with the numbers.

What this module does not do: decide *when* to refit (``drift``), or apply a calibration (the
pipeline does).
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.atomic import atomic_write_bytes
from kiosk.calibration.fitting import fit_calibration_detailed
from kiosk.calibration.records import CalibrationRecord
from kiosk.calibration.reliability import write_reliability_svg
from kiosk.calibration.selection import activation_refusals
from kiosk.errors import CalibrationError
from kiosk.model.manifest import Manifest
from kiosk.pipeline import InputKind, Pipeline
from kiosk.store import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """A labelled case that could not be used, and why (``category`` is what gets counted)."""

    source: str
    reason: str
    category: str


@dataclass(frozen=True)
class LabelledCases:
    """Model outputs and labels of labelled cases, rows aligned. Labels: 0, 1 or NaN."""

    logits: np.ndarray  # (n, C)
    labels: np.ndarray  # (n, C)
    features: np.ndarray | None  # (n, D)
    skipped: list[Skipped] = field(default_factory=list)
    source: str = "labelled cases"

    @property
    def used(self) -> int:
        return int(self.logits.shape[0])

    @property
    def labelled(self) -> int:
        return self.used + len(self.skipped)

    def skipped_by_reason(self) -> dict[str, int]:
        """How many cases were skipped, per reason category, most frequent first."""
        return dict(Counter(s.category for s in self.skipped).most_common())

    @property
    def summary(self) -> str:
        """E.g. '37 of 200 labelled photos used; 163 skipped: 120 photo gate: no film, ...'."""
        text = f"{self.used} of {self.labelled} {self.source} used"
        if self.skipped:
            parts = ", ".join(f"{n} {why}" for why, n in self.skipped_by_reason().items())
            text += f"; {len(self.skipped)} skipped: {parts}"
        return text

    def data(self) -> dict[str, Any]:
        """The record's ``data`` field."""
        return {
            "source": self.source,
            "labelled": self.labelled,
            "used": self.used,
            "skipped": self.skipped_by_reason(),
            "summary": self.summary,
        }


def _cases(
    logits: list[Any],
    labels: list[list[float]],
    features: list[np.ndarray | None],
    skipped: list[Skipped],
    n_codes: int,
    source: str,
) -> LabelledCases:
    """Stack per-case rows; features only when every case has them."""
    present = [f for f in features if f is not None]
    return LabelledCases(
        logits=np.asarray(logits, dtype=np.float64).reshape(len(logits), n_codes),
        labels=np.asarray(labels, dtype=np.float64).reshape(len(labels), n_codes),
        features=np.stack(present).astype(np.float64)
        if present and len(present) == len(features)
        else None,
        skipped=skipped,
        source=source,
    )


def read_labels_csv(path: Path, codes: tuple[str, ...]) -> list[tuple[Path, dict[str, float]]]:
    """Parse ``path,<code>...`` with 0/1 labels (blank = not labelled).

    Paths are relative to the CSV's folder.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            if not header or header[0].strip().lower() != "path":
                raise CalibrationError(
                    f"{path}: the first column must be 'path', got {header[:1]}",
                    "write a header like: path,pneumonia",
                )
            columns = [h.strip() for h in header[1:]]
            unknown = [c for c in columns if c not in codes]
            if unknown:
                raise CalibrationError(
                    f"{path}: column(s) {', '.join(unknown)} are not findings of this model "
                    f"({', '.join(codes)})",
                    "rename or remove those columns",
                )
            if not columns:
                raise CalibrationError(f"{path}: no finding columns", "add e.g. 'pneumonia'")
            rows = []
            for line_no, row in enumerate(reader, start=2):
                labels: dict[str, float] = {}
                for column, raw_name in zip(columns, header[1:], strict=True):
                    value = (row.get(raw_name) or "").strip()
                    if value == "":
                        labels[column] = float("nan")
                    elif value in ("0", "1"):
                        labels[column] = float(value)
                    else:
                        raise CalibrationError(
                            f"{path} line {line_no}: {column} is {value!r}; labels are 0, 1 "
                            "or empty",
                            "fix that cell",
                        )
                rows.append((path.parent / row[header[0]].strip(), labels))
    except OSError as exc:
        raise CalibrationError(f"cannot read {path}: {exc}") from exc
    return rows


def _skip_category(status: str, quality: dict[str, Any]) -> str:
    """'photo gate: glare', 'not a chest X-ray', 'error': what a skipped photo is counted as."""
    flags = [f for f in quality.get("flags", []) if f != "uncalibrated"]
    if status == "rejected" and "not_xray" in flags:
        return "not a chest X-ray (gate)"
    if status == "rejected":
        return f"photo gate: {flags[0].replace('_', ' ')}" if flags else "photo gate"
    return "could not be analysed"


def collect_from_photos(
    pipeline: Pipeline,
    rows: list[tuple[Path, dict[str, float]]],
    *,
    input_kind: InputKind = "photo",
) -> LabelledCases:
    """Run each labelled photo through the pipeline (not stored) and collect its outputs."""
    codes = pipeline.manifest.finding_codes
    logits, labels, features, skipped = [], [], [], []
    for photo, row_labels in rows:
        result = pipeline.analyze_file(photo, input_kind, store=False)
        if result.status != "ok" or result.logits is None:
            category = _skip_category(result.status, result.quality)
            skipped.append(Skipped(photo.name, result.message or result.status, category))
            continue
        logits.append(result.logits)
        labels.append([row_labels.get(code, float("nan")) for code in codes])
        features.append(result.features)
    return _cases(logits, labels, features, skipped, len(codes), "labelled photos")


def collect_from_store(store: Store, manifest: Manifest) -> LabelledCases:
    """Confirmed diagnoses of past results made with exactly this model (the site loop)."""
    codes = manifest.finding_codes
    logits, labels, features = [], [], []
    skipped: list[Skipped] = []
    for case in store.labelled_cases(manifest.sha256):
        if not case.get("logits") or len(case["logits"]) != len(codes):
            skipped.append(Skipped(case["id"], "no model outputs stored", "no model outputs"))
            continue
        logits.append(case["logits"])
        labels.append(
            [
                float(case["diagnoses"][c]["label"]) if c in case["diagnoses"] else float("nan")
                for c in codes
            ]
        )
        features.append(store.result_features(case["id"]) if case.get("has_features") else None)
    return _cases(logits, labels, features, skipped, len(codes), "confirmed cases")


@dataclass(frozen=True)
class Outcome:
    """What :func:`fit_and_save` did: the record, its diagram, whether it is now active and,
    when activation was asked for and refused, why."""

    record: CalibrationRecord
    diagram: Path
    activated: bool
    refusals: list[str]


def fit_and_save(
    store: Store,
    data_dir: Path,
    manifest: Manifest,
    cases: LabelledCases,
    *,
    method: str = "auto",
    target_sensitivity: float = 0.90,
    threshold_rule: str = "sensitivity",
    created_by: str = "cli",
    activate: bool = False,
    notes: str = "",
) -> Outcome:
    """Fit, write ``<id>.json`` and ``<id>.svg`` atomically, store the record; maybe activate.

    The record is stored even when activation is refused (so it can be inspected); the refusal
    is in :attr:`Outcome.refusals` and the audit log. Raises CalibrationError when the record
    cannot be fitted at all (too few cases, one class, ...), saying why.
    """
    if cases.used == 0:
        raise CalibrationError(
            f"none of the labelled cases could be used ({cases.summary})",
            "check the photos (see the reasons) and try again",
        )
    fit = fit_calibration_detailed(
        cases.logits,
        cases.labels,
        list(manifest.finding_codes),
        features=cases.features if method in ("auto", "refit") else None,
        method=method,  # type: ignore[arg-type]
        target_sensitivity=target_sensitivity,
        threshold_rule=threshold_rule,  # type: ignore[arg-type]
        model_id=manifest.id,
        model_sha256=manifest.sha256,
        created_by=created_by,
        known_codes=list(manifest.finding_codes),
        notes=notes,
        data=cases.data(),
    )
    record = fit.record
    folder = data_dir / "calibrations"
    folder.mkdir(parents=True, exist_ok=True)
    curves = []
    for code, held in fit.held_out.items():
        curves.append((f"{code}: before", held.raw, held.labels))
        curves.append((f"{code}: after (held-out folds)", held.calibrated, held.labels))
    diagram = write_reliability_svg(
        folder / f"{record.id}.svg",
        curves,
        bins=15,
        title=f"Reliability, {manifest.id}, {record.id}",
    )
    payload: dict[str, Any] = record.to_dict()
    atomic_write_bytes(folder / f"{record.id}.json", json.dumps(payload, indent=2).encode())
    store.save_calibration(
        payload,
        diagram_path=str(diagram.relative_to(data_dir)),
        actor=created_by,
        details={"source": cases.source, "used": cases.used, "summary": cases.summary},
    )
    logger.info("calibration %s stored: %s", record.id, cases.summary)
    refusals: list[str] = []
    if activate:
        try:
            _activate(store, record, manifest, created_by)
        except CalibrationError as exc:
            refusals = activation_refusals(record) or [exc.message]
    return Outcome(
        record=record, diagram=diagram, activated=activate and not refusals, refusals=refusals
    )


def _activate(store: Store, record: CalibrationRecord, manifest: Manifest, actor: str) -> None:
    if record.model_sha256 != manifest.sha256:
        raise CalibrationError(
            f"calibration {record.id} belongs to model {record.model_id} "
            f"(sha256 {record.model_sha256[:12]}…), not the current model {manifest.id} "
            f"({manifest.sha256[:12]}…)",
            "fit a new calibration for the current model",
        )
    problems = activation_refusals(record)
    if problems:
        store.audit(actor, "calibration.activation_refused", record.id, {"why": problems})
        raise CalibrationError(
            f"calibration {record.id} was not activated: " + "; ".join(problems),
            "label more cases (at least 50 per finding, 10 of each class) and fit again; "
            "until then the kiosk keeps its current calibration",
        )
    store.activate_calibration(record.id, actor=actor)


def activate(store: Store, calibration_id: str, manifest: Manifest, *, actor: str) -> None:
    """Make a stored record the active one, if it passes the checks; raises CalibrationError
    with the reasons (numbers included) when it does not, and audits the refusal."""
    data = store.get_calibration(calibration_id)
    if data is None:
        raise CalibrationError(f"no calibration {calibration_id}", "see `kiosk calibration list`")
    _activate(store, CalibrationRecord.from_dict(data), manifest, actor)
