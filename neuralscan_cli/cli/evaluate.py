"""`neuralscan evaluate MODEL DATA --out DIR`: score a model bundle on labelled data and write a report folder."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from .app import app
from .common import console, fail, friendly_errors, print_problems, progress_bar, warn

SPLITS = ("train", "val", "test", "all")
PREDICT_CHUNK = 256  # images per progress-bar step; the runner batches within a chunk
MAX_PROBLEMS_SHOWN = 10


@app.command(no_args_is_help=True)
def evaluate(
    model: str = typer.Argument(..., help="A bundle or run folder, a model.keras / model.xml inside one, or "
                                "'bundled' / 'bundled-segmenter'."),
    data: Path = typer.Argument(..., help="A preprocess cache folder, or raw data: a CSV manifest, a folder "
                                "holding labels.csv, or a folder per class."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for metrics.json, predictions.csv, figures, report.md."),
    engine: str = typer.Option("auto", help="auto, openvino-int8, openvino-fp32 or keras."),
    split: str = typer.Option(None, help="Cache split to score: train, val, test or all [default: val]; raw data "
                              "is scored whole."),
    explain: int = typer.Option(0, min=0, help="Grad-CAM overlays for N images, most confident errors first "
                                "(classifiers; needs the Keras model)."),
    batch_size: int = typer.Option(32, min=1, help="Images per inference batch."),
    bootstrap: int = typer.Option(1000, min=0, help="Bootstrap resamples for the confidence intervals."),
    threshold: float = typer.Option(None, min=0.0, max=1.0, help="Segmenters: probability above which a pixel "
                                    "is tumour (default: the model's own, as `segment` uses)."),
    min_component: float = typer.Option(None, min=0.0, max=0.5, help="Segmenters: drop predicted blobs smaller "
                                        "than this share of the input image (default: the model's own)."),
    gate: str = typer.Option(None, help="Segmenters: a classifier whose no_tumor call empties the mask, or "
                             "'none' (default: the model's own, as `segment` uses)."),
):
    """Accuracy and macro-F1 with confidence intervals, calibration and figures for a classifier; Dice, IoU and
    HD95 for a segmenter. Raw data is preprocessed exactly as the model's training data was."""
    from ..inference.bundle import ENGINES

    if engine not in ENGINES:
        raise fail(f"--engine must be one of {', '.join(ENGINES)}, not '{engine}'")
    if split is not None and split not in SPLITS:
        raise fail(f"--split must be one of {', '.join(SPLITS)}, not '{split}'")
    if out.exists() and not out.is_dir():
        raise fail(f"{out}: exists and is not a folder")
    with friendly_errors(), _removed_if_empty_on_error(out):
        from ..inference import engine_of_file, load_bundle, make_runner

        bundle = load_bundle(model)
        _check_options_fit_task(bundle, explain=explain, threshold=threshold, min_component=min_component, gate=gate)
        if engine == "auto" and Path(model).is_file():  # a model file named explicitly picks its own engine
            engine = engine_of_file(bundle, model) or engine
        runner = make_runner(bundle, engine)
        tumour_gate = None
        if bundle.task == "segment":  # a bad --gate is said before anything is read or written
            from ..inference.segmentation import load_gate

            tumour_gate = load_gate(bundle, gate)
        images01, labels, masks, records, data_kind, n_skipped = _load_data(data, bundle, split)
        out.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails now, not after the inference
        context = {"model": bundle.name, "bundle": str(bundle.root), "engine": runner.engine, "data": str(data),
                   "data_kind": data_kind, "split": (split or "val") if data_kind == "cache" else "all"}
        if n_skipped:  # the report says what it does not cover, not only the screen
            context["files_skipped"] = f"{n_skipped} unreadable or missing file(s) left out"
        repeats = len(records) - len({(r["path"], r["slice"]) for r in records})
        if repeats:
            warn(f"{repeats} image(s) listed more than once: each listing is scored")
            context["repeated_images"] = repeats
        from ..evaluation.overlap import bundle_data_overlap

        raw_paths = [r["path"] for r in records] if data_kind != "cache" else []
        overlap = bundle_data_overlap(bundle, data, data_kind, context["split"], raw_paths)
        if overlap:
            warn(overlap)
            context["training_overlap"] = overlap
        if tumour_gate is not None:  # a gate that saw these images empties their masks too well
            gate_overlap = bundle_data_overlap(tumour_gate.bundle, data, data_kind, context["split"], raw_paths)
            if gate_overlap:
                warn(f"the gate {tumour_gate.bundle.name}: {gate_overlap}")
                context["gate_training_overlap"] = gate_overlap
        if bundle.task == "classify":
            context["temperature"] = bundle.temperature  # the probabilities scored are the calibrated ones
            _evaluate_classifier(runner, images01, labels, records, out, context, explain=explain,
                                 batch_size=batch_size, n_boot=bootstrap)
        else:
            _evaluate_segmenter(runner, images01, masks, records, out, context, batch_size=batch_size,
                                threshold=threshold, min_component=min_component, tumour_gate=tumour_gate)
    console.print(f"report written to {out / 'report.md'}", highlight=False, soft_wrap=True)


def _check_options_fit_task(bundle, *, explain: int, threshold, min_component, gate) -> None:
    """An option the model's task has no use for is refused, not silently ignored."""
    from ..errors import NeuralScanError

    if bundle.task == "classify":
        given = [name for name, v in (("--threshold", threshold), ("--min-component", min_component),
                                      ("--gate", gate)) if v is not None]
        if given:
            raise NeuralScanError(f"{', '.join(given)}: for segmenters, and {bundle.name} is a classifier")
    elif explain:
        raise NeuralScanError(f"--explain: Grad-CAM is for classifiers, and {bundle.name} is a segmenter (its "
                              "masks and the worst-case overlays show where it looks)")


@contextlib.contextmanager
def _removed_if_empty_on_error(out: Path):
    """A failed evaluation leaves no empty --out folder behind (one it did not create is left alone)."""
    existed = out.exists()
    try:
        yield
    except BaseException:
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _load_data(data: Path, bundle, split: str | None):
    from ..inference import load_data_for_bundle

    problems: list[str] = []
    loaded = load_data_for_bundle(data, bundle, split, on_warning=warn, on_problem=problems.append)
    if problems:
        print_problems(f"[yellow]warning:[/] {len(problems)} file(s) skipped:", problems, MAX_PROBLEMS_SHOWN)
    return (*loaded, len(problems))


def _predict(runner, images01: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """Outputs for every image, with a progress bar; also the wall time in seconds."""
    t0 = time.perf_counter()
    parts = []
    with progress_bar(transient=True) as bar:
        task = bar.add_task(f"scoring ({runner.engine})", total=len(images01), rate="")
        for start in range(0, len(images01), PREDICT_CHUNK):
            parts.append(runner.predict(images01[start:start + PREDICT_CHUNK], batch_size=batch_size))
            done = min(start + PREDICT_CHUNK, len(images01))
            bar.update(task, completed=done, rate=f"{done / max(time.perf_counter() - t0, 1e-9):.0f} img/s")
    return np.concatenate(parts), time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- classifier

def _evaluate_classifier(runner, images01, labels, records, out: Path, context: dict, *, explain: int,
                         batch_size: int, n_boot: int) -> None:
    from ..errors import NeuralScanError
    from ..evaluation import classification_report

    bundle = runner.bundle
    if labels is None:
        raise NeuralScanError(f"{context['data']}: the images carry no labels; evaluation needs labelled images")
    partial_of = bundle.partial_labels
    is_partial = np.array([r["label"] in partial_of for r in records], dtype=bool)
    labelled = labels >= 0
    if not (labelled | is_partial).all():
        warn(f"{int((~(labelled | is_partial)).sum())} unlabelled image(s) left out")
        context["unlabelled_left_out"] = int((~(labelled | is_partial)).sum())
    if not labelled.any():
        raise NeuralScanError(f"{context['data']}: no image is labelled with one of the model's classes "
                              f"({', '.join(bundle.classes)})")
    partial, partial_rows = None, []
    if is_partial.any():  # e.g. Br35H `tumor`: right when any tumour type is predicted; reported apart
        from ..data.labels import label_sets
        from ..evaluation import partial_label_metrics

        p_idx = np.nonzero(is_partial)[0]
        names = [records[i]["label"] for i in p_idx]
        p_probs, _ = _predict(runner, images01[p_idx], batch_size)
        partial = partial_label_metrics(names, label_sets(names, bundle.classes, partial_of), p_probs,
                                        bundle.classes)
        partial_rows = [(records[i], name, p) for i, name, p in zip(p_idx, names, p_probs)]
    idx = np.nonzero(labelled)[0]
    images01, y_true = images01[idx], labels[idx]
    records = [records[i] for i in idx]
    if explain and not bundle.has_keras:
        warn(f"--explain needs the Keras model, and bundle {bundle.root} holds none (only "
              f"{', '.join(bundle.available_engines())}); no Grad-CAM images will be written")
        explain = 0
    probs, seconds = _predict(runner, images01, batch_size)
    context |= {"n_images": len(idx), "seconds": round(seconds, 3), "images_per_second": round(len(idx) / seconds, 1)}
    groups = np.array([str(r["group"]) for r in records])
    metrics = classification_report(out, y_true, probs, bundle.classes, records, groups=groups, n_boot=n_boot,
                                    context=context, partial=partial, partial_rows=partial_rows)
    _print_classification(metrics, context)
    if explain:
        from ..evaluation.report import GRADCAM_DIR, append_report_figures

        written = _write_gradcam(runner, images01, y_true, probs, records, out / GRADCAM_DIR, explain)

        append_report_figures(out / "report.md", "Grad-CAM", {p.stem: p.relative_to(out).as_posix() for p in written},
                              "Where the network looked for its call: the most confident mistakes first, then the "
                              "most confident correct calls.")


def _print_classification(m: dict, context: dict) -> None:
    def ci(v):
        return f" [dim](95% CI {v[0]:.3f}-{v[1]:.3f})[/]" if v and v[0] is not None else ""

    def num(v):
        return "n/a" if v is None else f"{v:.3f}"

    console.print(f"[bold]{context['model']}[/] on {context['data']} ({context['data_kind']}, split "
                  f"{context['split']}): {m['n']} images, engine {context['engine']}, "
                  f"{context['images_per_second']:.0f} img/s", highlight=False, soft_wrap=True)
    console.print(f"accuracy [bold]{num(m['accuracy'])}[/]{ci(m['accuracy_ci'])}   macro-F1 [bold]"
                  f"{num(m['macro_f1'])}[/]{ci(m['macro_f1_ci'])}   ROC AUC {num(m['roc_auc_ovr'])}   "
                  f"ECE {num(m['ece'])}", highlight=False, soft_wrap=True)
    if "tumor_vs_no_tumor" in m:
        b = m["tumor_vs_no_tumor"]
        extra = f"tumour-type accuracy {num(m['tumor_type_accuracy'])}   " if "tumor_type_accuracy" in m else ""
        console.print(f"{extra}tumour vs no tumour: sensitivity {num(b['sensitivity'])}, "
                      f"specificity {num(b['specificity'])}", highlight=False, soft_wrap=True)
    for name, p in (m.get("partial_labels") or {}).items():
        console.print(f"{name} (= one of {', '.join(p['classes'])}): {p['n']} images, "
                      f"{num(p['in_set_rate'])} predicted in that set", highlight=False, soft_wrap=True)
    table = Table(title_justify="left")
    table.add_column("class")
    for col in ("sensitivity", "specificity", "precision", "F1", "support"):
        table.add_column(col, justify="right")
    for name, c in m["per_class"].items():
        table.add_row(name, num(c["sensitivity"]), num(c["specificity"]), num(c["precision"]), num(c["f1"]),
                      str(c["support"]))
    console.print(table)


def _write_gradcam(runner, images01, y_true, probs, records, out_dir: Path, n: int) -> list[Path]:
    from ..evaluation import grad_cam, save_gradcam_overlays
    from ..inference import KerasRunner, load_keras_model

    classes = runner.bundle.classes
    pred = probs.argmax(1)
    conf = probs.max(1)
    wrong = np.nonzero(pred != y_true)[0]
    right = np.nonzero(pred == y_true)[0]
    # the most confident mistakes teach the most; then the most confident correct calls for comparison
    order = np.concatenate([wrong[np.argsort(-conf[wrong], kind="stable")],
                            right[np.argsort(-conf[right], kind="stable")]])[:n]
    keras_model = runner.model if isinstance(runner, KerasRunner) else load_keras_model(runner.bundle)
    heatmaps = grad_cam(keras_model, images01[order], class_index=pred[order])
    titles = [f"{Path(records[i]['path']).name}: true {classes[y_true[i]]}, predicted {classes[pred[i]]} "
              f"({conf[i]:.2f})" for i in order]
    written = save_gradcam_overlays(images01[order], heatmaps, [records[i]["path"] for i in order], out_dir, titles)
    console.print(f"Grad-CAM for {len(written)} image(s) ({int(min(len(wrong), n))} misclassified) in {out_dir}",
                  highlight=False, soft_wrap=True)
    return written


# ----------------------------------------------------------------------------------------------- segmenter

def _evaluate_segmenter(runner, images01, masks, records, out: Path, context: dict, *, batch_size: int,
                        threshold: float | None, min_component: float | None, tumour_gate) -> None:
    from ..errors import NeuralScanError
    from ..evaluation import segmentation_report, segmentation_truth_rows
    from ..inference.segmentation import postprocess_masks

    keep = segmentation_truth_rows([r["has_mask"] for r in records], [r["label"] for r in records])
    if not keep.any():
        raise NeuralScanError(f"{context['data']}: no image has a tumour mask (or the label no_tumor), so there is "
                              "nothing to compare a segmentation with")
    if not keep.all():
        warn(f"{int((~keep).sum())} image(s) without a mask and not labelled no_tumor left out (unannotated)")
        context["unannotated_left_out"] = int((~keep).sum())
    idx = np.nonzero(keep)[0]
    images01 = images01[idx]
    truth = masks[idx] if masks is not None else np.zeros(images01.shape, np.uint8)
    records = [records[i] for i in idx]
    if not truth.reshape(len(truth), -1).any(axis=1).any():
        note = ("no image has a tumour mask: the Dice and IoU figures only say how often no-tumour images got an "
                "empty mask, not how well tumours are outlined")
        warn(note)
        context["note"] = note
    probs, seconds = _predict(runner, images01, batch_size)
    context |= {"n_images": len(idx), "seconds": round(seconds, 3), "images_per_second": round(len(idx) / seconds, 1)}
    # the masks `segment` would write: the model's threshold and small-blob rule unless overridden
    bundle = runner.bundle
    threshold = bundle.postprocessing["threshold"] if threshold is None else threshold
    min_component = bundle.postprocessing["min_component"] if min_component is None else min_component
    context["threshold"] = threshold
    context["min_component"] = min_component
    probs = postprocess_masks(probs, threshold, bundle.min_component_pixels(min_component)).astype(np.float32)
    context["gate"] = None  # null in metrics.json; report.md and the screen say "none"
    if tumour_gate is not None:
        absent = tumour_gate.absent(images01, batch_size=batch_size)
        probs[absent] = 0.0
        context["gate"] = f"{tumour_gate.bundle.name} ({tumour_gate.runner.engine}): {int(absent.sum())} masks emptied"
    m = segmentation_report(out, images01, truth, probs, records, spacing=[r["spacing"] for r in records],
                            threshold=threshold, context=context)
    _print_segmentation(m, context)


def _print_segmentation(m: dict, context: dict) -> None:
    def num(v):
        return "n/a" if v is None else f"{v:.3f}"

    console.print(f"[bold]{context['model']}[/] on {context['data']} ({context['data_kind']}, split "
                  f"{context['split']}): {m['n']} images ({m['n_tumor']} with tumour), engine {context['engine']}, "
                  f"{context['images_per_second']:.0f} img/s", highlight=False, soft_wrap=True)
    gate = f"gated by {context['gate']}" if context["gate"] else "no gate"
    console.print(f"threshold {context['threshold']:g}, smallest blob kept {context['min_component']:g} of the image, "
                  f"{gate}", highlight=False, soft_wrap=True)
    table = Table(title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [("Dice, mean", m["dice_mean"]), ("Dice, median", m["dice_median"]),
            ("Dice, mean over tumour images", m["dice_mean_tumor"]), ("IoU, mean", m["iou_mean"]),
            (f"HD95, median ({m['hd95_unit']})", m["hd95_median"]),
            ("detection rate (Dice > 0.5)", m["detection_rate"]),
            ("empty predicted empty", m["empty_mask_rate_no_tumor"]),
            ("false-positive area on empty (px)", m["false_positive_area_px_mean"])]
    px = f"px of the {m['pixel_grid']} input" if m.get("pixel_grid") else "px"
    rows = [(name.replace("(px)", f"({px})"), v) for name, v in rows]
    rows += [(f"Dice, {k}", v) for k, v in m["dice_per_class"].items()]
    for name, v in rows:
        table.add_row(name, num(v))
    console.print(table)
