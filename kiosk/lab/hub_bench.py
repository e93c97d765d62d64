"""How far one hub goes: ingest rate over real HTTP on loopback, and database size.

``python -m kiosk.lab.hub_bench [--results 20000] [--batch 500]`` does two runs against a hub
(waitress, 127.0.0.1, ephemeral port, SQLite ``hub.db``) in a scratch directory:

1. hub only: pre-built JSON batches POSTed with ``urllib`` (what the hub can take);
2. end to end: a kiosk database holding the same number of results pushed by
   ``kiosk.sync.client.push`` (what a kiosk and a hub do together).

It prints rows/s for both and the size of ``hub.db`` (after a WAL checkpoint), scaled to
100,000 results. ``--durability-cost`` instead measures what ``synchronous=FULL`` (the hub's
setting: an acknowledged batch is on disk) costs against ``NORMAL``, hub only. The synthetic
results have the shape of real ones (three findings, quality flags, timings, model and
calibration ids, some confirmed diagnoses), no thumbnails.
``synthetic_record`` and ``fill_kiosk`` are also what the tests and ``hub_load`` fill kiosks with.

What this module does not do: many kiosks at once or a hub killed mid-run (``hub_load``), or
PostgreSQL (the load test covers both engines).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kiosk.config import KioskConfig
from kiosk.hub.app import create_hub_app
from kiosk.hub.database import HUB_DB_NAME, default_url
from kiosk.hub.store import HubStore
from kiosk.store import FindingRecord, ResultRecord, Store
from kiosk.sync.client import build_body, ingest_url, push
from kiosk.sync.payload import read_results

logger = logging.getLogger(__name__)

FINDINGS = (
    ("pneumonia", "Pneumonia", 0.42),
    ("effusion", "Pleural effusion", 0.5),
    ("cardiomegaly", "Cardiomegaly", 0.55),
)
MODEL_ID = "cxr-pneumonia-effl0"
MODEL_VERSION = "1.2.0"
MODEL_SHA256 = "9f2c" + "0" * 56 + "beef"


def synthetic_record(
    device_id: str, rng: random.Random, *, created_at: str | None = None
) -> ResultRecord:
    """A realistic stored result: findings, quality, timings, model, calibration, and a source
    path and patient reference that must never leave the kiosk."""
    rejected = rng.random() < 0.08
    base = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(0, 60 * 24 * 25))
    record = ResultRecord(
        status="rejected" if rejected else "ok",
        source=f"/media/usb/films/PATIENT-{rng.randrange(10**6):06d}-doe.jpg",
        input_kind="photo",
        device_id=device_id,
        reason="film not flat (glare over the right lung)" if rejected else None,
        corners=[[102.0, 88.5], [1830.0, 95.0], [1822.5, 2310.0], [98.0, 2301.0]],
        quality={"sharpness": round(rng.uniform(0.4, 1.0), 3), "glare": rng.random() < 0.1},
        calibration_id=None if rejected else "cal-2026-10-site1",
        timings_ms={
            "rectify": round(rng.uniform(80, 140), 1),
            "infer": round(rng.uniform(200, 400), 1),
        },
        patient_ref=f"MRN-{rng.randrange(10**7):07d}",
        model_id=MODEL_ID,
        model_version=MODEL_VERSION,
        model_sha256=MODEL_SHA256,
    )
    if created_at is not None:
        record.created_at = created_at
    else:
        record.created_at = base.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if not rejected:
        for code, label, threshold in FINDINGS:
            raw = rng.random()
            prob = min(1.0, max(0.0, raw * 0.9 + 0.03))
            record.findings.append(
                FindingRecord(code, label, raw, prob, threshold, prob >= threshold)
            )
    return record


def fill_kiosk(store: Store, device_id: str, n: int, seed: int = 0) -> list[str]:
    """Store ``n`` synthetic results; confirm a diagnosis on about 5% of the analysed ones."""
    rng = random.Random(seed)
    ids = []
    for _ in range(n):
        record = synthetic_record(device_id, rng)
        store.save_result(record)
        if record.status == "ok" and rng.random() < 0.05:
            store.confirm_diagnosis(record.id, "pneumonia", int(rng.random() < 0.5), by="dr-a")
        ids.append(record.id)
    return ids


@dataclass
class BenchReport:
    results: int
    batch: int
    hub_only_rows_per_s: float
    end_to_end_rows_per_s: float
    hub_db_bytes: int
    hub_db_bytes_per_100k: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _HubThread:
    """A waitress hub on 127.0.0.1 (ephemeral port) in a daemon thread."""

    def __init__(self, data_dir: Path, synchronous: str = "FULL") -> None:
        from sqlalchemy import event
        from waitress import create_server

        self.path = data_dir / HUB_DB_NAME
        self.store = HubStore(default_url(data_dir))
        if synchronous != "FULL":
            # Only to measure what FULL costs: the hub itself always commits with FULL.
            def relax(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.execute(f"PRAGMA synchronous={synchronous}")

            event.listen(self.store.engine, "connect", relax)
            self.store.engine.dispose()
        app = create_hub_app(self.store)
        self.server: Any = create_server(app, host="127.0.0.1", port=0, threads=4)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        # Let the worker threads finish their answers before the sockets go away.
        self.server.task_dispatcher.shutdown(timeout=5)
        self.server.close()
        self.thread.join(timeout=5)
        self.store.close()


def _post(url: str, token: str, body: bytes) -> None:
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        reply = json.loads(resp.read())
    if len(reply["accepted"]) == 0:
        raise RuntimeError("hub accepted nothing")


def _db_bytes(hub: _HubThread) -> int:
    with hub.store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return hub.path.stat().st_size


def run_bench(n_results: int = 20000, batch: int = 500, workdir: Path | None = None) -> BenchReport:
    """Run both measurements in ``workdir`` (a temporary directory by default)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        config = KioskConfig(device_id="bench-kiosk", data_dir=root / "kiosk")
        kiosk = Store(config.db_path)
        logger.info("storing %d synthetic results", n_results)
        ids = fill_kiosk(kiosk, config.device_id, n_results)

        # 1. hub only: the same results as pre-built bodies, posted in order.
        hub = _HubThread(root / "hub1")
        token = hub.store.add_device(config.device_id)
        bodies = [
            build_body(config, kiosk, read_results(kiosk, ids[i : i + batch]))
            for i in range(0, len(ids), batch)
        ]
        started = time.perf_counter()
        for body in bodies:
            _post(ingest_url(hub.url), token, body)
        hub_only = n_results / (time.perf_counter() - started)
        hub_bytes = _db_bytes(hub)
        hub.close()

        # 2. end to end: the kiosk's push client against a fresh hub.
        hub2 = _HubThread(root / "hub2")
        config.sync.url = hub2.url
        config.sync.token = hub2.store.add_device(config.device_id)
        config.sync.batch_size = min(batch, 1000)
        config.sync.timeout_s = 60
        started = time.perf_counter()
        report = push(kiosk, config)
        end_to_end = n_results / (time.perf_counter() - started)
        if not report.complete:
            raise RuntimeError(f"bench push incomplete: {report.error}")
        hub2.close()
        kiosk.close()
    return BenchReport(
        results=n_results,
        batch=batch,
        hub_only_rows_per_s=round(hub_only, 1),
        end_to_end_rows_per_s=round(end_to_end, 1),
        hub_db_bytes=hub_bytes,
        hub_db_bytes_per_100k=round(hub_bytes * 100000 / n_results),
    )


def durability_cost(
    n_results: int = 5000, batch: int = 50, rounds: int = 3, workdir: Path | None = None
) -> dict[str, Any]:
    """Hub-only ingest rate with ``synchronous=FULL`` (what the hub runs: every acknowledged
    batch fsynced) against ``NORMAL``, alternating ``rounds`` times on the same pre-built
    batches; returns each rate and the median ratio NORMAL / FULL."""
    rates: dict[str, list[float]] = {"FULL": [], "NORMAL": []}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        config = KioskConfig(device_id="bench-kiosk", data_dir=root / "kiosk")
        kiosk = Store(config.db_path)
        ids = fill_kiosk(kiosk, config.device_id, n_results)
        bodies = [
            build_body(config, kiosk, read_results(kiosk, ids[i : i + batch]))
            for i in range(0, len(ids), batch)
        ]
        kiosk.close()
        for n in range(rounds):
            for mode in ("FULL", "NORMAL"):
                hub = _HubThread(root / f"hub-{mode}-{n}", synchronous=mode)
                token = hub.store.add_device(config.device_id)
                started = time.perf_counter()
                for body in bodies:
                    _post(ingest_url(hub.url), token, body)
                rates[mode].append(round(n_results / (time.perf_counter() - started), 1))
                hub.close()
    ratios = sorted(
        normal / full for full, normal in zip(rates["FULL"], rates["NORMAL"], strict=True)
    )
    return {
        "results": n_results,
        "batch": batch,
        "full_results_per_s": rates["FULL"],
        "normal_results_per_s": rates["NORMAL"],
        "median_normal_over_full": round(ratios[len(ratios) // 2], 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--durability-cost",
        action="store_true",
        help="Compare synchronous=FULL with NORMAL (hub only, alternating 3 rounds).",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.durability_cost:
        print(json.dumps(durability_cost(args.results, args.batch)))
        return
    report = run_bench(args.results, args.batch)
    if args.json:
        print(json.dumps(report.to_dict()))
        return
    print(f"results: {report.results} in batches of {report.batch}")
    print(f"hub only (pre-built batches over HTTP): {report.hub_only_rows_per_s:.0f} results/s")
    print(f"end to end (kiosk push client -> hub):  {report.end_to_end_rows_per_s:.0f} results/s")
    print(
        f"hub.db: {report.hub_db_bytes / 1e6:.1f} MB, "
        f"{report.hub_db_bytes_per_100k / 1e6:.0f} MB per 100,000 results (extrapolated)"
    )


if __name__ == "__main__":
    main()
