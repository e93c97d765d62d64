"""Photo or digital X-ray -> stored, calibrated result. The one place the stages are chained.

    decode -> rectify (photos) or digital gate -> infer -> out-of-distribution gate
           -> calibrate -> store -> (caller shows it)

Calibration: the active *site* calibration of this model file (from the store, or read-only
from the database file for ``kiosk analyze --no-store``), else, for photos, the model's
*factory* calibration (rendered photos, shipped with the model), else none; every result says
which (``calibrated``, ``calibration``: id, kind, date, label).

Each stage is timed. A result is committed to the database before :meth:`Pipeline.analyze_image`
returns it, so nothing is ever shown that was not stored. A bad input becomes a result with
status ``rejected`` (the photo is unusable, and the reason says what to do) or ``error`` (the
file is unreadable); it never raises, so a batch goes on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from kiosk.atomic import atomic_write_bytes
from kiosk.calibration.factory import load_factory
from kiosk.calibration.records import CalibrationRecord
from kiosk.capture.bracket import FilmCapture
from kiosk.capture.rig import RigReference
from kiosk.clock import utcnow
from kiosk.config import KioskConfig
from kiosk.errors import CalibrationError, ImageError, KioskError, StoreError
from kiosk.helper_thread import helper
from kiosk.imaging.decode import LoadedImage, read_image
from kiosk.imaging.encode import encode_jpeg
from kiosk.model.classifier import Classifier, Prediction
from kiosk.model.localiser import load_localiser
from kiosk.model.ood import OodDetector
from kiosk.rectify.gates import check_digital, looks_like_photo
from kiosk.rectify.light import WORK_LONG_SIDE_PX, Light, measure_light_preview
from kiosk.rectify.locate import MaskModel
from kiosk.rectify.rectifier import rectify_capture, uses_localiser
from kiosk.rectify.result import Quality
from kiosk.store import FindingRecord, ResultRecord, Store
from kiosk.store.calibrations import read_active_calibration

logger = logging.getLogger(__name__)

FILM_JPEG_QUALITY = 92  # the stored film (what the result page and the hub show)

InputKind = Literal["photo", "digital", "auto"]
Status = Literal["ok", "rejected", "error"]


@dataclass
class AnalysisResult:
    """What one analysis produced; :meth:`to_json` is the `kiosk analyze --json` line."""

    source: str
    status: Status
    input_kind: str
    reason: str | None = None
    advice: str | None = None
    corners: list[list[float]] | None = None
    quality: dict[str, Any] = field(default_factory=dict)
    findings: list[FindingRecord] = field(default_factory=list)
    model: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None  # CalibrationRecord.ref() of what was applied
    timings_ms: dict[str, float] = field(default_factory=dict)
    result_id: str | None = None
    film: np.ndarray | None = None
    cam: np.ndarray | None = None
    logits: np.ndarray | None = None
    features: np.ndarray | None = None
    # the stored film image's path, encoded and written on the helper thread while the model
    # runs (``Pipeline._write_film``), under the id and date the result will be stored with
    film_file: Future[str] | None = field(default=None, repr=False)
    record_id: str = field(default_factory=lambda: str(uuid.uuid4()), repr=False)
    created_at: str = field(default_factory=utcnow, repr=False)

    @property
    def calibration_id(self) -> str | None:
        return None if self.calibration is None else str(self.calibration["id"])

    @property
    def calibrated(self) -> bool:
        """True only when a calibration for this model was applied to the findings."""
        return self.calibration is not None

    @property
    def message(self) -> str | None:
        """Reason and advice as one readable line (None for an ok result)."""
        reason = _sentence(self.reason)
        if reason and self.advice:
            reason = f"{reason} {_sentence(self.advice)}"
        return reason

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "status": self.status,
            "reason": self.message,
            "input": self.input_kind,
            "corners": self.corners,
            "quality": self.quality,
            "findings": [
                {
                    "code": f.code,
                    "label": f.label,
                    "raw": round(f.raw, 6),
                    "probability": round(f.probability, 6),
                    "threshold": round(f.threshold, 6),
                    "positive": f.positive,
                }
                for f in self.findings
            ],
            "model": self.model,
            "calibration": dict(self.calibration) if self.calibration else None,
            "calibrated": self.calibrated,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "result_id": self.result_id,
        }


def _sentence(text: str | None) -> str | None:
    """'film cut off' -> 'Film cut off.' (messages are joined into one readable line)."""
    if not text:
        return text
    text = text.strip()
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _quality_dict(quality: Quality) -> dict[str, Any]:
    return quality.to_dict()


class Pipeline:
    """Chains the stages around one loaded classifier. Thread-safe for one caller at a time."""

    def __init__(
        self,
        classifier: Classifier,
        *,
        device_id: str,
        store: Store | None = None,
        data_dir: Path | None = None,
        rig: RigReference | None = None,
        rig_dir: Path | None = None,
        rectify_method: str = "auto",
        localiser: MaskModel | None = None,
        ood: OodDetector | None = None,
        store_images: bool = True,
        min_free_mb: float = 0.0,
        critical_free_mb: float = 0.0,
        active_reader: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> None:
        self.classifier = classifier
        self.manifest = classifier.manifest
        self.device_id = device_id
        self.store = store
        self.data_dir = data_dir
        self.rig = rig
        self.rig_dir = rig_dir
        self.rectify_method = rectify_method
        self.localiser = localiser
        self.ood = ood
        self.store_images = store_images
        self.min_free_mb = min_free_mb
        self.critical_free_mb = critical_free_mb
        self._active_reader = store.active_calibration if store is not None else active_reader
        self.factory_calibration = load_factory(self.manifest)
        self.site_calibration: CalibrationRecord | None = None
        self.reload_calibration()

    @classmethod
    def from_config(
        cls, config: KioskConfig, classifier: Classifier, store: Store | None
    ) -> Pipeline:
        """Build the pipeline the config describes (rig reference and OOD gate included)."""
        rig = RigReference.load(config.rig_dir)
        ood = None
        ood_file = classifier.manifest.ood.get("file")
        if ood_file and config.ood_gate:
            ood = OodDetector.load(classifier.manifest.path.parent / str(ood_file))
        localiser = None
        if uses_localiser(config.rectify.method):
            try:
                localiser = load_localiser(config.models_dir)
            except KioskError:
                if config.rectify.method != "auto":
                    raise
                # "auto" still works without it: the classical detector alone
                logger.exception("film localiser unusable; rectify falls back to classical")

        def read_active(sha256: str) -> dict[str, Any] | None:
            return read_active_calibration(config.db_path, sha256)

        return cls(
            classifier,
            active_reader=read_active if store is None else None,
            device_id=config.device_id,
            store=store,
            data_dir=config.data_dir,
            rig=rig,
            rig_dir=config.rig_dir,
            rectify_method=config.rectify.method,
            localiser=localiser,
            ood=ood,
            store_images=config.storage.store_images,
            min_free_mb=config.storage.min_free_mb,
            critical_free_mb=config.storage.critical_free_mb,
        )

    @property
    def model_ref(self) -> dict[str, str]:
        return {
            "id": self.manifest.id,
            "version": self.manifest.version,
            "sha256": self.manifest.sha256,
        }

    @property
    def calibration(self) -> CalibrationRecord | None:
        """What new photo results get: the active site calibration, else the factory one (which
        digital images never get: it was fitted on photographed films), else None."""
        return self.site_calibration or self.factory_calibration

    def reload_calibration(self) -> None:
        """Pick up the active site calibration for exactly this model file (or none)."""
        self.site_calibration = None
        record = None if self._active_reader is None else self._active_reader(self.manifest.sha256)
        if record is not None:
            self.site_calibration = CalibrationRecord.from_dict(record)
        if self.calibration is not None:
            logger.info("calibration %s (%s) in use", self.calibration.id, self.calibration.label)

    def reload_rig(self) -> None:
        """Pick up a new rig reference (after the technician recalibrated the rig)."""
        if self.rig_dir is not None:
            self.rig = RigReference.load(self.rig_dir)

    # -- entry points -----------------------------------------------------------------------

    def analyze_file(
        self, path: Path, input_kind: InputKind = "auto", *, store: bool = True
    ) -> AnalysisResult:
        """Decode a file and analyse it. Never raises for a bad file: see the module doc."""
        t0 = time.perf_counter()
        try:
            # a photo's colour is needed only at the rectifier's work size (``LoadedImage``);
            # its light is measured on that while the full-size luma decodes
            photo = input_kind == "photo"
            loaded = read_image(
                path,
                preview_long_side=WORK_LONG_SIDE_PX if photo else None,
                on_preview=self._light_from_preview if photo else None,
            )
        except ImageError as exc:
            result = AnalysisResult(
                source=str(path),
                status="error",
                input_kind=input_kind,
                reason=exc.message,
                advice=exc.fix,
                model=self.model_ref,
                timings_ms={"decode": (time.perf_counter() - t0) * 1000.0},
            )
            return self._finish(result, store=store)
        decode_ms = (time.perf_counter() - t0) * 1000.0
        return self.analyze_image(
            loaded, source=str(path), input_kind=input_kind, store=store, decode_ms=decode_ms
        )

    def analyze_image(
        self,
        image: np.ndarray | LoadedImage,
        *,
        source: str,
        input_kind: InputKind = "auto",
        store: bool = True,
        decode_ms: float | None = None,
        patient_ref: str | None = None,
    ) -> AnalysisResult:
        """Analyse decoded pixels (grey or RGB uint8) and store the outcome."""
        notes: tuple[str, ...] = ()
        preview = None
        light = None
        if isinstance(image, LoadedImage):
            notes, preview = image.notes, image.preview
            if isinstance(image.from_preview, Light):
                light = image.from_preview
            image = image.pixels
        return self._analyze(
            FilmCapture.single(image, preview=preview),
            source=source,
            input_kind=input_kind,
            store=store,
            decode_ms=decode_ms,
            patient_ref=patient_ref,
            notes=notes,
            light=light,
        )

    def _light_from_preview(self, preview: np.ndarray, frame_hw: tuple[int, int]) -> Light:
        return measure_light_preview(preview, frame_hw, self.rig)

    def analyze_capture(
        self, capture: FilmCapture, *, source: str = "camera", store: bool = True
    ) -> AnalysisResult:
        """Analyse a camera capture (one photo or an unmerged bracket) and store the outcome."""
        return self._analyze(capture, source=source, input_kind="photo", store=store)

    def _analyze(
        self,
        capture: FilmCapture,
        *,
        source: str,
        input_kind: InputKind,
        store: bool,
        decode_ms: float | None = None,
        patient_ref: str | None = None,
        notes: tuple[str, ...] = (),
        light: Light | None = None,
    ) -> AnalysisResult:
        timings: dict[str, float] = {}
        if decode_ms is not None:
            timings["decode"] = decode_ms
        result = AnalysisResult(
            source=source, status="ok", input_kind=input_kind, model=self.model_ref
        )
        try:
            self._run_stages(capture, result, timings, input_kind, store=store, light=light)
        except KioskError as exc:
            result.status, result.reason, result.advice = "error", exc.message, exc.fix
        except Exception as exc:  # one bad image must never stop a batch
            logger.exception("analysis failed unexpectedly")
            result.status = "error"
            result.reason = f"internal error while analysing ({type(exc).__name__}: {exc})"
            result.advice = "report this with the kiosk's log"
        if notes:
            result.quality.setdefault("notes", list(notes))
        result.timings_ms = timings
        return self._finish(result, store=store, patient_ref=patient_ref)

    # -- stages -----------------------------------------------------------------------------

    def _run_stages(
        self,
        capture: FilmCapture,
        result: AnalysisResult,
        timings: dict[str, float],
        input_kind: InputKind,
        *,
        store: bool = False,
        light: Light | None = None,
    ) -> None:
        """The stages after decoding; ``light``: the base frame's light, measured on its
        preview while it decoded (else rectify measures it)."""
        t = time.perf_counter()
        image = capture.base
        if input_kind == "auto":
            input_kind = "photo" if looks_like_photo(image) else "digital"
        result.input_kind = input_kind
        if input_kind == "photo":
            rect = rectify_capture(
                capture,
                self.rig,
                method=self.rectify_method,
                localiser=self.localiser,
                light=light,
            )
            result.quality = _quality_dict(rect.quality)
            if rect.corners is not None:
                result.corners = [[round(float(x), 2), round(float(y), 2)] for x, y in rect.corners]
            timings["rectify"] = (time.perf_counter() - t) * 1000.0
            if rect.status != "ok" or rect.film is None:
                result.status = "rejected"
                result.reason = rect.quality.reason or "the photo could not be rectified"
                result.advice = rect.quality.advice
                return
            film = rect.film
        else:
            quality = check_digital(image)
            result.quality = _quality_dict(quality)
            timings["gate"] = (time.perf_counter() - t) * 1000.0
            if not quality.ok:
                result.status = "rejected"
                result.reason = quality.reason or "the image is not usable"
                result.advice = quality.advice
                return
            film = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        result.film = film
        if (
            store
            and self.store is not None
            and self.data_dir is not None
            and self.store_images
            and self.store.free_mb() >= max(self.min_free_mb, self.critical_free_mb)
        ):
            result.film_file = helper().submit(
                self._write_film, result.record_id, result.created_at, film
            )

        t = time.perf_counter()
        prediction = self.classifier.predict(film)
        timings["infer"] = (time.perf_counter() - t) * 1000.0
        result.cam = prediction.cam
        result.logits = prediction.logits
        result.features = prediction.features

        if self.ood is not None and prediction.features is not None:
            distance = self.ood.distance(prediction.features)
            result.quality.setdefault("metrics", {})["ood_distance"] = round(distance, 3)
            if self.ood.is_ood(prediction.features):
                result.status = "rejected"
                result.quality.setdefault("flags", []).append("not_xray")
                result.reason = "This does not look like a chest X-ray the model knows"
                result.advice = (
                    "Place a chest X-ray film (front view) on the lightbox; other images "
                    "cannot be analysed"
                )
                return

        t = time.perf_counter()
        result.findings = self._calibrated_findings(prediction, result)
        timings["calibrate"] = (time.perf_counter() - t) * 1000.0

    def _calibrated_findings(
        self, prediction: Prediction, result: AnalysisResult
    ) -> list[FindingRecord]:
        raw = prediction.probabilities
        probs = raw
        thresholds = [f.threshold for f in self.manifest.findings]
        calibration = self.site_calibration
        if calibration is None and result.input_kind == "photo":
            # Fitted on photographed films: not for digital images.
            calibration = self.factory_calibration
        if calibration is not None:
            try:
                probs = calibration.apply(
                    prediction.logits,
                    prediction.features,
                    model_sha256=self.manifest.sha256,
                    codes=list(self.manifest.finding_codes),
                )
                thresholds = [calibration.threshold(f.code) for f in self.manifest.findings]
                result.calibration = calibration.ref()
            except CalibrationError as exc:
                # Never silently show raw scores as calibrated: say so in the result.
                logger.error("calibration %s not applied: %s", calibration.id, exc)
                result.quality.setdefault("flags", []).append("uncalibrated")
                probs = raw
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        return [
            FindingRecord(
                code=spec.code,
                label=spec.label,
                raw=float(raw[i]),
                probability=float(probs[i]),
                threshold=float(thresholds[i]),
                positive=bool(probs[i] >= thresholds[i]),
            )
            for i, spec in enumerate(self.manifest.findings)
        ]

    # -- storing ----------------------------------------------------------------------------

    def _finish(
        self, result: AnalysisResult, *, store: bool, patient_ref: str | None = None
    ) -> AnalysisResult:
        if not store or self.store is None:
            return result
        t = time.perf_counter()
        free_mb = self.store.free_mb()
        if free_mb < self.critical_free_mb:
            raise StoreError(
                f"only {free_mb:.0f} MB free on the data disk (critical limit "
                f"{self.critical_free_mb:.0f} MB); the result was not stored",
                "free space (`kiosk retention run`) or move KIOSK_DATA_DIR to a larger disk",
            )
        record = ResultRecord(
            status=result.status,
            source=result.source,
            input_kind=result.input_kind,
            device_id=self.device_id,
            reason=result.message,
            corners=result.corners,
            quality=result.quality,
            findings=result.findings,
            model_id=self.manifest.id,
            model_version=self.manifest.version,
            model_sha256=self.manifest.sha256,
            calibration_id=result.calibration_id,
            calibration_kind=None if result.calibration is None else result.calibration["kind"],
            calibration_date=None if result.calibration is None else result.calibration["date"],
            timings_ms=result.timings_ms,
            patient_ref=patient_ref,
            id=result.record_id,
            created_at=result.created_at,
        )
        if result.logits is not None:
            record.logits = [float(v) for v in result.logits]
        record.features = result.features
        if result.cam is not None:
            record.cam = np.round(result.cam.astype(np.float64), 3).tolist()
        if result.film_file is not None:  # written beside the model (above: room for it)
            record.image_path = result.film_file.result()
        elif result.film is not None and self.data_dir is not None:
            if not self.store_images:
                result.quality.setdefault("flags", []).append("image_not_stored_by_config")
            elif free_mb < self.min_free_mb:
                result.quality.setdefault("flags", []).append("image_not_stored_low_disk")
                logger.warning(
                    "low disk (%.0f MB free): film image of result %s not stored",
                    free_mb,
                    record.id,
                )
            else:
                record.image_path = self._write_film(record.id, record.created_at, result.film)
        result.result_id = self.store.save_result(record)
        result.timings_ms["store"] = (time.perf_counter() - t) * 1000.0
        return result

    def _write_film(self, result_id: str, created_at: str, film: np.ndarray) -> str:
        day = created_at[:10]
        relative = Path("images") / day / f"{result_id}.jpg"
        assert self.data_dir is not None
        jpeg = encode_jpeg(film, quality=FILM_JPEG_QUALITY)
        try:
            atomic_write_bytes(self.data_dir / relative, jpeg)
        except OSError as exc:
            raise StoreError(
                f"could not write the film image to {self.data_dir / relative.parent}: {exc}",
                "check free disk space and the data directory's permissions",
            ) from exc
        return str(relative)


__all__ = ["AnalysisResult", "InputKind", "Pipeline", "utcnow"]
