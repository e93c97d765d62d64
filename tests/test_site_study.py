"""Issue 14's protocol (kiosk.lab.site_study) on synthetic study records: no images needed."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiosk.lab.site_study import run, split_by_patient


def _records(n: int, seed: int, *, shift: float = 0.0) -> list[dict[str, Any]]:
    """Photo-study records of legible in-frame films: two photos per patient, a model whose
    true probability is sigmoid(logit + shift), a few refused by the gate."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        z = rng.normal(0.5, 2.5)
        label = int(rng.random() < 1 / (1 + np.exp(-(z + shift))))
        out.append(
            {
                "kind": "film",
                "in_frame": True,
                "truth": {"lung_clipped_frac": 0.0, "lung_crushed_frac": 0.0, "lung_glare": 0.0},
                "patient": f"p{i // 2}",
                "label": label,
                "photo_prob": float(1 / (1 + np.exp(-z))),
                "digital_prob": float(1 / (1 + np.exp(-(z + rng.normal(0, 0.3))))),
                "status": "rejected" if i % 25 == 0 else "ok",
                "ood_flag": i % 40 == 1,
            }
        )
    # not part of the protocol: an illegible film and an empty lightbox
    out.append({**out[0], "truth": {**out[0]["truth"], "lung_glare": 0.5}, "patient": "x"})
    out.append({**out[1], "kind": "empty", "patient": "y"})
    return out


def test_the_split_keeps_patients_whole_and_stops_at_the_sizes() -> None:
    films = _records(300, 0)[:300]
    site, check = split_by_patient(films, 100, 120, seed=1)
    assert 100 <= len(site) <= 101 and 120 <= len(check) <= 121
    assert not {r["patient"] for r in site} & {r["patient"] for r in check}


def test_a_miscalibrated_site_is_recalibrated_and_held_out_ece_falls() -> None:
    result = run(_records(900, 1, shift=1.5), labelled=300, held_out=424, small_repeats=4)
    lab, held = result["labelled"], result["held_out"]
    assert result["legible_in_frame_films"] == 900  # the illegible film and the empty: out
    assert lab["accepted"] < lab["photos"]  # the gate's refusals are skipped
    assert lab["activated"], lab["refusals"]
    assert held["accepted"] < held["photos"]
    assert held["ece_after"] < held["ece_before"] - 0.03
    small = result["small_sets"]
    assert small["refused"] == small["repeats"]  # 30 photos: below the activation minimum
    assert small["refusal_reasons"]


def test_a_calibrated_site_is_left_alone_or_not_made_worse() -> None:
    result = run(_records(900, 2), labelled=200, held_out=424, small_repeats=2)
    held = result["held_out"]
    if result["labelled"]["activated"]:
        assert held["ece_after"] <= held["ece_before"] + 0.01
    else:
        assert result["labelled"]["refusals"] and held["ece_after"] == held["ece_before"]
    assert abs(held["photo_minus_digital"]) < 0.05
