"""Health checks for technicians: what is wrong and how to fix it.

The same checks back `kiosk doctor` and the technician's health page. Each check is a small
function returning a :class:`Check`; a check never raises.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from kiosk.config import KioskConfig
from kiosk.errors import KioskError

logger = logging.getLogger(__name__)

CheckStatus = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def check_data_dir(config: KioskConfig) -> Check:
    path = config.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-", delete=True) as handle:
            handle.write(b"ok")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        return Check(
            "data directory",
            "fail",
            f"{path} is not writable: {exc}",
            "check the owner/permissions of the data directory or set KIOSK_DATA_DIR",
        )
    return Check("data directory", "ok", f"{path} is writable")


def check_disk(config: KioskConfig) -> Check:
    import shutil

    try:
        free_mb = shutil.disk_usage(config.data_dir).free / 1e6
    except OSError as exc:
        return Check("disk space", "fail", f"cannot read free space: {exc}")
    s = config.storage
    if free_mb < s.critical_free_mb:
        return Check(
            "disk space",
            "fail",
            f"{free_mb:.0f} MB free, below the critical {s.critical_free_mb} MB: nothing is stored",
            "run `kiosk retention run` or free space on the data disk",
        )
    if free_mb < s.min_free_mb:
        return Check(
            "disk space",
            "warn",
            f"{free_mb:.0f} MB free, below {s.min_free_mb} MB: film images are not stored",
            "run `kiosk retention run` or lower retention.image_days",
        )
    return Check("disk space", "ok", f"{free_mb:,.0f} MB free")


def check_database(config: KioskConfig) -> Check:
    from kiosk.store import Store

    try:
        store = Store(config.db_path)
    except KioskError as exc:
        return Check("database", "fail", exc.message, exc.fix)
    try:
        result = next(store.db.query("PRAGMA quick_check"))
        verdict = next(iter(result.values()))
        counts = store.outbox_counts()
        n = next(store.db.query("select count(*) as n from results"))["n"]
    finally:
        store.close()
    if verdict != "ok":
        return Check(
            "database",
            "fail",
            f"{config.db_path} failed its integrity check: {verdict}",
            "restore the database from a backup (README, technician's section)",
        )
    return Check(
        "database",
        "ok",
        f"{config.db_path}: {n} results, {counts['pending'] + counts['failed']} waiting to sync",
    )


def check_model(config: KioskConfig) -> Check:
    from kiosk.app.appliance import load_classifier

    try:
        classifier = load_classifier(config)
        prediction = classifier.predict(np.full((224, 224), 128, dtype=np.uint8))
    except KioskError as exc:
        return Check("model", "fail", exc.message, exc.fix)
    if not np.all(np.isfinite(prediction.logits)):
        return Check("model", "fail", "the model produced non-finite output", "reinstall it")
    m = classifier.manifest
    return Check(
        "model",
        "ok",
        f"{m.id} {m.version} sha256 {m.sha256[:12]}… verified; "
        f"loaded in {classifier.model.load_ms:.0f} ms, inference "
        f"{prediction.timings_ms['inference']:.1f} ms",
    )


def check_calibration(config: KioskConfig) -> Check:
    from kiosk.app.appliance import load_manifest
    from kiosk.store import Store

    try:
        manifest = load_manifest(config)
        store = Store(config.db_path)
    except KioskError as exc:
        return Check("calibration", "fail", exc.message, exc.fix)
    try:
        record = store.active_calibration(manifest.sha256)
    finally:
        store.close()
    if record is None:
        from kiosk.calibration.factory import load_factory

        factory = load_factory(manifest)
        uses = (
            f"findings use the {factory.label} calibration shipped with the model"
            if factory is not None
            else "findings show the model's uncalibrated probabilities"
        )
        return Check(
            "calibration",
            "warn",
            f"no site calibration is active: {uses}",
            "label ~200 photographed films and run `kiosk calibrate LABELS.csv --activate`",
        )
    return Check("calibration", "ok", f"{record['id']} active ({record.get('created_at')})")


def check_rig(config: KioskConfig) -> Check:
    from kiosk.capture.rig import RigReference

    try:
        rig = RigReference.load(config.rig_dir)
    except KioskError as exc:
        return Check("rig reference", "fail", exc.message, exc.fix)
    if rig is None:
        return Check(
            "rig reference",
            "warn",
            "no empty-lightbox reference: films are rectified without flat-fielding",
            "run the rig set-up (technician page) with the lightbox on and empty",
        )
    return Check("rig reference", "ok", f"made {rig.created_at}")


def check_camera(config: KioskConfig) -> Check:
    from kiosk.app.appliance import open_configured_camera

    try:
        camera = open_configured_camera(config)
        try:
            frame = camera.preview()
        finally:
            camera.close()
    except KioskError as exc:
        return Check("camera", "fail", exc.message, exc.fix)
    except Exception as exc:  # drivers raise anything
        return Check(
            "camera", "fail", f"{config.camera.backend} camera failed: {exc}", "check the cable"
        )
    return Check(
        "camera", "ok", f"{config.camera.backend}: preview {frame.shape[1]}x{frame.shape[0]}"
    )


def check_sync(config: KioskConfig) -> Check:
    if not config.sync.url:
        return Check(
            "sync", "warn", "no hub configured: results stay on this kiosk", "set sync.url/token"
        )
    if not config.sync.token:
        return Check("sync", "fail", "sync.url is set but sync.token is not", "set sync.token")
    return Check("sync", "ok", f"hub {config.sync.url}")


def run_checks(config: KioskConfig, *, camera: bool = True) -> list[Check]:
    """All checks in a fixed order; never raises."""
    checks: list[Callable[[KioskConfig], Check]] = [
        check_data_dir,
        check_disk,
        check_database,
        check_model,
        check_calibration,
        check_rig,
        check_sync,
    ]
    if camera:
        checks.append(check_camera)
    results = [Check("config", "ok", "configuration is valid")]
    for fn in checks:
        try:
            results.append(fn(config))
        except Exception as exc:  # a broken check must not hide the others
            logger.exception("check %s crashed", fn.__name__)
            results.append(Check(fn.__name__.removeprefix("check_"), "fail", str(exc)))
    return results
