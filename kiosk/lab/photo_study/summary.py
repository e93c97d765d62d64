"""The study's summary from its per-photo records: acceptance, IoU, corner error, refusals,
AUROC, per scene factor and the gate curves."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiosk.lab.photo_study.auroc import _pct, _q, auroc_ci, paired_diff_ci
from kiosk.lab.photo_study.gates import current_limits, gate_curves
from kiosk.lab.photo_study.outline import outline_class

# generator B's ground truth: a film whose lung region a reader can read
LEGIBLE_MAX_CLIPPED = 0.02
LEGIBLE_MAX_CRUSHED = 0.02
LEGIBLE_MAX_GLARE = 0.1


def is_legible(truth: dict[str, float]) -> bool:
    """Whether a scene's truth (``film_photos.scene_truth``) says its lungs can be read;
    False when the scene gives no truth (generator A)."""
    return (
        truth.get("lung_clipped_frac") is not None
        and truth["lung_clipped_frac"] <= LEGIBLE_MAX_CLIPPED
        and truth["lung_crushed_frac"] <= LEGIBLE_MAX_CRUSHED
        and truth["lung_glare"] <= LEGIBLE_MAX_GLARE
    )


def _iou_best(r: dict[str, Any]) -> float:
    """A record's IoU with the sheet or with the image area, whichever is higher (a detector
    may rightly return either: docs/rectify.md); 0 when refused."""
    return max(r["iou_sheet"], r["iou_area"])


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _first_flags(rs: list[dict[str, Any]]) -> dict[str, float | None]:
    counts: dict[str, int] = {}
    for r in rs:
        if r["status"] != "ok":
            k = r["flags"][0] if r["flags"] else "unknown"
            counts[k] = counts.get(k, 0) + 1
    return {k: _pct(v, len(rs)) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def by_outline(films: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Acceptance and mean best IoU (refused = 0) of ``films`` by which sides of the true sheet
    their photo shows (``outline.outline_class``; records without it are left out)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in films:
        if r.get("sheet_outline"):
            groups.setdefault(r["sheet_outline"], []).append(r)
    return {
        name: {
            "n": len(rs),
            "accepted_pct": _pct(sum(r["status"] == "ok" for r in rs), len(rs)),
            "iou_best_mean": _mean([_iou_best(r) for r in rs]),
        }
        for name, rs in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    }


def shown_by_min_step(
    films: list[dict[str, Any]], limits: tuple[float, ...] = (10.0, 20.0, 30.0)
) -> dict[str, dict[str, Any]]:
    """How the "shown" films' count and mean best IoU (refused = 0) move with the grey step a
    side must make to count as shown (records with their side steps only)."""
    with_steps = [r for r in films if r.get("sheet_side_steps")]
    out: dict[str, dict[str, Any]] = {}
    for limit in limits:
        rs = [r for r in with_steps if outline_class(r["sheet_side_steps"], limit) == "shown"]
        out[f"{limit:g}"] = {
            "n": len(rs),
            "iou_best_mean": _mean([_iou_best(r) for r in rs]),
        }
    return out


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The study's summary from its per-photo records."""
    films = [r for r in records if r["kind"] == "film" and r["in_frame"]]
    n = len(films)
    acc = [r for r in films if r["status"] == "ok"]
    by_first: dict[str, int] = {}
    by_any: dict[str, int] = {}
    for r in films:
        if r["status"] != "ok":
            first = r["flags"][0] if r["flags"] else "unknown"
            by_first[first] = by_first.get(first, 0) + 1
            for f in set(r["flags"]):
                by_any[f] = by_any.get(f, 0) + 1
    notes: dict[str, int] = {}
    for r in acc:
        for f in r["notes"]:
            notes[f] = notes.get(f, 0) + 1

    def refused(kind: str) -> dict[str, Any]:
        rs = [r for r in records if r["kind"] == kind]
        rect = sum(r["status"] != "ok" for r in rs)
        # the pipeline's OOD gate refuses what rectify accepted and the model finds unfamiliar
        pipe = sum(r["status"] != "ok" or bool(r["ood_flag"]) for r in rs)
        first: dict[str, int] = {}
        for r in rs:
            if r["status"] != "ok":
                k = r["flags"][0] if r["flags"] else "unknown"
                first[k] = first.get(k, 0) + 1
        return {
            "n": len(rs),
            "refused_pct": _pct(rect, len(rs)),
            "refused_incl_ood_pct": _pct(pipe, len(rs)),
            "by_first_flag": first,
        }

    lab_films = [r for r in films if r["label"] is not None]
    lab_acc = [r for r in acc if r["label"] is not None]
    ood_acc = [r["ood_flag"] for r in acc if r["ood_flag"] is not None]
    ood_dig = [r["digital_ood_flag"] for r in films if r["digital_ood_flag"] is not None]
    out: dict[str, Any] = {
        "n_film_photos": sum(r["kind"] == "film" for r in records),
        "n_in_frame_films": n,
        "films_not_in_frame_excluded": sum(
            r["kind"] == "film" and not r["in_frame"] for r in records
        ),
        "accepted_pct": _pct(len(acc), n),
        "refused_by_first_flag_pct": {
            k: _pct(v, n) for k, v in sorted(by_first.items(), key=lambda kv: -kv[1])
        },
        "refused_by_any_flag_pct": {
            k: _pct(v, n) for k, v in sorted(by_any.items(), key=lambda kv: -kv[1])
        },
        "notes_on_accepted_pct": {
            k: _pct(v, len(acc)) for k, v in sorted(notes.items(), key=lambda kv: -kv[1])
        },
        "accepted_and_not_ood_pct": _pct(sum(not r["ood_flag"] for r in acc), n),
        "iou_sheet_mean": _mean([r["iou_sheet"] for r in films]),
        "iou_area_mean": _mean([r["iou_area"] for r in films]),
        "iou_best_mean": _mean([_iou_best(r) for r in films]),
        "iou_sheet_mean_accepted": _mean([r["iou_sheet"] for r in acc]),
        "iou_area_mean_accepted": _mean([r["iou_area"] for r in acc]),
        "corner_err_sheet_mean_pct": {
            "median": _q([r["corner_err_sheet_mean_pct"] for r in acc], 50),
            "p90": _q([r["corner_err_sheet_mean_pct"] for r in acc], 90),
        },
        "corner_err_sheet_max_pct": {
            "median": _q([r["corner_err_sheet_max_pct"] for r in acc], 50),
            "p90": _q([r["corner_err_sheet_max_pct"] for r in acc], 90),
        },
        "corner_err_area_mean_pct": {
            "median": _q(
                [
                    r["corner_err_area_mean_pct"]
                    for r in acc
                    if r["corner_err_area_mean_pct"] is not None
                ],
                50,
            ),
            "p90": _q(
                [
                    r["corner_err_area_mean_pct"]
                    for r in acc
                    if r["corner_err_area_mean_pct"] is not None
                ],
                90,
            ),
        },
        "empty": refused("empty"),
        "cut_off": refused("cut_off"),
        "cut_off_truly_out_of_frame": sum(
            r["kind"] == "cut_off" and not r["in_frame"] for r in records
        ),
        "rectify_ms": {
            "median": _q([r["rectify_ms"] for r in records if r["rectify_ms"]], 50),
            "p90": _q([r["rectify_ms"] for r in records if r["rectify_ms"]], 90),
        },
        "ood_flag_on_accepted_pct": _pct(sum(ood_acc), len(ood_acc)),
        "ood_flag_on_digital_pct": _pct(sum(ood_dig), len(ood_dig)),
        "auroc_available": bool(lab_films),
    }
    if any(r["kind"] == "sheet" for r in records):
        out["sheet"] = refused("sheet")
    if lab_films:
        out["auroc_digital_all"] = auroc_ci(
            [r["digital_prob"] for r in lab_films], [r["label"] for r in lab_films]
        )
        out["auroc_photo_accepted"] = auroc_ci(
            [r["photo_prob"] for r in lab_acc], [r["label"] for r in lab_acc]
        )
        out["auroc_digital_accepted"] = auroc_ci(
            [r["digital_prob"] for r in lab_acc], [r["label"] for r in lab_acc]
        )
        out["auroc_photo_minus_digital_accepted"] = paired_diff_ci(
            [r["photo_prob"] for r in lab_acc],
            [r["digital_prob"] for r in lab_acc],
            [r["label"] for r in lab_acc],
        )
        gated = [r for r in lab_films if r["photo_prob"] is not None]
        out["auroc_photo_all_developed"] = auroc_ci(
            [r["photo_prob"] for r in gated], [r["label"] for r in gated]
        )
    out["accepted_iou90_pct"] = _pct(sum(_iou_best(r) >= 0.9 for r in acc), n)
    located: dict[str, Any] = {}
    for how, rs in (
        ("edges", [r for r in acc if not r["metrics"].get("located_by_texture")]),
        ("texture", [r for r in acc if r["metrics"].get("located_by_texture")]),
    ):
        located[how] = {
            "n": len(rs),
            "share_of_accepted_pct": _pct(len(rs), len(acc)),
            "iou_sheet_median": _q([r["iou_sheet"] for r in rs], 50),
            "iou_best_median": _q([_iou_best(r) for r in rs], 50),
            "corner_err_sheet_mean_pct_median": _q(
                [r["corner_err_sheet_mean_pct"] for r in rs], 50
            ),
            "ood_flag_pct": _pct(sum(bool(r["ood_flag"]) for r in rs), len(rs)),
        }
    out["accepted_located_by"] = located
    legible = [r for r in films if is_legible(r["truth"])]
    legible_ids = {id(r) for r in legible}
    if legible:
        out["truly_legible"] = {
            "rule": f"truth lung clipped <= {LEGIBLE_MAX_CLIPPED}, crushed <= "
            f"{LEGIBLE_MAX_CRUSHED}, glare <= {LEGIBLE_MAX_GLARE}",
            "n": len(legible),
            "accepted_pct": _pct(sum(r["status"] == "ok" for r in legible), len(legible)),
            "illegible_n": n - len(legible),
            "illegible_accepted_pct": _pct(
                sum(r["status"] == "ok" for r in films if id(r) not in legible_ids),
                n - len(legible),
            ),
            "by_sheet_outline": by_outline(legible),
            "shown_outline_by_min_step": shown_by_min_step(legible),
        }
    per_factor: dict[str, dict[str, Any]] = {}
    extras = sorted(
        {e for r in films for e in r["factors"].get("extras", "none").split("+")} - {"none"}
    )
    for r in films:
        for fk, fv in r["factors"].items():
            if fk == "extras":  # one yes/no factor per item, not every combination
                have = set(fv.split("+"))
                for e in extras:
                    key = f"extra_{e}"
                    per_factor.setdefault(key, {}).setdefault(
                        "yes" if e in have else "no", []
                    ).append(r)
                continue
            per_factor.setdefault(fk, {}).setdefault(fv, []).append(r)
    out["per_factor"] = {
        fk: {
            fv: {
                "n": len(rs),
                "accepted_pct": _pct(sum(r["status"] == "ok" for r in rs), len(rs)),
                "iou_sheet_mean": _mean([r["iou_sheet"] for r in rs]),
                "iou_area_mean": _mean([r["iou_area"] for r in rs]),
                "refused_first_flag_pct": _first_flags(rs),
            }
            for fv, rs in sorted(vals.items())
        }
        for fk, vals in per_factor.items()
        if fk not in ("kind", "cut_off")
    }
    limits = current_limits(films)
    out["gate_limits"] = limits
    out["gate_curves"] = gate_curves(films, limits)
    return out
