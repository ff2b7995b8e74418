"""`neuralscan models`: the model registry, with each model's task and options."""
from __future__ import annotations

import inspect

from rich.table import Table

from .app import app
from .common import console


@app.command("models")
def list_registered_models():
    """List the networks `train` can build (--model / model.name) with their options and defaults."""
    from ..models import list_models, model_options, model_task

    table = Table(title="Model registry", title_justify="left")
    table.add_column("name")
    table.add_column("task")
    table.add_column("options (defaults)")
    for name in list_models():
        opts = ", ".join(f"{k}={'?' if v is inspect.Parameter.empty else v!r}"
                         for k, v in model_options(name).items() if k != "name")
        table.add_row(name, model_task(name), opts)
    console.print(table)
