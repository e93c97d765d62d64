"""`kiosk analyze` and `kiosk rectify`: batch analysis and rectification of image files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from kiosk.cli import CliContext
from kiosk.errors import StoreError

COMMANDS: list[click.Command] = []


def _human_line(data: dict[str, Any]) -> str:
    name = Path(data["source"]).name
    if data["status"] != "ok":
        return f"{data['status'].upper():8} {name}: {data['reason']}"
    parts = []
    for f in data["findings"]:
        word = "POSITIVE" if f["positive"] else "negative"
        parts.append(f"{f['label']} {f['probability']:.2f} {word} (threshold {f['threshold']:.2f})")
    calibration = data.get("calibration")
    note = calibration["label"] if calibration else "not calibrated: raw model probabilities"
    return f"{'OK':8} {name}: " + "; ".join(parts) + f" [{note}]"


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--input",
    "input_kind",
    type=click.Choice(["photo", "digital", "auto"]),
    default="auto",
    show_default=True,
    help="photo: a camera photo of a film on a lightbox; digital: a digital X-ray image.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image (JSON Lines).")
@click.option(
    "--no-store",
    is_flag=True,
    help="Do not write results to the database (the active calibration is still applied).",
)
@click.pass_obj
def analyze(
    obj: CliContext, paths: tuple[Path, ...], input_kind: str, as_json: bool, no_store: bool
) -> None:
    """Analyse image files or folders of them, in order; a bad file never stops the batch."""
    from kiosk.app.appliance import Appliance, load_classifier
    from kiosk.imaging.decode import list_inputs
    from kiosk.pipeline import Pipeline

    config = obj.config
    inputs = list_inputs(list(paths))
    if no_store:
        pipeline = Pipeline.from_config(config, load_classifier(config), None)
        appliance = None
    else:
        appliance = Appliance.open(config)
        pipeline = appliance.pipeline
    try:
        for path in inputs:
            try:
                result = pipeline.analyze_file(path, input_kind, store=not no_store)  # type: ignore[arg-type]
            except StoreError as exc:
                line = {"source": str(path), "status": "error", "reason": str(exc)}
                click.echo(json.dumps(line) if as_json else f"ERROR    {path.name}: {exc}")
                raise
            data = result.to_json()
            click.echo(json.dumps(data) if as_json else _human_line(data))
            sys.stdout.flush()
    finally:
        if appliance is not None:
            appliance.close()


@click.command()
@click.argument("photo", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the rectified film."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--debug",
    "debug_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write DIR/<photo>-debug.png: masks, quad, each gate's value against its limit.",
)
@click.pass_obj
def rectify(
    obj: CliContext, photo: Path, out: Path | None, as_json: bool, debug_dir: Path | None
) -> None:
    """Find the film in one lightbox photo; report its corners and quality."""
    from kiosk.atomic import atomic_write_bytes
    from kiosk.capture.rig import RigReference
    from kiosk.imaging.decode import read_image
    from kiosk.imaging.encode import encode_png
    from kiosk.model.localiser import load_localiser
    from kiosk.rectify.rectifier import rectify as rectify_photo
    from kiosk.rectify.rectifier import uses_localiser

    config = obj.config
    image = read_image(photo).pixels
    rig = RigReference.load(config.rig_dir)
    localiser = None
    if uses_localiser(config.rectify.method):
        localiser = load_localiser(config.models_dir)
    result = rectify_photo(image, rig, method=config.rectify.method, localiser=localiser)
    if out is not None and result.film is not None:
        atomic_write_bytes(out, encode_png(result.film))
    debug_path = None
    if debug_dir is not None:
        from kiosk.rectify.overlay import draw_overlay

        debug_path = debug_dir / f"{photo.stem}-debug.png"
        atomic_write_bytes(debug_path, encode_png(draw_overlay(image, result, rig)))
    data: dict[str, Any] = {
        "source": str(photo),
        "status": result.status,
        "reason": result.quality.reason,
        "advice": result.quality.advice,
        "corners": None
        if result.corners is None
        else [[round(float(x), 2), round(float(y), 2)] for x, y in result.corners],
        "quality": result.quality.to_dict(),
        "debug": None if debug_path is None else str(debug_path),
        "rig_reference": rig is not None,
        "film_size": None if result.film is None else list(result.film.shape[:2]),
        "out": str(out) if out is not None and result.film is not None else None,
        "timings_ms": {k: round(v, 2) for k, v in result.timings_ms.items()},
    }
    if as_json:
        click.echo(json.dumps(data))
    else:
        click.echo(f"status:  {data['status']}")
        if data["reason"]:
            click.echo(f"reason:  {data['reason']} {data['advice'] or ''}".rstrip())
        click.echo(f"corners: {data['corners']}")
        click.echo(f"flags:   {', '.join(data['quality']['flags']) or 'none'}")
        if data["out"]:
            click.echo(f"film:    {data['out']} ({data['film_size'][1]}x{data['film_size'][0]})")


COMMANDS.extend([analyze, rectify])
