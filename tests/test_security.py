"""Regression tests for the hostile review (issue 13, kiosk side): one test per finding.

Each test failed on the code the review was made on. Real SQLite stores, the bundled model, a
real waitress server where threads and request bodies matter, and a stdlib stand-in for the
hub where only the kiosk's push side is under test.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import logging
import os
import queue
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from kiosk.app.appliance import Appliance
from kiosk.app.retention import purge_images
from kiosk.app.server import MAX_REQUEST_BODY_BYTES, SERVER_THREADS, create_web_server
from kiosk.config import KioskConfig, WebConfig, load_config
from kiosk.errors import ConfigError, ImageError, ModelError, SyncError
from kiosk.imaging.decode import decode_image
from kiosk.model.install import install, named_files, verify_files
from kiosk.model.manifest import Manifest
from kiosk.store import ResultRecord, Store
from kiosk.sync.client import push
from kiosk.sync.export import export_results, parse_time
from kiosk.web import auth, create_app, live
from kiosk.web.security import allowed_host_names, host_allowed

PASSWORD = "correct horse battery"
PATIENT_FILE = "PATIENT-123456-doe-john"
REPO = Path(__file__).resolve().parents[1]


# -- helpers ------------------------------------------------------------------------------------


def _record(reason: str | None = None, created_at: str | None = None) -> ResultRecord:
    record = ResultRecord(
        status="rejected",
        source=f"/media/usb/{PATIENT_FILE}.jpg",
        input_kind="photo",
        device_id="kiosk-test",
        reason=reason or "No film was found in the photo.",
        model_sha256="0" * 64,
    )
    if created_at is not None:
        record.created_at = created_at
    return record


def _appliance(root: Path, **web: Any) -> Appliance:
    config = KioskConfig(ood_gate=False, data_dir=root, web=WebConfig(**web))
    appliance = Appliance.open(config)
    for role in auth.ROLES:
        auth.add_user(appliance.store, role, role, PASSWORD)
    return appliance


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[Appliance]:
    app = _appliance(tmp_path / "data")
    yield app
    app.close()


@pytest.fixture
def app(appliance: Appliance) -> Flask:
    return create_app(appliance, testing=True)


def _csrf(client: FlaskClient, path: str = "/login") -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', client.get(path).get_data(True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def _login(client: FlaskClient, username: str, password: str = PASSWORD, next_: str = "/") -> Any:
    return client.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "csrf_token": _csrf(client),
            "next": next_,
        },
    )


def _signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    assert _login(client, role).status_code == 302
    return client


class _WebServer:
    """``kiosk serve``'s own waitress settings (create_web_server) on 127.0.0.1, in a thread."""

    def __init__(self, app: Flask) -> None:
        self.server = create_web_server(app, "127.0.0.1", 0)
        self.port = int(self.server.effective_port)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # close() pulls the socket from under it
            self.server.run()

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=5)


class _FakeService:
    """The parts of KioskService the live stream uses; no camera, nothing ever happens."""

    def status(self) -> dict[str, Any]:
        return dict(live.NO_SERVICE_STATUS, state="ready")

    def subscribe(self) -> queue.Queue[dict[str, Any]]:
        return queue.Queue()

    def unsubscribe(self, _q: queue.Queue[dict[str, Any]]) -> None:
        return None


def _status_line(sock: socket.socket, timeout_s: float) -> str:
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode("latin-1")


# -- 1. retention -------------------------------------------------------------------------------


def test_retention_zero_days_keeps_every_image_and_negative_days_are_refused(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    store = Store(data_dir / "kiosk.db")
    try:
        old = (datetime.now(UTC) - timedelta(days=400)).isoformat().replace("+00:00", "Z")
        record = _record(created_at=old)
        record.image_path = "images/old.jpg"
        (data_dir / "images").mkdir()
        (data_dir / "images" / "old.jpg").write_bytes(b"jpeg")
        store.save_result(record)
        assert purge_images(store, data_dir, 0).images == 0
        assert (data_dir / "images" / "old.jpg").is_file()
        with pytest.raises(ConfigError, match="0 \\(keep forever\\)"):
            purge_images(store, data_dir, -1)
        assert (data_dir / "images" / "old.jpg").is_file()
        assert purge_images(store, data_dir, 30).images == 1
    finally:
        store.close()
    with pytest.raises(ConfigError, match=r"retention\.image_days"):
        load_config(env={"KIOSK_RETENTION_IMAGE_DAYS": "-1"})


# -- 2. exports never overwrite silently, never the live database ------------------------------


def test_export_refuses_existing_files_and_the_live_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kiosk.cli import cli

    data_dir = tmp_path / "data"
    config = KioskConfig(data_dir=data_dir)
    store = Store(config.db_path)
    try:
        for _ in range(3):
            store.save_result(_record())
        out = tmp_path / "usb" / "export.jsonl"
        export_results(store, config, since="2000-01-01", until=None, fmt="jsonl", out=out)
        first = out.read_bytes()
        with pytest.raises(SyncError, match="already exists"):
            export_results(store, config, since="2000-01-01", until=None, fmt="csv", out=out)
        assert out.read_bytes() == first
        export_results(
            store, config, since="2000-01-01", until=None, fmt="csv", out=out, overwrite=True
        )
        assert out.read_bytes() != first
        link = tmp_path / "innocent.sqlite"
        link.symlink_to(config.db_path)
        hard_link = tmp_path / "usb" / "copy.sqlite"
        os.link(config.db_path, hard_link)
        for target in (
            config.db_path,
            data_dir / "kiosk.db-wal",
            link,
            hard_link,
            data_dir / "." / "kiosk.db",
        ):
            with pytest.raises(SyncError, match="live database"):
                export_results(
                    store,
                    config,
                    since="2000-01-01",
                    until=None,
                    fmt="sqlite",
                    out=target,
                    overwrite=True,
                )
        assert not list(data_dir.glob(".kiosk.db*.tmp"))
    finally:
        store.close()
    with sqlite3.connect(config.db_path) as conn:
        assert conn.execute("select count(*) from results").fetchone()[0] == 3
        assert conn.execute("select count(*) from outbox").fetchone()[0] == 3
    monkeypatch.setenv("KIOSK_DATA_DIR", str(data_dir))
    runner = CliRunner()
    args = ["export", "--since", "2000-01-01", "--format", "jsonl", "--out", str(out)]
    refused = runner.invoke(cli, args)
    assert refused.exit_code != 0 and "--force" in refused.output
    assert runner.invoke(cli, [*args, "--force"]).exit_code == 0
    live_db = runner.invoke(cli, [*args[:-1], str(config.db_path), "--force"])
    assert live_db.exit_code != 0 and "live database" in live_db.output


# -- 3. durable commits -------------------------------------------------------------------------


def test_kiosk_database_commits_with_synchronous_full(tmp_path: Path) -> None:
    from kiosk.lab import store_bench

    store = Store(tmp_path / "kiosk.db")
    try:
        assert next(store.db.query("PRAGMA synchronous"))["synchronous"] == 2  # FULL
    finally:
        store.close()
    timings = store_bench.run(tmp_path / "bench", 5)
    assert [t.mode for t in timings] == ["NORMAL", "FULL"]
    assert all(t.n == 5 and t.median_ms > 0 for t in timings)
    assert not list((tmp_path / "bench").iterdir())


# -- 4. a row that breaks the wire schema is quarantined, the rest is pushed ---------------------


class _StandInHub(http.server.BaseHTTPRequestHandler):
    """Accepts every result it is sent (the hub's own checks are tested with the hub)."""

    received: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ids = [r["id"] for r in body["results"]]
        type(self).received.extend(ids)
        data = json.dumps({"accepted": ids, "rejected": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def stand_in_hub() -> Iterator[str]:
    _StandInHub.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StandInHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_row_breaking_the_wire_schema_is_quarantined_and_the_rest_pushed(
    tmp_path: Path, stand_in_hub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kiosk.cli import cli

    data_dir = tmp_path / "data"
    appliance = _appliance(data_dir)
    store = appliance.store
    config = appliance.config.model_copy(
        update={"sync": appliance.config.sync.model_copy(update={"url": stand_in_hub})}
    )
    config.sync.token = "hub-token"
    config.sync.batch_size = 2
    try:
        good = [store.save_result(_record()) for _ in range(2)]
        bad = store.save_result(_record(reason="x" * 2500))  # the wire allows 2000 characters
        good.append(store.save_result(_record()))
        report = push(store, config)
        assert sorted(_StandInHub.received) == sorted(good)
        assert report.sent == 3 and report.quarantined_ids == [bad]
        assert not report.complete and "quarantined" in (report.error or "")
        counts = store.outbox_counts()
        assert counts["quarantined"] == 1 and counts["pending"] + counts["failed"] == 0
        [row] = store.quarantined()
        assert row["result_id"] == bad and "result.reason" in row["error"]
        assert "xxxx" not in row["error"]
        again = push(store, config)
        assert again.complete and again.sent == 0 and not again.quarantined_ids
        page = _signed_in(create_app(appliance, testing=True), "supervisor").get("/supervisor/sync")
        html = page.get_data(as_text=True)
        assert "Quarantined results" in html and bad[:8] in html and "result.reason" in html
    finally:
        appliance.close()
    monkeypatch.setenv("KIOSK_DATA_DIR", str(data_dir))
    status = CliRunner().invoke(cli, ["sync", "status"])
    assert status.exit_code == 0, status.output
    assert "quarantined: 1" in status.output and f"quarantined {bad}" in status.output
    assert "result.reason" in status.output


# -- 5. truncated PNG: an error line, and the batch goes on ------------------------------------


def _png(size: int = 300) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.usefixtures("synthetic_films")
def test_truncated_png_is_an_error_line_and_the_batch_continues(
    tmp_path: Path, data_dir: Path
) -> None:
    with pytest.raises(ImageError, match="damaged or truncated"):
        decode_image(_png()[:20])  # cut inside the header: PIL's open() raises OSError
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_truncated.png").write_bytes(_png()[:20])
    (folder / "b_whole.png").write_bytes(_png())
    proc = subprocess.run(
        [sys.executable, "-m", "kiosk", "analyze", "--json", "--no-store", str(folder)],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [Path(o["source"]).name for o in lines] == ["a_truncated.png", "b_whole.png"]
    assert lines[0]["status"] == "error" and "truncated" in lines[0]["reason"]
    assert lines[1]["status"] in ("ok", "rejected")


# -- 6. live streams cannot starve health, pages or the API -------------------------------------


def test_live_streams_are_capped_and_health_still_answers(tmp_path: Path) -> None:
    appliance = _appliance(tmp_path / "data", local_autologin=True)
    server = _WebServer(create_app(appliance, _FakeService()))  # type: ignore[arg-type]
    streams: list[socket.socket] = []
    try:
        statuses = []
        for _ in range(SERVER_THREADS):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            streams.append(sock)
            statuses.append(_status_line(sock, 5))
        opened = [s for s in statuses if s.startswith("HTTP/1.1 200")]
        refused = [s for s in statuses if s.startswith("HTTP/1.1 503")]
        assert len(opened) == live.MAX_SSE_STREAMS < SERVER_THREADS // 2
        assert len(refused) == SERVER_THREADS - live.MAX_SSE_STREAMS
        assert all("Retry-After:" in s for s in refused)
        started = time.monotonic()
        url = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{url}/healthz", timeout=3) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"{url}/login", timeout=3) as response:
            assert response.status == 200
        assert time.monotonic() - started < 3
        assert live.SSE_STREAM_S <= 30
        for sock in streams:
            sock.close()
        # generous: on a loaded machine waitress notices the closed sockets late
        deadline = time.monotonic() + live.SSE_STREAM_S + 30
        while time.monotonic() < deadline:  # slots come back once the streams end
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status = _status_line(sock, 5)
            sock.close()
            if status.startswith("HTTP/1.1 200"):
                break
            time.sleep(1)
        else:
            pytest.fail("no live stream slot came back after the streams were closed")
    finally:
        for sock in streams:
            sock.close()
        server.close()
        appliance.close()


# -- 7. request bodies are limited before they are buffered -------------------------------------


def test_oversized_body_is_refused_before_it_is_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import waitress.buffers

    spilled: list[object] = []
    original = waitress.buffers.TempfileBasedBuffer.newfile

    def spy(self: Any) -> Any:
        spilled.append(self)
        return original(self)

    monkeypatch.setattr(waitress.buffers.TempfileBasedBuffer, "newfile", spy)
    appliance = _appliance(tmp_path / "data")
    server = _WebServer(create_app(appliance))
    try:
        assert MAX_REQUEST_BODY_BYTES < 6 * 1024 * 1024  # the CSV upload limit plus a form
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        head = (
            "POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {200 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(head.encode())
        with contextlib.suppress(OSError):  # the server may already have answered and closed
            sock.sendall(b"x" * (1024 * 1024))
        status = _status_line(sock, 5)
        sock.close()
        assert status.startswith("HTTP/1.1 413"), status[:200]
        assert spilled == []
        # A legitimate upload (4 MB, under the CSV limit) reaches Flask.
        body = b"x" * (4 * 1024 * 1024)
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/supervisor/diagnoses/import", data=body
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                code = response.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        assert code != 413  # Flask answers (CSRF), waitress did not refuse it
    finally:
        server.close()
        appliance.close()


# -- 8. extreme query parameters are 400s with a message ----------------------------------------


def test_extreme_query_parameters_are_400_with_a_message(app: Flask, appliance: Appliance) -> None:
    appliance.store.save_result(_record())
    staff = _signed_in(app, "staff")
    supervisor = _signed_in(app, "supervisor")
    huge = "99999999999999999999"
    for client, path, words in (
        (staff, f"/history?page={huge}", "page must be from 1"),
        (staff, "/history?page=-3", "page must be from 1"),
        (staff, "/history?page=two", "page must be a whole number"),
        (staff, "/history?to=9999-12-31", "to must be a day from"),
        (staff, "/history?from=0001-01-01", "from must be a day from"),
        (staff, "/history?from=yesterday", "YYYY-MM-DD"),
        (staff, "/history?status=deleted", "status must be one of"),
        (supervisor, f"/supervisor/diagnoses?page={huge}", "page must be from 1"),
        (supervisor, "/supervisor/exports?fmt=jsonl&to=9999-12-31", "to must be a day from"),
        (supervisor, "/supervisor/exports?fmt=csv&from=2026-02-30", "YYYY-MM-DD"),
    ):
        response = client.get(path)
        assert response.status_code == 400, path
        assert words in response.get_data(as_text=True), path
    token = auth.add_token(appliance.store, "script", "staff")
    bearer = {"Authorization": f"Bearer {token}"}
    for path in (
        f"/api/v1/results?offset={huge}",
        "/api/v1/results?limit=0",
        "/api/v1/results?limit=abc",
        "/api/v1/results?to=9999-12-31",
    ):
        response = staff.get(path, headers=bearer)
        assert response.status_code == 400, path
        assert response.get_json()["error"], path
    assert staff.get("/history?page=1&to=2999-12-31&from=2000-01-01").status_code == 200
    ok = staff.get("/api/v1/results?offset=0&limit=200", headers=bearer)
    assert ok.status_code == 200 and ok.get_json()["total"] == 1
    assert supervisor.get("/supervisor/exports?fmt=jsonl&from=2000-01-01").status_code == 200
    with pytest.raises(SyncError, match="not a date"):  # `kiosk export --until 9999-12-31`
        parse_time("9999-12-31", end_of_day=True)


# -- 9. the API needs a token; unknown Host names are refused ----------------------------------


def test_api_needs_a_token_even_from_the_autologin_screen(tmp_path: Path) -> None:
    appliance = _appliance(tmp_path / "data", local_autologin=True)
    try:
        app = create_app(appliance, testing=True)
        local = {"REMOTE_ADDR": "127.0.0.1"}
        screen = app.test_client()
        assert screen.get("/", environ_overrides=local).status_code == 200  # pages: yes
        for path in ("/api/v1/results", "/api/v1/health"):
            response = screen.get(path, environ_overrides=local)
            assert response.status_code == 401, path
            assert "WWW-Authenticate" in response.headers
        session = _signed_in(app, "supervisor")
        assert session.get("/api/v1/results").status_code == 401
        token = auth.add_token(appliance.store, "script", "staff")
        with_token = screen.get(
            "/api/v1/results", headers={"Authorization": f"Bearer {token}"}, environ_overrides=local
        )
        assert with_token.status_code == 200
    finally:
        appliance.close()


def test_requests_for_unknown_host_names_are_refused(tmp_path: Path) -> None:
    names = allowed_host_names(WebConfig(allowed_hosts=["Kiosk.Clinic.example"]), "lightbox-1")
    for host in (
        "localhost",
        "localhost:8080",
        "lightbox-1:8080",
        "lightbox-1.local",
        "LIGHTBOX-1.LOCAL.",
        "192.168.1.20:8080",
        "127.0.0.1",
        "[::1]:8080",
        "[fe80::1]",
        "kiosk.clinic.example:443",
    ):
        assert host_allowed(host, names), host
    for host in ("evil.example", "evil.example:8080", "lightbox-1.evil.example", "", "[evil]"):
        assert not host_allowed(host, names), host
    assert host_allowed("anything.example", allowed_host_names(WebConfig(allowed_hosts=["*"])))
    appliance = _appliance(tmp_path / "data")
    try:
        client = create_app(appliance, testing=True).test_client()
        assert client.get("/healthz", base_url="http://evil.example").status_code == 400
        assert client.get("/login", base_url="http://evil.example:8080").status_code == 400
        assert client.get("/healthz", base_url="http://localhost:8080").status_code == 200
        assert client.get("/healthz", base_url="http://10.0.0.7:8080").status_code == 200
    finally:
        appliance.close()


# -- 10. no open redirect after sign-in ----------------------------------------------------------


def test_sign_in_never_redirects_off_site(app: Flask) -> None:
    for target in (
        "/\t/evil.example",
        "/\n/evil.example",
        "/\\evil.example",
        "//evil.example",
        "https://evil.example/",
        "/ /evil.example",
        "javascript:alert(1)",
    ):
        response = _login(app.test_client(), "staff", next_=target)
        assert response.status_code == 302
        assert response.headers["Location"] == "/", repr(target)
    kept = _login(app.test_client(), "staff", next_="/history?page=2&status=ok")
    assert kept.headers["Location"] == "/history?page=2&status=ok"
    form = app.test_client().get("/login?next=/%09/evil.example").get_data(as_text=True)
    assert "evil.example" not in form


# -- 11. sign-out, disabling and a new password end sessions -----------------------------------


def test_sign_out_password_change_and_disabling_end_sessions(
    app: Flask, appliance: Appliance
) -> None:
    phone, desk = _signed_in(app, "staff"), _signed_in(app, "staff")
    stolen = app.test_client()
    cookie = phone.get_cookie("kiosk_session")
    assert cookie is not None
    stolen.set_cookie("kiosk_session", cookie.value)
    assert stolen.get("/history").status_code == 200
    assert phone.post("/logout", headers={"X-CSRF-Token": _csrf(phone, "/")}).status_code == 302
    assert stolen.get("/history").status_code == 302  # the copied cookie is dead
    assert desk.get("/history").status_code == 302  # and so is the other browser's session
    tech = _signed_in(app, "technician")
    auth.set_password(appliance.store, "technician", "a brand new password")
    assert tech.get("/tech/health").status_code == 302
    assert _login(app.test_client(), "technician", "a brand new password").status_code == 302
    supervisor = _signed_in(app, "supervisor")
    auth.disable_user(appliance.store, "supervisor")
    assert supervisor.get("/supervisor/sync").status_code == 302


# -- 12. tokens can be listed and revoked --------------------------------------------------------


def test_tokens_are_listed_and_revoked_on_the_cli_and_the_technician_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kiosk.cli import cli

    data_dir = tmp_path / "data"
    monkeypatch.setenv("KIOSK_DATA_DIR", str(data_dir))
    runner = CliRunner()
    secret = runner.invoke(cli, ["token", "add", "nightly", "--role", "staff"]).stdout.split()[0]
    other = runner.invoke(cli, ["token", "add", "backup", "--role", "technician"]).stdout.split()[0]
    appliance = _appliance(data_dir)
    try:
        app = create_app(appliance, testing=True)
        api = app.test_client()
        bearer = {"Authorization": f"Bearer {secret}"}
        assert api.get("/api/v1/results", headers=bearer).status_code == 200
        listing = runner.invoke(cli, ["token", "list"])
        assert listing.exit_code == 0
        assert "nightly\tstaff" in listing.output and "backup\ttechnician" in listing.output
        assert secret not in listing.output and other not in listing.output
        assert "never used" in listing.output  # backup was never used; nightly was
        tokens = {t.name: t for t in auth.list_tokens(appliance.store)}
        assert tokens["nightly"].last_used_at is not None
        revoked = runner.invoke(cli, ["token", "revoke", "nightly"])
        assert revoked.exit_code == 0, revoked.output
        assert api.get("/api/v1/results", headers=bearer).status_code == 401
        assert runner.invoke(cli, ["token", "revoke", "nightly"]).exit_code != 0
        tech = _signed_in(app, "technician")
        page = tech.get("/tech/tokens").get_data(as_text=True)
        assert "backup" in page and tokens["backup"].id in page and other not in page
        response = tech.post(
            f"/tech/tokens/{tokens['backup'].id}/revoke",
            headers={"X-CSRF-Token": _csrf(tech, "/tech/tokens")},
        )
        assert response.status_code == 302
        assert auth.list_tokens(appliance.store) == []
        other_bearer = {"Authorization": f"Bearer {other}"}
        assert api.get("/api/v1/results", headers=other_bearer).status_code == 401
        assert _signed_in(app, "staff").get("/tech/tokens").status_code == 403
    finally:
        appliance.close()


# -- 14. model install: path parts and every file's sha256 --------------------------------------


def _package(dest: Path, **changes: Any) -> Path:
    """The bundled classifier with its OOD reference and card, as an update package."""
    source = Manifest.load(REPO / "models" / "cxr-pneumonia-effl0.json")
    dest.mkdir(parents=True)
    for name in named_files(source):  # model, OOD reference, card, factory calibration
        shutil.copy(source.path.parent / str(name), dest / str(name))
    raw = json.loads(source.path.read_text())
    raw["version"] = "2.0.0"
    for key, value in changes.items():
        if key.startswith("ood_"):
            raw["ood"][key[4:]] = value
        elif value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path = dest / "update.json"
    path.write_text(json.dumps(raw))
    return path


def test_model_install_keeps_to_the_models_folder_and_checks_every_file(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "models"
    for changes, words in (
        ({"version": "../../../escaped"}, "version"),
        ({"id": "../escaped"}, "id"),
        ({"card": "../../escaped.md"}, "card"),
        ({"ood_file": "/etc/passwd"}, "ood.file"),
        ({"ood_file": ".."}, "ood.file"),
    ):
        with pytest.raises(ModelError, match=words):
            install(_package(tmp_path / f"bad{len(list(tmp_path.iterdir()))}", **changes), folder)
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.rglob("escaped*"))
    tampered = _package(tmp_path / "tampered")
    with open(tampered.parent / "cxr-pneumonia-effl0.ood.npz", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(ModelError, match=r"ood\.npz does not match"):
        install(tampered, folder)
    with pytest.raises(ModelError, match='add "sha256"'):
        install(_package(tmp_path / "old-format", ood_sha256=None), folder)
    with pytest.raises(ModelError, match='add "card_sha256"'):
        install(_package(tmp_path / "old-card", card_sha256=None), folder)
    assert not folder.exists() or not any(p.is_dir() for p in folder.iterdir())
    installed = install(_package(tmp_path / "good"), folder)
    target = folder / Path(installed.manifest).parent
    assert target.parent == folder.resolve()
    assert {p.name for p in target.iterdir()} == {
        "update.json",
        "cxr-pneumonia-effl0-int8.tflite",
        "cxr-pneumonia-effl0.ood.npz",
        "cxr-pneumonia-effl0.md",
        "cxr-pneumonia-effl0.factory-calibration.json",
    }


def test_shipped_manifests_name_files_with_matching_sha256() -> None:
    for path in sorted((REPO / "models").glob("*.json")):
        if path.name.endswith((".run.json", ".factory-calibration.json", ".recipe.json")):
            continue  # run records and calibration records, not manifests
        manifest = Manifest.load(path)
        # A card edited without updating card_sha256 fails here: sha256sum models/<card>.
        verify_files(manifest, path.parent)


# -- 15. no file names in stored reasons, no typed names in the sign-in log ---------------------


def test_stored_reason_never_contains_the_file_name(tmp_path: Path) -> None:
    appliance = _appliance(tmp_path / "data")
    folder = tmp_path / "clinic"
    folder.mkdir()
    files = {
        f"{PATIENT_FILE}-empty.jpg": b"",
        f"{PATIENT_FILE}-cut.png": _png()[:20],
        f"{PATIENT_FILE}-half.png": _png()[: len(_png()) // 2],
        f"{PATIENT_FILE}-text.jpg": b"not an image at all, just text" * 10,
    }
    try:
        for name, data in files.items():
            (folder / name).write_bytes(data)
            result = appliance.pipeline.analyze_file(folder / name)
            assert result.status == "error" and result.message
            stored = appliance.store.get_result(str(result.result_id))
            assert stored is not None
            assert "PATIENT" not in str(stored["reason"]) and "doe" not in str(stored["reason"])
            assert stored["source"] == str(folder / name)  # what the user chose to store
        missing = appliance.pipeline.analyze_file(folder / f"{PATIENT_FILE}-gone.png")
        assert "PATIENT" not in str(missing.message)
    finally:
        appliance.close()


def test_failed_sign_in_never_logs_a_typed_unknown_name(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        assert _login(app.test_client(), "Tr0ub4dor&3-typed-here", "x").status_code == 401
        assert _login(app.test_client(), "staff", "wrong password").status_code == 401
        for _ in range(6):
            _login(app.test_client(), "Tr0ub4dor&3-typed-here", "x")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Tr0ub4dor" not in text
    assert "failed sign-in for an unknown user name" in text
    assert "failed sign-in for staff" in text  # a real account's name is not a secret
