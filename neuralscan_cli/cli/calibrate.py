"""`neuralscan calibrate MODEL [DATA] [--temperature T]`: make a classifier's probabilities honest."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .app import app
from .common import console, fail, friendly_errors, print_problems, warn
from .evaluate import MAX_PROBLEMS_SHOWN, SPLITS


@app.command(no_args_is_help=True)
def calibrate(
    model: str = typer.Argument(..., help="A classifier bundle or run folder (written in place)."),
    data: Path = typer.Argument(None, help="Labelled images the model did not train on: a preprocess cache "
                                "(see --split) or raw data (CSV manifest, folder per class)."),
    temperature: float = typer.Option(None, help="Set this temperature instead of fitting one (e.g. the one "
                                      "fitted on the model's held-out-fold twin); 1 removes the calibration."),
    split: str = typer.Option(None, help="Cache split to fit on: train, val, test or all [default: val]; raw "
                              "data is used whole."),
    engine: str = typer.Option("auto", help="auto, openvino-int8, openvino-fp32 or keras."),
    batch_size: int = typer.Option(32, min=1, help="Images per inference batch."),
):
    """Fit the temperature that makes the classifier's probabilities match how often it is right (temperature
    scaling: the predicted class never changes), and store it in model.json; every engine and command then
    reports the calibrated probabilities."""
    if split is not None and split not in SPLITS:
        raise fail(f"--split must be one of {', '.join(SPLITS)}, not '{split}'")
    problems: list[str] = []
    with friendly_errors():
        from ..inference.calibration import calibrate_bundle

        r = calibrate_bundle(model, data, temperature=temperature, split=split, engine=engine,
                             batch_size=batch_size, on_warning=warn, on_problem=problems.append)
    if problems:
        print_problems(f"[yellow]warning:[/] {len(problems)} file(s) skipped:", problems, MAX_PROBLEMS_SHOWN)
    if r.n:
        table = Table(title=f"{'fitted' if r.fitted else 'checked'} on {r.n} images ({r.engine}); accuracy "
                            f"{r.accuracy:.3f}, unchanged")
        for col in ("", "temperature", "ECE", "NLL"):
            table.add_column(col, justify="right" if col else "left")
        table.add_row("network (T = 1)", "1", f"{r.ece_before:.3f}", f"{r.nll_before:.3f}")
        table.add_row("calibrated", f"{r.temperature:.4g}", f"{r.ece_after:.3f}", f"{r.nll_after:.3f}")
        console.print(table)
    console.print(f"{r.bundle}: temperature {r.temperature:.4g} (was {r.previous:.4g}) written to model.json",
                  highlight=False, soft_wrap=True)
