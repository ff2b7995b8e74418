"""Model registry (timm style): `create_model(name, **options)`; one module per model family.

Every model takes float32 (N, S, S, 1) grey images in [0, 1]; classifiers output float32 softmax (N, C),
segmenters float32 sigmoid (N, S, S, 1). Importing this package registers all families (and imports keras).
"""
from . import attention_cnn, attention_cnn_unet, backbones, ensemble, unet  # noqa: F401  (registers the models)
from .attention_cnn import FEATURES_LAYER
from .attention_cnn import INT8_KEEP_FP32 as _ATTENTION_KEEP_FP32
from .backbones import BACKBONE_LAYER, set_backbone_trainable
from .registry import create_model, list_models, model_options, model_task, register_model
from .ensemble import INT8_KEEP_FP32 as _ENSEMBLE_KEEP_FP32
from .unet import MASK_LAYER, init_encoder_from_classifier

# node-name regexes INT8 export leaves in FP32, from every family that needs it
INT8_KEEP_FP32 = _ATTENTION_KEEP_FP32 + _ENSEMBLE_KEEP_FP32

__all__ = [
    "create_model", "list_models", "register_model", "model_task", "model_options",
    "set_backbone_trainable", "init_encoder_from_classifier",
    "FEATURES_LAYER", "BACKBONE_LAYER", "MASK_LAYER", "INT8_KEEP_FP32",
]
