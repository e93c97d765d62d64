"""The pipeline with the real model and database: storage rules, disk limits, calibration scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from images import digital, photo

from kiosk.app.appliance import load_classifier
from kiosk.calibration.fitting import fit_calibration
from kiosk.config import load_config
from kiosk.errors import StoreError
from kiosk.imaging.decode import LoadedImage
from kiosk.pipeline import Pipeline
from kiosk.store import Store


@pytest.fixture
def pipeline(data_dir: Path) -> Pipeline:
    config = load_config(env={"KIOSK_DATA_DIR": str(data_dir), "KIOSK_OOD_GATE": "false"})
    return Pipeline.from_config(config, load_classifier(config), Store(config.db_path))


# the digital-only model ships a factory calibration for photographed films (the photo-tuned
# default's raw probabilities needed none: models/cxr-pneumonia-effl0-photo.md)
FACTORY_ENV = {"KIOSK_OOD_GATE": "false", "KIOSK_MODEL": "cxr-pneumonia-effl0"}


@pytest.fixture
def factory_pipeline(data_dir: Path) -> Pipeline:
    config = load_config(env={"KIOSK_DATA_DIR": str(data_dir), **FACTORY_ENV})
    return Pipeline.from_config(config, load_classifier(config), Store(config.db_path))


def test_result_is_committed_with_image_and_cam_before_it_is_returned(
    pipeline: Pipeline, data_dir: Path
) -> None:
    result = pipeline.analyze_image(photo(3).image, source="camera", input_kind="photo")
    assert result.status == "ok", result.reason
    assert pipeline.store is not None
    row = pipeline.store.get_result(result.result_id or "")
    assert row is not None and row["status"] == "ok"
    # the image, written beside the model, is named by the id and day the result was stored with
    assert row["image_path"] == f"images/{row['created_at'][:10]}/{result.result_id}.jpg"
    assert (data_dir / row["image_path"]).is_file()
    assert np.array(row["cam"]).shape == result.cam.shape  # type: ignore[union-attr]
    assert row["logits"] == pytest.approx(list(result.logits))  # type: ignore[arg-type]
    assert set(result.timings_ms) >= {"rectify", "infer", "calibrate", "store"}


def test_low_disk_keeps_the_result_but_not_the_image(pipeline: Pipeline) -> None:
    pipeline.min_free_mb = 10**12
    result = pipeline.analyze_image(digital(4), source="x", input_kind="digital")
    assert result.result_id and "image_not_stored_low_disk" in result.quality["flags"]
    row = pipeline.store.get_result(result.result_id)  # type: ignore[union-attr]
    assert row is not None and row["image_path"] is None


def test_critical_disk_stores_nothing_and_says_so(pipeline: Pipeline, data_dir: Path) -> None:
    assert pipeline.store is not None
    before = pipeline.store.list_results()[1]
    pipeline.critical_free_mb = 10**12
    with pytest.raises(StoreError, match="not stored"):
        pipeline.analyze_image(digital(5), source="x", input_kind="digital")
    assert pipeline.store.list_results()[1] == before
    assert not list(data_dir.glob("images/**/*.jpg"))  # no film image either


def test_calibration_of_another_model_is_never_applied(factory_pipeline: Pipeline) -> None:
    pipeline = factory_pipeline
    store = pipeline.store
    assert store is not None
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (200, 1))
    labels = (rng.random((200, 1)) < 1 / (1 + np.exp(-logits / 2))).astype(float)
    other = fit_calibration(
        logits,
        labels,
        ["pneumonia"],
        method="temperature",
        model_id="other",
        model_sha256="f" * 64,
        created_by="test",
    )
    store.save_calibration(other.to_dict(), activate=True)
    pipeline.reload_calibration()
    assert pipeline.site_calibration is None
    factory = pipeline.factory_calibration
    assert factory is not None and pipeline.calibration is factory
    digital_result = pipeline.analyze_image(digital(6), source="x", input_kind="digital")
    assert not digital_result.calibrated  # the factory one is for photographed films only
    assert digital_result.findings[0].probability == digital_result.findings[0].raw
    result = pipeline.analyze_image(photo(6).image, source="x", input_kind="photo")
    assert result.calibration_id == factory.id and result.calibration is not None
    assert result.calibration["kind"] == "factory"
    f = result.findings[0]
    assert f.probability == pytest.approx(
        float(factory.apply([result.logits[0]], model_sha256=pipeline.manifest.sha256)[0])
    )  # type: ignore[index]

    own = fit_calibration(
        logits,
        labels,
        ["pneumonia"],
        method="temperature",
        model_id=pipeline.manifest.id,
        model_sha256=pipeline.manifest.sha256,
        created_by="test",
    )
    store.save_calibration(own.to_dict(), activate=True)
    pipeline.reload_calibration()
    result = pipeline.analyze_image(digital(6), source="x", input_kind="digital")
    assert result.calibration_id == own.id
    t = own.params["pneumonia"]["temperature"]
    expected = 1 / (1 + np.exp(-result.logits[0] / t))  # type: ignore[index]
    assert result.findings[0].probability == pytest.approx(expected, rel=1e-6)


def _own(pipeline: Pipeline) -> object:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (200, 1))
    labels = (rng.random((200, 1)) < 1 / (1 + np.exp(-logits / 2))).astype(float)
    return fit_calibration(
        logits,
        labels,
        ["pneumonia"],
        method="temperature",
        model_id=pipeline.manifest.id,
        model_sha256=pipeline.manifest.sha256,
        created_by="test",
    )


def test_every_result_says_which_calibration_made_it(
    factory_pipeline: Pipeline, data_dir: Path
) -> None:
    """Factory while no site calibration is active, the site one once it is, stored with kind
    and date; a --no-store pipeline (no Store) applies the same active calibration."""
    pipeline = factory_pipeline
    store = pipeline.store
    assert store is not None
    first = pipeline.analyze_image(photo(7).image, source="x", input_kind="photo")
    line = first.to_json()
    assert line["calibrated"] is True and line["calibration"]["kind"] == "factory"
    assert line["calibration"]["label"] == "factory (photographed films, rendered)"
    row = store.get_result(first.result_id or "")
    assert row is not None and row["calibrated"] and row["calibration_kind"] == "factory"
    assert row["calibration_date"] == pipeline.factory_calibration.created_at  # type: ignore[union-attr]

    own = _own(pipeline)
    store.save_calibration(own.to_dict(), activate=True)  # type: ignore[attr-defined]
    pipeline.reload_calibration()
    site = pipeline.analyze_image(digital(7), source="x", input_kind="digital")
    assert (
        site.to_json()["calibration"]
        == {
            "id": own.id,  # type: ignore[attr-defined]
            "kind": "site",
            "date": own.created_at,  # type: ignore[attr-defined]
            "label": f"site calibration {own.id} ({own.created_at[:10]})",  # type: ignore[attr-defined]
        }
    )
    config = load_config(env={"KIOSK_DATA_DIR": str(data_dir), **FACTORY_ENV})
    no_store = Pipeline.from_config(config, pipeline.classifier, None)
    again = no_store.analyze_image(digital(7), source="x", input_kind="digital", store=False)
    assert again.calibration_id == own.id  # type: ignore[attr-defined]
    assert again.findings[0].probability == pytest.approx(site.findings[0].probability)

    store.deactivate_calibrations(pipeline.manifest.sha256)
    pipeline.reload_calibration()
    back = pipeline.analyze_image(photo(7).image, source="x", input_kind="photo")
    assert back.calibration is not None and back.calibration["kind"] == "factory"


def test_no_store_pipeline_creates_no_database(tmp_path: Path) -> None:
    config = load_config(env={"KIOSK_DATA_DIR": str(tmp_path / "d"), "KIOSK_OOD_GATE": "false"})
    pipeline = Pipeline.from_config(config, load_classifier(config), None)
    assert pipeline.site_calibration is None and not config.db_path.exists()


def test_a_factory_file_that_does_not_match_is_not_applied(
    tmp_path: Path, bundled_manifest: Path
) -> None:
    import json
    import shutil

    from kiosk.calibration.factory import load_factory
    from kiosk.model.manifest import Manifest

    for name in ("cxr-pneumonia-effl0.json", "cxr-pneumonia-effl0.factory-calibration.json"):
        shutil.copy(bundled_manifest.parent / name, tmp_path / name)
    manifest_path = tmp_path / "cxr-pneumonia-effl0.json"
    assert load_factory(Manifest.load(manifest_path)) is not None
    record_path = tmp_path / "cxr-pneumonia-effl0.factory-calibration.json"
    record = json.loads(record_path.read_text())
    record["params"]["pneumonia"]["b"] = 0.0
    record_path.write_text(json.dumps(record))
    assert load_factory(Manifest.load(manifest_path)) is None  # sha256 differs
    raw = json.loads(manifest_path.read_text())
    del raw["calibration"]
    manifest_path.write_text(json.dumps(raw))
    old = Manifest.load(manifest_path)  # a manifest without the field still loads
    assert old.calibration == {} and load_factory(old) is None


def test_a_photo_file_reads_the_same_as_the_photo_in_memory(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``analyze_file(..., "photo")`` decodes a colour JPEG as luma plus a colour preview (the
    fast way): same verdict, corners and finding as the same decoded photo handed over whole."""
    import cv2

    from kiosk.imaging.decode import read_image

    shot = photo(3)  # 1080p (scene.render's default size)
    path = tmp_path / "photo.jpg"
    assert cv2.imwrite(str(path), cv2.cvtColor(shot.image, cv2.COLOR_RGB2BGR))
    import kiosk.pipeline as pipeline_module

    loaded = []

    def spy(*args: object, **kwargs: object) -> object:
        loaded.append(read_image(*args, **kwargs))  # type: ignore[arg-type]
        return loaded[-1]

    monkeypatch.setattr(pipeline_module, "read_image", spy)
    from_file = pipeline.analyze_file(path, "photo", store=False)
    assert loaded[0].preview is not None and loaded[0].pixels.ndim == 2  # the fast decode
    whole = pipeline.analyze_image(
        read_image(path).pixels, source="x", input_kind="photo", store=False
    )
    assert from_file.status == whole.status == "ok", (from_file.reason, whole.reason)
    assert np.abs(np.array(from_file.corners) - np.array(whole.corners)).max() < 0.5
    assert from_file.findings[0].raw == pytest.approx(whole.findings[0].raw, abs=0.02)
    # the light was measured on the preview while the luma decoded, and rectify used it
    from kiosk.rectify.light import Light

    assert isinstance(loaded[0].from_preview, Light)
    import kiosk.rectify.rectifier as rectifier_module

    measured: list[object] = []
    real = rectifier_module.measure_light

    def counted(*args: Any) -> Light:
        measured.append(args)
        return real(*args)

    monkeypatch.setattr(rectifier_module, "measure_light", counted)
    again = pipeline.analyze_file(path, "photo", store=False)
    assert measured == [] and again.corners == from_file.corners
    split = pipeline.analyze_image(loaded[0], source="x", input_kind="photo", store=False)
    assert measured == [] and split.corners == from_file.corners
    bare = pipeline.analyze_image(
        LoadedImage(loaded[0].pixels, "JPEG", (), loaded[0].preview),
        source="x",
        input_kind="photo",
        store=False,
    )
    assert len(measured) == 1 and bare.corners == from_file.corners
