"""What durable commits cost: ``save_result`` timed with ``synchronous=FULL`` and ``NORMAL``.

The kiosk opens its database with ``PRAGMA synchronous=FULL`` (``kiosk.store.db``): the WAL is
fsynced at every commit, so a result on the screen survives a power cut. This bench stores the
same synthetic results (findings, features, timings; no image) into a fresh database in
``--dir`` (default: a temporary folder; put it on the disk the kiosk uses) once per mode and
prints per-commit latency::

    python -m kiosk.lab.store_bench --n 300 --dir /var/lib/kiosk/bench

What this module does not do: touch an existing kiosk database (it makes its own and deletes
it) or measure the film image write (``kiosk bench`` does the whole analysis).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kiosk.store import FindingRecord, ResultRecord, Store

MODES = ("NORMAL", "FULL")
FEATURES = 1280  # EfficientNet-Lite0 pooled features, stored with every result


@dataclass(frozen=True)
class ModeTiming:
    mode: str
    n: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    results_per_s: float


def _record(rng: np.random.Generator) -> ResultRecord:
    probability = float(rng.random())
    record = ResultRecord(
        status="ok",
        source="camera",
        input_kind="photo",
        device_id="bench",
        corners=[[102.0, 88.5], [1830.0, 95.0], [1822.5, 2310.0], [98.0, 2301.0]],
        quality={"sharpness": 0.8, "glare": False},
        findings=[FindingRecord("pneumonia", "Pneumonia", probability, probability, 0.5, False)],
        model_id="bench-model",
        model_version="1.0.0",
        model_sha256="0" * 64,
        timings_ms={"rectify": 51.0, "infer": 19.0},
    )
    record.logits = [float(rng.normal())]
    record.features = rng.standard_normal(FEATURES).astype(np.float32)
    return record


def time_mode(folder: Path, mode: str, n: int, seed: int = 0) -> ModeTiming:
    """Store ``n`` results in a new database under ``folder`` with ``synchronous=mode``."""
    path = folder / f"bench-{mode.lower()}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = Store(path)
    store.db.execute(f"PRAGMA synchronous={'FULL' if mode == 'FULL' else 'NORMAL'}")
    rng = np.random.default_rng(seed)
    samples = []
    try:
        for _ in range(n):
            record = _record(rng)
            started = time.perf_counter()
            store.save_result(record)
            samples.append((time.perf_counter() - started) * 1000.0)
    finally:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    ordered = sorted(samples)
    return ModeTiming(
        mode=mode,
        n=n,
        median_ms=round(statistics.median(samples), 3),
        p90_ms=round(ordered[int(0.9 * (len(ordered) - 1))], 3),
        mean_ms=round(statistics.fmean(samples), 3),
        results_per_s=round(1000.0 / statistics.fmean(samples), 1),
    )


def run(folder: Path, n: int) -> list[ModeTiming]:
    """Both modes, NORMAL first, on the same disk."""
    folder.mkdir(parents=True, exist_ok=True)
    return [time_mode(folder, mode, n) for mode in MODES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="results stored per mode")
    parser.add_argument("--dir", type=Path, default=None, help="folder on the disk to measure")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kiosk-store-bench-") as tmp:
        timings = run(args.dir or Path(tmp), args.n)
    if args.json:
        print(json.dumps([asdict(t) for t in timings], indent=2))
        return 0
    for t in timings:
        print(
            f"synchronous={t.mode:6} {t.n} results: median {t.median_ms:.2f} ms, "
            f"p90 {t.p90_ms:.2f} ms, {t.results_per_s:.0f} results/s"
        )
    normal, full = timings
    print(f"FULL costs {full.median_ms - normal.median_ms:+.2f} ms per stored result (median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
