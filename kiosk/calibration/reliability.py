"""Reliability diagrams as standalone SVG, written by hand (no matplotlib on the Pi).

One diagram shows several curves (e.g. "before" and "after" calibration) of observed positive
rate against mean predicted probability in equal-mass bins, the diagonal of perfect
calibration, and a strip under the plot with the histogram of predicted probabilities per
curve. Curves differ by colour (Okabe-Ito, colour-blind safe) AND marker shape AND dash
pattern, so the figure also reads in grey print. The legend gives each curve's ECE.

The web page embeds the string from :func:`reliability_svg`; :func:`write_reliability_svg`
saves it atomically. Neither computes calibrations; they only draw given predictions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from kiosk.atomic import atomic_write_bytes
from kiosk.errors import CalibrationError
from kiosk.stats import ece, reliability_bins

logger = logging.getLogger(__name__)

Curve = tuple[str, np.ndarray, np.ndarray]

# Okabe & Ito (2008) colours, most distinguishable first; yellow is left out (weak on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
DASHES = ("", "7 4", "2 3", "9 3 2 3", "4 2", "1 2 6 2", "12 4")
MARKERS = ("circle", "square", "triangle", "diamond", "triangle-down", "cross", "plus")
MAX_CURVES = len(PALETTE)
HIST_BINS = 20

_W, _H = 520, 600
_LEFT, _TOP, _SIZE = 70, 50, 400
_STRIP_TOP, _STRIP_H = _TOP + _SIZE + 45, 50
_LEGEND_X, _LEGEND_Y = _LEFT + 12, _TOP + 18


def _x(p: float) -> float:
    return _LEFT + p * _SIZE


def _y(p: float) -> float:
    return _TOP + (1.0 - p) * _SIZE


def _marker(shape: str, cx: float, cy: float, colour: str, tooltip: str) -> str:
    r = 4.5
    style = f'fill={quoteattr(colour)} stroke="#ffffff" stroke-width="1"'
    title = f"<title>{escape(tooltip)}</title>"
    if shape == "circle":
        return f'<circle cx="{cx:.2f}" cy="{cy:.2f}" r="{r}" {style}>{title}</circle>'
    if shape == "square":
        return (
            f'<rect x="{cx - r:.2f}" y="{cy - r:.2f}" width="{2 * r}" height="{2 * r}" '
            f"{style}>{title}</rect>"
        )
    if shape in ("cross", "plus"):
        k = r if shape == "plus" else r * 0.8
        if shape == "plus":
            d = f"M{cx - k:.2f},{cy:.2f}H{cx + k:.2f}M{cx:.2f},{cy - k:.2f}V{cy + k:.2f}"
        else:
            d = (
                f"M{cx - k:.2f},{cy - k:.2f}L{cx + k:.2f},{cy + k:.2f}"
                f"M{cx - k:.2f},{cy + k:.2f}L{cx + k:.2f},{cy - k:.2f}"
            )
        return (
            f'<path class="marker" d="{d}" stroke={quoteattr(colour)} stroke-width="2.2" '
            f'fill="none">{title}</path>'
        )
    if shape == "triangle":
        pts = [(cx, cy - r * 1.2), (cx + r * 1.1, cy + r * 0.8), (cx - r * 1.1, cy + r * 0.8)]
    elif shape == "triangle-down":
        pts = [(cx, cy + r * 1.2), (cx + r * 1.1, cy - r * 0.8), (cx - r * 1.1, cy - r * 0.8)]
    else:  # diamond
        pts = [(cx, cy - r * 1.3), (cx + r * 1.1, cy), (cx, cy + r * 1.3), (cx - r * 1.1, cy)]
    points = " ".join(f"{px:.2f},{py:.2f}" for px, py in pts)
    return f'<polygon points="{points}" {style}>{title}</polygon>'


def _check_curve(curve: Curve) -> tuple[str, np.ndarray, np.ndarray]:
    try:
        name, probs, labels = curve
    except (TypeError, ValueError) as exc:
        raise CalibrationError(
            "each curve must be a (name, probabilities, labels) tuple", "fix the caller"
        ) from exc
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or y.shape != p.shape:
        raise CalibrationError(
            f"curve {name!r}: probabilities and labels must be equally long, non-empty 1-D "
            f"arrays, got shapes {p.shape} and {y.shape}"
        )
    return str(name), p, y


def reliability_svg(curves: Sequence[Curve], *, bins: int = 15, title: str) -> str:
    """Draw a reliability diagram of one or more (name, probabilities, 0/1 labels) curves.

    Each curve is drawn as one ``<polyline class="curve">`` through its equal-mass bins
    (``bins`` of them) with a marker per bin (tooltip: mean predicted, observed, count), and as
    a histogram outline of its predictions in the strip under the plot. Returns a standalone
    SVG document as a string (valid XML, text escaped). Raises CalibrationError for no curves,
    more than :data:`MAX_CURVES`, or bad arrays. Does not fit or change any probabilities.
    """
    if not curves:
        raise CalibrationError("no curves to draw", "pass at least one (name, probs, labels)")
    if len(curves) > MAX_CURVES:
        raise CalibrationError(
            f"{len(curves)} curves is too many for one diagram (at most {MAX_CURVES})",
            "split them over several diagrams",
        )
    checked = [_check_curve(c) for c in curves]
    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" role="img" aria-label={quoteattr(title)} '
        'font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{_W}" height="{_H}" fill="#ffffff"/>',
        f'<text x="{_W / 2:.1f}" y="28" text-anchor="middle" font-size="15" '
        f'font-weight="bold">{escape(title)}</text>',
    ]
    # Frame, grid, ticks.
    parts.append(
        f'<rect x="{_LEFT}" y="{_TOP}" width="{_SIZE}" height="{_SIZE}" fill="none" '
        'stroke="#444444"/>'
    )
    for i in range(6):
        t = i / 5
        parts.append(
            f'<line class="grid" x1="{_x(t):.1f}" y1="{_TOP}" x2="{_x(t):.1f}" '
            f'y2="{_TOP + _SIZE}" stroke="#e5e5e5"/>'
            f'<line class="grid" x1="{_LEFT}" y1="{_y(t):.1f}" x2="{_LEFT + _SIZE}" '
            f'y2="{_y(t):.1f}" stroke="#e5e5e5"/>'
            f'<text x="{_x(t):.1f}" y="{_TOP + _SIZE + 16}" text-anchor="middle">{t:.1f}</text>'
            f'<text x="{_LEFT - 8}" y="{_y(t) + 4:.1f}" text-anchor="end">{t:.1f}</text>'
        )
    parts.append(
        f'<line class="diagonal" x1="{_x(0):.1f}" y1="{_y(0):.1f}" x2="{_x(1):.1f}" '
        f'y2="{_y(1):.1f}" stroke="#888888" stroke-dasharray="3 3"/>'
    )
    parts.append(
        f'<text x="{_LEFT + _SIZE / 2}" y="{_TOP + _SIZE + 34}" text-anchor="middle">'
        "Mean predicted probability</text>"
        f'<text transform="translate({_LEFT - 44},{_TOP + _SIZE / 2}) rotate(-90)" '
        'text-anchor="middle">Observed positive rate</text>'
    )
    # Histogram strip: predicted probabilities, one outline per curve, shared scale.
    hists = [np.histogram(p, bins=HIST_BINS, range=(0.0, 1.0))[0] for _, p, _ in checked]
    peak = max(1, max(int(h.max()) for h in hists))
    strip_bottom = _STRIP_TOP + _STRIP_H
    parts.append(
        f'<line x1="{_LEFT}" y1="{strip_bottom}" x2="{_LEFT + _SIZE}" y2="{strip_bottom}" '
        'stroke="#444444"/>'
        f'<text x="{_LEFT - 8}" y="{_STRIP_TOP + _STRIP_H / 2 + 4}" text-anchor="end">cases</text>'
        f'<text x="{_LEFT + _SIZE}" y="{_STRIP_TOP - 4}" text-anchor="end" font-size="10">'
        f"histogram of predictions (max {peak} per bin)</text>"
    )
    legend: list[str] = []
    for i, ((name, p, y), hist) in enumerate(zip(checked, hists, strict=True)):
        colour, dash, shape = PALETTE[i], DASHES[i], MARKERS[i]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        rb = reliability_bins(p, y, bins)
        score = ece(p, y, bins)
        points = " ".join(f"{_x(b.mean_predicted):.2f},{_y(b.observed_rate):.2f}" for b in rb)
        parts.append(
            f'<polyline class="curve" data-name={quoteattr(name)} points="{points}" fill="none" '
            f'stroke={quoteattr(colour)} stroke-width="2"{dash_attr}/>'
        )
        for b in rb:
            tip = (
                f"{name}: mean predicted {b.mean_predicted:.3f}, observed {b.observed_rate:.3f}, "
                f"n={b.count}"
            )
            parts.append(_marker(shape, _x(b.mean_predicted), _y(b.observed_rate), colour, tip))
        step = [f"M{_x(0):.2f},{strip_bottom:.2f}"]
        for k, count in enumerate(hist):
            h = _STRIP_H * count / peak
            step.append(f"V{strip_bottom - h:.2f}H{_x((k + 1) / HIST_BINS):.2f}")
        step.append(f"V{strip_bottom:.2f}")
        parts.append(
            f'<path class="hist" d="{"".join(step)}" fill="none" stroke={quoteattr(colour)} '
            f'stroke-width="1.5"{dash_attr}/>'
        )
        ly = _LEGEND_Y + 18 * i
        legend.append(
            f'<line x1="{_LEGEND_X}" y1="{ly}" x2="{_LEGEND_X + 28}" y2="{ly}" '
            f'stroke={quoteattr(colour)} stroke-width="2"{dash_attr}/>'
            + _marker(shape, _LEGEND_X + 14, ly, colour, name)
            + f'<text class="legend" x="{_LEGEND_X + 36}" y="{ly + 4}">'
            f"{escape(name)} (ECE {score:.3f}, n={p.size})</text>"
        )
    box_h = 18 * len(checked) + 8
    parts.append(
        f'<rect x="{_LEGEND_X - 6}" y="{_LEGEND_Y - 12}" width="230" height="{box_h}" '
        'fill="#ffffff" fill-opacity="0.85" stroke="#cccccc"/>'
    )
    parts.extend(legend)
    parts.append(
        f'<text x="{_LEFT}" y="{_H - 12}" font-size="10" fill="#555555">'
        f"{bins} equal-mass bins; ECE with the same bins</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_reliability_svg(
    path: Path, curves: Sequence[Curve], *, bins: int = 15, title: str
) -> Path:
    """Write :func:`reliability_svg` to ``path`` atomically (temp file, fsync, rename).

    Either the old file or the complete new one is there afterwards, never a partial one.
    Raises CalibrationError when the folder cannot be written. Does not create the folder.
    """
    svg = reliability_svg(curves, bins=bins, title=title)
    path = Path(path)
    try:
        if not path.parent.is_dir():
            raise FileNotFoundError(2, "no such folder", str(path.parent))
        atomic_write_bytes(path, svg.encode("utf-8"))
    except OSError as exc:
        raise CalibrationError(
            f"cannot write reliability diagram {path}: {exc.strerror or exc}",
            "check that the folder exists, is writable and the disk is not full",
        ) from exc
    logger.info("wrote reliability diagram %s", path)
    return path
