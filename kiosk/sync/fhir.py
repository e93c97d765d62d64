"""Results as FHIR R4 resources: a DiagnosticReport per result, an Observation per finding,
a Device per kiosk + model, all in a ``collection`` Bundle with ``urn:uuid`` full URLs.

Plain dicts out (no FHIR library at run time); the tests parse every resource with the
``fhir.resources`` R4B models (R4B has the R4 shapes of these three resources).

Mapping, and what it does not carry:
- DiagnosticReport.id is the result UUID, ``meta.versionId`` its revision; status ``final``
  for analysed films, ``cancelled`` for rejected ones (the reason is the conclusion);
  category RAD (v2-0074), code LOINC 36554-4 "XR Chest Single view"; no ``subject``: the
  kiosk knows no patient, and the patient reference never leaves the kiosk.
- Observation.valueQuantity is the calibrated probability (UCUM unit "1"); interpretation
  POS/NEG from the threshold (v3-ObservationInterpretation); components hold the raw model
  score and the threshold; a confirmed diagnosis is a note.
- Device: the kiosk's device id and the model (id, version, sha256, calibration id).
- Quality flags, timings and corners are not mapped (import from FHIR leaves them empty).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from kiosk.clock import utcnow
from kiosk.sync.payload import (
    DiagnosisPayload,
    FindingPayload,
    ModelPayload,
    PayloadError,
    ResultPayload,
)

logger = logging.getLogger(__name__)

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
FINDING_SYSTEM = "urn:lightbox-kiosk:finding"
DEVICE_SYSTEM = "urn:lightbox-kiosk:device-id"
MODEL_SHA_SYSTEM = "urn:lightbox-kiosk:model-sha256"
CXR_CODE = {"system": LOINC, "code": "36554-4", "display": "XR Chest Single view"}
_NS = uuid.UUID("5b0e3c1e-8a7d-4f53-9d1c-3a1f0c6a2b11")


def _urn(value: uuid.UUID | str) -> str:
    return f"urn:uuid:{value}"


def observation_uuid(result_id: str, code: str) -> uuid.UUID:
    return uuid.uuid5(_NS, f"observation:{result_id}:{code}")


def device_uuid(device_id: str, model: ModelPayload, calibration_id: str | None) -> uuid.UUID:
    return uuid.uuid5(_NS, f"device:{device_id}:{model.id}:{model.sha256}:{calibration_id}")


def _ratio(value: float) -> dict[str, Any]:
    return {"value": float(value), "unit": "1", "system": UCUM, "code": "1"}


def device_resource(
    device_id: str, model: ModelPayload, calibration_id: str | None
) -> dict[str, Any]:
    """The kiosk running one model (and calibration) as a Device."""
    identifiers = [{"system": DEVICE_SYSTEM, "value": device_id}]
    if model.sha256:
        identifiers.append({"system": MODEL_SHA_SYSTEM, "value": model.sha256})
    names = [{"name": device_id, "type": "user-friendly-name"}]
    if model.id:
        names.append({"name": model.id, "type": "model-name"})
    versions = []
    if model.version:
        versions.append({"type": {"text": "model version"}, "value": model.version})
    if model.sha256:
        versions.append({"type": {"text": "model sha256"}, "value": model.sha256})
    resource: dict[str, Any] = {
        "resourceType": "Device",
        "id": str(device_uuid(device_id, model, calibration_id)),
        "status": "active",
        "identifier": identifiers,
        "deviceName": names,
        "type": {"text": "Lightbox kiosk: chest X-ray film photo classifier (software)"},
    }
    if versions:
        resource["version"] = versions
    if calibration_id:
        resource["property"] = [
            {"type": {"text": "calibration id"}, "valueCode": [{"text": calibration_id}]}
        ]
    return resource


def observation_resource(
    result: ResultPayload, finding: FindingPayload, device_ref: str
) -> dict[str, Any]:
    interp = "POS" if finding.positive else "NEG"
    method = "int8 classifier on a photographed film"
    if result.calibration_id:
        cal = result.calibration
        kind = f"{cal.kind} " if cal is not None and cal.kind else ""
        date = f", {cal.date[:10]}" if cal is not None and cal.date else ""
        method += f", calibrated ({kind}calibration {result.calibration_id}{date})"
    else:
        method += ", not calibrated (raw model probability)"
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": str(observation_uuid(result.id, finding.code)),
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "imaging"}]}],
        "code": {
            "coding": [{"system": FINDING_SYSTEM, "code": finding.code, "display": finding.label}],
            "text": finding.label,
        },
        "effectiveDateTime": result.created_at,
        "valueQuantity": _ratio(finding.probability),
        "interpretation": [
            {
                "coding": [
                    {
                        "system": INTERPRETATION,
                        "code": interp,
                        "display": "Positive" if finding.positive else "Negative",
                    }
                ]
            }
        ],
        "method": {"text": method},
        "device": {"reference": device_ref},
        "component": [
            {"code": {"text": "raw model score"}, "valueQuantity": _ratio(finding.raw)},
            {"code": {"text": "decision threshold"}, "valueQuantity": _ratio(finding.threshold)},
        ],
    }
    confirmed = [d for d in result.diagnoses if d.code == finding.code]
    if confirmed:
        d = confirmed[0]
        note: dict[str, Any] = {
            "text": f"confirmed diagnosis: {'present' if d.label else 'absent'}"
        }
        if d.confirmed_at:
            note["time"] = d.confirmed_at
        obs["note"] = [note]
    return obs


def _conclusion(result: ResultPayload) -> str:
    if result.status != "ok":
        return f"Not analysed ({result.status}): {result.reason or 'no reason given'}"
    parts = [
        f"{f.label}: {f.probability:.2f} ({'positive' if f.positive else 'negative'}, "
        f"threshold {f.threshold:.2f})"
        for f in result.findings
    ]
    return "; ".join(parts) or "No findings reported."


def report_resources(result: ResultPayload, device_ref: str) -> list[dict[str, Any]]:
    """The DiagnosticReport of one result followed by its Observations."""
    observations = [observation_resource(result, f, device_ref) for f in result.findings]
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": result.id,
        "meta": {"versionId": str(result.revision)},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": _urn(result.id)}],
        "status": "final" if result.status == "ok" else "cancelled",
        "category": [{"coding": [{"system": V2_0074, "code": "RAD", "display": "Radiology"}]}],
        "code": {"coding": [CXR_CODE], "text": "Chest X-ray film (photographed on a lightbox)"},
        "effectiveDateTime": result.created_at,
        "issued": result.created_at,
        "conclusion": _conclusion(result),
    }
    if observations:
        report["result"] = [{"reference": _urn(o["id"])} for o in observations]
    return [report, *observations]


def bundle(device_id: str, results: list[ResultPayload]) -> dict[str, Any]:
    """A collection Bundle: one Device per (model, calibration), then reports and observations."""
    entries: list[dict[str, Any]] = []
    devices: dict[uuid.UUID, dict[str, Any]] = {}
    for result in results:
        dev_id = device_uuid(device_id, result.model, result.calibration_id)
        if dev_id not in devices:
            devices[dev_id] = device_resource(device_id, result.model, result.calibration_id)
            entries.append({"fullUrl": _urn(dev_id), "resource": devices[dev_id]})
        for resource in report_resources(result, _urn(dev_id)):
            entries.append({"fullUrl": _urn(resource["id"]), "resource": resource})
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "collection",
        "timestamp": utcnow(),
        "entry": entries,
    }


def results_from_bundle(data: dict[str, Any]) -> tuple[str | None, list[ResultPayload]]:
    """Read results back from a Bundle made by :func:`bundle` (for ``kiosk hub import``)."""
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise PayloadError("resourceType", "the file is not a FHIR Bundle")
    by_url = {e.get("fullUrl"): e.get("resource", {}) for e in data.get("entry", [])}
    device_id = None
    out = []
    for url, res in by_url.items():
        if res.get("resourceType") != "DiagnosticReport":
            continue
        findings, diagnoses = [], []
        model, calibration_id = ModelPayload(), None
        for ref in res.get("result", []):
            obs = by_url.get(ref.get("reference"))
            if obs is None:
                raise PayloadError(f"{url}.result", f"{ref.get('reference')} is not in the bundle")
            coding = obs["code"]["coding"][0]
            comps = {c["code"]["text"]: c["valueQuantity"]["value"] for c in obs["component"]}
            interp = obs["interpretation"][0]["coding"][0]["code"]
            findings.append(
                FindingPayload(
                    code=coding["code"],
                    label=coding.get("display") or coding["code"],
                    raw=comps["raw model score"],
                    probability=obs["valueQuantity"]["value"],
                    threshold=comps["decision threshold"],
                    positive=interp == "POS",
                )
            )
            for note in obs.get("note", []):
                text = note.get("text", "")
                if text.startswith("confirmed diagnosis: "):
                    diagnoses.append(
                        DiagnosisPayload(
                            code=coding["code"],
                            label=1 if text.endswith("present") else 0,
                            confirmed_at=note.get("time"),
                        )
                    )
            dev = by_url.get(obs.get("device", {}).get("reference"))
            if dev:
                model, calibration_id, device_id = _read_device(dev)
        status = "ok" if res.get("status") == "final" else "rejected"
        out.append(
            ResultPayload(
                id=res["id"],
                revision=int(res.get("meta", {}).get("versionId", 1)),
                created_at=res["effectiveDateTime"],
                status=status,
                reason=res.get("conclusion") if status != "ok" else None,
                model=model,
                calibration_id=calibration_id,
                findings=findings,
                diagnoses=diagnoses,
            )
        )
    return device_id, out


def _read_device(dev: dict[str, Any]) -> tuple[ModelPayload, str | None, str | None]:
    versions = {v["type"]["text"]: v["value"] for v in dev.get("version", [])}
    names = {n["type"]: n["name"] for n in dev.get("deviceName", [])}
    cal = None
    for prop in dev.get("property", []):
        if prop["type"].get("text") == "calibration id":
            cal = prop["valueCode"][0]["text"]
    model = ModelPayload(
        id=names.get("model-name"),
        version=versions.get("model version"),
        sha256=versions.get("model sha256"),
    )
    return model, cal, names.get("user-friendly-name")
