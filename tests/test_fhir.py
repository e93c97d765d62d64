"""FHIR output validated with the real fhir.resources models (R4B: the R4 shapes of these)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from test_sync import SECRET_MARKERS, make_kiosk

from kiosk.lab.hub_bench import synthetic_record
from kiosk.store import Store
from kiosk.sync import fhir
from kiosk.sync.payload import read_results

MODELS: dict[str, Any] = {
    "DiagnosticReport": DiagnosticReport,
    "Observation": Observation,
    "Device": Device,
}
URN_UUID = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _bundle(tmp_path: Path) -> tuple[dict[str, Any], Store, list[str]]:
    _, store, ids = make_kiosk(tmp_path, "kiosk-f", 25, seed=5)
    # One result from before any calibration, one with a confirmed diagnosis.
    record = synthetic_record("kiosk-f", random.Random(9))
    record.calibration_id = None
    record.status, record.reason = "ok", None
    ids.append(store.save_result(record))
    ok = next(i for i in ids if store.get_result(i)["status"] == "ok")  # type: ignore[index]
    store.confirm_diagnosis(ok, "pneumonia", 1, by="dr-f")
    data = fhir.bundle("kiosk-f", read_results(store, ids))
    return json.loads(json.dumps(data)), store, ids


def test_every_resource_parses_with_its_fhir_model(tmp_path: Path) -> None:
    data, store, ids = _bundle(tmp_path)
    Bundle.model_validate(data)
    kinds: dict[str, int] = {}
    for entry in data["entry"]:
        assert URN_UUID.match(entry["fullUrl"]), entry["fullUrl"]
        resource = entry["resource"]
        kinds[resource["resourceType"]] = kinds.get(resource["resourceType"], 0) + 1
        MODELS[resource["resourceType"]].model_validate(resource)
    n_findings = sum(len(r.findings) for r in read_results(store, ids))
    assert kinds["DiagnosticReport"] == len(ids)
    assert kinds["Observation"] == n_findings
    assert kinds["Device"] == 2  # same kiosk and model, with and without calibration
    text = json.dumps(data).encode()
    for marker in SECRET_MARKERS:
        assert marker not in text


# Required bindings: fhir.resources checks types and cardinality but not code values, so the
# R4 value sets of the coded elements used here are checked by the tests.
DR_STATUS = {
    "registered",
    "partial",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "appended",
    "cancelled",
    "entered-in-error",
    "unknown",
}
OBS_STATUS = {
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
}
DEVICE_NAME_TYPE = {
    "udi-label-name",
    "user-friendly-name",
    "patient-reported-name",
    "manufacturer-name",
    "model-name",
    "other",
}
DEVICE_STATUS = {"active", "inactive", "entered-in-error", "unknown"}


def test_report_observation_and_device_content(tmp_path: Path) -> None:
    data, store, ids = _bundle(tmp_path)
    assert data["type"] == "collection"
    by_url = {e["fullUrl"]: e["resource"] for e in data["entry"]}
    reports = [r for r in by_url.values() if r["resourceType"] == "DiagnosticReport"]
    assert {r["id"] for r in reports} == set(ids)
    confirmed_notes = 0
    for report in reports:
        DiagnosticReport.model_validate(report)
        stored = store.get_result(report["id"])
        assert stored is not None
        assert report["status"] in DR_STATUS
        assert report["status"] == ("final" if stored["status"] == "ok" else "cancelled")
        assert report["code"]["coding"][0] == {
            "system": "http://loinc.org",
            "code": "36554-4",
            "display": "XR Chest Single view",
        }
        assert report["category"][0]["coding"][0]["code"] == "RAD"
        assert report["effectiveDateTime"] == stored["created_at"]
        assert report["conclusion"]
        refs = [r["reference"] for r in report.get("result", [])]
        assert len(refs) == len(stored["findings"])
        for ref, finding in zip(refs, stored["findings"], strict=True):
            obs = by_url[ref]
            Observation.model_validate(obs)
            assert obs["status"] in OBS_STATUS
            assert obs["valueQuantity"]["value"] == finding["probability"]
            assert obs["valueQuantity"]["code"] == "1"
            coding = obs["interpretation"][0]["coding"][0]
            assert coding["code"] == ("POS" if finding["positive"] else "NEG")
            assert coding["system"].endswith("/v3-ObservationInterpretation")
            comps = {c["code"]["text"]: c["valueQuantity"]["value"] for c in obs["component"]}
            assert comps["raw model score"] == finding["raw"]
            assert comps["decision threshold"] == finding["threshold"]
            device = by_url[obs["device"]["reference"]]
            Device.model_validate(device)
            assert device["status"] in DEVICE_STATUS
            assert {n["type"] for n in device["deviceName"]} <= DEVICE_NAME_TYPE
            versions = {v["type"]["text"]: v["value"] for v in device["version"]}
            assert versions["model sha256"] == stored["model_sha256"]
            assert versions["model version"] == stored["model_version"]
            confirmed_notes += len(obs.get("note", []))
    n_diagnoses = store.db.conn.execute("select count(*) from diagnoses").fetchone()[0]
    assert confirmed_notes == n_diagnoses >= 1


def test_an_invalid_resource_is_caught_by_the_validator(tmp_path: Path) -> None:
    data, _, _ = _bundle(tmp_path)
    report = next(
        e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    for broken in (
        dict(report, effectiveDateTime="yesterday"),
        dict(report, result="not a list of references"),
        dict(report, patient_ref="MRN-1"),
        {k: v for k, v in report.items() if k != "code"},
    ):
        with pytest.raises(pydantic.ValidationError):
            DiagnosticReport.model_validate(broken)


def test_bundle_reads_back_to_the_same_findings(tmp_path: Path) -> None:
    data, store, ids = _bundle(tmp_path)
    device_id, results = fhir.results_from_bundle(data)
    assert device_id == "kiosk-f"
    original = {r.id: r for r in read_results(store, ids)}
    assert set(original) == {r.id for r in results}
    for r in results:
        assert r.findings == original[r.id].findings
        assert r.revision == original[r.id].revision
        if r.status == "ok":
            assert r.model == original[r.id].model
            assert r.calibration_id == original[r.id].calibration_id
