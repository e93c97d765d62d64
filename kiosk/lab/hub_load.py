"""Load test of the hub as real processes on loopback: many kiosks pushing at once, and the
hub killed with SIGKILL in the middle and started again.

``python -m kiosk.lab.hub_load --kiosks 50 --results 200 --database-url URL``

1. Issues one token per kiosk in the hub database at URL (default: SQLite in a scratch dir).
2. Starts the hub as ``kiosk hub serve --database-url URL`` (a subprocess, 127.0.0.1).
3. Starts one worker process per kiosk (``--worker``): each fills its own data directory with
   ``--results`` synthetic results (``hub_bench.fill_kiosk``), says ready, and on "go" pushes
   with the kiosk's own client (``kiosk.sync.client.push``, one batch per call, timed).
4. When the hub holds half of all results, SIGKILLs it and starts it again on the same port;
   the kiosks retry by themselves (their usual backoff).
5. Checks that the hub holds every result of every kiosk exactly once, with all its findings,
   and that every kiosk's outbox is empty; prints results/s end to end (from "go" to the last
   kiosk done) and the batch latency (p50, p95, max: one ``push`` call that sent a batch, as a
   kiosk sees it, retries included).

Exit status 0 when nothing was lost or doubled, 1 otherwise.

What this module does not do: measure a Raspberry Pi, or a hub behind a reverse proxy or a
network; it is not imported by the appliance or the hub.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HUB_START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 1800
WORKER_TIMEOUT_S = 1500
POLL_S = 0.05


@dataclass
class LoadReport:
    """What one load run measured and found."""

    engine: str
    kiosks: int
    results_per_kiosk: int
    batch: int
    hub_threads: int
    killed_at_results: int | None
    seconds: float
    results_per_s: float
    batches: int
    batches_retried: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_max_ms: float
    hub_results: int
    missing: int
    unexpected: int
    findings_expected: int
    findings_held: int
    kiosks_with_backlog: int
    hub_cpu_s: float = 0.0
    load_average: tuple[float, float] = (0.0, 0.0)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# -- worker: one kiosk ----------------------------------------------------------------------


def run_worker(args: argparse.Namespace) -> None:
    """One kiosk process: fill, say ready, wait for go, push batch by batch, report JSON."""
    from kiosk.config import KioskConfig
    from kiosk.lab.hub_bench import fill_kiosk
    from kiosk.store import Store
    from kiosk.sync.client import push

    config = KioskConfig(device_id=args.device, data_dir=Path(args.data_dir))
    config.sync.url = args.url
    config.sync.token = args.token
    config.sync.batch_size = args.batch
    config.sync.timeout_s = 30.0
    store = Store(config.db_path)
    ids = fill_kiosk(store, args.device, args.results, seed=args.seed)
    findings = int(store.db.execute("select count(*) from findings").fetchone()[0])
    print("ready", flush=True)
    sys.stdin.readline()
    latencies: list[float] = []
    retried = 0
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while time.monotonic() < deadline:
        started = time.perf_counter()
        report = push(store, config, max_batches=1)
        elapsed = time.perf_counter() - started
        if report.sent:
            latencies.append(elapsed)
            retried += int(report.retries > 0)
        if report.remaining == 0 and report.error is None:
            break
    counts = store.outbox_counts()
    store.close()
    print(
        json.dumps(
            {
                "device": args.device,
                "ids": ids,
                "findings": findings,
                "latencies_s": latencies,
                "retried": retried,
                "backlog": counts["pending"] + counts["failed"],
            }
        ),
        flush=True,
    )


# -- driver ---------------------------------------------------------------------------------


class _Hub:
    """`kiosk hub serve` as a subprocess on a fixed port."""

    def __init__(self, url: str, port: int, threads: int, data_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
        env["KIOSK_DATA_DIR"] = str(data_dir)
        argv = [sys.executable, "-m", "kiosk", "hub", "serve", "--database-url", url]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--threads", str(threads)]
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"the hub did not start: {line!r}")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the hub process has used so far."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def run_load(
    *,
    kiosks: int,
    results: int,
    database_url: str | None = None,
    batch: int = 20,
    hub_threads: int = 8,
    kill: bool = True,
    workdir: Path | None = None,
) -> LoadReport:
    """Run the load test of the module docstring and return what it measured."""
    from kiosk.hub.store import HubStore

    load_before = os.getloadavg()[0]  # before this run adds its own processes
    with tempfile.TemporaryDirectory(prefix="hub-load-", dir=workdir) as tmp:
        root = Path(tmp)
        url = database_url or f"sqlite:///{root / 'hub' / 'hub.db'}"
        store = HubStore(url)
        names = [f"load-kiosk-{i:03d}" for i in range(kiosks)]
        tokens = {name: store.add_device(name) for name in names}
        engine = store.dialect
        port = _free_port()
        hub = _Hub(url, port, hub_threads, root / "hub")
        hub_url = f"http://127.0.0.1:{port}"
        workers = []
        for i, name in enumerate(names):
            argv = [sys.executable, "-m", "kiosk.lab.hub_load", "--worker", "--device", name]
            # --token=...: a token may start with "-", which argparse would take for an option.
            argv += ["--data-dir", str(root / name), "--url", hub_url, f"--token={tokens[name]}"]
            argv += ["--batch", str(batch), "--results", str(results), "--seed", str(i)]
            with open(root / f"{name}.log", "w") as log:
                workers.append(
                    subprocess.Popen(
                        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
                    )
                )
        try:
            for name, w in zip(names, workers, strict=True):
                assert w.stdout is not None
                line = w.stdout.readline()
                if line.strip() != "ready":
                    w.wait(timeout=30)
                    tail = (root / f"{name}.log").read_text()[-3000:]
                    raise RuntimeError(f"kiosk worker {name} did not start: {line!r}\n{tail}")
            total = kiosks * results
            started = time.perf_counter()
            for w in workers:
                assert w.stdin is not None
                w.stdin.write("go\n")
                w.stdin.flush()
            killed_at = None
            hub_cpu = 0.0
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
                if kill and killed_at is None:
                    held = store.count_results()
                    if held >= total // 2:
                        hub_cpu += hub.cpu_s()
                        hub.kill()
                        killed_at = held
                        logger.warning("hub killed with SIGKILL at %d results", held)
                        hub = _Hub(url, port, hub_threads, root / "hub")
                time.sleep(POLL_S)
            seconds = time.perf_counter() - started
            hub_cpu += hub.cpu_s()
            load_after = os.getloadavg()[0]
            outputs = []
            for w in workers:
                out, _ = w.communicate(timeout=60)
                outputs.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
            hub.stop()
        report = _check(store, outputs, seconds)
        store.close()
    report.engine = engine
    report.kiosks, report.results_per_kiosk, report.batch = kiosks, results, batch
    report.hub_threads, report.killed_at_results = hub_threads, killed_at
    report.hub_cpu_s = round(hub_cpu, 1)
    report.load_average = (round(load_before, 1), round(load_after, 1))
    if kill and killed_at is None:
        report.problems.append("the hub was never killed (the run ended before half)")
    return report


def _check(store: Any, outputs: list[dict[str, Any]], seconds: float) -> LoadReport:
    expected = {(o["device"], i) for o in outputs for i in o["ids"]}
    rows = store.query("select device_id, id from results")
    held = {(r["device_id"], r["id"]) for r in rows}
    findings_held = int(store.query("select count(*) as n from findings")[0]["n"])
    findings_expected = sum(int(o["findings"]) for o in outputs)
    latencies = [s * 1000 for o in outputs for s in o["latencies_s"]]
    report = LoadReport(
        engine="",
        kiosks=0,
        results_per_kiosk=0,
        batch=0,
        hub_threads=0,
        killed_at_results=None,
        seconds=round(seconds, 2),
        results_per_s=round(len(expected) / seconds, 1) if seconds else 0.0,
        batches=len(latencies),
        batches_retried=sum(int(o["retried"]) for o in outputs),
        latency_p50_ms=round(statistics.median(latencies), 1) if latencies else 0.0,
        latency_p95_ms=round(_percentile(latencies, 0.95), 1),
        latency_max_ms=round(max(latencies, default=0.0), 1),
        hub_results=len(rows),
        missing=len(expected - held),
        unexpected=len(held - expected),
        findings_expected=findings_expected,
        findings_held=findings_held,
        kiosks_with_backlog=sum(1 for o in outputs if o["backlog"]),
    )
    if report.missing:
        report.problems.append(f"{report.missing} results are missing on the hub")
    if report.unexpected or len(rows) != len(held):
        report.problems.append(f"{report.unexpected} results on the hub that no kiosk sent")
    if findings_held != findings_expected:
        report.problems.append(f"hub holds {findings_held} findings, kiosks {findings_expected}")
    if report.kiosks_with_backlog:
        report.problems.append(f"{report.kiosks_with_backlog} kiosks still have results waiting")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kiosks", type=int, default=50)
    parser.add_argument("--results", type=int, default=200, help="Results per kiosk.")
    parser.add_argument("--database-url", default=None, help="Hub database (default: SQLite).")
    parser.add_argument("--batch", type=int, default=20, help="sync.batch_size of the kiosks.")
    parser.add_argument("--hub-threads", type=int, default=8)
    parser.add_argument("--no-kill", action="store_true", help="Do not SIGKILL the hub.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("--device", "--data-dir", "--url", "--token"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.worker:
        run_worker(args)
        return
    report = run_load(
        kiosks=args.kiosks,
        results=args.results,
        database_url=args.database_url,
        batch=args.batch,
        hub_threads=args.hub_threads,
        kill=not args.no_kill,
    )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(
            f"{report.engine}: {report.kiosks} kiosks x {report.results_per_kiosk} results, "
            f"batches of {report.batch}, hub with {report.hub_threads} threads, "
            f"SIGKILL at {report.killed_at_results} results"
        )
        print(
            f"end to end: {report.results_per_s:.0f} results/s ({report.seconds:.1f} s; hub "
            f"process CPU {report.hub_cpu_s:.1f} s; load average {report.load_average[0]} "
            f"before, {report.load_average[1]} after)"
        )
        print(
            f"batch latency: p50 {report.latency_p50_ms:.0f} ms, p95 {report.latency_p95_ms:.0f}"
            f" ms, max {report.latency_max_ms:.0f} ms ({report.batches} batches, "
            f"{report.batches_retried} retried)"
        )
        print(
            f"hub holds {report.hub_results} results ({report.missing} missing, "
            f"{report.unexpected} unexpected), {report.findings_held} findings"
        )
        for problem in report.problems:
            print(f"PROBLEM: {problem}")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
