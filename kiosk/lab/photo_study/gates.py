"""The quality gates' curves: acceptance vs AUROC when only one gate's limit moves."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiosk.lab.photo_study.auroc import _pct, auroc_ci

# (metric in quality.metrics, its name in quality.checks, direction: "max" refuses above the
# limit, "min" refuses below it)
GATES: tuple[tuple[str, str, str], ...] = (
    ("lung_clipped_fraction", "lung_clipped_fraction", "max"),
    ("lung_crushed_fraction", "lung_crushed_fraction", "max"),
    ("lung_glare_fraction", "lung_glare_fraction", "max"),
    ("edge_blur_fraction", "edge_blur_fraction", "max"),
    ("colour_detail", "colour_detail", "max"),
    ("colour_field", "colour_field", "max"),
    ("similar_regions", "similar_regions", "max"),
    ("contrast", "contrast_min", "min"),
    ("film_short_side_px", "film_short_side_px_min", "min"),
)


def _passes(value: float | None, limit: float, direction: str) -> bool:
    if value is None:  # not measurable: passes, as in the gate
        return True
    return value <= limit if direction == "max" else value >= limit


def current_limits(records: list[dict[str, Any]]) -> dict[str, float]:
    """The gate limits as ``quality.checks`` reported them."""
    limits: dict[str, float] = {}
    for r in records:
        for name, (_, limit) in r["checks"].items():
            if limit is not None:
                limits.setdefault(name, limit)
    return limits


def _accepted_with(films: list[dict[str, Any]], limits: dict[str, float]) -> list[bool]:
    """Acceptance of each photo when the gate uses ``limits`` (photos refused before the gate
    (no film, cut off, dark) stay refused)."""
    out = []
    for r in films:
        if not r["checks"] or r["photo_prob"] is None:
            out.append(False)
            continue
        ok = True
        for _, check, direction in GATES:
            if check in r["checks"] and check in limits:
                ok &= _passes(r["checks"][check][0], limits[check], direction)
        out.append(ok)
    return out


def _thresholds(values: list[float], limit: float, direction: str, k: int = 10) -> list[float]:
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return [limit]
    mode = v.min() if direction == "max" else v.max()
    base = v[v != mode] if (v == mode).mean() > 0.3 and (v != mode).any() else v
    qs = np.quantile(base, np.linspace(0.0, 1.0, k))
    cand = {float(x) for x in qs} | {float(mode), float(limit)}
    return sorted(cand)


def gate_curves(films: list[dict[str, Any]], limits: dict[str, float]) -> dict[str, Any]:
    """Per gate: share of in-frame films accepted vs AUROC on accepted, moving only its limit."""
    n = len(films)
    curves: dict[str, Any] = {}
    base = _accepted_with(films, limits)
    actual = [r["status"] == "ok" for r in films]
    mismatch = sum(a != b for a, b in zip(base, actual, strict=True))
    for metric, check, direction in GATES:
        if check not in limits:
            continue
        vals = [
            r["checks"][check][0]
            for r in films
            if check in r["checks"] and r["checks"][check][0] is not None
        ]
        points = []
        for t in _thresholds(vals, limits[check], direction):
            acc = _accepted_with(films, {**limits, check: t})
            sel = [r for r, a in zip(films, acc, strict=True) if a]
            labelled = [r for r in sel if r["label"] is not None]
            photo = auroc_ci([r["photo_prob"] for r in labelled], [r["label"] for r in labelled])
            dig = auroc_ci([r["digital_prob"] for r in labelled], [r["label"] for r in labelled])
            ood = [r["ood_flag"] for r in sel if r["ood_flag"] is not None]
            points.append(
                {
                    "threshold": t,
                    "current": t == limits[check],
                    "accepted_pct": _pct(len(sel), n),
                    "n_accepted": len(sel),
                    "auroc_photo": photo["auroc"],
                    "auroc_photo_ci95": photo["ci95"],
                    "auroc_digital_same": dig["auroc"],
                    "ood_flag_pct": _pct(sum(ood), len(ood)),
                }
            )
        curves[metric] = {
            "check": check,
            "direction": direction,
            "limit": limits[check],
            "points": points,
        }
    return {"gates": curves, "recomputed_vs_actual_mismatches": mismatch}
