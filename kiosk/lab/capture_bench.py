"""`kiosk bench --capture`: the capture path at 12 MP with the default bracket, film to result.

What is timed is what a nurse waits for once the camera has delivered the bracket: from "the
bracket's frames are in memory" to "the result is committed" (rectify + merge of the film
region, inference, calibration, SQLite commit with the film image). The camera's own exposure
and readout (here: the simulator's rendering) is measured apart, in a child process, so that
its float buffers do not count against the kiosk's memory. Peak RSS is the bench process's
high-water mark (``VmHWM``, reset after set-up through ``/proc/self/clear_refs``) while it holds
the bracket and runs the path.

What this module does not do: time the real camera (only a Pi with its camera can), or the
page that shows the result.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.app.appliance import resolve_manifest
from kiosk.camera import scene
from kiosk.camera.simulator import SimulatorCamera
from kiosk.capture.bracket import FilmCapture, capture_film
from kiosk.capture.detector import FilmDetector
from kiosk.config import KioskConfig
from kiosk.imaging.encode import encode_jpeg
from kiosk.lab.bench import machine, peak_rss_mb
from kiosk.model.classifier import Classifier
from kiosk.pipeline import AnalysisResult, Pipeline
from kiosk.store import Store

FRAME_12MP = (4608, 2592)  # Camera Module 3, native (width, height)
DEFAULT_BRACKET_EVS = (-1.0, 0.0, 1.0)


def _render_bracket(out: str, size: tuple[int, int], evs: Sequence[float], seed: int) -> None:
    """Child process: place a film on the simulated lightbox, capture the bracket, save it."""
    camera = SimulatorCamera(resolution=size, seed=seed, motion_frames=0)
    camera.open()
    detector = FilmDetector(stable_s=0.0)
    detector.update(camera.preview(), 0.0)  # the empty lightbox
    camera.place_film(scene.phantom_chest(np.random.default_rng(seed), (1024, 1024)))
    preview = camera.preview()
    t = time.perf_counter()
    # as AutoCapture does: meter on the film the detector sees, bracket around it
    capture = capture_film(camera, preview, detector.film_mask(preview), evs)
    render_ms = (time.perf_counter() - t) * 1000.0
    folder = Path(out)
    # the 1080p photo of the second measurement, rendered here too: the bench process itself
    # renders nothing, so its memory is the kiosk's
    rng = np.random.default_rng(seed + 1)
    params = scene.random_params(rng, difficulty=0.3)
    photo = scene.render(scene.phantom_chest(rng, (1024, 1024)), params, rng).image
    (folder / "photo-1080p.jpg").write_bytes(encode_jpeg(photo, quality=90))
    for i, frame in enumerate(capture.frames):
        np.save(folder / f"frame{i}.npy", frame)
    if capture.preview is not None:  # the camera's small copy of the base frame (lores)
        np.save(folder / "preview.npy", capture.preview)
    meta = {
        "exposures": list(capture.exposures),
        "metadata": capture.metadata,
        "render_ms": render_ms,
        "frames": len(capture.frames),
    }
    (folder / "capture.json").write_text(json.dumps(meta))


def _load_bracket(folder: Path) -> tuple[FilmCapture, float]:
    meta = json.loads((folder / "capture.json").read_text())
    frames = tuple(np.load(folder / f"frame{i}.npy") for i in range(int(meta["frames"])))
    preview = np.load(folder / "preview.npy") if (folder / "preview.npy").exists() else None
    capture = FilmCapture(frames, tuple(meta["exposures"]), dict(meta["metadata"]), preview=preview)
    return capture, float(meta["render_ms"])


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _hwm_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def run_capture_bench(
    config: KioskConfig,
    *,
    runs: int = 15,
    size: tuple[int, int] = FRAME_12MP,
    bracket_evs: Sequence[float] = DEFAULT_BRACKET_EVS,
    seed: int = 7,
) -> dict[str, Any]:
    """Measure the capture path; the keys are documented in README ("Measured")."""
    with tempfile.TemporaryDirectory(prefix="kiosk-capture-bench-") as tmp:
        work = Path(tmp)
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(target=_render_bracket, args=(tmp, size, list(bracket_evs), seed))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"rendering the bracket failed (exit code {child.exitcode})")
        capture, render_ms = _load_bracket(work)

        classifier = Classifier.from_manifest(resolve_manifest(config), threads=config.threads)
        store = Store(work / "kiosk.db")
        pipeline = Pipeline(classifier, device_id="bench", store=store, data_dir=work)
        photo_path = work / "photo-1080p.jpg"
        # warm-up: first calls load caches and allocate
        first = pipeline.analyze_capture(capture, source="bench")
        pipeline.analyze_file(photo_path, "photo")
        reset = _reset_peak_rss()
        rss_before = _hwm_mb()  # = the resident set right after the reset

        capture_ms, stages, status = _timed(
            lambda: pipeline.analyze_capture(capture, source="bench"), runs
        )
        photo_ms, photo_stages, _ = _timed(lambda: pipeline.analyze_file(photo_path, "photo"), runs)
        film = first.film if first.film is not None else np.full((1024, 800), 128, np.uint8)
        interp = [classifier.predict(film).timings_ms["inference"] for _ in range(runs * 3)]
        peak = _hwm_mb() if reset else peak_rss_mb()
        store.close()

    interpreter_ms = statistics.median(interp)
    return {
        "machine": machine(),
        "runs": runs,
        "threads": config.threads,
        "frame_size": f"{size[0]}x{size[1]}",
        "bracket_frames": len(capture.frames),
        "bracket_exposures": [round(e, 3) for e in capture.exposures],
        "status": status,
        "capture_to_result_ms": round(capture_ms, 1),
        "stages_ms": stages,
        "infer_interpreter_ms": round(interpreter_ms, 2),
        "capture_to_result_over_interpreter": round(capture_ms / interpreter_ms, 1),
        "photo_1080p_end_to_end_ms": round(photo_ms, 1),
        # (its decode includes the light measured on the colour preview meanwhile)
        "photo_1080p_stages_ms": photo_stages,
        "peak_rss_mb": round(peak, 1),
        "rss_before_runs_mb": round(rss_before, 1),
        "bracket_frames_mb": round(sum(f.nbytes for f in capture.frames) / 2**20, 1),
        "peak_rss_is_path_only": reset,
        "camera_render_ms_excluded": round(render_ms, 1),
    }


def _timed(analyse: Callable[[], AnalysisResult], runs: int) -> tuple[float, dict[str, float], str]:
    """``analyse`` run ``runs`` times: the median wall time (ms), each stage's median
    (``timings_ms``, rounded to 0.1 ms) and the last run's status."""
    wall: list[float] = []
    samples: dict[str, list[float]] = {}
    status = ""
    for _ in range(runs):
        t = time.perf_counter()
        result = analyse()
        wall.append((time.perf_counter() - t) * 1000.0)
        status = result.status
        for name, ms in result.timings_ms.items():
            samples.setdefault(name, []).append(ms)
    stages = {k: round(statistics.median(v), 1) for k, v in samples.items()}
    return statistics.median(wall), stages, status


def format_capture_report(report: dict[str, Any]) -> str:
    """A plain summary for the terminal."""
    lines = [
        f"machine: {report['machine']}, {report['threads']} threads, medians of "
        f"{report['runs']} runs; {report['bracket_frames']} frames of {report['frame_size']}",
        f"capture -> result committed  {report['capture_to_result_ms']:8.1f} ms "
        f"({report['capture_to_result_over_interpreter']}x the interpreter)",
    ]
    for name, ms in report["stages_ms"].items():
        lines.append(f"  {name:26} {ms:8.1f} ms")
    lines += [
        f"interpreter alone            {report['infer_interpreter_ms']:8.2f} ms",
        f"1080p photo end to end       {report['photo_1080p_end_to_end_ms']:8.1f} ms",
        *(
            f"  {name:26} {ms:8.1f} ms"
            for name, ms in report.get("photo_1080p_stages_ms", {}).items()
        ),
        f"peak RSS                     {report['peak_rss_mb']:8.1f} MB",
        f"(camera/simulator rendering, excluded: {report['camera_render_ms_excluded']} ms)",
    ]
    for e in report.get("engines", []):  # ``kiosk bench --capture --engines``
        lines.append(
            f"engine {e['engine']} {e['precision']:24} {e['median_ms']:8.2f} ms "
            f"({e['ratio_vs_litert_int8']:.2f}x LiteRT int8)"
        )
    return "\n".join(lines)
