"""Classification and segmentation metrics from arrays (labels, probabilities, masks); no model code here.

Conventions:
  * y_true are class indices (0..C-1); probs are (N, C) probabilities; the prediction is the argmax.
  * Undefined ratios (a class with no support, no predictions) are None in the returned dicts, except precision
    and F1, which follow scikit-learn's zero_division=0 (0.0), so macro-F1 matches sklearn's.
  * Macro-F1 averages over the classes present in the truth or the predictions (sklearn's default).
  * Every returned dict is JSON-ready: Python floats/ints/None, never NaN.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

ECE_BINS = 15
NO_TUMOR = "no_tumor"


def _f(x) -> float | None:
    """A JSON-safe float: None for NaN/inf/None."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _ratio(num, den) -> float | None:
    return float(num) / float(den) if den else None


# ------------------------------------------------------------------------------------------ classification

def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(C, C) counts, rows = truth, columns = prediction."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def macro_f1(y_true, y_pred, n_classes: int | None = None) -> float:
    """Mean per-class F1 over the classes present in the truth or the predictions (as sklearn's f1_score)."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if len(y_true) == 0:
        return float("nan")
    n_classes = n_classes or int(max(y_true.max(), y_pred.max())) + 1
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)  # 2tp + fp + fn
    present = denom > 0
    return float(np.mean(2 * tp[present] / denom[present]))


def reliability_bins(y_true, probs, n_bins: int = ECE_BINS) -> dict:
    """Equal-width confidence bins of the top-class probability: count, mean confidence and accuracy per bin.

    Bin k holds confidences in [k/n, (k+1)/n); a confidence of exactly 1 falls in the last bin.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    conf = probs.max(1)
    correct = (probs.argmax(1) == y_true).astype(float)
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / count
        acc = np.bincount(b, weights=correct, minlength=n_bins) / count
    return {"edges": np.linspace(0, 1, n_bins + 1), "count": count, "confidence": mean_conf, "accuracy": acc}


def expected_calibration_error(y_true, probs, n_bins: int = ECE_BINS) -> float:
    """ECE = sum over bins of (share of images in the bin) * |accuracy - mean confidence|."""
    if len(y_true) == 0:
        return float("nan")
    r = reliability_bins(y_true, probs, n_bins)
    used = r["count"] > 0
    return float(np.sum(r["count"][used] / r["count"].sum() * np.abs(r["accuracy"][used] - r["confidence"][used])))


def roc_auc_ovr(y_true, probs) -> float | None:
    """Macro one-vs-rest ROC AUC (mean of each class's AUC against the rest); None if any class is absent."""
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = probs.shape[1]
    aucs = []
    for k in range(n_classes):
        pos = y_true == k
        if pos.all() or not pos.any():
            return None
        aucs.append(roc_auc_score(pos, probs[:, k]))
    # two classes: class 1's AUC and class 0's AUC are equal, so the mean is the usual binary AUC
    return float(np.mean(aucs))


def _per_class_auc(y_true, probs) -> list[float | None]:
    from sklearn.metrics import roc_auc_score

    out = []
    for k in range(probs.shape[1]):
        pos = y_true == k
        out.append(float(roc_auc_score(pos, probs[:, k])) if 0 < pos.sum() < len(pos) else None)
    return out


def bootstrap_ci(y_true, y_pred, metric_fn: Callable[[np.ndarray, np.ndarray], float], n_boot: int = 1000,
                 seed: int = 0, groups=None, level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of metric_fn(y_true, y_pred).

    With `groups`, whole groups (patients, duplicate sets) are resampled with replacement, since slices of one
    patient are not independent and resampling them one by one gives intervals that are too narrow.
    Resamples where the metric is undefined (NaN) are dropped.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = len(y_true)
    if n == 0 or n_boot <= 0:
        return None, None
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    if groups is None:
        for b in range(n_boot):
            idx = rng.integers(0, n, n)
            values[b] = metric_fn(y_true[idx], y_pred[idx])
    else:
        _, gid = np.unique(np.asarray(groups), return_inverse=True)
        gid = gid.ravel()
        n_groups = int(gid.max()) + 1
        order = np.arange(n)
        for b in range(n_boot):
            # how often each group is drawn, then every member repeated that often
            times = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
            idx = np.repeat(order, times[gid])
            values[b] = metric_fn(y_true[idx], y_pred[idx])
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None, None
    alpha = (1 - level) / 2
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def tumor_metrics(y_true, probs, classes: Sequence[str]) -> dict:
    """Metrics for a model with a `no_tumor` class next to tumour-type classes.

    tumor_type_accuracy: over the images whose truth is a tumour type only, the share whose tumour type is
      right when the type is chosen as the argmax over the tumour-type columns alone (the no_tumor column is
      ignored). It measures "given a tumour, is its type right", independent of tumour-vs-no-tumour errors.
      Present only with at least two tumour types.
    tumor_vs_no_tumor: the model's usual argmax read as binary, tumour = any tumour type predicted;
      sensitivity = share of tumour images predicted as some tumour type, specificity = share of no_tumor
      images predicted no_tumor.
    """
    classes = list(classes)
    if NO_TUMOR not in classes or len(classes) < 2:
        return {}
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs)
    nt = classes.index(NO_TUMOR)
    tumour_cols = [k for k in range(len(classes)) if k != nt]
    is_tumour = y_true != nt
    out: dict = {}
    if len(tumour_cols) >= 2:
        sel = is_tumour
        type_pred = np.asarray(tumour_cols)[probs[sel][:, tumour_cols].argmax(1)]
        out["tumor_type_accuracy"] = _f(np.mean(type_pred == y_true[sel])) if sel.any() else None
        out["tumor_type_n"] = int(sel.sum())
    pred_tumour = probs.argmax(1) != nt
    out["tumor_vs_no_tumor"] = {
        "sensitivity": _ratio(np.sum(pred_tumour & is_tumour), np.sum(is_tumour)),
        "specificity": _ratio(np.sum(~pred_tumour & ~is_tumour), np.sum(~is_tumour)),
        "n_tumor": int(is_tumour.sum()), "n_no_tumor": int((~is_tumour).sum()),
    }
    return out


def partial_label_metrics(label_names: Sequence[str], sets, probs, classes: Sequence[str]) -> dict:
    """Per partial label (a label naming a set of classes, e.g. Br35H's untyped `tumor`; see data.labels):
    n, its classes, in_set_rate (share predicted as one of them: for `tumor`, the tumour detection rate on
    those images) and how many were predicted as each class."""
    label_names = np.asarray(label_names, dtype=object)
    sets, probs = np.asarray(sets), np.asarray(probs)
    pred = probs.argmax(1)
    out = {}
    for name in sorted(set(label_names.tolist())):
        rows = np.nonzero(label_names == name)[0]
        members = [classes[k] for k in np.nonzero(sets[rows[0]] > 0)[0]]
        hits = sets[rows, pred[rows]] > 0
        counts = np.bincount(pred[rows], minlength=len(classes))
        out[str(name)] = {"n": int(len(rows)), "classes": members, "in_set_rate": _f(hits.mean()),
                          "predicted": {c: int(counts[k]) for k, c in enumerate(classes)}}
    return out


def classification_metrics(y_true, probs, classes: Sequence[str], *, groups=None, n_boot: int = 1000,
                           seed: int = 0) -> dict:
    """Every classification metric of the report (see the module notes for conventions)."""
    classes = list(classes)
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes) or len(probs) != len(y_true):
        raise ValueError(f"probs must be (N, {len(classes)}) for {len(y_true)} labels, got {probs.shape}")
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= len(classes)):
        raise ValueError("y_true holds class indices outside 0..C-1")
    n_classes = len(classes)
    y_pred = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm)
    support = cm.sum(1)
    predicted = cm.sum(0)
    n = int(len(y_true))
    per_class = {}
    aucs = _per_class_auc(y_true, probs) if n else [None] * n_classes
    for k, name in enumerate(classes):
        fn, fp = support[k] - tp[k], predicted[k] - tp[k]
        tn = n - tp[k] - fn - fp
        precision = tp[k] / predicted[k] if predicted[k] else 0.0
        per_class[name] = {
            "sensitivity": _ratio(tp[k], support[k]),
            "specificity": _ratio(tn, tn + fp),
            "precision": float(precision),
            "f1": float(2 * tp[k] / (2 * tp[k] + fp + fn)) if (2 * tp[k] + fp + fn) else 0.0,
            "support": int(support[k]),
            "auc": aucs[k],
        }

    def f1_fn(t, p):
        return macro_f1(t, p, n_classes)

    out = {
        "n": n,
        "classes": classes,
        "accuracy": _f(accuracy(y_true, y_pred)),
        "accuracy_ci": list(bootstrap_ci(y_true, y_pred, accuracy, n_boot, seed, groups)),
        "macro_f1": _f(macro_f1(y_true, y_pred, n_classes)),
        "macro_f1_ci": list(bootstrap_ci(y_true, y_pred, f1_fn, n_boot, seed, groups)),
        "roc_auc_ovr": roc_auc_ovr(y_true, probs) if n else None,
        "ece": _f(expected_calibration_error(y_true, probs)),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
        "bootstrap": {"n_boot": int(n_boot), "level": 0.95, "seed": int(seed),
                      "unit": "group" if groups is not None else "image",
                      "n_units": int(len(np.unique(np.asarray(groups)))) if groups is not None else n},
    }
    out.update(tumor_metrics(y_true, probs, classes))
    return out


# -------------------------------------------------------------------------------------------- segmentation

def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it (the image border counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff95(truth: np.ndarray, pred: np.ndarray, spacing: tuple[float, float] | None = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the two masks' boundaries.

    The larger of the two directed 95th percentiles (truth boundary -> nearest prediction boundary pixel and
    back), in pixels or, with spacing (row, col), in mm. NaN when either mask is empty.
    """
    truth, pred = truth.astype(bool), pred.astype(bool)
    if not truth.any() or not pred.any():
        return float("nan")
    # the distance transforms only need the region around both masks (plus a margin for the border)
    rows, cols = np.nonzero(truth | pred)
    r0, r1 = max(rows.min() - 1, 0), rows.max() + 2
    c0, c1 = max(cols.min() - 1, 0), cols.max() + 2
    t, p = _boundary(truth)[r0:r1, c0:c1], _boundary(pred)[r0:r1, c0:c1]
    sampling = None if spacing is None else tuple(float(s) for s in spacing)
    to_pred = ndimage.distance_transform_edt(~p, sampling=sampling)
    to_truth = ndimage.distance_transform_edt(~t, sampling=sampling)
    return float(max(np.percentile(to_pred[t], 95), np.percentile(to_truth[p], 95)))


def _spacing_per_case(spacing, n: int) -> list[tuple[float, float] | None]:
    """None, one (row, col) spacing for all, or one per case (None/NaN entries: unknown -> pixels)."""
    if spacing is None:
        return [None] * n
    if len(spacing) == 2 and all(np.isscalar(s) for s in spacing):
        spacing = [spacing] * n
    out = []
    for s in spacing:
        ok = s is not None and np.all(np.isfinite(np.asarray(s, dtype=float)))
        out.append((float(s[0]), float(s[1])) if ok else None)
    return out


def dice_per_image(masks_true, probs, threshold: float = 0.5) -> np.ndarray:
    """Hard Dice per image: truth > 0 against probability > threshold (a boolean mask works too); an empty
    truth predicted empty scores 1. The one Dice every command, the training loop and the bench report."""
    truth = np.asarray(masks_true)
    truth = truth.reshape(len(truth), -1) > 0
    pred = np.asarray(probs)
    pred = (pred.reshape(len(pred), -1) > threshold) if pred.dtype != bool else pred.reshape(len(pred), -1)
    if truth.shape != pred.shape:
        raise ValueError(f"masks {truth.shape} and predictions {pred.shape} differ in size")
    inter = np.logical_and(truth, pred).sum(1).astype(np.float64)
    total = truth.sum(1) + pred.sum(1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * inter / total, 1.0)


def segmentation_per_case(masks_true, probs, spacing=None, threshold: float = 0.5) -> dict:
    """Per-image Dice, IoU, HD95 (NaN when either mask is empty) and areas (pixels), as numpy arrays.

    Dice and IoU of an empty truth and an empty prediction are 1 (the model correctly found nothing).
    With spacing, HD95 is in mm only when every case's spacing is known, else all cases are in pixels
    (mixing units in one median would mean nothing); `hd95_unit` says which.
    """
    truth = np.asarray(masks_true) > 0
    pred = np.asarray(probs)
    if pred.ndim == 4:
        pred = pred[..., 0]
    if truth.ndim == 4:
        truth = truth[..., 0]
    pred = pred > threshold
    if truth.shape != pred.shape:
        raise ValueError(f"masks {truth.shape} and predictions {pred.shape} differ in shape")
    inter = np.logical_and(truth, pred).sum((1, 2)).astype(np.float64)
    area_true = truth.sum((1, 2)).astype(np.float64)
    area_pred = pred.sum((1, 2)).astype(np.float64)
    union = area_true + area_pred - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(area_true + area_pred > 0, 2 * inter / (area_true + area_pred), 1.0)
        iou = np.where(union > 0, inter / union, 1.0)
    spacings = _spacing_per_case(spacing, len(truth))
    in_mm = spacing is not None and all(s is not None for s in spacings)
    hd95 = np.array([hausdorff95(t, p, s if in_mm else None) if at > 0 and ap > 0 else np.nan
                     for t, p, s, at, ap in zip(truth, pred, spacings, area_true, area_pred)], dtype=np.float64)
    return {"dice": dice, "iou": iou, "hd95": hd95, "area_true": area_true, "area_pred": area_pred,
            "hd95_unit": "mm" if in_mm else "px"}


def segmentation_metrics(masks_true, probs, labels=None, class_names=None, spacing=None, threshold: float = 0.5,
                         cases: dict | None = None) -> dict:
    """Summary segmentation metrics (pass `cases` from `segmentation_per_case` to avoid computing them twice).

    dice_mean/median and iou_mean are over all images (empty truth counts: 1 if predicted empty, else 0);
    dice_mean_tumor is over images with a non-empty truth; hd95_median over images where both masks are non-empty;
    detection_rate is the share of non-empty-truth images with Dice > 0.5; empty_mask_rate_no_tumor the share of
    empty-truth images predicted empty; false_positive_area_px_mean the mean predicted area on empty-truth images.
    dice_per_class: mean Dice per label (labels as names, or indices into class_names).
    """
    c = cases if cases is not None else segmentation_per_case(masks_true, probs, spacing, threshold)
    dice, iou, hd95 = c["dice"], c["iou"], c["hd95"]
    tumour = c["area_true"] > 0
    empty = ~tumour
    finite_hd = hd95[np.isfinite(hd95)]
    out = {
        "n": int(len(dice)),
        "n_tumor": int(tumour.sum()),
        "n_empty": int(empty.sum()),
        "threshold": float(threshold),
        "dice_mean": _f(dice.mean()) if len(dice) else None,
        "dice_median": _f(np.median(dice)) if len(dice) else None,
        "dice_mean_tumor": _f(dice[tumour].mean()) if tumour.any() else None,
        "iou_mean": _f(iou.mean()) if len(iou) else None,
        "hd95_median": _f(np.median(finite_hd)) if len(finite_hd) else None,
        "hd95_unit": c["hd95_unit"],
        "hd95_n": int(len(finite_hd)),
        "detection_rate": _f(np.mean(dice[tumour] > 0.5)) if tumour.any() else None,
        "empty_mask_rate_no_tumor": _f(np.mean(c["area_pred"][empty] == 0)) if empty.any() else None,
        "false_positive_area_px_mean": _f(c["area_pred"][empty].mean()) if empty.any() else None,
        "dice_per_class": {},
    }
    if labels is not None:
        names = [class_names[int(v)] if class_names is not None and not isinstance(v, str) and int(v) >= 0
                 else str(v) for v in labels]
        names = np.array(names, dtype=object)
        for name in sorted(set(names.tolist()) - {""}):
            sel = names == name
            out["dice_per_class"][name] = _f(dice[sel].mean())
    return out


def segmentation_truth_rows(has_mask, label_names) -> np.ndarray:
    """Which images have a segmentation truth: those with a mask, and unannotated no_tumor images (truth empty).

    Other images without a mask are unannotated, not tumour-free, so they must not be scored.
    """
    has_mask = np.asarray(has_mask, dtype=bool)
    no_tumour = np.array([name == NO_TUMOR for name in label_names], dtype=bool)
    return has_mask | no_tumour
