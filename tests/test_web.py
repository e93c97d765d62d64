"""The kiosk's web app through Flask's test client: every route, role and refusal.

A real SQLite store and the bundled model; results are real analyses of simulator photos.
"""

from __future__ import annotations

# The simulator places drawn phantom films, which the shipped model's "not a chest X-ray"
# gate rightly rejects: these tests switch it off (ood_gate=False); tests/test_real_xrays.py
# checks the gate on real images.
import io
import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from kiosk.app.appliance import Appliance
from kiosk.camera.simulator import SimulatorCamera
from kiosk.config import KioskConfig, WebConfig
from kiosk.store import ResultRecord
from kiosk.web import auth, create_app

PASSWORD = "correct horse battery"
SECRET_SOURCE = "/home/clinic/patients/Jane-Doe-1961.png"
URL_ATTR = re.compile(r"""(?:src|href|action)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """One appliance with users of every role, one analysed film and some rejected results."""
    data_dir = tmp_path_factory.mktemp("web") / "data"
    # the digital-only model: it ships a factory calibration, whose labelling is tested here
    # (the photo-tuned default needs none; its results say "raw model scores", tested below)
    config = KioskConfig(ood_gate=False, data_dir=data_dir, model="cxr-pneumonia-effl0")
    appliance = Appliance.open(config)
    store = appliance.store
    for role in auth.ROLES:
        auth.add_user(store, role, role, PASSWORD)
    camera = SimulatorCamera(resolution=(960, 540), seed=3)
    camera.open()
    camera.place_film()
    still = camera.capture_still()
    ok = appliance.pipeline.analyze_image(still.image, source=SECRET_SOURCE, input_kind="photo")
    assert ok.status == "ok", ok.reason
    rejected = []
    for i in range(22):
        record = ResultRecord(
            status="rejected",
            source=SECRET_SOURCE,
            input_kind="photo",
            device_id="test",
            reason=f"No film was found in the photo number {i}. Place the film on the lightbox",
            model_sha256=appliance.pipeline.manifest.sha256,
        )
        rejected.append(store.save_result(record))
    yield {"appliance": appliance, "ok_id": ok.result_id, "rejected": rejected}
    appliance.close()


@pytest.fixture
def appliance(seeded: dict[str, object]) -> Appliance:
    app = seeded["appliance"]
    assert isinstance(app, Appliance)
    return app


@pytest.fixture
def app(appliance: Appliance) -> Flask:
    return create_app(appliance, testing=True)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def csrf_of(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> int:
    token = csrf_of(client)
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token, "next": "/"},
    )
    return response.status_code


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    assert login(client, role) == 302
    return client


# -- authentication -------------------------------------------------------------------------


def test_pages_need_sign_in_and_the_api_answers_401(client: FlaskClient, seeded: dict) -> None:
    for path in ("/", "/history", f"/results/{seeded['ok_id']}", "/tech/health", "/supervisor/"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next=")
    assert client.get("/preview.jpg").status_code == 302
    response = client.get("/api/v1/results")
    assert response.status_code == 401
    assert "error" in response.get_json()


def test_first_start_says_how_to_create_a_user(tmp_path: Path) -> None:
    appliance = Appliance.open(KioskConfig(ood_gate=False, data_dir=tmp_path / "fresh"))
    try:
        page = create_app(appliance, testing=True).test_client().get("/login")
        text = page.get_data(as_text=True)
        assert "No users yet" in text
        assert "kiosk user add NAME --role supervisor" in text
        key = tmp_path / "fresh" / "secret_key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert len(key.read_bytes()) >= 32
    finally:
        appliance.close()


def test_roles_are_ordered_staff_technician_supervisor(app: Flask) -> None:
    expected = {
        "staff": {"/": 200, "/history": 200, "/tech/health": 403, "/supervisor/diagnoses": 403},
        "technician": {"/tech/health": 200, "/tech/rig": 200, "/supervisor/diagnoses": 403},
        "supervisor": {
            "/tech/logs": 200,
            "/tech/model": 200,
            "/supervisor/diagnoses": 200,
            "/supervisor/calibration": 200,
            "/supervisor/sync": 200,
        },
    }
    for role, pages in expected.items():
        client = signed_in(app, role)
        for path, status in pages.items():
            assert client.get(path).status_code == status, (role, path)


def test_wrong_password_then_rate_limit_per_user(app: Flask) -> None:
    client = app.test_client()
    for _ in range(auth.LOGIN_MAX_FAILURES):
        assert login(client, "staff", "wrong password!") == 401
    token = csrf_of(client)
    response = client.post(
        "/login", data={"username": "staff", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 429
    assert "Too many wrong passwords" in response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) > 0
    # the limit is per app process: another user from elsewhere is unaffected
    other = app.test_client()
    token = csrf_of(other)
    response = other.post(
        "/login",
        data={"username": "technician", "password": PASSWORD, "csrf_token": token},
        environ_overrides={"REMOTE_ADDR": "10.1.2.3"},
    )
    assert response.status_code == 302


def test_rate_limit_per_client_address(app: Flask) -> None:
    client = app.test_client()
    for i in range(auth.LOGIN_MAX_FAILURES):
        assert login(client, f"nobody{i}", "whatever123") == 401
    assert login(client, "supervisor") == 429


def test_disabled_user_is_signed_out(app: Flask, appliance: Appliance) -> None:
    auth.add_user(appliance.store, "leaver", "staff", PASSWORD)
    client = signed_in(app, "leaver")
    assert client.get("/").status_code == 200
    auth.disable_user(appliance.store, "leaver")
    assert client.get("/").status_code == 302
    assert login(app.test_client(), "leaver") == 401


def test_login_redirects_only_to_local_paths(app: Flask) -> None:
    client = app.test_client()
    token = csrf_of(client)
    response = client.post(
        "/login",
        data={
            "username": "staff",
            "password": PASSWORD,
            "csrf_token": token,
            "next": "//evil.example/x",
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


# -- CSRF, headers, cookies, offline ------------------------------------------------------------


def test_state_changes_need_the_csrf_token(app: Flask, seeded: dict) -> None:
    client = signed_in(app, "supervisor")
    assert client.post("/capture").status_code == 400
    assert client.post("/capture", headers={"X-CSRF-Token": "forged"}).status_code == 400
    result_id = seeded["ok_id"]
    response = client.post(f"/supervisor/diagnoses/{result_id}", data={"label_pneumonia": "1"})
    assert response.status_code == 400
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200  # still signed in
    token = csrf_of(client, "/")
    # no camera service in this app: the request is genuine, the camera is not there
    response = client.post("/capture", headers={"X-CSRF-Token": token})
    assert response.status_code == 503
    assert "camera" in response.get_json()["error"]
    # a login form without its token is refused too (login CSRF)
    fresh = app.test_client()
    response = fresh.post("/login", data={"username": "staff", "password": PASSWORD})
    assert response.status_code == 400


def test_security_headers_and_cookie_flags(app: Flask) -> None:
    client = app.test_client()
    response = client.get("/login")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert client.get("/healthz").headers["X-Frame-Options"] == "DENY"


def test_secure_cookie_when_configured(tmp_path: Path) -> None:
    config = KioskConfig(
        ood_gate=False, data_dir=tmp_path / "d", web=WebConfig(secure_cookies=True)
    )
    appliance = Appliance.open(config)
    try:
        response = create_app(appliance, testing=True).test_client().get("/login")
        assert "Secure" in response.headers["Set-Cookie"]
    finally:
        appliance.close()


def test_no_inline_scripts_and_no_external_urls(app: Flask, seeded: dict) -> None:
    client = signed_in(app, "supervisor")
    pages = [
        "/",
        "/history",
        f"/results/{seeded['ok_id']}",
        f"/results/{seeded['rejected'][0]}",
        "/tech/health",
        "/tech/rig",
        "/tech/model",
        "/tech/logs",
        "/supervisor/diagnoses",
        "/supervisor/calibration",
        "/supervisor/sync",
        "/login",
    ]
    static: set[str] = set()
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        html = response.get_data(as_text=True)
        assert SECRET_SOURCE not in html and "Jane-Doe" not in html, path
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), f"inline script on {path}"
        assert " style=" not in html, f"inline style on {path}"
        for url in URL_ATTR.findall(html):
            assert not re.match(r"^(https?:)?//", url), f"external URL {url} on {path}"
            if url.startswith("/static/"):
                static.add(url)
    assert static, "pages load their script and style sheet from /static/"
    for url in static:
        assert client.get(url).status_code == 200, url
    assert "http" not in client.get("/static/kiosk.css").get_data(as_text=True)


# -- autologin ------------------------------------------------------------------------------


def test_autologin_only_from_loopback_and_only_when_configured(tmp_path: Path) -> None:
    for enabled in (True, False):
        config = KioskConfig(
            ood_gate=False,
            data_dir=tmp_path / f"auto{enabled}",
            web=WebConfig(local_autologin=enabled),
        )
        appliance = Appliance.open(config)
        try:
            client = create_app(appliance, testing=True).test_client()
            local = client.get("/", environ_overrides={"REMOTE_ADDR": "127.0.0.1"})
            local6 = client.get("/", environ_overrides={"REMOTE_ADDR": "::1"})
            remote = client.get("/", environ_overrides={"REMOTE_ADDR": "192.168.1.20"})
            assert remote.status_code == 302
            assert local.status_code == (200 if enabled else 302)
            assert local6.status_code == (200 if enabled else 302)
            if enabled:
                tech = client.get("/tech/health", environ_overrides={"REMOTE_ADDR": "127.0.0.1"})
                assert tech.status_code == 403  # the screen is staff, nothing more
                page = local.get_data(as_text=True)
                match = re.search(r'name="csrf-token" content="([^"]+)"', page)
                assert match is not None
                capture = client.post(
                    "/capture",
                    headers={"X-CSRF-Token": match.group(1)},
                    environ_overrides={"REMOTE_ADDR": "127.0.0.1"},
                )
                assert capture.status_code == 503  # allowed; no camera in this app
        finally:
            appliance.close()


# -- results and history --------------------------------------------------------------------


def test_result_page_shows_words_bars_versions_and_disclaimer(app: Flask, seeded: dict) -> None:
    client = signed_in(app, "staff")
    result_id = seeded["ok_id"]
    html = client.get(f"/results/{result_id}").get_data(as_text=True)
    store = seeded["appliance"].store
    stored = store.get_result(result_id)
    for finding in stored["findings"]:
        word = "POSITIVE" if finding["positive"] else "NEGATIVE"
        assert f"{finding['label']}: <strong>{word}</strong>" in html
        assert f"{round(100 * finding['probability'])}%" in html
    assert "Decision support, not a diagnosis" in html
    assert stored["model_version"] in html
    # No site calibration: said plainly, and the factory calibration is named as such.
    assert "Not calibrated for this kiosk" in html
    assert "factory (photographed films, rendered)" in html
    assert "estimates for films photographed on this kiosk" not in html
    assert f"calibration {stored['calibration_id']}" in html and stored["calibration_id"]
    from flask import render_template

    from kiosk.web import render

    with app.test_request_context():  # the live card of this result (the latest is rejected)
        card = render_template(
            "_latest.html",
            result=stored,
            findings=render.findings_view(stored),
            calibration=render.calibration_view(stored),
        )
    assert "Not calibrated for this kiosk: factory (photographed films, rendered)" in card
    site = render.calibration_view({**stored, "calibration_kind": "site"})
    assert site.site and site.headline == "Calibrated for this kiosk"
    none = render.calibration_view({**stored, "calibration_id": None, "calibration_kind": None})
    assert none.headline == "Not calibrated for this kiosk: raw model scores"
    assert 'id="toggle-cam"' in html
    assert "Confirmed diagnosis" not in html  # staff cannot confirm


def test_film_and_cam_overlay_images(app: Flask, seeded: dict) -> None:
    client = signed_in(app, "staff")
    result_id = seeded["ok_id"]
    film = client.get(f"/results/{result_id}/film.jpg")
    assert film.status_code == 200 and film.mimetype == "image/jpeg"
    film_px = cv2.imdecode(np.frombuffer(film.data, np.uint8), cv2.IMREAD_GRAYSCALE)
    cam = client.get(f"/results/{result_id}/cam.png")
    assert cam.status_code == 200 and cam.mimetype == "image/png"
    overlay = cv2.imdecode(np.frombuffer(cam.data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert film_px is not None and overlay is not None
    assert overlay.ndim == 3 and overlay.shape[2] == 4
    # same aspect ratio as the film, semi-transparent, with visible and invisible parts
    assert abs(overlay.shape[1] / overlay.shape[0] - film_px.shape[1] / film_px.shape[0]) < 0.02
    alpha = overlay[:, :, 3]
    assert alpha.max() <= 0.61 * 255 and alpha.max() > 50 and alpha.min() == 0
    rejected = seeded["rejected"][0]
    assert client.get(f"/results/{rejected}/film.jpg").status_code == 404
    assert client.get("/results/no-such-id").status_code == 404


def test_rejected_result_says_why_and_what_to_do(app: Flask, seeded: dict) -> None:
    client = signed_in(app, "staff")
    html = client.get(f"/results/{seeded['rejected'][3]}").get_data(as_text=True)
    assert "Photo not usable" in html
    assert "No film was found in the photo number 3" in html
    assert "What to do" in html


def test_history_filters_and_pages(app: Flask, seeded: dict) -> None:
    client = signed_in(app, "staff")
    first = client.get("/history").get_data(as_text=True)
    assert "23 results" in first and "Page 1 of 2" in first
    second = client.get("/history?page=2").get_data(as_text=True)
    assert "Page 2 of 2" in second
    ok_only = client.get("/history?status=ok").get_data(as_text=True)
    assert "1 result<" in ok_only and f"/results/{seeded['ok_id']}" in ok_only
    rejected = client.get("/history?status=rejected").get_data(as_text=True)
    assert f"/results/{seeded['ok_id']}" not in rejected and "22 results" in rejected
    assert "0 results" in client.get("/history?from=2001-01-01&to=2001-01-02").get_data(
        as_text=True
    )
    assert "23 results" in client.get("/history?from=2001-01-01").get_data(as_text=True)


# -- API -----------------------------------------------------------------------------------------


def test_api_with_tokens(app: Flask, appliance: Appliance, seeded: dict) -> None:
    client = app.test_client()
    staff_token = auth.add_token(appliance.store, "script", "staff")
    tech_token = auth.add_token(appliance.store, "tech-script", "technician")
    bearer = {"Authorization": f"Bearer {staff_token}"}
    listing = client.get("/api/v1/results?limit=5&status=ok", headers=bearer)
    assert listing.status_code == 200
    body = listing.get_json()
    assert body["total"] == 1 and body["results"][0]["id"] == seeded["ok_id"]
    assert "source" not in body["results"][0] and "patient_ref" not in body["results"][0]
    one = client.get(f"/api/v1/results/{seeded['ok_id']}", headers=bearer).get_json()
    assert one["findings"] and one["status"] == "ok"
    assert one["calibrated"] is True and one["calibration"]["kind"] == "factory"
    assert one["calibration"]["id"] == one["calibration_id"] and one["calibration"]["date"]
    rejected = client.get(f"/api/v1/results/{seeded['rejected'][0]}", headers=bearer).get_json()
    assert rejected["calibrated"] is False and rejected["calibration"] is None
    assert SECRET_SOURCE not in listing.get_data(as_text=True)
    assert client.get("/api/v1/results/nope", headers=bearer).status_code == 404
    assert client.get("/api/v1/health", headers=bearer).status_code == 503  # no camera
    assert client.post("/api/v1/capture", headers=bearer).status_code == 403
    tech = {"Authorization": f"Bearer {tech_token}"}
    assert client.post("/api/v1/capture", headers=tech).status_code == 503  # no CSRF needed
    bad = client.get("/api/v1/results", headers={"Authorization": "Bearer lbk_not-a-token"})
    assert bad.status_code == 401 and "WWW-Authenticate" in bad.headers
    stored = [r["token_hash"] for r in appliance.store.db.query("select * from api_tokens")]
    assert staff_token not in stored and all(len(h) == 64 for h in stored)


# -- health -------------------------------------------------------------------------------------


def test_health_endpoints_need_no_login_and_carry_no_patient_data(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json()["status"] == "alive"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.get_json()
    assert body["checks"]["model"]["ok"] and body["checks"]["database"]["ok"]
    assert any(r.startswith("camera") for r in body["reasons"])
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.mimetype == "text/plain"
    text = metrics.get_data(as_text=True)
    assert "# TYPE kiosk_disk_free_bytes gauge" in text
    assert re.search(r"^kiosk_outbox_size \d+$", text, re.MULTILINE)
    assert SECRET_SOURCE not in text


# -- supervisor -----------------------------------------------------------------------------------


def test_supervisor_confirms_a_diagnosis(app: Flask, appliance: Appliance, seeded: dict) -> None:
    result_id = str(seeded["ok_id"])
    staff = signed_in(app, "staff")
    token = csrf_of(staff, "/")
    refused = staff.post(
        f"/supervisor/diagnoses/{result_id}", data={"label_pneumonia": "1", "csrf_token": token}
    )
    assert refused.status_code == 403
    supervisor = signed_in(app, "supervisor")
    page = supervisor.get(f"/results/{result_id}").get_data(as_text=True)
    assert "Confirmed diagnosis" in page
    code = appliance.pipeline.manifest.findings[0].code
    token = csrf_of(supervisor, "/")
    response = supervisor.post(
        f"/supervisor/diagnoses/{result_id}", data={f"label_{code}": "1", "csrf_token": token}
    )
    assert response.status_code == 302
    diagnosis = appliance.store.get_result(result_id)["diagnoses"][code]  # type: ignore[index]
    assert diagnosis["label"] == 1 and diagnosis["confirmed_by"] == "supervisor"
    assert "Confirmed by supervisor: present" in supervisor.get(f"/results/{result_id}").get_data(
        as_text=True
    )


def test_csv_import_of_diagnoses(app: Flask, appliance: Appliance, seeded: dict) -> None:
    code = appliance.pipeline.manifest.findings[0].code
    rejected_id = seeded["rejected"][1]
    text = f"result_id,{code}\n{seeded['ok_id']},0\nmissing-id,1\n{rejected_id},maybe\n"
    client = signed_in(app, "supervisor")
    token = csrf_of(client, "/")
    response = client.post(
        "/supervisor/diagnoses/import",
        data={"csrf_token": token, "file": (io.BytesIO(text.encode()), "labels.csv")},
        content_type="multipart/form-data",
        follow_redirects=True,
    )
    html = response.get_data(as_text=True)
    assert "1 confirmed label(s) imported" in html
    assert "no result with id" in html and "must be 0 or 1" in html
    result = appliance.store.get_result(str(seeded["ok_id"]))
    assert result is not None and result["diagnoses"][code]["source"] == "csv"
    bad_header = client.post(
        "/supervisor/diagnoses/import",
        data={"csrf_token": token, "file": (io.BytesIO(b"id,x\n1,1\n"), "x.csv")},
        content_type="multipart/form-data",
        follow_redirects=True,
    )
    assert "first column must be named result_id" in bad_header.get_data(as_text=True)


def test_calibration_page_and_activation_refusal(app: Flask) -> None:
    client = signed_in(app, "supervisor")
    html = client.get("/supervisor/calibration").get_data(as_text=True)
    assert "no site calibration — not calibrated for this kiosk" in html
    assert "factory (photographed films, rendered)" in html
    assert "No refit proposed yet" in html
    token = csrf_of(client, "/")
    response = client.post(
        "/supervisor/calibration/nope/activate", data={"csrf_token": token}, follow_redirects=True
    )
    assert "Not activated: no calibration nope" in response.get_data(as_text=True)


def test_technician_logs_show_audit_and_log_records(app: Flask) -> None:
    assert login(app.test_client(), "someone-unknown", "bad password") == 401
    client = signed_in(app, "technician")
    html = client.get("/tech/logs").get_data(as_text=True)
    assert "user.login" in html  # audit log
    # ring-buffer log record; the typed name of an unknown user is never logged (it may be a
    # password typed in the wrong box)
    assert "failed sign-in for an unknown user name" in html
    assert "someone-unknown" not in html


# -- CLI ------------------------------------------------------------------------------------------


def test_cli_user_and_token_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kiosk.cli import cli

    monkeypatch.setenv("KIOSK_DATA_DIR", str(tmp_path / "cli"))
    runner = CliRunner()
    added = runner.invoke(
        cli,
        ["user", "add", "ann", "--role", "supervisor", "--password-stdin"],
        input="s3cret-pass\n",
    )
    assert added.exit_code == 0, added.output
    weak = runner.invoke(
        cli, ["user", "add", "bob", "--role", "staff", "--password-stdin"], input="short\n"
    )
    assert weak.exit_code != 0
    listing = runner.invoke(cli, ["user", "list"])
    assert "ann\tsupervisor\tactive" in listing.output and "bob" not in listing.output
    token = runner.invoke(cli, ["token", "add", "nightly", "--role", "technician"])
    assert token.exit_code == 0
    secret = token.stdout.strip().splitlines()[0]
    assert secret.startswith(auth.TOKEN_PREFIX)
    assert runner.invoke(cli, ["user", "disable", "ann"]).exit_code == 0
    assert "ann\tsupervisor\tdisabled" in runner.invoke(cli, ["user", "list"]).output
    from kiosk.store import Store

    store = Store(tmp_path / "cli" / "kiosk.db")
    try:
        found = auth.token_lookup(store, secret)
        assert found is not None and found.role == "technician"
        assert auth.authenticate(store, "ann", "s3cret-pass") is None  # disabled
    finally:
        store.close()


def _confirmed_cases(appliance: Appliance, n: int, shift: float) -> None:
    store, manifest = appliance.store, appliance.pipeline.manifest
    codes = [f.code for f in manifest.findings]
    rng = np.random.default_rng(n)
    for i in range(n):
        label = i % 2
        logits = [float(1.5 * (2 * label - 1) + shift + rng.normal(0, 1.5)) for _ in codes]
        record = ResultRecord(
            status="ok",
            source="camera",
            input_kind="photo",
            device_id="test",
            model_id=manifest.id,
            model_sha256=manifest.sha256,
            logits=logits,
        )
        result_id = store.save_result(record)
        for code in codes:
            store.confirm_diagnosis(result_id, code, label, by="sup")


def test_calibration_fit_activate_diagram_and_roll_back(tmp_path: Path) -> None:
    """The page fits through the same workflow as `kiosk calibrate`: record file, reliability
    diagram, checks and audit line; a calibration that fails the checks is not activated."""
    data_dir = tmp_path / "cal"
    # the digital-only model: it ships a factory calibration, whose labelling is tested here
    # (the photo-tuned default needs none; its results say "raw model scores", tested below)
    config = KioskConfig(ood_gate=False, data_dir=data_dir, model="cxr-pneumonia-effl0")
    appliance = Appliance.open(config)
    try:
        store, manifest = appliance.store, appliance.pipeline.manifest
        auth.add_user(store, "sup", "supervisor", PASSWORD)
        _confirmed_cases(appliance, 40, -2.5)  # too few to activate
        client = create_app(appliance, testing=True).test_client()
        assert login(client, "sup") == 302
        token = csrf_of(client, "/")
        small = client.post(
            "/supervisor/calibration/fit", data={"csrf_token": token}, follow_redirects=True
        ).get_data(as_text=True)
        assert "cannot be activated" in small and "40 labelled cases; at least 50" in small
        (refused,) = store.list_calibrations(manifest.sha256)
        client.post(f"/supervisor/calibration/{refused['id']}/activate", data={"csrf_token": token})
        assert appliance.pipeline.site_calibration is None
        assert store.active_calibration(manifest.sha256) is None
        page = client.get("/supervisor/calibration").get_data(as_text=True)
        assert "Cannot be activated:" in page and "40 of 40 confirmed cases used" in page

        _confirmed_cases(appliance, 120, -2.5)
        fitted = client.post(
            "/supervisor/calibration/fit", data={"csrf_token": token}, follow_redirects=True
        )
        assert "New calibration" in fitted.get_data(as_text=True)
        records = store.list_calibrations(manifest.sha256)
        assert len(records) == 2 and not any(r["active"] for r in records)
        calibration_id = next(r["id"] for r in records if r["id"] != refused["id"])
        page = client.get("/supervisor/calibration").get_data(as_text=True)
        assert calibration_id in page and "ECE before" in page and "Expected specificity" in page
        diagram = client.get(f"/supervisor/calibration/{calibration_id}/diagram.svg")
        assert diagram.status_code == 200 and diagram.mimetype == "image/svg+xml"
        written = data_dir / "calibrations" / f"{calibration_id}.svg"
        assert diagram.get_data() == written.read_bytes()  # the CLI's diagram, same file
        assert (data_dir / "calibrations" / f"{calibration_id}.json").is_file()
        assert "script-src" not in diagram.headers["Content-Security-Policy"]
        stored = [a for a in store.audit_log() if a["action"] == "calibration.stored"]
        assert json.loads(stored[0]["details"])["source"] == "confirmed cases"
        client.post(
            f"/supervisor/calibration/{calibration_id}/activate", data={"csrf_token": token}
        )
        assert appliance.pipeline.calibration is not None
        assert appliance.pipeline.calibration.id == calibration_id
        client.post("/supervisor/calibration/deactivate", data={"csrf_token": token})
        assert appliance.pipeline.site_calibration is None
        assert appliance.pipeline.calibration is appliance.pipeline.factory_calibration
        assert store.active_calibration(manifest.sha256) is None
        # Roll back: the one active before "no calibration" comes back, then none again.
        client.post(
            f"/supervisor/calibration/{calibration_id}/activate", data={"csrf_token": token}
        )
        client.post("/supervisor/calibration/rollback", data={"csrf_token": token})
        assert appliance.pipeline.site_calibration is None
        assert client.post("/supervisor/calibration/rollback").status_code == 400  # no CSRF
    finally:
        appliance.close()


def test_export_download(app: Flask, seeded: dict) -> None:
    client = signed_in(app, "supervisor")
    assert "Download CSV" in client.get("/supervisor/sync").get_data(as_text=True)
    response = client.get("/supervisor/exports?fmt=csv&from=2000-01-01")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    text = response.get_data(as_text=True)
    assert str(seeded["ok_id"]) in text and SECRET_SOURCE not in text
    assert client.get("/supervisor/exports?fmt=exe").status_code == 404
    assert signed_in(app, "technician").get("/supervisor/exports?fmt=csv").status_code == 403
