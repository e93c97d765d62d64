"""The pipeline with the real model and database: storage rules, disk limits, calibration scope."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from images import digital, photo

from kiosk.app.appliance import load_classifier
from kiosk.calibration.fitting import fit_calibration
from kiosk.config import load_config
from kiosk.errors import StoreError
from kiosk.pipeline import Pipeline
from kiosk.store import Store


@pytest.fixture
def pipeline(data_dir: Path) -> Pipeline:
    config = load_config(env={"KIOSK_DATA_DIR": str(data_dir), "KIOSK_OOD_GATE": "false"})
    return Pipeline.from_config(config, load_classifier(config), Store(config.db_path))


def test_result_is_committed_with_image_and_cam_before_it_is_returned(
    pipeline: Pipeline, data_dir: Path
) -> None:
    result = pipeline.analyze_image(photo(3).image, source="camera", input_kind="photo")
    assert result.status == "ok", result.reason
    assert pipeline.store is not None
    row = pipeline.store.get_result(result.result_id or "")
    assert row is not None and row["status"] == "ok"
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


def test_critical_disk_stores_nothing_and_says_so(pipeline: Pipeline) -> None:
    assert pipeline.store is not None
    before = pipeline.store.list_results()[1]
    pipeline.critical_free_mb = 10**12
    with pytest.raises(StoreError, match="not stored"):
        pipeline.analyze_image(digital(5), source="x", input_kind="digital")
    assert pipeline.store.list_results()[1] == before


def test_calibration_of_another_model_is_never_applied(pipeline: Pipeline) -> None:
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
    assert pipeline.calibration is None
    result = pipeline.analyze_image(digital(6), source="x", input_kind="digital")
    assert result.calibration_id is None
    f = result.findings[0]
    assert f.probability == pytest.approx(f.raw)

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
