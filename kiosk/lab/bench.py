"""`kiosk bench`: per-stage latency medians, model load time and memory, on this machine.

Runs the real stages on simulated lightbox photos (the physically based renderer, so no
patient image is needed) in a scratch data directory: nothing touches the kiosk's own
database. Numbers are medians over ``runs`` repetitions; memory is resident set size read from
``/proc/self/status`` (current) and ``getrusage`` (peak).
"""

from __future__ import annotations

import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.app.appliance import resolve_manifest
from kiosk.camera import scene
from kiosk.config import KioskConfig
from kiosk.imaging.decode import decode_image
from kiosk.imaging.encode import encode_jpeg
from kiosk.model.classifier import Classifier
from kiosk.model.runtime import TFLiteModel
from kiosk.pipeline import Pipeline
from kiosk.rectify.rectifier import rectify
from kiosk.store import Store


def rss_mb() -> float:
    """Current resident set size in MB (Linux), else the peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(samples)


def _photos(n: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        digital = scene.phantom_chest(rng, size=(1024, 1024))
        params = scene.random_params(rng, difficulty=0.3)
        out.append(scene.render(digital, params, rng, size=size).image)
    return out


def machine() -> str:
    import os

    return f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip()


def run_bench(config: KioskConfig, *, runs: int = 30, soak: int = 0) -> dict[str, Any]:
    """Measure and return the report; see :func:`format_report` for the table."""
    manifest_path = resolve_manifest(config)
    report: dict[str, Any] = {
        "machine": machine(),
        "python": platform.python_version(),
        "runs": runs,
        "threads": config.threads,
    }
    rss_start = rss_mb()
    load_ms = []
    for _ in range(3):
        load_ms.append(TFLiteModel.from_manifest(manifest_path, threads=config.threads).load_ms)
    classifier = Classifier.from_manifest(manifest_path, threads=config.threads)
    report["model"] = {
        "id": classifier.manifest.id,
        "file_mb": round(classifier.manifest.model_path.stat().st_size / 1e6, 2),
        "runtime": classifier.model.runtime_name,
        "load_ms_median": round(statistics.median(load_ms), 1),
    }

    stages: dict[str, float] = {}
    photos = _photos(3, (1080, 1920), seed=1)
    jpeg = encode_jpeg(photos[0], quality=90)
    stages["decode_1080p_jpeg"] = _median_ms(lambda: decode_image(jpeg), runs)
    stages["rectify_1080p"] = _median_ms(lambda: rectify(photos[0], None), runs)
    big = _photos(1, (3040, 4056), seed=2)[0]
    stages["rectify_12mp"] = _median_ms(lambda: rectify(big, None), max(3, runs // 5))
    film = rectify(photos[0], None).film
    if film is None:
        film = scene.phantom_chest(np.random.default_rng(3), size=(1024, 1024))
    stages["infer"] = _median_ms(lambda: classifier.predict(film), runs)
    infer_only = [classifier.predict(film).timings_ms["inference"] for _ in range(runs)]
    stages["infer_interpreter_only"] = statistics.median(infer_only)

    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        data_dir = Path(tmp)
        store = Store(data_dir / "kiosk.db")
        pipeline = Pipeline(classifier, device_id="bench", store=store, data_dir=data_dir)
        counter = iter(range(10**9))

        def analyse() -> None:
            pipeline.analyze_image(
                photos[next(counter) % len(photos)], source="bench", input_kind="photo"
            )

        stages["end_to_end_photo_stored"] = _median_ms(analyse, runs)
        report["stages_ms_median"] = {k: round(v, 2) for k, v in stages.items()}
        report["memory_mb"] = {"start": round(rss_start, 1), "after_stages": round(rss_mb(), 1)}

        if soak:
            samples = []
            t0 = time.perf_counter()
            for i in range(soak):
                analyse()
                if i % max(1, soak // 10) == 0 or i == soak - 1:
                    samples.append((i + 1, round(rss_mb(), 1)))
            elapsed = time.perf_counter() - t0
            first = samples[0][1]
            report["soak"] = {
                "analyses": soak,
                "seconds": round(elapsed, 1),
                "rss_mb_samples": samples,
                "rss_growth_mb_after_first": round(samples[-1][1] - first, 1),
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }
        store.close()
    report["memory_mb"]["peak"] = round(peak_rss_mb(), 1)
    return report


def format_report(report: dict[str, Any]) -> str:
    """A plain table for the terminal."""
    lines = [
        f"machine: {report['machine']}, python {report['python']}, "
        f"{report['threads']} threads, medians of {report['runs']} runs",
        f"model: {report['model']['id']} ({report['model']['file_mb']} MB, "
        f"{report['model']['runtime']}), load {report['model']['load_ms_median']} ms",
        "",
        f"{'stage':32} {'median ms':>10}",
    ]
    for name, value in report["stages_ms_median"].items():
        lines.append(f"{name:32} {value:10.2f}")
    mem = report["memory_mb"]
    lines += [
        "",
        f"RSS MB: start {mem['start']}, after stages {mem['after_stages']}, peak {mem['peak']}",
    ]
    if "soak" in report:
        s = report["soak"]
        lines.append(
            f"soak: {s['analyses']} analyses in {s['seconds']} s, RSS growth after the first "
            f"sample {s['rss_growth_mb_after_first']} MB, samples {s['rss_mb_samples']}"
        )
    for e in report.get("engines", []):
        lines.append(f"engine {e}")
    return "\n".join(lines)
