"""`neuralscan ensemble MODEL MODEL... --out DIR`: one bundle that averages trained classifiers."""
from __future__ import annotations

from pathlib import Path

import typer

from .app import app
from .common import console, friendly_errors


@app.command(no_args_is_help=True)
def ensemble(
    models: list[str] = typer.Argument(..., help="Two or more trained classifiers (run folders or bundles) with "
                                       "the same classes, image size and preprocessing."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to write (new or empty)."),
    name: str = typer.Option(None, help="The bundle's name in model.json (default: the folder name)."),
):
    """Average the members' class probabilities in one network, written as an ordinary bundle: evaluate,
    export (FP32/INT8), classify and bench then use it like any single model."""
    with friendly_errors():
        from ..training.ensemble import build_ensemble

        path = build_ensemble(models, out, name=name)
        from ..inference import load_bundle

        calibrated = [m for m in load_bundle(path).meta["training"]["members"] if m.get("temperature")]
    if calibrated:  # the mean of raw member outputs is a new model, with its own over- or underconfidence
        temps = ", ".join(f"{m['member']} T={m['temperature']:g}" for m in calibrated)
        console.print(f"[yellow]note: the members' calibration ({temps}) "
                      f"does not carry over to their mean; fit the ensemble's own with neuralscan calibrate "
                      f"{path} DATA[/]", highlight=False, soft_wrap=True)
    console.print(f"ensemble of {len(models)} classifiers written to {path} "
                  f"(next: neuralscan export {path} --out {path} --int8)")
