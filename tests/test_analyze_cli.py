"""`kiosk analyze` as a real process: the DESIGN.md contract, bad inputs, and the database."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from images import photo, write_mixed_folder

from kiosk.config import BUNDLED_MODELS_DIR, DEFAULT_MODEL
from kiosk.imaging.encode import encode_jpeg
from kiosk.model.manifest import Manifest

# whether the default model ships a factory calibration for photographed films
FACTORY = bool(Manifest.load(BUNDLED_MODELS_DIR / f"{DEFAULT_MODEL}.json").calibration)

pytestmark = pytest.mark.usefixtures("synthetic_films")


def run_kiosk(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiosk", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def count_results(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "kiosk.db") as conn:
        return int(conn.execute("select count(*) from results").fetchone()[0])


def test_mixed_folder_one_correct_line_per_image(tmp_path: Path, data_dir: Path) -> None:
    folder = tmp_path / "in"
    expected = write_mixed_folder(folder)
    proc = run_kiosk("analyze", "--json", str(folder))
    assert proc.returncode == 0, proc.stderr
    out = lines(proc.stdout)
    assert [Path(o["source"]).name for o in out] == sorted(expected)
    for o in out:
        name = Path(o["source"]).name
        assert o["status"] == expected[name], (name, o["reason"])
        assert set(o) >= {
            "source",
            "status",
            "reason",
            "corners",
            "quality",
            "findings",
            "model",
            "calibration",
            "calibrated",
            "timings_ms",
            "result_id",
        }
        assert o["result_id"], name
        assert o["model"]["sha256"] and len(o["model"]["sha256"]) == 64
        if o["status"] == "ok":
            assert o["reason"] is None
            f = o["findings"][0]
            assert f["code"] == "pneumonia" and f["label"] == "Pneumonia"
            assert 0.0 < f["raw"] < 1.0 and 0.0 < f["probability"] < 1.0
            assert f["positive"] == (f["probability"] >= f["threshold"])
            # No site calibration yet: photos get the model's factory calibration, when it
            # ships one, and say so; digital images none (it is fitted on photographed films).
            if o["input"] == "photo" and FACTORY:
                assert o["calibrated"] is True and o["calibration"]["kind"] == "factory"
            else:
                assert o["calibrated"] is False and f["probability"] == f["raw"]
        else:
            assert o["calibrated"] is False and o["calibration"] is None
            assert o["reason"] and o["findings"] == []
    by_name = {Path(o["source"]).name: o for o in out}
    assert by_name["a_digital.png"]["corners"] is None
    assert len(by_name["b_photo.jpg"]["corners"]) == 4
    assert "film" in by_name["c_no_film.jpg"]["reason"].lower()
    assert "not_xray" in by_name["d_holiday.jpg"]["quality"]["flags"]
    assert "pixel" in by_name["g_huge.png"]["reason"]
    assert count_results(data_dir) == len(expected)


def test_photo_corners_are_in_input_pixels(tmp_path: Path, data_dir: Path) -> None:
    rendering = photo(11)
    path = tmp_path / "p.jpg"
    path.write_bytes(encode_jpeg(rendering.image, quality=95))
    proc = run_kiosk("analyze", "--json", "--input", "photo", str(path))
    assert proc.returncode == 0, proc.stderr
    (o,) = lines(proc.stdout)
    assert o["status"] == "ok", o["reason"]
    corners = np.array(o["corners"])
    truth = rendering.corners
    assert truth is not None
    diagonal = float(np.linalg.norm(truth[2] - truth[0]))
    assert np.max(np.linalg.norm(corners - truth, axis=1)) < 0.01 * diagonal


def test_no_store_writes_nothing_and_batches_keep_earlier_results(
    tmp_path: Path, data_dir: Path
) -> None:
    folder = tmp_path / "in"
    expected = write_mixed_folder(folder)
    first = run_kiosk("analyze", "--json", str(folder / "a_digital.png"))
    assert first.returncode == 0
    kept_id = lines(first.stdout)[0]["result_id"]
    proc = run_kiosk("analyze", "--json", "--no-store", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert all(o["result_id"] is None for o in lines(proc.stdout))
    assert count_results(data_dir) == 1
    bad = run_kiosk(
        "analyze", "--json", *(str(folder / n) for n in sorted(expected) if expected[n] == "error")
    )
    assert bad.returncode == 0
    with sqlite3.connect(data_dir / "kiosk.db") as conn:
        ids = {r[0] for r in conn.execute("select id from results")}
    assert kept_id in ids and len(ids) == 1 + sum(v == "error" for v in expected.values())


def test_missing_path_is_a_usage_error(data_dir: Path) -> None:
    proc = run_kiosk("analyze", "--json", "/nonexistent/film.jpg")
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


def test_corrupt_model_is_a_clear_system_error(
    tmp_path: Path, data_dir: Path, bundled_manifest: Path
) -> None:
    from kiosk.model.manifest import Manifest

    manifest = Manifest.load(bundled_manifest)
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(bundled_manifest, models / bundled_manifest.name)
    broken = bytearray(manifest.model_path.read_bytes())
    broken[100:200] = b"\0" * 100
    (models / manifest.file).write_bytes(bytes(broken))
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    proc = run_kiosk(
        "analyze",
        "--json",
        str(image),
        env={"KIOSK_MODELS_DIR": str(models), "KIOSK_MODEL": manifest.id},
    )
    assert proc.returncode == 2
    assert "does not match its manifest" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("kind", ["photo", "digital", "auto"])
def test_input_kind_is_reported(tmp_path: Path, data_dir: Path, kind: str) -> None:
    path = tmp_path / "p.jpg"
    path.write_bytes(encode_jpeg(photo(12).image))
    proc = run_kiosk("analyze", "--json", "--no-store", "--input", kind, str(path))
    assert proc.returncode == 0, proc.stderr
    (o,) = lines(proc.stdout)
    assert o["input"] == ("photo" if kind == "auto" else kind)
