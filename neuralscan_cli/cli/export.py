"""`neuralscan export MODEL --out DIR [--int8]`: OpenVINO IR of a trained model, INT8 with an accuracy check."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .app import app
from .common import console, err_console, fail, friendly_errors, warn


def _step(message: str) -> None:
    err_console.print(f"[dim]{message}...[/]", highlight=False, soft_wrap=True)


@app.command(no_args_is_help=True)
def export(
    model: str = typer.Argument(..., help="A bundle or run folder holding model.keras (or the model.keras inside "
                                "one)."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to write (model.json, model.keras, "
                             "openvino/fp32, openvino/int8). May be the model's own folder: the IR is added to it."),
    int8: bool = typer.Option(False, "--int8", help="Also write an INT8 model (NNCF post-training quantisation), "
                              "kept only if it passes the accuracy check."),
    calibration: Path = typer.Option(None, help="Calibration images for INT8: a preprocess cache (its training "
                                     "split) or scans. Default: the training cache recorded in model.json."),
    calibration_size: int = typer.Option(None, min=1, help="Calibration images (a random sample) [default: 300]."),
    validation: Path = typer.Option(None, help="Images for the FP32-vs-INT8 check: a cache (its validation split) "
                                    "or labelled scans. Default: the validation split of the training cache."),
    max_accuracy_drop: float = typer.Option(None, help="Classifiers: the most accuracy INT8 may lose (0.01 = "
                                            "1 point) [default: 0.01]."),
    max_dice_drop: float = typer.Option(None, help="Segmenters: the most mean Dice INT8 may lose [default: 0.01]."),
    accuracy_control: bool = typer.Option(False, "--accuracy-control", help="If INT8 loses too much, retry with "
                                          "NNCF's accuracy-aware quantisation (slower) instead of failing."),
    preset: str = typer.Option(None, help="NNCF preset: performance (symmetric, fastest on CPU) or "
                               "mixed (asymmetric activations) [default: performance]."),
    no_keras: bool = typer.Option(False, "--no-keras", help="Do not copy model.keras into --out (it serves "
                                  "Grad-CAM and comparison runs)."),
    gate: str = typer.Option(None, help="Segmenters: record a classifier (bundle folder or 'bundled') whose "
                             "no_tumor call empties the mask; segment, evaluate and classify then apply it."),
):
    """Convert a trained Keras model to OpenVINO IR: FP32 always; with --int8 also INT8, scored against FP32 on
    validation images and kept only if it loses no more than the allowed margin (exit 1 otherwise)."""
    from ..export import PRESETS

    if preset is not None and preset not in PRESETS:
        raise fail(f"--preset must be one of {', '.join(PRESETS)}, not '{preset}'")
    with friendly_errors():
        from ..export import export_bundle

        report = export_bundle(model, out, int8=int8, calibration=calibration, calibration_size=calibration_size,
                               max_drop_accuracy=max_accuracy_drop, max_drop_dice=max_dice_drop,
                               accuracy_control=accuracy_control, validation=validation, preset=preset,
                               copy_keras=not no_keras, gate=gate, on_step=_step, on_warning=warn)
    _print_report(report)
    if report.int8_requested and not report.int8_accepted:
        raise fail(report.message or "INT8 lost too much accuracy", code=1)


def _mb(n) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def _print_report(r) -> None:
    if r.val_fp32 is not None:
        v = r.validation or {}
        table = Table(title=f"{r.model}: validation ({v.get('n')} images, {v.get('source')}, split "
                            f"{v.get('split')})", title_justify="left")
        table.add_column("")
        table.add_column("FP32", justify="right")
        if r.val_int8 is not None:
            table.add_column("INT8", justify="right")
            table.add_column("change", justify="right")
        keys = ["accuracy", "macro_f1"] if r.task == "classify" else ["dice_mean"]
        for k in keys:
            row = [k.replace("_", "-").replace("dice-mean", "Dice (mean)"), f"{r.val_fp32[k]:.4f}"]
            if r.val_int8 is not None:
                row += [f"{r.val_int8[k]:.4f}", f"{r.val_int8[k] - r.val_fp32[k]:+.4f}"]
            table.add_row(*row)
        if r.val_int8 is not None and "top1_agreement_with_fp32" in r.val_int8:
            table.add_row("top-1 agreement with FP32", "", f"{r.val_int8['top1_agreement_with_fp32']:.4f}", "")
        console.print(table)
        if r.val_fp32.get("n_partial"):  # evaluate reports these apart, so its accuracy differs
            console.print(f"accuracy here counts {r.val_fp32['n_partial']} image(s) with a partial label (e.g. Br35H "
                          "tumor) as right when the call is one of its classes; evaluate reports them apart",
                          highlight=False, soft_wrap=True)
    sizes = r.sizes
    line = f"FP32 IR {r.fp32_path} ({_mb(sizes.get('openvino_fp32'))})"
    if r.int8_path is not None:
        how = "accuracy-aware quantisation" if r.accuracy_control_used else f"{r.preset} preset"
        line += f"; INT8 IR {r.int8_path} ({_mb(sizes.get('openvino_int8'))}, {how}, " \
                f"{(r.calibration or {}).get('n')} calibration images)"
    console.print(line, highlight=False, soft_wrap=True)
    p = r.postprocessing or {}
    if "chosen_on" in p:
        console.print(f"mask rule: blobs under {p['min_component']:.2%} of the image dropped (best mean Dice on "
                      f"{p['chosen_on'].get('n')} training images)", highlight=False, soft_wrap=True)
    if p.get("gate"):
        console.print(f"gate: a slice {p['gate']} calls no_tumor gets an empty mask", highlight=False,
                      soft_wrap=True)
    console.print(f"bundle written to {r.out_dir} in {r.seconds:.1f} s", highlight=False, soft_wrap=True)
