"""The calibration record: a fitted, versioned calibration of one model, and applying it.

A :class:`CalibrationRecord` (a pydantic model) holds per finding the method, its parameters,
the operating threshold, the labelled counts, before/after metrics and why the method was
chosen; :meth:`CalibrationRecord.to_dict` and :meth:`CalibrationRecord.from_dict` are its JSON
form (the record files and the database store exactly that). A record is of ``kind`` "site"
(fitted on a kiosk's own labelled photos) or "factory" (shipped with the model, fitted on
rendered photos); :meth:`CalibrationRecord.ref` is what every result says about it. Fitting a
record is :mod:`kiosk.calibration.fitting`'s job; storing and activating one is the store's.

Schema versions: 2 adds ``kind``, ``data`` (labelled cases used and skipped) and
``evaluation`` (how "after" was measured); version 1 records (site records fitted before the
nested evaluation) still load, as kind "site".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, PrivateAttr

from kiosk.calibration.calibrators import Calibrator, calibrator_from_params
from kiosk.stats import FloatArray, refuse

RECORD_SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
FACTORY_LABEL = "factory (photographed films, rendered)"
"""How a factory calibration is named everywhere it is shown."""

Kind = Literal["site", "factory"]


class CalibrationRecord(BaseModel):
    """A fitted, versioned calibration for one model (by sha256), one entry per finding code.

    ``methods[code]`` names the calibrator, ``params[code]`` its parameters,
    ``thresholds[code]`` is ``{"value": float, "rule": "sensitivity"|"youden",
    "target_sensitivity": float|None}`` on the calibrated probability, ``n``/``positives``
    the labelled cases used, ``metrics[code]`` is ``{"before": {...}, "after": {...}}`` with keys
    ``ece, brier, nll, auroc, auroc_ci_low, auroc_ci_high, threshold, sensitivity, specificity,
    n, positives`` ("after": out-of-fold predictions of the chosen calibrator; "before": raw
    sigmoid(logit) of the same cases, its threshold chosen by the same rule), ``reasons[code]``
    a sentence saying why the method was chosen. The stored threshold was chosen on out-of-fold
    predictions and is applied to the final calibrator (fitted on all cases), so its sensitivity
    on new cases is close to, not guaranteed at, the target. ``kind`` is "site" or "factory";
    ``data`` says which labelled cases were used and why others were skipped (``source``,
    ``labelled``, ``used``, ``skipped``: {reason: count}); ``evaluation`` how "after" was
    measured. Storing and activating records is not done here. Fields are declared in the
    order of the JSON form.
    """

    model_config = ConfigDict(protected_namespaces=())

    schema_version: int = RECORD_SCHEMA_VERSION
    id: str
    model_id: str
    model_sha256: str
    codes: list[str]
    methods: dict[str, str]
    params: dict[str, dict[str, Any]]
    thresholds: dict[str, dict[str, Any]]
    n: dict[str, int]
    positives: dict[str, int]
    metrics: dict[str, dict[str, dict[str, Any]]]
    reasons: dict[str, str]
    created_by: str
    created_at: str
    notes: str = ""
    kind: Kind = "site"
    data: dict[str, Any] = {}
    evaluation: dict[str, Any] = {}
    _cache: dict[str, Calibrator] = PrivateAttr(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        """Equal when every field is; the cache of rebuilt calibrators is not compared."""
        if not isinstance(other, CalibrationRecord):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; ``from_dict(json.loads(json.dumps(d)))`` gives an equal record."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationRecord:
        """Rebuild and validate a record from :meth:`to_dict` output; raises CalibrationError."""
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise refuse(
                f"calibration record schema_version {version!r} is not supported "
                f"(this kiosk reads {list(READABLE_SCHEMA_VERSIONS)})",
                "refit the calibration with this version of the kiosk",
            )
        try:
            record = cls(
                id=str(data["id"]),
                model_id=str(data["model_id"]),
                model_sha256=str(data["model_sha256"]),
                codes=[str(c) for c in data["codes"]],
                methods={str(k): str(v) for k, v in data["methods"].items()},
                params={str(k): dict(v) for k, v in data["params"].items()},
                thresholds={str(k): dict(v) for k, v in data["thresholds"].items()},
                n={str(k): int(v) for k, v in data["n"].items()},
                positives={str(k): int(v) for k, v in data["positives"].items()},
                metrics={
                    str(k): {str(s): dict(m) for s, m in v.items()}
                    for k, v in data["metrics"].items()
                },
                reasons={str(k): str(v) for k, v in data["reasons"].items()},
                created_by=str(data["created_by"]),
                created_at=str(data["created_at"]),
                notes=str(data.get("notes", "")),
                kind=str(data.get("kind", "site")),  # type: ignore[arg-type]
                data=dict(data.get("data") or {}),
                evaluation=dict(data.get("evaluation") or {}),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise refuse(
                f"calibration record is malformed: {exc!r}", "refit or restore the record"
            ) from exc
        if not SHA_RE.match(record.model_sha256):
            raise refuse(
                f"calibration record {record.id} has an invalid model_sha256 "
                f"{record.model_sha256!r}",
                "refit or restore the record",
            )
        for code in record.codes:
            for part in ("methods", "params", "thresholds"):
                if code not in getattr(record, part):
                    raise refuse(f"calibration record {record.id} has no {part} for {code!r}")
            value = record.thresholds[code].get("value")
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise refuse(
                    f"calibration record {record.id} has an invalid threshold {value!r} "
                    f"for {code!r}",
                    "refit or restore the record",
                )
            calibrator_from_params(record.methods[code], record.params[code])
        return record

    @property
    def label(self) -> str:
        """How pages and exports name this calibration."""
        if self.kind == "factory":
            return FACTORY_LABEL
        return f"site calibration {self.id} ({self.created_at[:10]})"

    def ref(self) -> dict[str, Any]:
        """What a result records about the calibration applied to it: id, kind, date, label."""
        return {"id": self.id, "kind": self.kind, "date": self.created_at, "label": self.label}

    def calibrator(self, code: str) -> Calibrator:
        """The calibrator for one finding code, rebuilt from params once and cached; never refit."""
        if code not in self.methods:
            raise refuse(
                f"calibration {self.id} has no finding {code!r}", f"known: {', '.join(self.codes)}"
            )
        if code not in self._cache:
            self._cache[code] = calibrator_from_params(self.methods[code], self.params[code])
        return self._cache[code]

    def threshold(self, code: str) -> float:
        """Operating threshold on the calibrated probability for ``code``; not for raw scores."""
        if code not in self.thresholds:
            raise refuse(
                f"calibration {self.id} has no threshold for {code!r}",
                f"known: {', '.join(self.codes)}",
            )
        return float(self.thresholds[code]["value"])

    @property
    def needs_features(self) -> bool:
        """True when some finding uses the refit head (apply then needs features)."""
        return any(m == "refit" for m in self.methods.values())

    def apply(
        self,
        logits: npt.ArrayLike,
        features: npt.ArrayLike | None = None,
        *,
        model_sha256: str,
        codes: Sequence[str] | None = None,
    ) -> FloatArray:
        """Calibrated probabilities for logits (C,) or (n, C).

        The columns of ``logits`` stand for ``codes`` (default: the record's own ``codes``, in
        its order); pass the model's finding codes so a record fitted with columns in another
        order is still applied to the right finding. Raises CalibrationError when
        ``model_sha256`` is not the model this record was fitted for, when a code has no
        calibration in this record, when a refit finding needs features that are absent, or on
        bad shapes/values. Does not threshold (see :meth:`threshold`).
        """
        if model_sha256.lower() != self.model_sha256.lower():
            raise refuse(
                f"calibration {self.id} belongs to model {self.model_id} "
                f"(sha256 {self.model_sha256[:12]}…), not to the model with sha256 "
                f"{model_sha256[:12]}…",
                "fit a calibration for this model (kiosk calibrate) or run without one",
            )
        columns = list(self.codes if codes is None else codes)
        missing = [c for c in columns if c not in self.methods]
        if missing:
            raise refuse(
                f"calibration {self.id} has no calibration for findings {missing} "
                f"(it covers {self.codes})",
                "fit a calibration with labels for every finding of the model",
            )
        z = np.asarray(logits, dtype=np.float64)
        single = z.ndim == 1
        z2 = z.reshape(1, -1) if single else z
        c = len(columns)
        if z2.ndim != 2 or z2.shape[1] != c:
            raise refuse(
                f"logits must have shape ({c},) or (n, {c}) for findings {columns}, got {z.shape}"
            )
        if not np.all(np.isfinite(z2)):
            raise refuse("logits contain NaN or infinite values", "check the model output")
        f2: FloatArray | None = None
        if features is not None:
            f = np.asarray(features, dtype=np.float64)
            f2 = f.reshape(1, -1) if f.ndim == 1 else f
        out = np.empty_like(z2)
        for j, code in enumerate(columns):
            cal = self.calibrator(code)
            if cal.needs_features and f2 is None:
                raise refuse(
                    f"finding {code!r} uses a refit head that needs the model's features, "
                    "none were given",
                    "pass the classifier's pooled features to apply()",
                )
            out[:, j] = cal.predict_proba(z2[:, j], f2)
        return out[0] if single else out
