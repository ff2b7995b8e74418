"""Turning a trained Keras bundle into OpenVINO IR (FP32, and INT8 with an accuracy check)."""
from .openvino_export import PRESETS, ExportReport, export_bundle

__all__ = ["PRESETS", "ExportReport", "export_bundle"]
