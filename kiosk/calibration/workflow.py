"""The site recalibration workflow: labelled photos (or confirmed cases) -> a stored record.

Maths lives in :mod:`kiosk.calibration.fitting`; this module gathers the model's logits and features
for the labelled cases, fits, writes the record and its reliability diagram next to each other
in ``<data_dir>/calibrations/`` and stores the record in the database. It does not decide
whether a calibration should be activated: the caller (a supervisor) does.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.atomic import atomic_write_bytes
from kiosk.calibration.fitting import fit_calibration
from kiosk.calibration.records import CalibrationRecord
from kiosk.calibration.reliability import write_reliability_svg
from kiosk.errors import CalibrationError
from kiosk.model.manifest import Manifest
from kiosk.pipeline import InputKind, Pipeline
from kiosk.stats import sigmoid
from kiosk.store import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledCases:
    """Model outputs and labels of labelled cases, rows aligned. Labels: 0, 1 or NaN."""

    logits: np.ndarray  # (n, C)
    labels: np.ndarray  # (n, C)
    features: np.ndarray | None  # (n, D)
    skipped: list[tuple[str, str]]  # (source, reason) of cases that could not be used


def _cases(
    logits: list[Any],
    labels: list[list[float]],
    features: list[np.ndarray | None],
    skipped: list[tuple[str, str]],
    n_codes: int,
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
            skipped.append((photo.name, result.reason or result.status))
            continue
        logits.append(result.logits)
        labels.append([row_labels.get(code, float("nan")) for code in codes])
        features.append(result.features)
    return _cases(logits, labels, features, skipped, len(codes))


def collect_from_store(store: Store, manifest: Manifest) -> LabelledCases:
    """Confirmed diagnoses of past results made with exactly this model (the site loop)."""
    codes = manifest.finding_codes
    logits, labels, features = [], [], []
    skipped: list[tuple[str, str]] = []
    for case in store.labelled_cases(manifest.sha256):
        if not case.get("logits"):
            skipped.append((case["id"], "no logits stored"))
            continue
        logits.append(case["logits"])
        labels.append(
            [
                float(case["diagnoses"][c]["label"]) if c in case["diagnoses"] else float("nan")
                for c in codes
            ]
        )
        features.append(store.result_features(case["id"]))
    return _cases(logits, labels, features, skipped, len(codes))


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
) -> tuple[CalibrationRecord, Path]:
    """Fit, write ``<id>.json`` and ``<id>.svg`` atomically, store the record; maybe activate."""
    if cases.logits.shape[0] == 0:
        raise CalibrationError(
            "none of the labelled cases could be analysed",
            "check the photos (see the skipped list) and try again",
        )
    record = fit_calibration(
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
    )
    folder = data_dir / "calibrations"
    folder.mkdir(parents=True, exist_ok=True)
    curves = []
    after = record.apply(
        cases.logits,
        cases.features,
        model_sha256=manifest.sha256,
        codes=list(manifest.finding_codes),
    )
    after = np.asarray(after, dtype=np.float64).reshape(cases.logits.shape)
    for i, code in enumerate(record.codes):
        mask = ~np.isnan(cases.labels[:, i])
        y = cases.labels[mask, i]
        curves.append((f"{code}: before", sigmoid(cases.logits[mask, i]), y))
        curves.append((f"{code}: after (fit data)", after[mask, i], y))
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
        activate=activate,
        actor=created_by,
    )
    logger.info("calibration %s stored (activated: %s)", record.id, activate)
    return record, diagram
