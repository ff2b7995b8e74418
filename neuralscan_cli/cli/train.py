"""`neuralscan train --config configs/classifier.yaml [overrides]`: train a classifier or a segmenter."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .app import app
from .common import console, friendly_errors


@app.command(no_args_is_help=True)
def train(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config (see configs/)."),
    overrides: list[str] = typer.Option([], "--set", help="Override any config field: section.key=value "
                                        "(repeatable), e.g. --set train.epochs=5 --set train.batch_size=16."),
    cache: Path = typer.Option(None, help="Dataset cache (data.cache)."),
    out: Path = typer.Option(None, help="Run folder to write (out)."),
    model: str = typer.Option(None, help="Model name from the registry (model.name)."),
    epochs: int = typer.Option(None, min=1, help="train.epochs"),
    batch_size: int = typer.Option(None, min=1, help="train.batch_size"),
    precision: str = typer.Option(None, help="fp32 or bf16 (runtime.precision)."),
    weights: str = typer.Option(None, help="Backbones: imagenet, none or a weights file (model.weights)."),
    init_from: str = typer.Option(None, help="Segmenters: a classifier bundle whose encoder initialises the U-Net."),
    init_member: int = typer.Option(None, min=1,
                                    help="With --init-from an ensemble: the member to take (model.init_member)."),
    seed: int = typer.Option(None, help="runtime.seed"),
    intra_op: int = typer.Option(None, min=0, help="Intra-op threads, 0 = all cores (runtime: intra_op_threads)."),
    inter_op: int = typer.Option(None, min=0, help="Inter-op threads (runtime: inter_op_threads)."),
    itex: bool = typer.Option(None, "--itex/--no-itex", help="Load Intel Extension for TensorFlow when installed."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint (its saved config "
                                "is used unless --config is given; --epochs N with N <= the epochs done finishes "
                                "the bundle from the best checkpoint)."),
):
    """Train a model on a preprocess cache; the run folder is a model bundle the other commands read."""
    from ..training import load_config
    from ..training import train as run_training

    shortcuts = {"data.cache": cache, "out": out, "model.name": model, "train.epochs": epochs,
                 "train.batch_size": batch_size, "runtime.precision": precision, "model.weights": weights,
                 "model.init_from": init_from, "model.init_member": init_member, "runtime.seed": seed,
                 "runtime.intra_op_threads": intra_op, "runtime.inter_op_threads": inter_op, "runtime.itex": itex}
    extra = [f"{k}={v}" for k, v in shortcuts.items() if v is not None]
    if resume and config is None and out is not None and (out / "config.yaml").is_file():
        config = out / "config.yaml"  # a resumed run keeps its own resolved config unless told otherwise
    with friendly_errors():
        cfg = load_config(config, [*overrides, *extra])

        def on_start(info):
            a = info["accel"]
            console.print(
                f"training {cfg['model']['name']} ({info['params']:,} parameters) on {info['n_train']} images, "
                f"validating on {info['n_val']}; classes: {', '.join(info['classes'])}")
            console.print(
                f"TensorFlow {a['tensorflow']} / Keras {a['keras']}; oneDNN {'on' if a['onednn'] else 'off'}; "
                f"ITEX {'loaded' if a['itex_loaded'] else ('installed, not loaded' if a['itex_installed'] else 'not installed')}"
                f"; precision {a['precision']}")
            if info.get("partial_labels_unused"):
                console.print(f"[yellow]note: data.partial_labels names {', '.join(info['partial_labels_unused'])}, "
                              f"a label this cache does not hold (its labels: {', '.join(info['cache_labels'])}); "
                              f"ignored[/]", highlight=False)

        def on_epoch(row):
            mon = row["monitor"]
            extra_cols = "  ".join(f"{k} {row[k]:.4f}" for k in ("val_accuracy", "val_macro_f1", "val_dice_all",
                                                                   "val_dice", "val_empty_correct") if k in row)
            console.print(f"epoch {row['epoch']:3d}  loss {row.get('loss', float('nan')):.4f}  {extra_cols}  "
                          f"{row['train_images_per_second']:.0f} img/s  {'[green]best ' + mon + '[/]' if row['best'] else ''}")

        result = run_training(cfg, resume=resume, on_epoch=on_epoch, on_start=on_start)
    table = Table(title=f"Run {result.run_dir}", title_justify="left")
    table.add_column("best epoch", justify="right")
    table.add_column(result.monitor, justify="right")
    table.add_column("epochs run", justify="right")
    table.add_column("train img/s", justify="right")
    table.add_column("wall time", justify="right")
    table.add_row(str(result.best_epoch), f"{result.best_score:.4f}", str(result.epochs_run),
                  f"{result.train_images_per_second:.1f}", f"{result.seconds / 60:.1f} min")
    console.print(table)
    avg = result.weight_average
    if avg:
        console.print(f"The bundle holds the average of epochs {avg['first_epoch']}-{result.epochs_run} "
                      f"({avg['epochs_averaged']} epochs): {result.monitor} {avg['val'][result.monitor]:.4f} "
                      f"(best single epoch {avg['best_epoch_val'][result.monitor]:.4f})")
