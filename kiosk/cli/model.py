"""`kiosk model ...`: inspect, verify, install and roll back models."""

from __future__ import annotations

import json
from typing import Any

import click
import numpy as np

from kiosk.cli import CliContext

COMMANDS: list[click.Command] = []


@click.group()
def model() -> None:
    """Inspect, verify, install and roll back the classifier model."""


@model.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def info(obj: CliContext, as_json: bool) -> None:
    """Show the active model's manifest, tensors and load time."""
    from kiosk.appliance import load_classifier

    classifier = load_classifier(obj.config)
    m = classifier.manifest
    rt = classifier.model
    data: dict[str, Any] = {
        "id": m.id,
        "version": m.version,
        "manifest": str(m.path),
        "file": str(m.model_path),
        "sha256": m.sha256,
        "size_bytes": m.model_path.stat().st_size,
        "quantization": m.quantization,
        "runtime": rt.runtime_name,
        "threads": rt.threads,
        "load_ms": round(rt.load_ms, 1),
        "input": {
            "shape": list(rt.input.shape),
            "dtype": str(rt.input.dtype),
            "scale": rt.input.scale,
            "zero_point": rt.input.zero_point,
            "resize": m.input.resize,
        },
        "outputs": {
            role: {"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)}
            for role, t in rt.outputs.items()
        },
        "findings": [
            {"code": f.code, "label": f.label, "threshold": f.threshold} for f in m.findings
        ],
        "licence": m.licence,
        "card": m.card,
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{m.id} {m.version} ({m.quantization}, {data['size_bytes'] / 1e6:.2f} MB)")
    click.echo(f"  file     {data['file']}")
    click.echo(f"  sha256   {m.sha256}")
    click.echo(f"  runtime  {rt.runtime_name}, {rt.threads} threads, loaded in {rt.load_ms:.0f} ms")
    click.echo(f"  input    {data['input']['shape']} {data['input']['dtype']} ({m.input.resize})")
    for role, t in data["outputs"].items():
        click.echo(f"  output   {role}: {t['shape']} {t['dtype']}")
    for f in m.findings:
        click.echo(f"  finding  {f.code} ({f.label}), default threshold {f.threshold:.3f}")


@model.command()
@click.pass_obj
def verify(obj: CliContext) -> None:
    """Check the model file against its manifest and run one inference."""
    from kiosk.appliance import load_classifier

    classifier = load_classifier(obj.config)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(256, 256), dtype=np.uint8)
    prediction = classifier.predict(image)
    if not np.all(np.isfinite(prediction.logits)):
        raise click.ClickException("the model produced non-finite outputs")
    click.echo(
        f"ok: {classifier.manifest.id} sha256 matches, inference ran in "
        f"{prediction.timings_ms['inference']:.1f} ms"
    )


def _add_training_commands() -> None:
    try:
        from kiosk.cli import model_train
    except ImportError:
        return
    for name in ("train", "export", "evaluate", "engines"):
        command = getattr(model_train, name, None)
        if isinstance(command, click.Command):
            model.add_command(command, name)


_add_training_commands()
COMMANDS.append(model)
