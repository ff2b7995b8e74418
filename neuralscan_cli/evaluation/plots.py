"""Evaluation figures as PNG files.

Figures are drawn on matplotlib `Figure` objects with the Agg canvas directly, never through pyplot, so no
global backend is switched, nothing needs a display, and no figure is left open.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .metrics import reliability_bins

DPI = 110


def _new_figure(width: float, height: float, layout: str | None = None) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def plot_confusion_matrix(cm, classes: Sequence[str], path: str | Path) -> Path:
    """Counts (left) and row-normalised shares, i.e. per-class recall along the diagonal (right)."""
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(rows > 0, cm / rows, 0.0)
    n = len(classes)
    side = 2.2 + 0.6 * n
    fig = _new_figure(2 * side + 1.5, side, layout="constrained")
    for ax, values, title, fmt in ((fig.add_subplot(1, 2, 1), cm, "counts", "{:.0f}"),
                                   (fig.add_subplot(1, 2, 2), norm, "share of true class", "{:.2f}")):
        scaled = values / values.max() if values.max() > 0 else values
        ax.imshow(scaled, cmap="Blues", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=9,
                        color="white" if scaled[i, j] > 0.5 else "black")
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    return _save(fig, path)


def plot_roc_curves(y_true, probs, classes: Sequence[str], path: str | Path) -> Path:
    """One-vs-rest ROC curve per class (classes with no positives or no negatives are left out)."""
    from sklearn.metrics import auc, roc_curve

    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    fig = _new_figure(5.5, 5)
    ax = fig.add_subplot(1, 1, 1)
    for k, name in enumerate(classes):
        pos = y_true == k
        if not pos.any() or pos.all():
            continue
        fpr, tpr, _ = roc_curve(pos, probs[:, k])
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title("ROC, one class vs the rest")
    if ax.get_legend_handles_labels()[1]:  # one class only: no curve, and no legend to draw
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no curve: the data hold one class", ha="center", va="center", fontsize=9)
    return _save(fig, path)


def plot_reliability(y_true, probs, path: str | Path, n_bins: int = 15, ece: float | None = None) -> Path:
    """Accuracy against mean confidence per confidence bin, with the share of images per bin below."""
    r = reliability_bins(y_true, probs, n_bins)
    centres = (r["edges"][:-1] + r["edges"][1:]) / 2
    width = 1.0 / n_bins
    used = r["count"] > 0
    fig = _new_figure(5.5, 6)
    ax = fig.add_axes((0.12, 0.35, 0.83, 0.58))
    ax.bar(centres[used], r["accuracy"][used], width=width * 0.9, color="tab:blue", edgecolor="black",
           linewidth=0.5, label="accuracy")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    ax.plot(r["confidence"][used], r["accuracy"][used], "o", color="tab:red", markersize=4,
            label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("reliability diagram" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    ax.legend(loc="upper left", fontsize=8)
    ax.tick_params(labelbottom=False)
    hist = fig.add_axes((0.12, 0.08, 0.83, 0.22), sharex=ax)
    total = r["count"].sum() or 1
    hist.bar(centres, r["count"] / total, width=width * 0.9, color="grey")
    hist.set_xlabel("confidence (top-class probability)")
    hist.set_ylabel("share of images")
    return _save(fig, path)


def plot_segmentation_overlay(image01: np.ndarray, mask_true: np.ndarray, mask_pred: np.ndarray,
                              path: str | Path, title: str = "") -> Path:
    """The scan in grey, the truth outlined in green and the prediction in red."""
    fig = _new_figure(4, 4.3)
    ax = fig.add_axes((0, 0, 1, 0.92))
    ax.imshow(np.asarray(image01), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for mask, colour in ((mask_true, "lime"), (mask_pred, "red")):
        m = np.asarray(mask) > 0
        if m.any() and not m.all():
            ax.contour(m.astype(float), levels=[0.5], colors=colour, linewidths=1.2)
    ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
