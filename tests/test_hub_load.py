"""The load test, small: 5 kiosk processes x 40 results against a `kiosk hub serve` process
that is SIGKILLed once in the middle and restarted; on both engines. The full run (50 x 200)
is `python -m kiosk.lab.hub_load`; its numbers are in docs/sync.md."""

from __future__ import annotations

from pathlib import Path

from kiosk.lab.hub_load import run_load

pytest_plugins = ("pg",)


def test_many_kiosks_and_a_killed_hub_lose_and_double_nothing(tmp_path: Path, hub_url: str) -> None:
    report = run_load(kiosks=5, results=40, database_url=hub_url, batch=5, workdir=tmp_path)

    assert report.problems == [], report
    assert report.engine == hub_url.split(":", 1)[0]
    assert report.killed_at_results is not None and 100 <= report.killed_at_results < 200
    assert report.hub_results == 200 and report.missing == 0 and report.unexpected == 0
    assert report.findings_held == report.findings_expected > 400
    assert report.batches >= 40 and report.batches_retried >= 1  # the kill was felt
    assert report.kiosks_with_backlog == 0
    assert 0 < report.latency_p50_ms <= report.latency_p95_ms <= report.latency_max_ms


def test_load_report_of_nothing_is_not_ok(tmp_path: Path) -> None:
    report = run_load(kiosks=0, results=1, workdir=tmp_path)
    assert not report.ok and "never killed" in report.problems[0]
