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


def test_rectify_debug_overlay_shows_the_gate_that_fired(tmp_path: Path, data_dir: Path) -> None:
    src = tmp_path / "empty.jpg"
    src.write_bytes(encode_jpeg(empty_lightbox(3)))
    debug = tmp_path / "debug"
    proc = run_kiosk("rectify", str(src), "--debug", str(debug), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    overlay = read_image(Path(data["debug"])).pixels
    assert overlay.ndim == 3 and overlay.shape[1] <= 1280
    # the refusal is written in red on the picture
    red = (overlay[..., 0] > 200) & (overlay[..., 1] < 120) & (overlay[..., 2] < 120)
    assert red[:60].sum() > 50

    good = photo(22)
    ok_src = tmp_path / "photo.jpg"
    ok_src.write_bytes(encode_jpeg(good.image, quality=95))
    proc = run_kiosk("rectify", str(ok_src), "--debug", str(debug), "--json")
    data = json.loads(proc.stdout)
    assert data["status"] == "ok", data["quality"]
    checks = data["quality"]["checks"]
    assert {"lung_clipped_fraction", "lung_crushed_fraction"} <= set(checks)
    # limits are maxima, except the "_min" checks (contrast, the film's size in the picture)
    assert all(
        c["value"] is None
        or (c["value"] >= c["limit"] if k.endswith("_min") else c["value"] <= c["limit"])
        for k, c in checks.items()
    )
    assert "film_short_side_px_min" in checks
    overlay = read_image(debug / "photo-debug.png").pixels
    green = (overlay[..., 1] > 150) & (overlay[..., 0] < 80) & (overlay[..., 2] < 80)
    assert green.sum() > 200, "the accepted quad is drawn in green"
