"""`kiosk rectify` as DESIGN.md specifies: the film quad and quality for one photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from images import empty_lightbox, photo
from test_analyze_cli import run_kiosk

from kiosk.imaging.decode import read_image
from kiosk.imaging.encode import encode_jpeg


def test_rectify_writes_the_film_and_reports_corners(tmp_path: Path, data_dir: Path) -> None:
    rendering = photo(21)
    src = tmp_path / "photo.jpg"
    src.write_bytes(encode_jpeg(rendering.image, quality=95))
    out = tmp_path / "film.png"
    proc = run_kiosk("rectify", str(src), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "ok" and data["rig_reference"] is False
    truth = rendering.corners
    assert truth is not None
    error = np.linalg.norm(np.array(data["corners"]) - truth, axis=1).max()
    assert error < 0.01 * float(np.linalg.norm(truth[2] - truth[0]))
    film = read_image(out).pixels
    assert film.ndim == 2 and list(film.shape) == data["film_size"]


def test_rectify_rejects_an_empty_lightbox_with_advice(tmp_path: Path, data_dir: Path) -> None:
    src = tmp_path / "empty.jpg"
    src.write_bytes(encode_jpeg(empty_lightbox(2)))
    out = tmp_path / "film.png"
    proc = run_kiosk("rectify", str(src), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "rejected" and "no_film" in data["quality"]["flags"]
    assert data["reason"] and data["advice"]
    assert not out.exists()
