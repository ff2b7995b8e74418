"""`neuralscan models`: the model registry, with each model's task and options."""
from __future__ import annotations

import inspect

from rich.table import Table

from .app import app
from .common import console

ENSEMBLE = "ensemble"


@app.command("models")
def list_registered_models():
    """List the networks `train` can build (--model / model.name) with their options and defaults."""
    from ..models import list_models, model_options, model_task

    table = Table(title="Model registry", title_justify="left")
    table.add_column("name")
    table.add_column("task")
    table.add_column("options (defaults)")
    for name in list_models():
        if name == ENSEMBLE:  # built from trained runs, not trained
            continue
        opts = ", ".join(f"{k}={'?' if v is inspect.Parameter.empty else v!r}"
                         for k, v in model_options(name).items() if k != "name")
        table.add_row(name, model_task(name), opts)
    console.print(table)
    console.print("An ensemble (the mean of trained classifiers) is built with: neuralscan ensemble RUN RUN... --out DIR",
                  highlight=False, soft_wrap=True)
