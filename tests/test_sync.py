"""kiosk.sync push client and hub: real waitress hub on 127.0.0.1, real databases.

Every test that uses the ``hub`` fixture runs twice: hub on SQLite and hub on PostgreSQL
(``hub_url`` in tests/pg.py). Also holds the helpers the other sync and hub test files import
(a hub in a thread, kiosks filled with realistic stored results, the CLI runner).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from waitress import create_server

import kiosk
from kiosk.config import KioskConfig
from kiosk.errors import SyncError
from kiosk.hub.app import create_hub_app
from kiosk.hub.store import HubStore
from kiosk.lab.hub_bench import fill_kiosk, synthetic_record
from kiosk.store import Store
from kiosk.sync.client import backoff_delay_s, ingest_url, push

pytest_plugins = ("pg",)

CLI_RUNNER_CODE = """
import importlib.util, pathlib, sys
import click, kiosk
from kiosk.config import load_config
commands = []
for name in ("sync", "hub"):
    try:
        mod = importlib.import_module("kiosk.cli." + name)
    except ImportError:
        path = pathlib.Path(kiosk.__file__).parent / "cli" / (name + ".py")
        spec = importlib.util.spec_from_file_location("kiosk_cli_" + name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    commands += mod.COMMANDS
class Obj:
    @property
    def config(self):
        return load_config()
click.Group("kiosk", commands=commands).main(sys.argv[1:], prog_name="kiosk", obj=Obj())
"""
SECRET_MARKERS = (b"PATIENT-", b"MRN-", b"/media/usb")
HUB_TABLES = ("devices", "results", "findings", "diagnoses", "ingests", "imports", "settings")


def _cli_module(name: str) -> ModuleType:
    """kiosk/cli/<name>.py, loaded by path if kiosk.cli does not import (yet) in this checkout."""
    try:
        return importlib.import_module(f"kiosk.cli.{name}")
    except ImportError:
        path = Path(kiosk.__file__).parent / "cli" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"kiosk_cli_{name}", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


def cli_commands() -> list[click.Command]:
    """The `kiosk sync|export` and `kiosk hub` command groups."""
    return [*_cli_module("sync").COMMANDS, *_cli_module("hub").COMMANDS]


def cli_command() -> list[str]:
    """argv prefix that runs the sync commands in a subprocess: the real `kiosk` entry point
    once kiosk.cli registers them, else a stand-alone group of the same commands."""
    try:
        from kiosk.cli import cli

        if {"sync", "hub", "export"} <= set(cli.commands):
            return [sys.executable, "-m", "kiosk"]
    except ImportError:
        pass
    return [sys.executable, "-c", CLI_RUNNER_CODE]


class CliObj:
    def __init__(self, config: KioskConfig) -> None:
        self.config = config


def run_cli(config: KioskConfig, args: list[str]) -> Any:
    group = click.Group("kiosk", commands=cli_commands())
    return CliRunner().invoke(group, args, obj=CliObj(config), catch_exceptions=False)


class HubThread:
    """The real hub app in waitress on an ephemeral 127.0.0.1 port, in a daemon thread."""

    def __init__(self, url: str, *, max_content_length: int | None = None) -> None:
        self.store = HubStore(url)
        kwargs = {} if max_content_length is None else {"max_content_length": max_content_length}
        self.app = create_hub_app(self.store, **kwargs)
        self.server: Any = create_server(self.app, host="127.0.0.1", port=0, threads=2)
        self.port = int(self.server.effective_port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.task_dispatcher.shutdown(timeout=5)
        self.server.close()
        self.thread.join(timeout=5)
        self.store.close()


@pytest.fixture
def hub(hub_url: str) -> Iterator[HubThread]:
    h = HubThread(hub_url)
    yield h
    h.close()


def make_kiosk(
    root: Path, device_id: str, n: int, *, seed: int = 1, images: bool = False
) -> tuple[KioskConfig, Store, list[str]]:
    """A kiosk data dir with ``n`` realistic stored results (and film images if asked)."""
    config = KioskConfig(device_id=device_id, data_dir=root / device_id)
    store = Store(config.db_path)
    if images:
        rng = random.Random(seed)
        ids = []
        for i in range(n):
            record = synthetic_record(device_id, rng)
            record.image_path = f"images/{record.id}.png"
            film = np.full((600, 480), 40 + i % 100, dtype=np.uint8)
            cv2.circle(film, (240, 300), 120, 220, -1)
            (config.data_dir / "images").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(config.data_dir / record.image_path), film)
            ids.append(store.save_result(record))
        return config, store, ids
    return config, store, fill_kiosk(store, device_id, n, seed=seed)


def connect(config: KioskConfig, hub_url: str, token: str, batch_size: int = 10) -> None:
    config.sync.url = hub_url
    config.sync.token = token
    config.sync.batch_size = batch_size
    config.sync.timeout_s = 5.0


def kiosk_view(store: Store) -> dict[str, list[tuple[str, float, float, float, int]]]:
    """Result id -> findings as the kiosk holds them."""
    out: dict[str, list[tuple[str, float, float, float, int]]] = {}
    for (rid,) in store.db.conn.execute("select id from results").fetchall():
        out[rid] = []
    for row in store.db.conn.execute(
        "select result_id, code, raw, probability, threshold, positive from findings "
        "order by result_id, code"
    ).fetchall():
        out[row[0]].append((row[1], row[2], row[3], row[4], int(row[5])))
    return out


def hub_view(
    hub: HubStore | str, device_id: str
) -> dict[str, list[tuple[str, float, float, float, int]]]:
    """Result id -> findings as the hub holds them (a store, or a database URL to open)."""
    store = HubStore(hub, upgrade=False) if isinstance(hub, str) else hub
    try:
        out: dict[str, list[tuple[str, float, float, float, int]]] = {
            r["id"]: []
            for r in store.query("select id from results where device_id = :d", {"d": device_id})
        }
        for r in store.query(
            "select f.result_id, f.code, f.raw, f.probability, f.threshold, f.positive "
            "from findings f join results r on r.id = f.result_id where r.device_id = :d "
            "order by f.result_id, f.code",
            {"d": device_id},
        ):
            out[r["result_id"]].append(
                (r["code"], r["raw"], r["probability"], r["threshold"], int(r["positive"]))
            )
    finally:
        if isinstance(hub, str):
            store.close()
    return out


def hub_dump(store: HubStore) -> bytes:
    """Every row of every hub table as text: what a leak check searches."""
    return "\n".join(
        repr(row) for table in HUB_TABLES for row in store.query(f"select * from {table}")
    ).encode()


def post_raw(url: str, token: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(ingest_url(url), data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


# -- tests ----------------------------------------------------------------------------------


def test_push_sends_everything_once_and_never_patient_identifiers(
    tmp_path: Path, hub: HubThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    config, store, _ = make_kiosk(tmp_path, "kiosk-a", 35)
    connect(config, hub.url, hub.store.add_device("kiosk-a"), batch_size=10)

    report = push(store, config)

    assert report.complete and report.error is None
    assert report.sent == 35 and report.batches == 4
    assert store.outbox_counts()["pending"] == 0 and store.outbox_counts()["sent"] == 35
    assert hub_view(hub.store, "kiosk-a") == kiosk_view(store)
    dump = hub_dump(hub.store)
    assert b"cal-2026-10-site1" in dump  # the dump does hold what was sent
    for marker in SECRET_MARKERS:
        assert marker not in dump
    assert not any(m.decode() in caplog.text for m in SECRET_MARKERS)
    # The kiosk's outbox counts and calibration reached the hub.
    device = {d["name"]: d for d in hub.store.devices()}["kiosk-a"]
    assert device["results"] == 35 and device["calibration_id"] == "cal-2026-10-site1"
    assert device["last_contact_at"]
    # A second run has nothing to do.
    again = push(store, config)
    assert again.sent == 0 and again.complete


def test_diagnosis_confirmed_after_sending_is_sent_again(tmp_path: Path, hub: HubThread) -> None:
    config, store, ids = make_kiosk(tmp_path, "kiosk-a", 5)
    connect(config, hub.url, hub.store.add_device("kiosk-a"))
    assert push(store, config).complete
    ok_id = next(i for i in ids if store.get_result(i)["status"] == "ok")  # type: ignore[index]
    store.confirm_diagnosis(ok_id, "effusion", 1, by="dr-b")
    assert store.outbox_counts()["pending"] == 1

    report = push(store, config)

    assert report.sent == 1 and report.complete
    rows = hub.store.query("select * from diagnoses where result_id = :r", {"r": ok_id})
    assert [(r["code"], r["label"]) for r in rows if r["code"] == "effusion"] == [("effusion", 1)]
    assert len(hub.store.result_ids()) == 5


def test_thumbnails_are_small_jpegs(tmp_path: Path, hub: HubThread) -> None:
    config, store, _ = make_kiosk(tmp_path, "kiosk-t", 3, images=True)
    connect(config, hub.url, hub.store.add_device("kiosk-t"))
    config.sync.include_thumbnail = True
    assert push(store, config).complete
    rows = hub.store.query("select thumbnail_jpeg from results")
    assert len(rows) == 3
    for row in rows:
        data = bytes(row["thumbnail_jpeg"])
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert image is not None and max(image.shape) == 256


def test_backoff_grows_and_is_bounded() -> None:
    lows = [backoff_delay_s(a, lambda: 0.0) for a in range(10)]
    highs = [backoff_delay_s(a, lambda: 1.0) for a in range(10)]
    assert lows[:4] == [0.5, 1.0, 2.0, 4.0]
    assert highs[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(highs) == 60.0


def test_push_without_hub_config_says_what_to_set(tmp_path: Path) -> None:
    config, store, _ = make_kiosk(tmp_path, "kiosk-a", 1)
    with pytest.raises(SyncError, match=r"sync\.url"):
        push(store, config)
    config.sync.url = "http://127.0.0.1:9"
    with pytest.raises(SyncError, match="KIOSK_SYNC_TOKEN"):
        push(store, config)


def test_url_with_api_prefix_is_accepted() -> None:
    assert ingest_url("https://hub.example.org/api/v1") == "https://hub.example.org/api/v1/ingest"
    assert ingest_url("http://h:8090/") == "http://h:8090/api/v1/ingest"


def test_device_must_match_token(tmp_path: Path, hub: HubThread) -> None:
    config, store, _ = make_kiosk(tmp_path, "kiosk-a", 3)
    token_b = hub.store.add_device("kiosk-b")
    connect(config, hub.url, token_b)

    report = push(store, config, sleep=Sleeps())

    assert not report.complete and "403" in (report.error or "")
    assert hub.store.result_ids() == set()
    assert store.outbox_counts()["failed"] == 3


def test_result_ids_of_another_device_are_refused(tmp_path: Path, hub: HubThread) -> None:
    config_a, store_a, ids = make_kiosk(tmp_path, "kiosk-a", 2)
    connect(config_a, hub.url, hub.store.add_device("kiosk-a"))
    assert push(store_a, config_a).complete
    # kiosk-b replays kiosk-a's result ids (a cloned SD card): the hub keeps them with kiosk-a.
    config_b = KioskConfig(device_id="kiosk-b", data_dir=tmp_path / "kiosk-b")
    shutil_copy(config_a.db_path, config_b.db_path)
    store_b = Store(config_b.db_path)
    store_b.db.execute("update outbox set state = 'pending'")
    connect(config_b, hub.url, hub.store.add_device("kiosk-b"))

    report = push(store_b, config_b)

    assert report.rejected == 2 and not report.complete
    assert hub.store.result_ids("kiosk-b") == set()
    assert hub.store.result_ids("kiosk-a") == set(ids)


def shutil_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(src)
    target = sqlite3.connect(dst)
    conn.backup(target)
    conn.close()
    target.close()


def test_supervisor_page_and_csv_need_the_admin_token(tmp_path: Path, hub: HubThread) -> None:
    config, store, _ = make_kiosk(tmp_path, "kiosk-a", 12)
    connect(config, hub.url, hub.store.add_device("kiosk-a"))
    assert push(store, config).complete
    client = hub.app.test_client()
    assert client.get("/").status_code == 401
    admin = hub.store.set_admin_token()
    assert client.get("/", auth=("supervisor", "wrong")).status_code == 401

    page = client.get("/", auth=("supervisor", admin))
    csv_resp = client.get("/results.csv", auth=("supervisor", admin))

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "kiosk-a" in html and "cal-2026-10-site1" in html and "Pneumonia" in html
    assert "http://" not in html.replace("http://www.w3.org", "")  # no CDN
    lines = csv_resp.get_data(as_text=True).strip().splitlines()
    n_findings = sum(len(v) or 1 for v in kiosk_view(store).values())
    assert lines[0].startswith("result_id,device_id") and len(lines) == 1 + n_findings


def test_cli_push_and_status(tmp_path: Path, hub: HubThread) -> None:
    config, _, _ = make_kiosk(tmp_path, "kiosk-a", 7)
    connect(config, hub.url, "not-a-token")

    bad = run_cli(config, ["sync", "push"])
    status = run_cli(config, ["sync", "status", "--json"])

    assert bad.exit_code == 1
    assert "token" in bad.output and "nothing was lost" in bad.output
    counts = json.loads(status.output)
    assert counts["failed"] == 7 and counts["sent"] == 0 and "401" in counts["last_error"]

    config.sync.token = hub.store.add_device("kiosk-a")
    good = run_cli(config, ["sync", "push"])
    assert good.exit_code == 0, good.output
    assert json.loads(run_cli(config, ["sync", "status", "--json"]).output)["sent"] == 7


def test_entry_point_exit_status_without_a_hub(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env["KIOSK_DATA_DIR"] = str(tmp_path / "kiosk")
    run = subprocess.run(
        [*cli_command(), "sync", "push"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert "sync.url" in run.stderr and "KIOSK_SYNC_URL" in run.stderr
