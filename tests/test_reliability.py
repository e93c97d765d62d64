"""Tests for kiosk.calibration.reliability: the hand-written reliability-diagram SVG."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from kiosk.calibration.reliability import (
    MAX_CURVES,
    PALETTE,
    reliability_svg,
    write_reliability_svg,
)
from kiosk.errors import CalibrationError
from kiosk.stats import ece, reliability_bins, sigmoid

NS = {"svg": "http://www.w3.org/2000/svg"}


def _curves() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 600)
    y = (rng.random(600) < sigmoid(z)).astype(float)
    return [("before <raw> & co", sigmoid(2.5 * z), y), ("after", sigmoid(z), y)]


def _points(polyline: ET.Element) -> np.ndarray:
    return np.array([[float(v) for v in p.split(",")] for p in polyline.attrib["points"].split()])


def test_svg_parses_with_one_curve_per_series_and_legend() -> None:
    curves = _curves()
    svg = reliability_svg(curves, bins=10, title='Pneumonia "site 3" <photos>')
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    lines = root.findall("svg:polyline[@class='curve']", NS)
    assert len(lines) == 2
    assert [pl.attrib["data-name"] for pl in lines] == ["before <raw> & co", "after"]
    assert all(len(_points(pl)) == 10 for pl in lines)
    assert len(root.findall("svg:path[@class='hist']", NS)) == 2
    legend = [t.text or "" for t in root.findall("svg:text[@class='legend']", NS)]
    for (name, p, y), text in zip(curves, legend, strict=True):
        assert text.startswith(name)
        assert f"ECE {ece(p, y, 10):.3f}" in text
    assert root.find("svg:title", NS) is not None
    assert root.find("svg:title", NS).text == 'Pneumonia "site 3" <photos>'  # type: ignore[union-attr]
    assert "&lt;raw&gt; &amp; co" in svg  # escaped, not raw markup
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "Mean predicted probability" in texts and "Observed positive rate" in texts
    assert root.findall("svg:line[@class='diagonal']", NS)


def test_curves_differ_by_colour_dash_and_marker() -> None:
    root = ET.fromstring(reliability_svg(_curves(), title="t"))
    a, b = root.findall("svg:polyline[@class='curve']", NS)
    assert a.attrib["stroke"] != b.attrib["stroke"]
    assert a.attrib["stroke"] in PALETTE and b.attrib["stroke"] in PALETTE
    assert a.get("stroke-dasharray") != b.get("stroke-dasharray")
    first_markers = root.findall("svg:circle", NS)
    second_markers = root.findall("svg:rect[@width='9.0']", NS)
    assert len(first_markers) == 15 + 1  # 15 bins + legend swatch
    assert len(second_markers) == 15 + 1


def test_points_follow_bins_in_plot_coordinates() -> None:
    curves = _curves()
    root = ET.fromstring(reliability_svg(curves[1:], bins=5, title="t"))
    pts = _points(root.find("svg:polyline[@class='curve']", NS))  # type: ignore[arg-type]
    bins = reliability_bins(curves[1][1], curves[1][2], bins=5)
    # x grows with the mean prediction; y (SVG grows downward) falls as the observed rate rises.
    assert np.all(np.diff(pts[:, 0]) > 0)
    order = np.argsort([b.observed_rate for b in bins])
    assert np.all(np.diff(pts[order, 1]) <= 0)


def test_bad_curves_refused() -> None:
    with pytest.raises(CalibrationError, match="no curves"):
        reliability_svg([], title="t")
    p = np.array([0.2, 0.4])
    with pytest.raises(CalibrationError, match="equally long"):
        reliability_svg([("x", p, np.array([1.0]))], title="t")
    with pytest.raises(CalibrationError, match="too many"):
        reliability_svg([("x", p, np.array([0.0, 1.0]))] * (MAX_CURVES + 1), title="t")
    with pytest.raises(CalibrationError, match="probabilities"):
        reliability_svg([("x", np.array([0.2, 1.4]), np.array([0.0, 1.0]))], title="t")


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "reliability.svg"
    target.write_text("old")
    out = write_reliability_svg(target, _curves(), title="site")
    assert out == target
    ET.fromstring(target.read_text(encoding="utf-8"))
    assert sorted(os.listdir(tmp_path)) == ["reliability.svg"]
    with pytest.raises(CalibrationError, match="cannot write"):
        write_reliability_svg(tmp_path / "missing" / "r.svg", _curves(), title="site")
    # A failing render leaves the old file untouched.
    with pytest.raises(CalibrationError):
        write_reliability_svg(target, [], title="site")
    ET.fromstring(target.read_text(encoding="utf-8"))
    assert sorted(os.listdir(tmp_path)) == ["reliability.svg"]


def test_curves_and_markers_stay_inside_the_plot_frame() -> None:
    rng = np.random.default_rng(1)
    extreme = np.concatenate([np.zeros(20), np.ones(20), rng.random(60)])
    labels = (rng.random(100) < 0.5).astype(float)
    root = ET.fromstring(reliability_svg([("edge", extreme, labels)], title="edges"))
    frame = root.find("svg:rect[@fill='none']", NS)
    assert frame is not None
    x0, y0 = float(frame.attrib["x"]), float(frame.attrib["y"])
    x1, y1 = x0 + float(frame.attrib["width"]), y0 + float(frame.attrib["height"])
    pts = _points(root.find("svg:polyline[@class='curve']", NS))  # type: ignore[arg-type]
    assert np.all((pts[:, 0] >= x0) & (pts[:, 0] <= x1))
    assert np.all((pts[:, 1] >= y0) & (pts[:, 1] <= y1))
    # Both ends reached: mean prediction 0 sits on the left edge, 1 on the right edge.
    assert pts[0, 0] == pytest.approx(x0) and pts[-1, 0] == pytest.approx(x1)
    width, height = float(root.attrib["width"]), float(root.attrib["height"])
    for circle in root.iter("{http://www.w3.org/2000/svg}circle"):
        assert 0 <= float(circle.attrib["cx"]) <= width
        assert 0 <= float(circle.attrib["cy"]) <= height
