"""Image and mask transforms applied identically at training and at scoring time."""
from .transforms import (Geometry, PreprocessConfig, apply_geometry, clahe, head_box, normalize_intensity,
                         no_signal, preprocess_image, restore_mask)

__all__ = ["Geometry", "PreprocessConfig", "apply_geometry", "clahe", "head_box", "normalize_intensity",
           "no_signal", "preprocess_image", "restore_mask"]
