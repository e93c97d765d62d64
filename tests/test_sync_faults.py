"""Faults the kiosk -> hub sync must survive without losing or doubling a result.

Every test ends by comparing what the hub holds with what the kiosk holds (result ids and
finding values). Servers are real (waitress, in threads or as `kiosk hub serve` processes),
bound to 127.0.0.1; a small TCP proxy on loopback cuts, delays or drops connections, or has
the hub process killed with SIGKILL while a batch is in flight. Every test that has a hub runs
on SQLite and on PostgreSQL (``hub_url``, tests/pg.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_sync import (
    HubThread,
    Sleeps,
    cli_command,
    connect,
    hub_view,
    kiosk_view,
    make_kiosk,
    post_raw,
)

import kiosk
from kiosk.clock import utcnow
from kiosk.hub.store import HubStore
from kiosk.lab.hub_bench import synthetic_record
from kiosk.sync.client import build_body, push
from kiosk.sync.payload import read_results

pytest_plugins = ("pg",)

IO_TIMEOUT_S = 10.0


class FaultProxy:
    """A loopback HTTP proxy that applies one planned fault per connection, then passes.

    Plans: ``("cut", n)`` forwards only the first n request bytes and closes both sides;
    ``("drop",)`` forwards the whole request, lets the hub answer (and commit), then closes
    the client's socket without the answer; ``("delay", s)`` waits s seconds, then passes;
    ``("kill", s, fn)`` forwards the whole request, waits s seconds, calls ``fn`` (which kills
    the hub) and closes the client's socket. ``before`` is called before each request is
    forwarded.
    """

    def __init__(self, target_port: int, plan: list[tuple[Any, ...]] | None = None) -> None:
        self.target_port = target_port
        self.plan = list(plan or [])
        self.default: tuple[Any, ...] = ("pass",)
        self.before: Callable[[], None] | None = None
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                action = self.plan.pop(0) if self.plan else self.default
                self.connections += 1
            threading.Thread(target=self._handle, args=(client, action), daemon=True).start()

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body

    def _handle(self, client: socket.socket, action: tuple[Any, ...]) -> None:
        client.settimeout(IO_TIMEOUT_S)
        try:
            request = self._read_request(client)
            if self.before is not None:
                self.before()
            if action[0] == "delay":
                time.sleep(action[1])
            upstream = socket.create_connection(("127.0.0.1", self.target_port), IO_TIMEOUT_S)
            try:
                if action[0] == "cut":
                    upstream.sendall(request[: action[1]])
                    return
                upstream.sendall(request)
                if action[0] == "kill":
                    time.sleep(action[1])
                    action[2]()
                    return
                response = b""
                while True:
                    chunk = upstream.recv(65536)
                    if not chunk:
                        break
                    response += chunk
                if action[0] == "drop":
                    return
                client.sendall(response)
            finally:
                upstream.close()
        except OSError:
            pass
        finally:
            client.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def hub(hub_url: str) -> Iterator[HubThread]:
    h = HubThread(hub_url)
    yield h
    h.close()


def assert_hub_matches(hub: HubStore | str, store: Any, device_id: str) -> None:
    kiosk = kiosk_view(store)
    held = hub_view(hub, device_id)
    assert set(held) == set(kiosk), "hub and kiosk hold different result ids"
    assert held == kiosk, "finding values differ between hub and kiosk"
    counts = store.outbox_counts()
    assert counts["pending"] == 0 and counts["failed"] == 0 and counts["sent"] == len(kiosk)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- in-process faults --------------------------------------------------------------------


def test_hub_down_then_up(tmp_path: Path, hub_url: str) -> None:
    config, store, _ = make_kiosk(tmp_path, "kiosk-a", 12)
    connect(config, f"http://127.0.0.1:{free_port()}", "token-not-yet-issued")
    sleeps = Sleeps()

    down = push(store, config, sleep=sleeps, max_attempts=4, rand=lambda: 1.0)

    assert not down.complete and "cannot reach the hub" in (down.error or "")
    assert sleeps.calls == [1.0, 2.0, 4.0]  # bounded exponential backoff
    assert store.outbox_counts()["failed"] == 10 and store.outbox_counts()["pending"] == 2
    hub = HubThread(hub_url)
    try:
        connect(config, hub.url, hub.store.add_device("kiosk-a"))
        up = push(store, config, sleep=Sleeps())
        assert up.complete and up.sent == 12
        assert_hub_matches(hub.store, store, "kiosk-a")
    finally:
        hub.close()


@pytest.mark.parametrize("fault", [("cut", 200), ("cut", 900), ("drop",)])
def test_connection_lost_mid_batch(tmp_path: Path, hub: HubThread, fault: tuple[Any, ...]) -> None:
    config, store, _ = make_kiosk(tmp_path, "kiosk-a", 25)
    proxy = FaultProxy(hub.port, [("pass",), fault, fault, ("pass",), fault])
    try:
        connect(config, proxy.url, hub.store.add_device("kiosk-a"), batch_size=10)
        sleeps = Sleeps()
        report = push(store, config, sleep=sleeps)
    finally:
        proxy.close()
    assert report.complete and report.retries == 3 and len(sleeps.calls) == 3
    assert_hub_matches(hub.store, store, "kiosk-a")
    if fault[0] == "drop":
        # The hub committed batches whose answers were lost: they came again, unchanged.
        unchanged = sum(r["unchanged"] for r in hub.store.query("select * from ingests"))
        assert unchanged == 25


def test_diagnosis_confirmed_while_batch_in_flight(tmp_path: Path, hub: HubThread) -> None:
    config, store, ids = make_kiosk(tmp_path, "kiosk-a", 4)
    target = next(i for i in ids if store.get_result(i)["status"] == "ok")  # type: ignore[index]
    proxy = FaultProxy(hub.port)
    fired: list[bool] = []

    def confirm_once() -> None:
        if not fired:
            fired.append(True)
            store.confirm_diagnosis(target, "pneumonia", 1, by="dr-in-flight")

    proxy.before = confirm_once
    try:
        connect(config, proxy.url, hub.store.add_device("kiosk-a"), batch_size=10)
        report = push(store, config)
    finally:
        proxy.close()
    assert report.complete and report.batches == 2 and report.sent == 5
    rows = hub.store.query("select * from diagnoses where result_id = :r", {"r": target})
    assert [(r["code"], r["label"], r["confirmed_by"]) for r in rows] == [
        ("pneumonia", 1, "dr-in-flight")
    ]
    assert_hub_matches(hub.store, store, "kiosk-a")


def test_same_batch_twice_and_an_old_version_late(tmp_path: Path, hub: HubThread) -> None:
    config, store, ids = make_kiosk(tmp_path, "kiosk-a", 6)
    token = hub.store.add_device("kiosk-a")
    old_body = build_body(config, store, read_results(store, ids))

    first = post_raw(hub.url, token, old_body)
    second = post_raw(hub.url, token, old_body)

    assert first[0] == second[0] == 200
    assert first[1]["inserted"] == 6 and second[1]["inserted"] == 0
    assert second[1]["unchanged"] == 6 and sorted(second[1]["accepted"]) == sorted(ids)
    # A newer version (confirmed diagnosis), then the old batch arrives late: it changes nothing.
    target = next(i for i in ids if store.get_result(i)["status"] == "ok")  # type: ignore[index]
    store.confirm_diagnosis(target, "cardiomegaly", 0, by="dr-c")
    connect(config, hub.url, token)
    assert push(store, config).complete
    late = post_raw(hub.url, token, old_body)
    assert late[1]["updated"] == 0 and late[1]["unchanged"] == 6
    rows = hub.store.query("select revision from results where id = :r", {"r": target})
    assert rows[0]["revision"] == 2
    assert len(hub.store.query("select * from diagnoses where result_id = :r", {"r": target}))
    assert_hub_matches(hub.store, store, "kiosk-a")


def test_malformed_batches_are_refused_naming_the_field(tmp_path: Path, hub: HubThread) -> None:
    config, store, ids = make_kiosk(tmp_path, "kiosk-a", 3)
    token = hub.store.add_device("kiosk-a")
    good = json.loads(build_body(config, store, read_results(store, ids)))

    def variant(change: Callable[[dict[str, Any]], None]) -> bytes:
        body = json.loads(json.dumps(good))
        change(body)
        return json.dumps(body).encode()

    ok_index = next(n for n, r in enumerate(good["results"]) if r["findings"])
    cases = [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, ""),
        (variant(lambda b: b.pop("device_id")), 400, "device_id"),
        (
            variant(lambda b: b["results"][ok_index]["findings"][0].update(probability=2.5)),
            400,
            f"results[{ok_index}].findings[0].probability",
        ),
        (
            variant(lambda b: b["results"][0].update(source="/media/usb/PATIENT-1.jpg")),
            400,
            "results[0].source",
        ),
        (variant(lambda b: b["results"][1].update(patient_ref="MRN-1")), 400, "results[1]"),
        (variant(lambda b: b["results"][2].update(id="../../etc")), 400, "results[2].id"),
        (variant(lambda b: b.update(schema_version=99)), 422, "schema_version"),
    ]
    for body, status, field in cases:
        code, reply = post_raw(hub.url, token, body)
        assert code == status, (body[:80], reply)
        assert reply["error"]
        if field:
            assert reply["field"].startswith(field), reply
    assert hub.store.result_ids() == set()


def test_oversized_batch_gets_413_and_the_client_splits_it(tmp_path: Path, hub_url: str) -> None:
    hub = HubThread(hub_url, max_content_length=30_000)
    try:
        config, store, _ = make_kiosk(tmp_path, "kiosk-a", 9, images=True)
        token = hub.store.add_device("kiosk-a")
        code, reply = post_raw(hub.url, token, b"{" + b" " * 40_000 + b"}")
        assert code == 413 and "sync.batch_size" in reply["error"]

        connect(config, hub.url, token, batch_size=9)
        config.sync.include_thumbnail = True
        report = push(store, config, sleep=Sleeps())

        assert report.complete, report.error
        assert_hub_matches(hub.store, store, "kiosk-a")
        thumbs = hub.store.query("select count(thumbnail_jpeg) as n from results")
        assert thumbs[0]["n"] == 9
    finally:
        hub.close()


def test_wrong_or_missing_token(tmp_path: Path, hub: HubThread) -> None:
    config, store, ids = make_kiosk(tmp_path, "kiosk-a", 4)
    real = hub.store.add_device("kiosk-a")
    body = build_body(config, store, read_results(store, ids))
    assert post_raw(hub.url, None, body)[0] == 401
    assert post_raw(hub.url, real[:-2] + "xx", body)[0] == 401
    connect(config, hub.url, "wrong-token")
    sleeps = Sleeps()

    report = push(store, config, sleep=sleeps)

    assert not report.complete and "sync.token" in (report.error or "")
    assert sleeps.calls == []  # no point retrying a refused token
    assert hub.store.result_ids() == set()
    connect(config, hub.url, real)
    assert push(store, config).complete
    assert_hub_matches(hub.store, store, "kiosk-a")


def test_kiosk_and_hub_clocks_disagree(tmp_path: Path, hub: HubThread) -> None:
    config, store, _ = make_kiosk(tmp_path, "kiosk-a", 0)
    import random

    rng = random.Random(3)
    skewed = ["1970-01-01T00:00:07.000Z", "2041-06-30T23:59:59.999Z", "2026-11-26T10:00:00.000Z"]
    ids = [store.save_result(synthetic_record("kiosk-a", rng, created_at=t)) for t in skewed]
    connect(config, hub.url, hub.store.add_device("kiosk-a"))
    before = utcnow()

    assert push(store, config).complete

    rows = {r["id"]: r for r in hub.store.query("select * from results")}
    assert [rows[i]["created_at"] for i in ids] == skewed  # stored as sent, never corrected
    assert all(rows[i]["received_at"] >= before for i in ids)  # the hub's own clock
    assert_hub_matches(hub.store, store, "kiosk-a")


# -- real processes -------------------------------------------------------------------------


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env["KIOSK_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


class HubProcess:
    """`kiosk hub serve --database-url URL` as a subprocess; the port is read from its first
    line (``port=0``: any free port; a fixed port to restart a killed hub where it was)."""

    def __init__(self, data_dir: Path, url: str, port: int = 0) -> None:
        self.data_dir = data_dir
        self.database_url = url
        self.proc = subprocess.Popen(
            [
                *cli_command(),
                "hub",
                "serve",
                "--database-url",
                url,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=_env(data_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line + self.proc.stderr.read()  # type: ignore[union-attr]
        self.url = line.strip().split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])

    def add_device(self, name: str) -> str:
        out = subprocess.run(
            [*cli_command(), "hub", "add-device", "--database-url", self.database_url, name],
            env=_env(self.data_dir),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout.strip()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def kiosk_push(
    data_dir: Path, device_id: str, url: str, token: str, batch: int = 5, **extra: str
) -> subprocess.Popen[str]:
    env = _env(
        data_dir,
        KIOSK_DEVICE_ID=device_id,
        KIOSK_SYNC_URL=url,
        KIOSK_SYNC_TOKEN=token,
        KIOSK_SYNC_BATCH_SIZE=str(batch),
        KIOSK_SYNC_TIMEOUT_S="5",
        **extra,
    )
    return subprocess.Popen(
        [*cli_command(), "sync", "push"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def hub_count(url: str) -> int:
    store = HubStore(url, upgrade=False)
    try:
        return store.count_results()
    finally:
        store.close()


def test_kiosk_killed_mid_push(tmp_path: Path, hub_url: str) -> None:
    config, store, _ = make_kiosk(tmp_path, "kiosk-k", 40)
    store.close()
    hub = HubProcess(tmp_path / "hub", hub_url)
    proxy = FaultProxy(hub.port)
    proxy.default = ("delay", 0.4)
    try:
        token = hub.add_device("kiosk-k")
        proc = kiosk_push(config.data_dir, "kiosk-k", proxy.url, token, batch=4)
        deadline = time.monotonic() + 20
        while hub_count(hub_url) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        partial = hub_count(hub_url)
        assert 8 <= partial < 40

        again = kiosk_push(config.data_dir, "kiosk-k", hub.url, token, batch=4)
        out, err = again.communicate(timeout=30)
        assert again.returncode == 0, out + err
    finally:
        proxy.close()
        hub.close()
    from kiosk.store import Store

    store = Store(config.db_path)
    assert_hub_matches(hub_url, store, "kiosk-k")


def test_hub_killed_mid_batch_and_restarted(tmp_path: Path, hub_url: str) -> None:
    """One kiosk's `kiosk sync push` while the hub process is SIGKILLed with a batch in flight
    and started again: the push finishes by itself, every result is there exactly once, and
    what the dead hub had written was whole batches (a transaction, not half a batch)."""
    config, store, ids = make_kiosk(tmp_path, "kiosk-h", 60, images=True)
    store.close()
    hub = HubProcess(tmp_path / "hub", hub_url)
    port = hub.port
    killed = threading.Event()

    def kill_hub() -> None:
        hub.kill()
        killed.set()

    # Batches 1 and 2 pass; batch 3 reaches the hub, which is killed 10 ms later.
    proxy = FaultProxy(port, [("pass",), ("pass",), ("kill", 0.01, kill_hub)])
    restarted: list[HubProcess] = []
    try:
        token = hub.add_device("kiosk-h")
        thumbs_on = {"KIOSK_SYNC_INCLUDE_THUMBNAIL": "true"}
        proc = kiosk_push(config.data_dir, "kiosk-h", proxy.url, token, batch=10, **thumbs_on)
        assert killed.wait(timeout=30), "the third batch never reached the hub"
        assert hub.proc.returncode == -signal.SIGKILL
        held = hub_count(hub_url)
        assert held in (20, 30), f"the killed hub holds {held} results: not whole batches"
        restarted.append(HubProcess(tmp_path / "hub", hub_url, port=port))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, out + err
        assert "sent 60 results" in out, out
    finally:
        proxy.close()
        for h in (hub, *restarted):
            h.close()
    from kiosk.store import Store

    kiosk = Store(config.db_path)
    assert_hub_matches(hub_url, kiosk, "kiosk-h")
    check = HubStore(hub_url, upgrade=False)
    try:
        rows = check.query("select id, count(*) as n from results group by id")
        assert sorted(r["id"] for r in rows) == sorted(ids)
        assert {r["n"] for r in rows} == {1}
        thumbs = check.query("select count(thumbnail_jpeg) as n from results")[0]["n"]
        assert thumbs == 60
    finally:
        check.close()


def test_two_kiosks_and_a_hub_as_processes_with_faults(tmp_path: Path, hub_url: str) -> None:
    cfg_a, store_a, _ = make_kiosk(tmp_path, "ward-a", 30, seed=11)
    cfg_b, store_b, _ = make_kiosk(tmp_path, "ward-b", 25, seed=22)
    hub = HubProcess(tmp_path / "hub", hub_url)
    # ward-a's link cuts a request, then loses an answer the hub had committed.
    proxy = FaultProxy(hub.port, [("pass",), ("cut", 300), ("pass",), ("drop",)])
    try:
        token_a = hub.add_device("ward-a")
        token_b = hub.add_device("ward-b")
        wrong = kiosk_push(cfg_b.data_dir, "ward-b", hub.url, token_a, batch=10)
        _, wrong_err = wrong.communicate(timeout=30)
        assert wrong.returncode == 1 and "nothing was lost" in wrong_err

        push_a = kiosk_push(cfg_a.data_dir, "ward-a", proxy.url, token_a, batch=8)
        push_b = kiosk_push(cfg_b.data_dir, "ward-b", hub.url, token_b, batch=10)
        out_a, err_a = push_a.communicate(timeout=40)
        out_b, err_b = push_b.communicate(timeout=40)
        assert push_a.returncode == 0, out_a + err_a
        assert push_b.returncode == 0, out_b + err_b

        # A diagnosis confirmed later travels on the next push; the rest is not sent again.
        ok_a = next(
            r for (r,) in store_a.db.conn.execute("select id from results where status = 'ok'")
        )
        store_a.confirm_diagnosis(ok_a, "pneumonia", 1, by="dr-a")
        push_a2 = kiosk_push(cfg_a.data_dir, "ward-a", proxy.url, token_a, batch=8)
        out, err = push_a2.communicate(timeout=30)
        assert push_a2.returncode == 0 and "sent 1 results" in out, out + err
    finally:
        proxy.close()
        hub.close()
    assert_hub_matches(hub_url, store_a, "ward-a")
    assert_hub_matches(hub_url, store_b, "ward-b")
    check = HubStore(hub_url, upgrade=False)
    try:
        assert check.count_results() == 55
        label = check.query(
            "select label from diagnoses where result_id = :r and code = 'pneumonia'", {"r": ok_a}
        )
        assert [r["label"] for r in label] == [1]
        devices = {d["name"]: d for d in check.devices()}
    finally:
        check.close()
    assert set(devices) == {"ward-a", "ward-b"}
    # The CLI push says which software it is; the hub keeps it for the fleet view.
    assert devices["ward-a"]["kiosk_version"] == kiosk.__version__
