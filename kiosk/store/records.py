"""What the pipeline hands the store: one analysed image (:class:`ResultRecord`) and its findings.

What this module does not do: write them (``results``) or decide their values (the pipeline).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kiosk.clock import utcnow


@dataclass(frozen=True)
class FindingRecord:
    """One finding of a stored result."""

    code: str
    label: str
    raw: float
    probability: float
    threshold: float
    positive: bool


@dataclass
class ResultRecord:
    """Everything the pipeline stores about one analysed image."""

    status: str
    source: str
    input_kind: str
    device_id: str
    reason: str | None = None
    corners: list[list[float]] | None = None
    quality: dict[str, Any] = field(default_factory=dict)
    findings: list[FindingRecord] = field(default_factory=list)
    model_id: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    calibration_id: str | None = None
    calibration_kind: str | None = None  # "site" | "factory" (None: not calibrated)
    calibration_date: str | None = None  # when the applied calibration was made
    timings_ms: dict[str, float] = field(default_factory=dict)
    logits: list[float] | None = None
    features: np.ndarray | None = None
    image_path: str | None = None
    cam: list[Any] | None = None
    patient_ref: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=utcnow)
