"""Issue 13, item 13: the hub's answers to hostile input, each failing on the SQLite-only hub.

Duplicate codes and deep JSON gave 500s; CSV cells could start a spreadsheet formula; pages had
no CSP / frame / nosniff headers; basic auth ignored the user name; an import trusted the
manifest's device_id and a ``data_file`` of ``../../etc/passwd`` raised a raw ValueError.
Every HTTP test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_sync import HubThread, cli_command, make_kiosk, post_raw

from kiosk.errors import SyncError
from kiosk.hub.importer import import_export, read_export
from kiosk.hub.store import HubStore
from kiosk.sync.client import build_body
from kiosk.sync.export import export_results, manifest_path
from kiosk.sync.payload import read_results

pytest_plugins = ("pg",)


@pytest.fixture
def hub(hub_url: str) -> Any:
    h = HubThread(hub_url)
    yield h
    h.close()


def _body(tmp_path: Path, device: str = "kiosk-a", n: int = 3) -> tuple[Any, dict[str, Any]]:
    config, store, ids = make_kiosk(tmp_path, device, n)
    return config, json.loads(build_body(config, store, read_results(store, ids)))


@pytest.mark.parametrize("kind", ["findings", "diagnoses"])
def test_duplicate_codes_in_a_result_are_400_naming_the_field(
    tmp_path: Path, hub: HubThread, kind: str
) -> None:
    token = hub.store.add_device("kiosk-a")
    _, body = _body(tmp_path)
    n = next(i for i, r in enumerate(body["results"]) if r["findings"])
    result = body["results"][n]
    if kind == "diagnoses":
        result["diagnoses"] = [{"code": "pneumonia", "label": 1}, {"code": "pneumonia", "label": 0}]
    else:
        result["findings"].append(dict(result["findings"][0]))
    last = len(result[kind]) - 1

    status, reply = post_raw(hub.url, token, json.dumps(body).encode())

    assert status == 400, reply
    assert reply["field"] == f"results[{n}].{kind}[{last}].code"
    assert "twice" in reply["error"]
    assert hub.store.result_ids() == set()  # nothing of the batch was kept


@pytest.mark.parametrize("depth", [50, 100_000])
def test_deeply_nested_json_is_400(tmp_path: Path, hub: HubThread, depth: int) -> None:
    token = hub.store.add_device("kiosk-a")
    _, body = _body(tmp_path)
    text = json.dumps(body)
    # A deep object inside a field the wire format accepts as free-form (quality).
    nested = "[" * depth + "]" * depth
    raw = text.replace('"quality": {', f'"quality": {{"deep": {nested}, ', 1)
    assert raw != text

    status, reply = post_raw(hub.url, token, raw.encode())
    bare_status, bare_reply = post_raw(hub.url, token, b"[" * depth + b"]" * depth)

    assert (status, bare_status) == (400, 400), (reply, bare_reply)
    assert "nested" in reply["error"] and "nested" in bare_reply["error"]
    assert hub.store.result_ids() == set()


def test_csv_export_neutralises_formulas_from_kiosk_text(tmp_path: Path, hub: HubThread) -> None:
    token = hub.store.add_device("kiosk-a")
    _, body = _body(tmp_path, n=1)
    result = body["results"][0]
    result["status"] = "ok"
    result["calibration_id"] = '=HYPERLINK("http://evil.example","click")'
    result["model"] = {"id": "+cmd|' /C calc'!A0", "version": "@SUM(1+1)", "sha256": "ab"}
    result["findings"] = [
        {
            "code": "-2+3",
            "label": "x",
            "raw": 0.5,
            "probability": 0.5,
            "threshold": 0.4,
            "positive": True,
        }
    ]
    assert post_raw(hub.url, token, json.dumps(body).encode())[0] == 200
    admin = hub.store.set_admin_token()

    text = hub.app.test_client().get("/results.csv", auth=("supervisor", admin)).get_data(True)

    row = next(r for r in csv.DictReader(io.StringIO(text)))
    assert row["calibration_id"] == "'" + result["calibration_id"]
    assert row["model_id"] == "'+cmd|' /C calc'!A0"
    assert row["model_version"] == "'@SUM(1+1)"
    assert row["finding"] == "'-2+3"
    assert row["probability"] == "0.5"  # numbers are left alone


def test_hub_pages_send_security_headers(tmp_path: Path, hub: HubThread) -> None:
    admin = hub.store.set_admin_token()
    client = hub.app.test_client()
    answers = [
        client.get("/"),
        client.get("/", auth=("supervisor", admin)),
        client.get("/fleet", auth=("supervisor", admin)),
        client.get("/api/v1/fleet", auth=("supervisor", admin)),
        client.get("/results.csv", auth=("supervisor", admin)),
        client.get("/api/v1/health"),
        client.post("/api/v1/ingest", data=b"{}"),
    ]
    assert [a.status_code for a in answers] == [401, 200, 200, 200, 200, 200, 401]
    for answer in answers:
        csp = answer.headers.get("Content-Security-Policy", "")
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src" not in csp  # no scripts at all
        assert answer.headers.get("X-Frame-Options") == "DENY"
        assert answer.headers.get("X-Content-Type-Options") == "nosniff"


def test_basic_auth_checks_the_user_name_too(hub: HubThread) -> None:
    admin = hub.store.set_admin_token()
    client = hub.app.test_client()
    assert client.get("/", auth=("mallory", admin)).status_code == 401
    assert client.get("/", auth=("", admin)).status_code == 401
    assert client.get("/", auth=("supervisor", admin + "x")).status_code == 401
    assert client.get("/results.csv", auth=("Supervisor", admin)).status_code == 401
    assert client.get("/", auth=("supervisor", admin)).status_code == 200


def _export(tmp_path: Path, device: str = "kiosk-x") -> Path:
    config, store, _ = make_kiosk(tmp_path, device, 4)
    out = tmp_path / "stick" / "e.jsonl"
    export_results(store, config, since="2026-01-01", until=None, fmt="jsonl", out=out)
    return out


def test_import_refuses_a_manifest_naming_another_device(tmp_path: Path, hub_url: str) -> None:
    out = _export(tmp_path)
    hub = HubStore(hub_url)
    try:
        # Someone edits the unsigned manifest to file the results under another kiosk.
        manifest = json.loads(manifest_path(out).read_text())
        manifest["device_id"] = "ward-7"
        manifest_path(out).write_text(json.dumps(manifest))
        with pytest.raises(SyncError, match=r"'ward-7'.*'kiosk-x'"):
            import_export(hub, out, "kiosk-x")
        assert hub.result_ids() == set() and "ward-7" not in hub.device_names()
        report = import_export(hub, out, "ward-7")  # the operator vouches: it was ward-7
        assert report.inserted == 4 and hub.result_ids("ward-7")
    finally:
        hub.close()


def test_cli_import_requires_the_device(tmp_path: Path, hub_url: str) -> None:
    out = _export(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env["KIOSK_DATA_DIR"] = str(tmp_path / "hub")
    env["KIOSK_HUB_DATABASE_URL"] = hub_url
    bare = subprocess.run(
        [*cli_command(), "hub", "import", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    wrong = subprocess.run(
        [*cli_command(), "hub", "import", "--device", "kiosk-y", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bare.returncode == 2 and "--device" in bare.stderr
    assert wrong.returncode == 2 and "you named 'kiosk-y'" in wrong.stderr
    assert "Traceback" not in wrong.stderr


@pytest.mark.parametrize("data_file", ["../../etc/passwd", "/etc/passwd", "..", ""])
def test_manifest_data_file_outside_its_folder_is_a_clear_error(
    tmp_path: Path, data_file: str
) -> None:
    out = _export(tmp_path)
    manifest = json.loads(manifest_path(out).read_text())
    manifest["data_file"] = data_file
    manifest_path(out).write_text(json.dumps(manifest))

    with pytest.raises(SyncError, match="not a file name in the manifest's folder") as caught:
        read_export(manifest_path(out))
    assert "export again" in str(caught.value)


def test_database_trouble_is_503_so_the_kiosk_retries(
    tmp_path: Path, hub: HubThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    token = hub.store.add_device("kiosk-a")
    _, body = _body(tmp_path)

    def down(*_args: Any, **_kwargs: Any) -> None:
        raise OperationalError("INSERT ...", {}, Exception("server closed the connection"))

    monkeypatch.setattr(hub.store, "ingest", down)
    status, reply = post_raw(hub.url, token, json.dumps(body).encode())

    assert status == 503 and "retry" in reply["error"]
    assert "INSERT" not in reply["error"]  # no SQL in answers
