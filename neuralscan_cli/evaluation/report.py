"""The evaluation report folder: metrics.json, predictions.csv, figures and report.md, from arrays.

    classification_report(out_dir, y_true, probs, classes, records, groups=...)
    segmentation_report(out_dir, images01, masks_true, probs, records, ...)

`records` are one dict per image with at least `path`, `slice` and `label` (as the inference loaders give).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .metrics import classification_metrics, segmentation_metrics, segmentation_per_case
from .plots import plot_confusion_matrix, plot_reliability, plot_roc_curves, plot_segmentation_overlay

CONFUSION_PNG = "confusion_matrix.png"
ROC_PNG = "roc_curves.png"
RELIABILITY_PNG = "reliability.png"
WORST_DIR = "worst"
GRADCAM_DIR = "gradcam"


def clear_earlier_report(out_dir: str | Path) -> None:
    """Remove the figures an earlier evaluation wrote into `out_dir` (a rerun into the same folder must not
    leave old Grad-CAM or worst-case images beside a report that no longer names them); other files stay.
    Called when the new report is about to be written, and only where an evaluation's metrics.json is."""
    out_dir = Path(out_dir)
    if not (out_dir / "metrics.json").is_file():
        return
    for name in (CONFUSION_PNG, ROC_PNG, RELIABILITY_PNG):
        (out_dir / name).unlink(missing_ok=True)
    for sub in (WORST_DIR, GRADCAM_DIR):
        folder = out_dir / sub
        if folder.is_dir():
            for png in folder.glob("*.png"):
                png.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_metrics_json(metrics: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, default=_jsonable))
    return path


def _num(v, digits: int = 4) -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}g}"


def write_classification_predictions(path: str | Path, records: Sequence[dict], y_true, probs,
                                     classes: Sequence[str], partial_rows: Sequence[tuple] = ()) -> Path:
    """One row per image: path, slice, true label, predicted label, confidence, p_<class> for each class.
    `partial_rows`: (record, label, probs) of images whose label names a set of classes (Br35H `tumor`); they
    follow, with that label as the true label, so their misses can be found too."""
    path = Path(path)
    rows = [(r, classes[int(t)] if int(t) >= 0 else "", p) for r, t, p in zip(records, y_true, np.asarray(probs))]
    rows += [(r, label, np.asarray(p)) for r, label, p in partial_rows]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "slice", "true_label", "predicted_label", "confidence", *[f"p_{c}" for c in classes]])
        for r, true_label, row in rows:
            p = int(row.argmax())
            w.writerow([r["path"], r["slice"], true_label, classes[p], f"{row[p]:.6f}", *[f"{v:.6f}" for v in row]])
    return path


def write_segmentation_predictions(path: str | Path, records: Sequence[dict], cases: dict) -> Path:
    """One row per image: path, slice, label, dice, iou, hd95 (empty when undefined), area_true, area_pred (px)."""
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "slice", "label", "dice", "iou", f"hd95_{cases['hd95_unit']}", "area_true", "area_pred"])
        for k, r in enumerate(records):
            w.writerow([r["path"], r["slice"], r.get("label", ""), f"{cases['dice'][k]:.6f}", f"{cases['iou'][k]:.6f}",
                        _num(cases["hd95"][k], 6), int(cases["area_true"][k]), int(cases["area_pred"][k])])
    return path


def _ci(ci) -> str:
    return f" ({ci[0]:.3f} to {ci[1]:.3f})" if ci and ci[0] is not None else ""


def _md_link(caption: str, rel: str, image: bool) -> str:
    """A Markdown link or image that survives spaces and brackets in file names ("Y1 (2).jpg")."""
    caption = caption.replace("[", "(").replace("]", ")")
    return f"![{caption}](<{rel}>)" if image else f"- [{caption}](<{rel}>)"


def _context_lines(context: dict | None) -> list[str]:
    shown = {k: ("none" if k == "gate" and v is None else v) for k, v in (context or {}).items()}
    return [f"- {k}: {v}" for k, v in shown.items() if v not in (None, "")]


def write_report_md(path: str | Path, title: str, metrics: dict, figures: dict[str, str],
                    context: dict | None = None) -> Path:
    """A short human-readable summary: what was evaluated, a metrics table, links to the figures."""
    path = Path(path)
    lines = [f"# {title}", "", *_context_lines(context), ""]
    if "accuracy" in metrics:
        lines += ["| metric | value |", "|---|---|",
                  f"| images | {metrics['n']} |",
                  f"| accuracy (95% CI) | {_num(metrics['accuracy'])}{_ci(metrics.get('accuracy_ci'))} |",
                  f"| macro-F1 (95% CI) | {_num(metrics['macro_f1'])}{_ci(metrics.get('macro_f1_ci'))} |",
                  f"| ROC AUC (one-vs-rest, macro) | {_num(metrics.get('roc_auc_ovr')) or 'n/a'} |",
                  f"| ECE (15 bins) | {_num(metrics.get('ece'))} |"]
        if "tumor_type_accuracy" in metrics:
            lines.append(f"| tumour-type accuracy (tumour images) | {_num(metrics['tumor_type_accuracy'])} |")
        if "tumor_vs_no_tumor" in metrics:
            b = metrics["tumor_vs_no_tumor"]
            lines.append(f"| tumour vs no tumour: sensitivity / specificity | {_num(b['sensitivity'])} / "
                         f"{_num(b['specificity'])} |")
        lines += ["", f"Intervals: percentile bootstrap over {metrics['bootstrap']['unit']}s "
                      f"({metrics['bootstrap']['n_units']}), {metrics['bootstrap']['n_boot']} resamples.", "",
                  "| class | sensitivity | specificity | precision | F1 | support |", "|---|---|---|---|---|---|"]
        for name, c in metrics["per_class"].items():
            lines.append(f"| {name} | {_num(c['sensitivity'])} | {_num(c['specificity'])} | {_num(c['precision'])} "
                         f"| {_num(c['f1'])} | {c['support']} |")
        if metrics.get("partial_labels"):
            lines += ["", "Images whose label names a set of classes (not in the figures above):", "",
                      "| label | means one of | images | predicted in the set |", "|---|---|---|---|"]
            for name, p in metrics["partial_labels"].items():
                lines.append(f"| {name} | {', '.join(p['classes'])} | {p['n']} | {_num(p['in_set_rate'])} |")
    else:
        keys = ["n", "n_tumor", "n_empty", "dice_mean", "dice_median", "dice_mean_tumor", "iou_mean", "hd95_median",
                "detection_rate", "empty_mask_rate_no_tumor", "false_positive_area_px_mean"]
        lines += ["| metric | value |", "|---|---|"]
        for k in keys:
            v = metrics.get(k)
            unit = f" ({metrics['hd95_unit']})" if k == "hd95_median" else ""
            lines.append(f"| {k}{unit} | {v if isinstance(v, int) else (_num(v) or 'n/a')} |")
        if metrics.get("pixel_grid"):
            lines += ["", f"Pixel figures are pixels of the model's {metrics['pixel_grid']} input (the head-cropped, "
                          "resized slice), not of the source image."]
        if metrics.get("dice_per_class"):
            lines += ["", "| label | mean Dice |", "|---|---|"]
            lines += [f"| {k} | {_num(v)} |" for k, v in metrics["dice_per_class"].items()]
    if figures:
        lines += ["", "## Figures", ""]
        for caption, rel in figures.items():
            lines.append(_md_link(caption, rel, image=rel.endswith(".png")))
    lines += ["", "Per-image results: [predictions.csv](predictions.csv); all numbers: [metrics.json](metrics.json).",
              ""]
    path.write_text("\n".join(lines))
    return path


def append_report_figures(path: str | Path, heading: str, figures: dict[str, str], note: str = "") -> None:
    """Add a section of figures (caption -> path relative to the report) to an existing report.md."""
    lines = ["", f"## {heading}", "", *([note, ""] if note else [])]
    lines += [_md_link(caption, rel, image=True) for caption, rel in figures.items()]
    with open(path, "a") as fh:
        fh.write("\n".join(lines) + "\n")


def classification_report(out_dir: str | Path, y_true, probs, classes: Sequence[str], records: Sequence[dict], *,
                          groups=None, n_boot: int = 1000, seed: int = 0, context: dict | None = None,
                          partial: dict | None = None, partial_rows: Sequence[tuple] = ()) -> dict:
    """Compute the classification metrics and write metrics.json, predictions.csv, the three figures, report.md.
    `partial`: `partial_label_metrics` of images with a partial label, reported beside the rest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_earlier_report(out_dir)
    classes = list(classes)
    metrics = classification_metrics(y_true, probs, classes, groups=groups, n_boot=n_boot, seed=seed)
    if partial:
        metrics["partial_labels"] = partial
    plot_confusion_matrix(metrics["confusion_matrix"], classes, out_dir / CONFUSION_PNG)
    plot_roc_curves(y_true, probs, classes, out_dir / ROC_PNG)
    plot_reliability(y_true, probs, out_dir / RELIABILITY_PNG, ece=metrics["ece"])
    write_classification_predictions(out_dir / "predictions.csv", records, y_true, probs, classes, partial_rows)
    full = {"task": "classify", **metrics, "evaluated": context or {}}
    write_metrics_json(full, out_dir / "metrics.json")
    write_report_md(out_dir / "report.md", "Classification evaluation", metrics,
                    {"confusion matrix": CONFUSION_PNG, "ROC curves": ROC_PNG, "reliability": RELIABILITY_PNG},
                    context)
    return full


def worst_cases(cases: dict, n: int = 8) -> np.ndarray:
    """Indices of the n lowest-Dice images (ties: the larger area error first)."""
    area_error = np.abs(cases["area_true"] - cases["area_pred"])
    return np.lexsort((-area_error, cases["dice"]))[:n]


def segmentation_report(out_dir: str | Path, images01, masks_true, probs, records: Sequence[dict], *,
                        spacing=None, threshold: float = 0.5, n_worst: int = 8, context: dict | None = None) -> dict:
    """Compute the segmentation metrics and write metrics.json, predictions.csv, worst-case overlays, report.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_earlier_report(out_dir)
    cases = segmentation_per_case(masks_true, probs, spacing, threshold)
    labels = [r.get("label", "") for r in records]
    metrics = segmentation_metrics(masks_true, probs, labels=labels, cases=cases, threshold=threshold)
    # the pixels of the px figures (areas; HD95 without spacing): the model's input grid, not the source image
    metrics["pixel_grid"] = "x".join(str(int(n)) for n in np.asarray(masks_true).shape[1:3])
    pred = np.asarray(probs)
    pred = (pred[..., 0] if pred.ndim == 4 else pred) > threshold
    figures = {}
    for rank, k in enumerate(worst_cases(cases, n_worst), 1):
        r = records[k]
        name = f"{rank:02d}_{Path(r['path']).stem}_s{r['slice']}.png"
        plot_segmentation_overlay(images01[k], masks_true[k], pred[k], out_dir / WORST_DIR / name,
                                  f"{Path(r['path']).name} [{r.get('label') or '-'}]  Dice {cases['dice'][k]:.3f}")
        figures[f"worst {rank}: Dice {cases['dice'][k]:.3f}"] = f"{WORST_DIR}/{name}"
    write_segmentation_predictions(out_dir / "predictions.csv", records, cases)
    full = {"task": "segment", **metrics, "evaluated": context or {}}
    write_metrics_json(full, out_dir / "metrics.json")
    write_report_md(out_dir / "report.md", "Segmentation evaluation", metrics, figures, context)
    return full
