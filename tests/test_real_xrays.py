"""The shipped model on real chest X-rays from the held-back split (needs ../shared data).

Images are read from ../shared at test time and never written into the repository; photos
of them are rendered into the test's temporary directory.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from images import colourful
from test_analyze_cli import lines, run_kiosk

from kiosk.camera import scene
from kiosk.imaging.decode import read_image
from kiosk.imaging.encode import encode_jpeg

REPO = Path(__file__).resolve().parents[1]
SPLIT = REPO / "models" / "cxr-pneumonia-effl0.split.csv"


def _holdout(kermany: Path, per_class: int) -> list[tuple[Path, int]]:
    with SPLIT.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "holdout"]
    rng = np.random.default_rng(0)
    out = []
    for label in ("NORMAL", "PNEUMONIA"):
        chosen = [r for r in rows if r["label"] == label]
        for i in rng.choice(len(chosen), per_class, replace=False):
            out.append((kermany / chosen[i]["filename"], int(label == "PNEUMONIA")))
    return out


def test_real_digital_xrays_pass_the_gate_and_rank(kermany: Path, data_dir: Path) -> None:
    cases = _holdout(kermany, 4)
    proc = run_kiosk("analyze", "--json", "--input", "digital", *(str(p) for p, _ in cases))
    assert proc.returncode == 0, proc.stderr
    out = lines(proc.stdout)
    assert all(o["status"] == "ok" for o in out), [o["reason"] for o in out]
    probs = np.array([o["findings"][0]["probability"] for o in out])
    labels = np.array([y for _, y in cases])
    assert probs[labels == 1].mean() > probs[labels == 0].mean()


def test_photographed_real_films_are_rectified_and_analysed(
    kermany: Path, data_dir: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    paths, truths = [], []
    for i, (path, _) in enumerate(_holdout(kermany, 5)):
        film = read_image(path).pixels
        rendering = scene.render(film, scene.random_params(rng, difficulty=0.3), rng)
        out = tmp_path / f"photo{i}.jpg"
        out.write_bytes(encode_jpeg(rendering.image, quality=92))
        paths.append(str(out))
        truths.append(rendering.corners)
    proc = run_kiosk("analyze", "--json", "--input", "photo", *paths)
    assert proc.returncode == 0, proc.stderr
    out = lines(proc.stdout)
    ok = [(o, t) for o, t in zip(out, truths, strict=True) if o["status"] == "ok"]
    # ten films: one may run out of the frame, and the "not a chest X-ray" reference flags
    # about 1 % of photographed real films (model card): at most one such refusal
    assert len(ok) >= 8, [o["reason"] for o in out]
    not_xray = [o for o in out if "not_xray" in o["quality"].get("flags", [])]
    assert len(not_xray) <= 1, [o["reason"] for o in out]
    for o, truth in ok:
        diagonal = float(np.linalg.norm(truth[2] - truth[0]))
        error = np.linalg.norm(np.array(o["corners"]) - truth, axis=1).max()
        # sub-pixel where the film's edges were measured; a film found by its texture says
        # so in its notes and is located to a few percent (docs/rectify.md)
        coarse = "film_edges_not_seen" in o["quality"]["notes"]
        assert error < (0.05 if coarse else 0.01) * diagonal, o["quality"]["notes"]
    assert sum("film_edges_not_seen" not in o["quality"]["notes"] for o, _ in ok) >= 7


def test_gate_rejects_what_is_not_a_chest_xray(
    kermany: Path, data_dir: Path, tmp_path: Path
) -> None:
    """A holiday photo, a CT/MR film sheet and an empty lightbox photographed by the
    independent scene generator are refused; a drawn phantom chest is *not* asserted: the
    reference fitted on photographed films is wide enough to let it pass (model card)."""
    from kiosk.lab.photoscene import render_photo, sample_scene

    rng = np.random.default_rng(5)
    (tmp_path / "holiday.jpg").write_bytes(encode_jpeg(colourful(3)))
    for kind in ("sheet", "empty"):
        shot = render_photo(None, sample_scene(rng, kind), rng, size=(540, 960))
        (tmp_path / f"{kind}.jpg").write_bytes(encode_jpeg(shot.image))
    proc = run_kiosk("analyze", "--json", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = lines(proc.stdout)
    assert len(out) == 3
    for o in out:
        assert o["status"] == "rejected", o
