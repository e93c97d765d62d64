"""The markdown summary of a study."""

from __future__ import annotations

from typing import Any


def _f(x: Any, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _auc(d: dict[str, Any] | None) -> str:
    if not d or d.get("auroc") is None:
        return "n/a"
    lo, hi = d["ci95"]
    return f"{d['auroc']:.3f} [{lo:.3f}, {hi:.3f}] (n={d['n']})"


def to_markdown(result: dict[str, Any]) -> str:
    """A compact markdown summary of a study."""
    s, m = result["summary"], result["meta"]
    lines = [
        f"## Photo study, generator {m['generator'].upper()} ({m['generator_module']})",
        "",
        f"n={m['n']} seed={m['seed']} size={m['size'][0]}x{m['size'][1]}, films: "
        f"{m['films_source']}, {m['wall_s']:.0f} s on {m['machine']}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| in-frame films accepted | {_f(s['accepted_pct'])}% of {s['n_in_frame_films']} |",
        f"| accepted and not OOD | {_f(s['accepted_and_not_ood_pct'])}% |",
        f"| mean IoU sheet / image area / best (refused = 0) | {_f(s['iou_sheet_mean'], '.3f')}"
        f" / {_f(s['iou_area_mean'], '.3f')} / {_f(s['iou_best_mean'], '.3f')} |",
        f"| mean IoU sheet on accepted | {_f(s['iou_sheet_mean_accepted'], '.3f')} |",
        f"| accepted with IoU >= 0.9 (sheet or image area) | {_f(s['accepted_iou90_pct'])}% |",
        *(
            f"| accepted, located by {how}: share / median IoU best / median err % / OOD % | "
            f"{_f(d['share_of_accepted_pct'])}% / {_f(d['iou_best_median'], '.3f')} / "
            f"{_f(d['corner_err_sheet_mean_pct_median'], '.2f')} / {_f(d['ood_flag_pct'])}% |"
            for how, d in s["accepted_located_by"].items()
        ),
        f"| corner error (mean of 4, % photo diag) median / p90 | "
        f"{_f(s['corner_err_sheet_mean_pct']['median'], '.2f')} / "
        f"{_f(s['corner_err_sheet_mean_pct']['p90'], '.2f')} |",
        f"| corner error (worst corner, % diag) median / p90 | "
        f"{_f(s['corner_err_sheet_max_pct']['median'], '.2f')} / "
        f"{_f(s['corner_err_sheet_max_pct']['p90'], '.2f')} |",
        f"| empty lightboxes refused (incl. OOD) | {_f(s['empty']['refused_pct'])}% "
        f"({_f(s['empty']['refused_incl_ood_pct'])}%) of {s['empty']['n']} |",
        f"| cut-off films refused (incl. OOD) | {_f(s['cut_off']['refused_pct'])}% "
        f"({_f(s['cut_off']['refused_incl_ood_pct'])}%) of {s['cut_off']['n']} |",
    ]
    if "sheet" in s:
        lines.append(
            f"| CT/MR sheets refused (incl. OOD) | {_f(s['sheet']['refused_pct'])}% "
            f"({_f(s['sheet']['refused_incl_ood_pct'])}%) of {s['sheet']['n']} |"
        )
    if s["auroc_available"]:
        d = s["auroc_photo_minus_digital_accepted"]
        diff = (
            "n/a"
            if d["diff"] is None
            else (f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
        )
        lines += [
            f"| AUROC digital, all films | {_auc(s['auroc_digital_all'])} |",
            f"| AUROC photo, accepted | {_auc(s['auroc_photo_accepted'])} |",
            f"| AUROC digital, same accepted films | {_auc(s['auroc_digital_accepted'])} |",
            f"| photo - digital on accepted (paired) | {diff} |",
            f"| AUROC photo, every developed film | {_auc(s['auroc_photo_all_developed'])} |",
        ]
    else:
        lines.append("| AUROC | not available (no Kermany images: phantom films) |")
    lines += [
        f"| OOD flagged: accepted photos / digital originals | "
        f"{_f(s['ood_flag_on_accepted_pct'])}% / {_f(s['ood_flag_on_digital_pct'])}% |",
        f"| rectify ms median / p90 | {_f(s['rectify_ms']['median'], '.0f')} / "
        f"{_f(s['rectify_ms']['p90'], '.0f')} |",
    ]
    if "truly_legible" in s:
        t = s["truly_legible"]
        lines.append(
            f"| accepted of truly legible films ({t['rule']}) | "
            f"{_f(t['accepted_pct'])}% of {t['n']} (illegible accepted: "
            f"{_f(t['illegible_accepted_pct'])}% of {t['illegible_n']}) |"
        )
        for name, g in t.get("by_sheet_outline", {}).items():
            lines.append(
                f"| truly legible, sheet outline {name}: n / accepted / mean IoU best |"
                f" {g['n']} / {_f(g['accepted_pct'])}% / {_f(g['iou_best_mean'], '.3f')} |"
            )
        for limit, g in t.get("shown_outline_by_min_step", {}).items():
            lines.append(
                f"| truly legible, outline shown at a {limit}-level step: n / mean IoU best |"
                f" {g['n']} / {_f(g['iou_best_mean'], '.3f')} |"
            )
    lines += [
        "",
        "Refusals of in-frame films (first flag; any flag), % of in-frame films:",
        "",
        "| flag | first | any |",
        "|---|---|---|",
    ]
    for k, v in s["refused_by_first_flag_pct"].items():
        lines.append(f"| {k} | {_f(v)} | {_f(s['refused_by_any_flag_pct'].get(k))} |")
    lines += [
        "",
        "Per factor (in-frame films): n, accepted %, mean IoU sheet (refused = 0):",
        "",
        "| factor | value | n | accepted % | IoU sheet | IoU area |",
        "|---|---|---|---|---|---|",
    ]
    for fk, vals in s["per_factor"].items():
        for fv, d in vals.items():
            lines.append(
                f"| {fk} | {fv} | {d['n']} | {_f(d['accepted_pct'])} | "
                f"{_f(d['iou_sheet_mean'], '.3f')} | {_f(d['iou_area_mean'], '.3f')} |"
            )
    gc = s["gate_curves"]
    lines += [
        "",
        "Gate curves (only that gate's limit moves; * = current limit): "
        "threshold -> accepted % / AUROC photo on accepted / AUROC digital same films",
        f"(recomputed vs actual acceptance mismatches: {gc['recomputed_vs_actual_mismatches']})",
        "",
    ]
    for metric, c in gc["gates"].items():
        pts = ", ".join(
            f"{'*' if p['current'] else ''}{p['threshold']:.4g}: {_f(p['accepted_pct'], '.0f')}%"
            f"/{_f(p['auroc_photo'], '.3f')}/{_f(p['auroc_digital_same'], '.3f')}"
            for p in c["points"]
        )
        lines.append(f"- **{metric}** ({c['direction']} {c['limit']:.4g}): {pts}")
    return "\n".join(lines) + "\n"
