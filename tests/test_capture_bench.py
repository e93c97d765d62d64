"""`kiosk bench --capture`: the report's keys and their sense, on a small bracket (the 12 MP
numbers themselves are measured with the command and written in README, not asserted)."""

from __future__ import annotations

from pathlib import Path

from kiosk.config import load_config
from kiosk.lab.capture_bench import format_capture_report, run_capture_bench


def test_the_capture_bench_times_the_bracket_and_a_photo_file_stage_by_stage(
    data_dir: Path,
) -> None:
    config = load_config(env={"KIOSK_DATA_DIR": str(data_dir)})
    report = run_capture_bench(config, runs=2, size=(960, 540))
    assert report["frame_size"] == "960x540" and report["bracket_frames"] >= 2
    assert report["status"] in ("ok", "rejected")
    for key in ("capture_to_result_ms", "infer_interpreter_ms", "photo_1080p_end_to_end_ms"):
        assert report[key] > 0
    assert report["capture_to_result_over_interpreter"] > 1
    stages = report["photo_1080p_stages_ms"]
    assert {"decode", "rectify", "infer", "store"} <= set(stages)
    # the stages are parts of the photo's end-to-end time (medians, so allow some slack)
    assert sum(stages.values()) <= 1.5 * report["photo_1080p_end_to_end_ms"] + 5
    assert report["peak_rss_mb"] >= report["bracket_frames_mb"]
    text = format_capture_report(report)
    assert "1080p photo end to end" in text and "decode" in text and "engine" not in text
    # with --engines the engine table of the same run follows (its rows as compare_engines gives)
    row = {"engine": "LiteRT", "precision": "int8", "median_ms": 2.5, "ratio_vs_litert_int8": 1.0}
    assert "engine LiteRT int8" in format_capture_report({**report, "engines": [row]})
