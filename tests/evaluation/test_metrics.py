"""Evaluation metrics against hand-computed values, and Grad-CAM on a tiny CNN."""
import numpy as np
import pytest

from neuralscan_cli.evaluation import (bootstrap_ci, classification_metrics, expected_calibration_error, grad_cam,
                                       hausdorff95, macro_f1, segmentation_metrics, segmentation_per_case,
                                       segmentation_truth_rows)
from neuralscan_cli.evaluation.metrics import accuracy

# 3 classes, 10 samples.
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
# confusion matrix (rows = truth):   class 0: [3, 1, 0]   class 1: [0, 2, 1]   class 2: [1, 0, 2]
# class 0: TP 3, FN 1, FP 1 (a 2 called 0), TN 10-3-1-1 = 5 -> sens 3/4, spec 5/6, prec 3/4, F1 6/8 = 0.75
# class 1: TP 2, FN 1, FP 1 (a 0 called 1), TN 6           -> sens 2/3, spec 6/7, prec 2/3, F1 4/6
# class 2: TP 2, FN 1, FP 1 (a 1 called 2), TN 6           -> sens 2/3, spec 6/7, prec 2/3, F1 4/6
# accuracy 7/10; macro-F1 (0.75 + 2/3 + 2/3) / 3 = 0.69444...
CLASSES = ["a", "b", "c"]


def _probs_for(pred, n_classes=3, conf=0.8):
    probs = np.full((len(pred), n_classes), (1 - conf) / (n_classes - 1))
    probs[np.arange(len(pred)), pred] = conf
    return probs


def test_classification_metrics_match_hand_computed_confusion_matrix():
    m = classification_metrics(Y_TRUE, _probs_for(Y_PRED), CLASSES, n_boot=200)
    assert m["n"] == 10
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["macro_f1"] == pytest.approx((0.75 + 2 / 3 + 2 / 3) / 3)
    a, b, c = (m["per_class"][k] for k in CLASSES)
    assert (a["sensitivity"], a["specificity"], a["precision"], a["f1"], a["support"]) == pytest.approx(
        (3 / 4, 5 / 6, 3 / 4, 0.75, 4))
    for cls in (b, c):
        assert (cls["sensitivity"], cls["specificity"], cls["precision"], cls["f1"], cls["support"]) == pytest.approx(
            (2 / 3, 6 / 7, 2 / 3, 2 / 3, 3))
    # every confidence is 0.8 (one bin) and accuracy is 0.7: ECE = |0.7 - 0.8|
    assert m["ece"] == pytest.approx(0.1)
    lo, hi = m["accuracy_ci"]
    assert lo <= 0.7 <= hi
    assert m["roc_auc_ovr"] is not None and 0 <= m["roc_auc_ovr"] <= 1


def test_macro_f1_and_auc_agree_with_sklearn():
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 4)) + 2 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, probs, list("wxyz"), n_boot=0)
    assert m["macro_f1"] == pytest.approx(f1_score(y, probs.argmax(1), average="macro"))
    assert m["roc_auc_ovr"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    # a class absent from the truth: AUC undefined
    assert classification_metrics(y[y != 3], probs[y != 3], list("wxyz"), n_boot=0)["roc_auc_ovr"] is None


def test_ece_two_bins():
    # 5 images at confidence 0.95, all right; 5 at 0.55, 3 right:
    # ECE = 0.5 * |1 - 0.95| + 0.5 * |0.6 - 0.55| = 0.05
    y = np.array([0] * 10)
    probs = np.array([[0.95, 0.05]] * 5 + [[0.55, 0.45]] * 3 + [[0.45, 0.55]] * 2)
    assert expected_calibration_error(y, probs) == pytest.approx(0.05)


def test_tumor_metrics_for_a_four_class_model():
    classes = ["glioma", "meningioma", "no_tumor", "pituitary"]
    y = np.array([0, 0, 1, 3, 2, 2])
    probs = np.array([
        [0.9, 0.05, 0.03, 0.02],  # glioma, right
        [0.3, 0.1, 0.6, 0.0],     # glioma called no_tumor; among tumour types glioma wins -> type right, missed
        [0.6, 0.3, 0.05, 0.05],   # meningioma called glioma -> type wrong, detected
        [0.1, 0.1, 0.1, 0.7],     # pituitary, right
        [0.1, 0.0, 0.9, 0.0],     # no_tumor, right
        [0.5, 0.2, 0.2, 0.1],     # no_tumor called glioma -> false alarm
    ])
    m = classification_metrics(y, probs, classes, n_boot=0)
    assert m["tumor_type_accuracy"] == pytest.approx(3 / 4)  # 4 tumour images; the meningioma one is wrong
    assert m["tumor_type_n"] == 4
    assert m["tumor_vs_no_tumor"]["sensitivity"] == pytest.approx(3 / 4)
    assert m["tumor_vs_no_tumor"]["specificity"] == pytest.approx(1 / 2)
    assert "tumor_type_accuracy" not in classification_metrics(Y_TRUE, _probs_for(Y_PRED), CLASSES, n_boot=0)


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_data():
    y_small = np.tile(Y_TRUE, 5)
    p_small = np.tile(Y_PRED, 5)
    lo_s, hi_s = bootstrap_ci(y_small, p_small, accuracy, n_boot=500)
    lo_l, hi_l = bootstrap_ci(np.tile(y_small, 20), np.tile(p_small, 20), accuracy, n_boot=500)
    assert lo_s <= 0.7 <= hi_s and lo_l <= 0.7 <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 2
    f1 = macro_f1(y_small, p_small)
    lo, hi = bootstrap_ci(y_small, p_small, macro_f1, n_boot=300)
    assert lo <= f1 <= hi
    assert bootstrap_ci([], [], accuracy) == (None, None)


def test_group_bootstrap_resamples_whole_groups():
    rng = np.random.default_rng(0)
    base_true = rng.integers(0, 2, 40)
    base_pred = np.where(rng.random(40) < 0.75, base_true, 1 - base_true)
    # every image copied 10 times (10 slices of one patient): 400 rows but only 40 independent units
    y, p = np.repeat(base_true, 10), np.repeat(base_pred, 10)
    groups = np.repeat(np.arange(40), 10)
    naive = bootstrap_ci(y, p, accuracy, n_boot=500)
    grouped = bootstrap_ci(y, p, accuracy, n_boot=500, groups=groups)
    independent = bootstrap_ci(base_true, base_pred, accuracy, n_boot=500)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(grouped) > 2 * width(naive)
    assert width(grouped) == pytest.approx(width(independent), rel=0.3)
    assert grouped[0] <= accuracy(y, p) <= grouped[1]


# ------------------------------------------------------------------------------------------- segmentation

def _square(r, c, side=20, size=64):
    m = np.zeros((size, size), np.uint8)
    m[r:r + side, c:c + side] = 1
    return m


def test_segmentation_identical_disjoint_shifted_empty():
    sq = _square(10, 10)
    k = 3
    truth = np.stack([sq, sq, sq, np.zeros_like(sq)])
    pred = np.stack([sq, _square(40, 40), _square(10, 10 + k), np.zeros_like(sq)]).astype(np.float32)
    c = segmentation_per_case(truth, pred[..., None])
    assert c["dice"][0] == 1.0 and c["iou"][0] == 1.0 and c["hd95"][0] == 0.0
    assert c["dice"][1] == 0.0
    # shifted by k columns: overlap 20 x (20 - k) = 340 -> Dice 2 * 340 / 800, IoU 340 / 460, HD95 = k
    assert c["dice"][2] == pytest.approx(2 * 340 / 800)
    assert c["iou"][2] == pytest.approx(340 / 460)
    assert c["hd95"][2] == pytest.approx(k)
    assert c["dice"][3] == 1.0 and np.isnan(c["hd95"][3])  # empty truth, empty prediction
    assert hausdorff95(sq, _square(10, 10 + k), spacing=(0.5, 2.0)) == pytest.approx(2.0 * k)  # mm: col spacing


def test_segmentation_metrics_summary():
    sq = _square(10, 10)
    empty = np.zeros_like(sq)
    fp = np.zeros_like(sq)
    fp[0:2, 0:5] = 1  # 10 false-positive pixels on an empty scan
    truth = np.stack([sq, sq, empty, empty])
    pred = np.stack([sq, _square(10, 13), empty, fp]).astype(np.float32)
    m = segmentation_metrics(truth, pred, labels=["glioma", "pituitary", "no_tumor", "no_tumor"])
    dice_shift = 2 * 340 / 800
    assert m["n"] == 4
    assert m["dice_mean"] == pytest.approx((1 + dice_shift + 1 + 0) / 4)
    assert m["dice_median"] == pytest.approx((1 + dice_shift) / 2)
    assert m["hd95_median"] == pytest.approx(1.5)  # cases: 0 and 3 px; the empty ones are left out
    assert m["hd95_unit"] == "px"
    assert m["detection_rate"] == 1.0
    assert m["empty_mask_rate_no_tumor"] == 0.5
    assert m["false_positive_area_px_mean"] == pytest.approx(5.0)
    assert m["dice_per_class"] == pytest.approx({"glioma": 1.0, "pituitary": dice_shift, "no_tumor": 0.5})
    with_mm = segmentation_metrics(truth, pred, spacing=(0.5, 2.0))
    assert with_mm["hd95_unit"] == "mm" and with_mm["hd95_median"] == pytest.approx(3.0)


def test_segmentation_truth_rows_skip_unannotated():
    keep = segmentation_truth_rows([True, False, False, True], ["glioma", "no_tumor", "tumor", "no_tumor"])
    assert keep.tolist() == [True, True, False, True]


# ---------------------------------------------------------------------------------------------- Grad-CAM

def test_grad_cam_on_a_tiny_cnn():
    import keras

    inp = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="features")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="after")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    images = np.random.default_rng(0).random((5, 32, 32)).astype(np.float32)
    heat = grad_cam(model, images)
    assert heat.shape == (5, 32, 32)
    assert heat.min() >= 0 and heat.max() <= 1
    heat_last = grad_cam(model, images[..., None], class_index=1, layer_name="after")
    assert heat_last.shape == (5, 32, 32) and heat_last.min() >= 0 and heat_last.max() <= 1


def test_roc_plot_of_one_class_data_draws_no_empty_legend(tmp_path):
    import warnings

    from neuralscan_cli.evaluation.plots import plot_roc_curves

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns on a legend with no labelled curve
        path = plot_roc_curves(np.zeros(5, int), np.tile([0.7, 0.3], (5, 1)), ["a", "b"], tmp_path / "roc.png")
    assert path.is_file() and path.stat().st_size > 0
