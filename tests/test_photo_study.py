"""Tests for kiosk.lab.photo_study: the photo-path measurement tool (tiny n, small photos)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiosk.camera import scene
from kiosk.lab import photo_study as ps
from kiosk.lab.rectify_bench import quad_iou

SMALL = (270, 480)


@pytest.fixture(autouse=True)
def _few_bootstraps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ps, "N_BOOT", 50)


def _record(
    status: str,
    label: int,
    prob: float,
    *,
    clipped: float = 0.0,
    contrast: float = 2.0,
    flags: tuple[str, ...] = (),
    reached: bool = True,
) -> dict[str, Any]:
    checks = (
        {
            "lung_clipped_fraction": [clipped, 0.02],
            "lung_crushed_fraction": [0.0, 0.02],
            "colour_detail": [0.05, 0.25],
            "contrast_min": [contrast, 0.3],
        }
        if reached
        else {}
    )
    return {
        "kind": "film",
        "in_frame": True,
        "factors": {"glare": "none" if clipped == 0 else "strong"},
        "truth": {},
        "status": status,
        "flags": list(flags),
        "notes": [],
        "metrics": {},
        "checks": checks,
        "rectify_ms": 10.0,
        "film": f"f{label}{prob}",
        "patient": "",
        "label": label,
        "iou_sheet": 0.99 if status == "ok" else 0.0,
        "iou_area": 0.9 if status == "ok" else 0.0,
        "corner_err_sheet_mean_pct": 0.05 if status == "ok" else None,
        "corner_err_sheet_max_pct": 0.08 if status == "ok" else None,
        "corner_err_area_mean_pct": 1.0 if status == "ok" else None,
        "photo_prob": prob if reached else None,
        "digital_prob": prob,
        "ood_distance": 1.0 if reached else None,
        "ood_flag": False if reached else None,
        "digital_ood_flag": False,
    }


def _synthetic_records() -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    recs = []
    for i in range(40):
        label = i % 2
        prob = float(np.clip(0.3 + 0.4 * label + rng.normal(0, 0.2), 0, 1))
        if i % 5 == 0:  # over-exposed: refused by the clipped gate only
            recs.append(_record("rejected", label, prob, clipped=0.1, flags=("overexposed",)))
        elif i % 7 == 0:  # no film found: never reaches the gate
            recs.append(_record("rejected", label, prob, flags=("no_film",), reached=False))
        else:
            recs.append(_record("ok", label, prob, contrast=1.0 + 0.05 * i))
    empty = _record("rejected", 0, 0.5, flags=("no_film",), reached=False)
    empty.update(kind="empty", label=None, in_frame=False, digital_prob=None)
    return [*recs, empty]


def test_image_area_a_matches_sheet_without_margins_and_lies_inside_with_them() -> None:
    corners = np.array([[100, 50], [400, 60], [390, 250], [95, 240]], np.float32)
    p = scene.SceneParams(margin_frac=(0.0, 0.0, 0.0, 0.0))
    np.testing.assert_allclose(ps.image_area_a(corners, p, (224, 224), 270), corners, atol=1e-3)
    p = scene.SceneParams(margin_frac=(0.1, 0.05, 0.05, 0.05))
    area = ps.image_area_a(corners, p, (224, 224), 270)
    assert area[0, 1] > corners[0, 1] + 10  # the top margin is the widest
    assert quad_iou(area, corners, (300, 500)) < 0.9


def test_gate_curves_reproduce_the_gate_and_loosening_accepts_more() -> None:
    recs = _synthetic_records()
    films = [r for r in recs if r["kind"] == "film"]
    limits = ps.current_limits(films)
    assert limits["lung_clipped_fraction"] == 0.02
    curves = ps.gate_curves(films, limits)
    assert curves["recomputed_vs_actual_mismatches"] == 0
    pts = curves["gates"]["lung_clipped_fraction"]["points"]
    current = [p for p in pts if p["current"]]
    assert len(current) == 1
    n_ok = sum(r["status"] == "ok" for r in films)
    assert current[0]["accepted_pct"] == pytest.approx(100 * n_ok / len(films))
    # a limit above every measured value accepts every photo that reached the gate
    loosest = max(pts, key=lambda p: p["threshold"])
    reached = sum(bool(r["checks"]) for r in films)
    assert loosest["accepted_pct"] == pytest.approx(100 * reached / len(films))
    # the contrast gate refuses *below* its limit: the highest threshold accepts the fewest
    cpts = curves["gates"]["contrast"]["points"]
    by_t = sorted(cpts, key=lambda p: p["threshold"])
    assert [p["accepted_pct"] for p in by_t] == sorted(
        (p["accepted_pct"] for p in by_t), reverse=True
    )
    assert by_t[-1]["accepted_pct"] < by_t[0]["accepted_pct"]


def test_summary_counts_refusals_as_zero_iou_and_compares_auroc_on_the_same_films() -> None:
    s = ps.summarise(_synthetic_records())
    n = s["n_in_frame_films"]
    assert n == 40
    n_ok = round(s["accepted_pct"] * n / 100)
    assert s["iou_sheet_mean"] == pytest.approx(0.99 * n_ok / n)
    assert set(s["refused_by_first_flag_pct"]) == {"overexposed", "no_film"}
    assert s["empty"]["refused_pct"] == 100.0
    # photo and digital probabilities are equal here: the paired difference is exactly 0
    assert s["auroc_photo_accepted"]["auroc"] == pytest.approx(s["auroc_digital_accepted"]["auroc"])
    d = s["auroc_photo_minus_digital_accepted"]
    assert d["diff"] == 0.0 and d["ci95"] == [0.0, 0.0]
    lo, hi = s["auroc_digital_all"]["ci95"]
    assert lo <= s["auroc_digital_all"]["auroc"] <= hi
    assert s["per_factor"]["glare"]["strong"]["accepted_pct"] == 0.0
    md = ps.to_markdown({"meta": _meta("b"), "summary": s})
    assert "in-frame films accepted" in md and "lung_clipped_fraction" in md


def _meta(generator: str) -> dict[str, Any]:
    return {
        "generator": generator,
        "generator_module": "x",
        "n": 1,
        "seed": 0,
        "size": [1, 1],
        "films_source": "test",
        "wall_s": 0.0,
        "machine": "test",
    }


@pytest.fixture(scope="module")
def models() -> ps.Models:
    return ps.Models()


@pytest.mark.parametrize("generator", ["a", "b"])
def test_tiny_study_end_to_end(generator: str, models: ps.Models, tmp_path: Path) -> None:
    films = [ps.FilmRef("phantom-0", 0, None), ps.FilmRef("phantom-1", 1, None)]
    result = ps.run_study(generator, 2, 0, SMALL, films=films, models=models, log_every=0)
    kinds = [r["kind"] for r in result["records"]]
    expected = ["film", "film", "empty", "cut_off"] + (["sheet"] if generator == "b" else [])
    assert kinds == expected
    for r in result["records"]:
        assert r["status"] in ("ok", "rejected")
        assert (r["status"] == "ok") == (not r["flags"])
        if r["kind"] == "film":
            assert r["digital_prob"] is not None
            assert 0.0 <= r["iou_sheet"] <= 1.0 and 0.0 <= r["iou_area"] <= 1.0
    assert not any(r["in_frame"] for r in result["records"] if r["kind"] == "cut_off")
    clean = ps._clean(result)
    out = tmp_path / "study.json"
    out.write_text(json.dumps(clean, allow_nan=False))
    assert ps.main(["--resummarise", "--out", str(out)]) == 0
    assert out.with_suffix(".md").read_text().startswith("## Photo study")


def test_true_crop_cuts_the_quadrilateral_out_upright() -> None:
    """Issue 17's perfect crop: the film's true corners warped to a rectangle, no development."""
    import cv2

    from kiosk.rectify.warp import upright

    photo = np.zeros((300, 400, 3), np.uint8)
    corners = np.array([[100, 50], [300, 60], [290, 260], [110, 250]], np.float32)
    cv2.fillConvexPoly(photo, np.round(corners).astype(np.int32), (200, 180, 160))
    # a dark mark near the film's top-left corner stays at the crop's top-left
    cv2.circle(photo, (130, 80), 8, (10, 10, 10), -1)
    crop = upright(photo, corners)
    h, w = crop.shape[:2]
    assert abs(w - 200) <= 2 and abs(h - 200) <= 2
    assert crop[h // 2, w // 2].tolist() == [200, 180, 160]
    assert crop[: h // 3, : w // 3].min() < 30 and crop[-h // 3 :, -w // 3 :].min() > 150


def test_outline_shows_a_film_on_the_panel_and_not_its_side_over_the_housing() -> None:
    from kiosk.lab.photo_study.outline import outline_class, side_steps

    img = np.full((400, 600), 30, np.uint8)  # dark housing
    img[:, :300] = 230  # lit panel on the left half
    img[100:300, 100:400] = 40  # a film from the panel onto the housing (right side)
    corners = np.array([[100, 100], [400, 100], [400, 300], [100, 300]], np.float64)
    steps = side_steps(img, corners)
    assert steps[3][0] >= 150  # left side: panel 230 against film 40
    assert steps[1][0] == pytest.approx(10, abs=1)  # right side: film 40 against housing 30
    assert outline_class(steps) == "dark"  # top and bottom cross the panel: half shown
    on_panel = img.copy()
    on_panel[:, :] = 230
    on_panel[100:300, 100:400] = 60
    assert outline_class(side_steps(on_panel, corners)) == "shown"
    clipped = np.full((400, 600), 255, np.uint8)
    clipped[120:280, 120:380] = 90  # the image area; the clear margin clips like the panel
    assert outline_class(side_steps(clipped, corners)) == "bright"
    rgb = np.repeat(on_panel[:, :, None], 3, axis=2)
    assert side_steps(rgb, corners) == side_steps(on_panel, corners)


def test_summary_splits_the_legible_films_by_what_the_photo_shows_of_their_outline() -> None:
    recs = _synthetic_records()
    films = [r for r in recs if r["kind"] == "film"]
    for i, r in enumerate(films):
        r["truth"] = {"lung_clipped_frac": 0.0, "lung_crushed_frac": 0.0, "lung_glare": 0.0}
        r["sheet_outline"] = "shown" if i % 2 else "dark"
        # odd films step 25 levels on every side, even ones 5 on one side (over the housing)
        r["sheet_side_steps"] = [[25.0, 200.0, 60.0]] * 3 + [[25.0 if i % 2 else 5.0, 20, 25]]
    s = ps.summarise(recs)
    split = s["truly_legible"]["by_sheet_outline"]
    assert set(split) == {"shown", "dark"} and split["shown"]["n"] == split["dark"]["n"] == 20
    for name, g in split.items():
        rs = [r for r in films if r["sheet_outline"] == name]
        ok = [r for r in rs if r["status"] == "ok"]
        assert g["iou_best_mean"] == pytest.approx(0.99 * len(ok) / len(rs))
    by_limit = s["truly_legible"]["shown_outline_by_min_step"]
    assert by_limit["10"]["n"] == 20 and by_limit["20"]["n"] == 20 and by_limit["30"]["n"] == 0
    assert by_limit["20"]["iou_best_mean"] == pytest.approx(split["shown"]["iou_best_mean"])
    md = ps.to_markdown({"meta": _meta("b"), "summary": s})
    assert "sheet outline shown" in md and "sheet outline dark" in md
    assert "outline shown at a 30-level step" in md
