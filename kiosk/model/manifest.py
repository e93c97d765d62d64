"""Model manifests: the JSON file that sits next to every shipped ``.tflite``.

A manifest says what the model is (id, version, sha256 of the file), how to feed it (input
size, colour, normalisation, resize policy), which output tensor plays which role (logits,
pooled features, class activation map, localiser mask) and, for classifiers, which findings
its logits stand for. The runtime trusts nothing else: (de)quantisation comes from the tensor
parameters, everything else from here.

Example (``models/cxr-pneumonia-effl0.json``)::

    {
      "schema_version": 1,
      "id": "cxr-pneumonia-effl0",
      "version": "1.0.0",
      "kind": "classifier",
      "file": "cxr-pneumonia-effl0-int8.tflite",
      "sha256": "…64 hex…",
      "quantization": "int8",
      "input": {"size": [224, 224], "colour": "rgb", "mean": [127.0, 127.0, 127.0],
                "std": [128.0, 128.0, 128.0], "resize": "stretch"},
      "outputs": {"logits": {"name": "StatefulPartitionedCall:0"},
                  "features": {"index": 1}, "cam": {"index": 2}},
      "head": "sigmoid",
      "findings": [{"code": "pneumonia", "label": "Pneumonia", "threshold": 0.5}],
      "ood": {"file": "cxr-pneumonia-effl0.ood.npz", "sha256": "…64 hex…"},
      "calibration": {"file": "cxr-pneumonia-effl0.factory-calibration.json",
                      "sha256": "…64 hex…"},
      "provenance": {"data": "…", "training_run": "…"},
      "licence": "…",
      "card": "cxr-pneumonia-effl0.md",
      "card_sha256": "…64 hex…"
    }

``calibration`` (optional) names the factory calibration record shipped with the model: a
calibration for photographed films fitted on rendered photos, used while a kiosk has no site
calibration of its own (``kiosk.calibration.factory`` reads it; this module only checks the
name). Manifests without it load as before.

``id``, ``version``, ``file``, ``card``, ``ood.file`` and ``calibration.file`` become parts of
paths (an installed model lives in ``<id>-<version>-<sha8>/``), so each must be a plain name:
letters, digits, ``.``, ``_``, ``-``, ``+``, not starting with a dot. ``ood.sha256``,
``card_sha256`` and ``calibration.sha256`` let ``kiosk model install`` check every file it
copies; manifests without them still load (they only cannot be installed as an update).

``mean`` and ``std`` are in 0-255 pixel units: the float input is ``(pixel - mean) / std``.
``resize`` is ``stretch`` (ignore aspect ratio, as the Kermany images were made), ``letterbox``
(pad to keep it) or ``crop`` (centre crop to keep it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kiosk.errors import ModelError

SCHEMA_VERSION = 1
OUTPUT_ROLES = ("logits", "features", "cam", "mask", "heatmap")
_CODE_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_PLAIN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")

Colour = Literal["rgb", "grey"]
Resize = Literal["stretch", "letterbox", "crop"]


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the model's input tensor."""

    height: int
    width: int
    colour: Colour = "rgb"
    mean: tuple[float, ...] = (127.0, 127.0, 127.0)
    std: tuple[float, ...] = (128.0, 128.0, 128.0)
    resize: Resize = "stretch"

    @property
    def channels(self) -> int:
        return 3 if self.colour == "rgb" else 1


@dataclass(frozen=True)
class OutputSpec:
    """Where to find one output role: by tensor ``name`` or by position ``index``."""

    role: str
    name: str | None = None
    index: int | None = None


@dataclass(frozen=True)
class FindingSpec:
    """One finding a classifier reports: machine ``code``, human ``label``, default threshold."""

    code: str
    label: str
    threshold: float = 0.5


@dataclass(frozen=True)
class Manifest:
    """A validated model manifest. Use :meth:`load`; paths are relative to the manifest."""

    path: Path
    id: str
    version: str
    kind: Literal["classifier", "localiser"]
    file: str
    sha256: str
    input: InputSpec
    outputs: dict[str, OutputSpec]
    quantization: str = "int8"
    head: Literal["sigmoid", "softmax", "none"] = "sigmoid"
    findings: tuple[FindingSpec, ...] = ()
    ood: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    licence: str = ""
    card: str | None = None
    card_sha256: str | None = None

    @property
    def model_path(self) -> Path:
        return self.path.parent / self.file

    @property
    def finding_codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.findings)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read and validate a manifest file; raise :class:`ModelError` naming the bad field."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelError(
                f"model manifest {path} does not exist",
                "install the model with `kiosk model install` or check `model` in the config",
            ) from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(
                f"model manifest {path} is not valid JSON: {exc}",
                "restore the manifest from the release or reinstall the model",
            ) from exc
        return cls.from_dict(raw, Path(path))

    @classmethod
    def from_dict(cls, raw: Any, path: Path) -> Manifest:
        """Validate a decoded manifest. Does not touch the model file (see the runtime)."""

        def bad(what: str) -> ModelError:
            return ModelError(
                f"model manifest {path}: {what}", "fix the manifest or reinstall the model"
            )

        if not isinstance(raw, dict):
            raise bad("top level must be a JSON object")
        if raw.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise bad(f"schema_version {raw.get('schema_version')!r} is not {SCHEMA_VERSION}")
        for key in ("id", "version", "kind", "file", "sha256", "input", "outputs"):
            if key not in raw:
                raise bad(f"missing field {key!r}")
        kind = raw["kind"]
        if kind not in ("classifier", "localiser"):
            raise bad(f"kind must be 'classifier' or 'localiser', not {kind!r}")
        sha = str(raw["sha256"]).lower()
        if not _SHA_RE.match(sha):
            raise bad("sha256 must be 64 hexadecimal characters")
        for key in ("id", "version"):
            if not _is_plain_name(str(raw[key])):
                raise bad(f"{key} {raw[key]!r} must be letters, digits, '.', '_', '-' or '+'")
        file_name = str(raw["file"])
        if not _is_plain_name(file_name):
            raise bad(f"file {file_name!r} must be a plain file name next to the manifest")
        card = raw.get("card")
        if card is not None and not _is_plain_name(card):
            raise bad(f"card {card!r} must be a plain file name next to the manifest")
        card_sha = _optional_sha(raw.get("card_sha256"), "card_sha256", bad)
        ood = raw.get("ood") or {}
        if not isinstance(ood, dict):
            raise bad("ood must be an object")
        if "file" in ood and not _is_plain_name(ood["file"]):
            raise bad(f"ood.file {ood['file']!r} must be a plain file name next to the manifest")
        ood_sha = _optional_sha(ood.get("sha256"), "ood.sha256", bad)
        if ood_sha is not None:
            ood = {**ood, "sha256": ood_sha}
        calibration = raw.get("calibration") or {}
        if not isinstance(calibration, dict):
            raise bad("calibration must be an object")
        if calibration and not _is_plain_name(calibration.get("file")):
            raise bad(
                f"calibration.file {calibration.get('file')!r} must be a plain file name next to "
                "the manifest"
            )
        calibration_sha = _optional_sha(calibration.get("sha256"), "calibration.sha256", bad)
        if calibration_sha is not None:
            calibration = {**calibration, "sha256": calibration_sha}

        inp = raw["input"]
        if not isinstance(inp, dict):
            raise bad("input must be an object")
        size = inp.get("size")
        if (
            not isinstance(size, list)
            or len(size) != 2
            or not all(isinstance(v, int) and 8 <= v <= 4096 for v in size)
        ):
            raise bad("input.size must be [height, width], integers from 8 to 4096")
        colour = inp.get("colour", "rgb")
        if colour not in ("rgb", "grey"):
            raise bad(f"input.colour must be 'rgb' or 'grey', not {colour!r}")
        channels = 3 if colour == "rgb" else 1
        mean = _floats(inp.get("mean", [127.0] * channels), channels, "input.mean", bad)
        std = _floats(inp.get("std", [128.0] * channels), channels, "input.std", bad)
        if any(s <= 0 for s in std):
            raise bad("input.std must be positive")
        resize = inp.get("resize", "stretch")
        if resize not in ("stretch", "letterbox", "crop"):
            raise bad(f"input.resize must be stretch, letterbox or crop, not {resize!r}")
        input_spec = InputSpec(size[0], size[1], colour, mean, std, resize)

        outs = raw["outputs"]
        if not isinstance(outs, dict) or not outs:
            raise bad("outputs must be a non-empty object of role -> {name|index}")
        outputs: dict[str, OutputSpec] = {}
        for role, spec in outs.items():
            if role not in OUTPUT_ROLES:
                raise bad(f"output role {role!r} is not one of {', '.join(OUTPUT_ROLES)}")
            if not isinstance(spec, dict) or ("name" not in spec and "index" not in spec):
                raise bad(f"outputs.{role} needs a 'name' or an 'index'")
            index = spec.get("index")
            if index is not None and (not isinstance(index, int) or index < 0):
                raise bad(f"outputs.{role}.index must be a non-negative integer")
            outputs[role] = OutputSpec(role, spec.get("name"), index)

        findings: list[FindingSpec] = []
        for i, item in enumerate(raw.get("findings", [])):
            if not isinstance(item, dict) or "code" not in item:
                raise bad(f"findings[{i}] needs a code")
            code = str(item["code"])
            if not _CODE_RE.match(code):
                raise bad(f"findings[{i}].code {code!r} must be lower-case letters, digits, _")
            threshold = item.get("threshold", 0.5)
            if not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) < 1.0:
                raise bad(f"findings[{i}].threshold must be a number between 0 and 1")
            findings.append(FindingSpec(code, str(item.get("label", code)), float(threshold)))
        if len({f.code for f in findings}) != len(findings):
            raise bad("finding codes must be unique")
        if kind == "classifier":
            if not findings:
                raise bad("a classifier needs at least one finding")
            if "logits" not in outputs:
                raise bad("a classifier needs a 'logits' output")
        head = raw.get("head", "sigmoid")
        if head not in ("sigmoid", "softmax", "none"):
            raise bad(f"head must be sigmoid, softmax or none, not {head!r}")

        return cls(
            path=Path(path),
            id=str(raw["id"]),
            version=str(raw["version"]),
            kind=kind,
            file=file_name,
            sha256=sha,
            input=input_spec,
            outputs=outputs,
            quantization=str(raw.get("quantization", "int8")),
            head=head,
            findings=tuple(findings),
            ood=dict(ood),
            calibration=dict(calibration),
            provenance=dict(raw.get("provenance") or {}),
            licence=str(raw.get("licence", "")),
            card=card,
            card_sha256=card_sha,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form, as :meth:`load` reads it (without ``path``)."""
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "id": self.id,
            "version": self.version,
            "kind": self.kind,
            "file": self.file,
            "sha256": self.sha256,
            "quantization": self.quantization,
            "input": {
                "size": [self.input.height, self.input.width],
                "colour": self.input.colour,
                "mean": list(self.input.mean),
                "std": list(self.input.std),
                "resize": self.input.resize,
            },
            "outputs": {
                role: {k: v for k, v in (("name", o.name), ("index", o.index)) if v is not None}
                for role, o in self.outputs.items()
            },
            "head": self.head,
            "findings": [
                {"code": f.code, "label": f.label, "threshold": f.threshold} for f in self.findings
            ],
            "provenance": self.provenance,
            "licence": self.licence,
        }
        if self.ood:
            out["ood"] = self.ood
        if self.calibration:
            out["calibration"] = self.calibration
        if self.card:
            out["card"] = self.card
        if self.card_sha256:
            out["card_sha256"] = self.card_sha256
        return out

    def write(self, path: Path | None = None) -> Path:
        """Write the manifest as pretty JSON (to ``path`` or where it was loaded from)."""
        target = Path(path or self.path)
        target.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return target


def _is_plain_name(value: Any) -> bool:
    """A file or folder name that cannot leave its folder: no separators, no leading dot."""
    return isinstance(value, str) and bool(_PLAIN_NAME_RE.match(value)) and ".." not in value


def _optional_sha(value: Any, name: str, bad: Any) -> str | None:
    if value is None:
        return None
    sha = str(value).lower()
    if not _SHA_RE.match(sha):
        raise bad(f"{name} must be 64 hexadecimal characters")
    return sha


def _floats(value: Any, n: int, name: str, bad: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != n:
        raise bad(f"{name} must be a list of {n} numbers")
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise bad(f"{name} must be numbers") from exc
