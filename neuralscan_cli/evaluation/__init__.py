"""Evaluation from arrays: metrics, figures, Grad-CAM and the report folder. Knows nothing of model engines."""
from .calibration import apply_temperature, fit_temperature, negative_log_likelihood
from .gradcam import find_gradcam_layer, grad_cam, save_gradcam_overlays
from .metrics import (accuracy, bootstrap_ci, classification_metrics, confusion_matrix, dice_per_image, expected_calibration_error,
                      hausdorff95, macro_f1, partial_label_metrics, reliability_bins, roc_auc_ovr, segmentation_metrics,
                      segmentation_per_case, segmentation_truth_rows, tumor_metrics)
from .plots import plot_confusion_matrix, plot_reliability, plot_roc_curves, plot_segmentation_overlay
from .report import (classification_report, segmentation_report, worst_cases, write_classification_predictions,
                     write_metrics_json, write_report_md, write_segmentation_predictions)

__all__ = ["apply_temperature", "fit_temperature", "negative_log_likelihood", "find_gradcam_layer", "grad_cam", "save_gradcam_overlays", "accuracy", "bootstrap_ci",
           "classification_metrics", "confusion_matrix", "dice_per_image", "expected_calibration_error", "hausdorff95", "macro_f1", "partial_label_metrics",
           "reliability_bins", "roc_auc_ovr", "segmentation_metrics", "segmentation_per_case",
           "segmentation_truth_rows", "tumor_metrics", "plot_confusion_matrix", "plot_reliability",
           "plot_roc_curves", "plot_segmentation_overlay", "classification_report", "segmentation_report",
           "worst_cases", "write_classification_predictions", "write_metrics_json", "write_report_md",
           "write_segmentation_predictions"]
