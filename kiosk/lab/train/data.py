"""Training data: find images, name their patients, de-duplicate, split by patient, read labels.

Two sources feed the same pipeline:

* a Kermany-style folder (``NORMAL/`` and ``PNEUMONIA/`` sub-folders): one finding,
  ``pneumonia``, patient ids parsed from the file names;
* a CheXpert / MIMIC-CXR style CSV: a ``Path`` column and one column per finding holding
  ``1`` (positive), ``0`` (negative), ``-1`` (uncertain) or blank (not mentioned, read as 0).
  Uncertain labels follow a policy: ``ones`` (U-Ones), ``zeros`` (U-Zeros) or ``ignore``
  (masked out of the loss).

Splits are by patient, stratified by the patient's label pattern, after removing exact
duplicate images (same content hash): copies of one film must never straddle two splits.
Nothing here needs torch or TensorFlow.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from kiosk.errors import KioskError

logger = logging.getLogger(__name__)

UncertainPolicy = Literal["ones", "zeros", "ignore"]
SPLITS = ("train", "val", "holdout")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_NON_FINDING_COLUMNS = {"path", "sex", "age", "frontal/lateral", "ap/pa", "patient", "split"}
_KERMANY_CLASSES = {"NORMAL": 0, "PNEUMONIA": 1}


class DataError(KioskError):
    """The training data (folder, CSV or split file) cannot be used as given."""


@dataclass(frozen=True)
class Sample:
    """One training image: where it is, its labels (0/1 per finding) and loss mask."""

    path: Path
    name: str
    patient: str
    labels: tuple[float, ...]
    mask: tuple[float, ...]
    sha256: str = ""
    split: str = ""


def patient_id(name: str) -> str:
    """The patient id carried by a Kermany file name or a CheXpert/MIMIC path.

    ``person12_virus_3.jpeg`` -> ``person12``; ``IM-0115-0001.jpeg`` -> ``IM-0115``;
    ``NORMAL2-IM-0123-0001.jpeg`` -> ``NORMAL2-IM-0123``; ``.../patient00001/study1/x.jpg``
    -> ``patient00001``; ``.../p10/p10000032/s5.../x.jpg`` -> ``p10000032``. Anything else
    is its own patient (the file stem), which is the safe choice for a split.
    """
    text = name.replace("\\", "/")
    for pattern in (r"(patient\d+)", r"/(p\d{8})/"):
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    base = text.rsplit("/", 1)[-1]
    for pattern in (r"^(person\d+)_", r"^(NORMAL\d*-IM-\d+)-", r"^(IM-\d+)-"):
        m = re.match(pattern, base)
        if m:
            return m.group(1)
    return base.rsplit(".", 1)[0]


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def scan_kermany(root: Path) -> list[Sample]:
    """All images under ``root/NORMAL`` and ``root/PNEUMONIA`` as one-finding samples."""
    root = Path(root)
    samples: list[Sample] = []
    for folder, label in _KERMANY_CLASSES.items():
        sub = root / folder
        if not sub.is_dir():
            raise DataError(
                f"training folder {root} has no {folder}/ sub-folder",
                "point --data at the kermany-train folder (it holds NORMAL/ and PNEUMONIA/)",
            )
        for p in sorted(sub.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(
                    Sample(p, f"{folder}/{p.name}", patient_id(p.name), (float(label),), (1.0,))
                )
    logger.info("found %d images in %d classes", len(samples), len(_KERMANY_CLASSES))
    return samples


def read_label_csv(
    csv_path: Path,
    findings: Sequence[str] | None = None,
    uncertain: UncertainPolicy = "ignore",
) -> tuple[list[Sample], list[str]]:
    """Read a CheXpert/MIMIC-style CSV into samples; returns ``(samples, finding columns)``.

    ``findings`` picks columns by header name; by default every column that is not one of
    Path/Sex/Age/Frontal/Lateral/AP/PA/patient/split. Paths are relative to the CSV folder.
    Does not open the images.
    """
    csv_path = Path(csv_path)
    if uncertain not in ("ones", "zeros", "ignore"):
        raise DataError(
            f"uncertain-label policy {uncertain!r} is not known", "use ones, zeros or ignore"
        )
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    path_col = next((h for h in header if h.lower() == "path"), None)
    if path_col is None:
        raise DataError(f"{csv_path} has no Path column", "add a header row with Path first")
    cols = (
        list(findings) if findings else [h for h in header if h.lower() not in _NON_FINDING_COLUMNS]
    )
    missing = [c for c in cols if c not in header]
    if missing or not cols:
        raise DataError(
            f"{csv_path}: finding columns {missing or cols} not found in header {header}",
            "name existing columns with --finding, or add finding columns to the CSV",
        )
    samples: list[Sample] = []
    for line_no, row in enumerate(rows, start=2):
        labels: list[float] = []
        mask: list[float] = []
        for c in cols:
            raw = (row.get(c) or "").strip()
            try:
                value = float(raw) if raw else 0.0
            except ValueError as exc:
                raise DataError(
                    f"{csv_path} line {line_no}: {c}={raw!r} is not 1, 0, -1 or blank",
                    "fix the label in the CSV",
                ) from exc
            if value not in (1.0, 0.0, -1.0):
                raise DataError(
                    f"{csv_path} line {line_no}: {c}={raw!r} is not 1, 0, -1 or blank",
                    "fix the label in the CSV",
                )
            if value == -1.0:
                labels.append(1.0 if uncertain == "ones" else 0.0)
                mask.append(0.0 if uncertain == "ignore" else 1.0)
            else:
                labels.append(value)
                mask.append(1.0)
        rel = row[path_col]
        patient = (row.get("patient") or "").strip() or patient_id(rel)
        samples.append(Sample(csv_path.parent / rel, rel, patient, tuple(labels), tuple(mask)))
    logger.info("read %d rows, %d findings, uncertain=%s", len(samples), len(cols), uncertain)
    return samples, cols


def deduplicate(samples: Iterable[Sample]) -> tuple[list[Sample], list[Sample]]:
    """Keep one image per content hash; returns ``(kept, dropped)``.

    Of a group of identical files the first by name is kept. If copies carry different
    labels, the whole group is dropped: nobody knows which label is right.
    """
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        digest = s.sha256 or file_sha256(s.path)
        groups[digest].append(replace(s, sha256=digest))
    kept: list[Sample] = []
    dropped: list[Sample] = []
    for group in groups.values():
        group.sort(key=lambda s: s.name)
        if len({s.labels for s in group}) > 1:
            dropped.extend(group)
            continue
        kept.append(group[0])
        dropped.extend(group[1:])
    kept.sort(key=lambda s: s.name)
    logger.info("de-duplicated: kept %d, dropped %d", len(kept), len(dropped))
    return kept, dropped


def split_by_patient(
    samples: Sequence[Sample],
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15),
    seed: int = 0,
) -> list[Sample]:
    """Assign every sample to train/val/holdout so that no patient is in two splits.

    Patients are grouped by label pattern (for one finding: ever positive or not); each group is
    shuffled with ``seed`` and the groups are walked in turn, giving each patient to the split
    furthest below its share so far. That keeps every group and the whole close to
    ``fractions`` (of patients) even when a group has only a handful of patients.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise DataError(f"split fractions {fractions} must be >= 0 and sum to 1")
    by_patient: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_patient[s.patient].append(s)
    strata: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for pid, items in by_patient.items():
        n_labels = len(items[0].labels)
        pattern = tuple(int(any(s.labels[i] > 0.5 for s in items)) for i in range(n_labels))
        strata[pattern].append(pid)
    rng = np.random.default_rng(seed)
    ordered: list[str] = []
    for pattern in sorted(strata):
        pids = sorted(strata[pattern])
        rng.shuffle(pids)
        ordered.extend(pids)
    counts = [0, 0, 0]
    assignment: dict[str, str] = {}
    for i, pid in enumerate(ordered):
        deficits = [fractions[k] * (i + 1) - counts[k] for k in range(3)]
        k = int(np.argmax(deficits))
        counts[k] += 1
        assignment[pid] = SPLITS[k]
    return [replace(s, split=assignment[s.patient]) for s in samples]


def write_split_csv(samples: Sequence[Sample], path: Path, finding_codes: Sequence[str]) -> None:
    """Write ``filename,label,patient,split`` (file names only, never pixels).

    ``label`` is the class name for one finding (NORMAL/PNEUMONIA style) or the 0/1 labels
    joined by ``|`` for several.
    """
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["filename", "label", "patient", "split"])
        for s in sorted(samples, key=lambda s: s.name):
            if len(finding_codes) == 1:
                label = "PNEUMONIA" if s.labels[0] > 0.5 else "NORMAL"
                if finding_codes[0] != "pneumonia":
                    label = str(int(s.labels[0]))
            else:
                label = "|".join(str(int(v)) for v in s.labels)
            w.writerow([s.name, label, s.patient, s.split])


def read_split_csv(path: Path, data_root: Path) -> list[Sample]:
    """Read a split CSV back into samples under ``data_root`` (checks the files exist).

    Labels are ``NORMAL``/``PNEUMONIA`` or 0/1 values joined by ``|`` (uncertain labels
    already resolved by the training policy; masks are not kept).
    """
    path, data_root = Path(path), Path(data_root)
    out: list[Sample] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            label = row["label"]
            if label in ("PNEUMONIA", "NORMAL"):
                values: tuple[float, ...] = (1.0 if label == "PNEUMONIA" else 0.0,)
            else:
                values = tuple(float(v) for v in label.split("|"))
            out.append(
                Sample(
                    data_root / row["filename"],
                    row["filename"],
                    row["patient"],
                    values,
                    (1.0,) * len(values),
                    split=row["split"],
                )
            )
    missing = [s for s in out if not s.path.is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(out)} images named in {path.name} are missing "
            f"under {data_root}",
            "point --data at the kermany-train folder the split was made from",
        )
    return out


def split_digest(samples: Sequence[Sample], split: str) -> str:
    """sha256 over the sorted names in one split: proves which images a run used."""
    names = sorted(s.name for s in samples if s.split == split)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def load_grey(samples: Sequence[Sample], size: int) -> np.ndarray:
    """Decode images as uint8 grey (N, size, size), stretched to a square like the data."""
    import cv2

    out = np.empty((len(samples), size, size), np.uint8)
    for i, s in enumerate(samples):
        img = cv2.imread(str(s.path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise DataError(f"cannot decode training image #{i} ({s.name})", "remove or replace it")
        if img.shape != (size, size):
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        out[i] = img
    return out
