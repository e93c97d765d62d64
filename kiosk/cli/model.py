"""`kiosk model ...`: inspect, verify, install and roll back models."""

from __future__ import annotations

import json
from pathlib import Path
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
    from kiosk.app.appliance import load_classifier

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
    from kiosk.app.appliance import load_classifier

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


@model.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def install(obj: CliContext, manifest: Path) -> None:
    """Install a model update (MANIFEST.json next to its .tflite), verify it, switch to it."""
    from kiosk.app.appliance import installed_models_dir
    from kiosk.model.install import install as do_install
    from kiosk.store import Store

    installed = do_install(manifest, installed_models_dir(obj.config), threads=obj.config.threads)
    store = Store(obj.config.db_path)
    try:
        store.audit("cli", "model.installed", installed.id, {"sha256": installed.sha256})
    finally:
        store.close()
    click.echo(
        f"installed {installed.id} {installed.version} (sha256 {installed.sha256[:12]}…); "
        "restart the kiosk service to use it: sudo systemctl restart kiosk"
    )


@model.command()
@click.pass_obj
def rollback(obj: CliContext) -> None:
    """Switch back to the model that was active before the last install."""
    from kiosk.app.appliance import installed_models_dir
    from kiosk.model.install import rollback as do_rollback
    from kiosk.store import Store

    now = do_rollback(installed_models_dir(obj.config))
    store = Store(obj.config.db_path)
    try:
        store.audit("cli", "model.rolled_back", now or "bundled", None)
    finally:
        store.close()
    click.echo(f"active model: {now or 'the bundled model'}; restart the kiosk service")


def _add_training_commands() -> None:
    # Training needs the `train` extra; its commands import torch/TensorFlow only when run.
    from kiosk.cli import model_train

    for name, command in (
        ("train", model_train.train_command),
        ("export", model_train.export_command),
        ("evaluate", model_train.evaluate_command),
        ("engines", model_train.engines_command),
    ):
        model.add_command(command, name)


_add_training_commands()
COMMANDS.append(model)
