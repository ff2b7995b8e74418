"""Transfer-learning classifiers on `keras.applications` backbones.

Input is the common float32 (N, S, S, 1) grey image in [0, 1]; inside the model it is rescaled to what the
backbone expects and repeated to 3 channels (`Concatenate([x, x, x])`, so ImageNet weights see a grey RGB
image):

  efficientnet_b0      x * 255 (the Keras EfficientNet has its own Rescaling + Normalization built in)
  resnet50v2           x * 2 - 1 (= keras.applications.resnet_v2.preprocess_input, "tf" mode)
  mobilenet_v3_small   x * 2 - 1 (built with include_preprocessing=False; this is the same Rescaling
  mobilenet_v3_large    the Keras MobileNetV3 adds when include_preprocessing=True)

Model layout: image -> rescale -> to_rgb -> "backbone" (a functional sub-model, no top) -> "features"
(identity on the last conv feature map: the Grad-CAM target, in the outer graph) -> avg_pool -> dropout ->
logits -> probs (float32 softmax).

`weights`:
  "imagenet"            keras.applications downloads the ImageNet no-top weights (on first use, cached in
                        ~/.keras/models, as Keras does).
  "none" (or None)      random initialisation.
  path/to/x.weights.h5  Keras-native weights file of the same backbone (e.g. saved with
                        `model.get_layer("backbone").save_weights(...)`): loaded by structure, so it must be the
                        same architecture (weights do not depend on the input size).
  path/to/x.h5|.hdf5    legacy HDF5 weights (e.g. the official keras-applications files, with or without top):
                        loaded by layer name with `by_name=True, skip_mismatch=True`; layers whose names are
                        absent or whose shapes differ are skipped.
A file from which no backbone weight was loaded is an error.
"""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from .attention_cnn import FEATURES_LAYER, _check_size, grey_input, softmax_head
from .registry import register_model

BACKBONE_LAYER = "backbone"

# name -> (keras.applications constructor name, scale, offset, extra constructor kwargs)
_SPECS = {
    "efficientnet_b0": ("EfficientNetB0", 255.0, 0.0, {}),
    "resnet50v2": ("ResNet50V2", 2.0, -1.0, {}),
    "mobilenet_v3_small": ("MobileNetV3Small", 2.0, -1.0, {"include_preprocessing": False}),
    "mobilenet_v3_large": ("MobileNetV3Large", 2.0, -1.0, {"include_preprocessing": False}),
}


def _fingerprint(model) -> list[float]:
    return [float(np.sum(np.abs(np.asarray(w, dtype=np.float64)))) for w in model.get_weights()]


def load_backbone_weights(backbone: keras.Model, path, label: str | None = None) -> int:
    """Load a weights file into `backbone` (rules in the module docstring); returns how many tensors changed."""
    p = Path(path).expanduser()
    label = label or backbone.name
    if not p.is_file():
        raise ValueError(f"weights must be 'imagenet', 'none' or a weights file; {str(path)!r} is not a file")
    fname = p.name.lower()
    if not fname.endswith((".weights.h5", ".h5", ".hdf5")):
        raise ValueError(f"weights file {p.name!r}: expected a .weights.h5 or .h5 file")
    before = _fingerprint(backbone)
    try:
        if fname.endswith(".weights.h5"):
            backbone.load_weights(str(p))
        else:
            backbone.load_weights(str(p), by_name=True, skip_mismatch=True)
    except Exception as exc:  # shape/structure mismatch, or not a Keras weights file
        raise ValueError(f"could not load {label} backbone weights from {p}: {exc}") from exc
    changed = sum(a != b for a, b in zip(before, _fingerprint(backbone)))
    if not changed:
        raise ValueError(f"no weights in {p} matched the {label} backbone")
    return changed


def _build(kind: str, num_classes: int, input_size: int, weights, freeze_backbone: bool, dropout: float,
           name: str | None) -> keras.Model:
    ctor_name, scale, offset, extra = _SPECS[kind]
    input_size = _check_size(input_size)
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        app_weights, path = None, None
    elif isinstance(weights, str) and weights.lower() == "imagenet":
        app_weights, path = "imagenet", None
    else:
        app_weights, path = None, weights
    app = getattr(keras.applications, ctor_name)(
        include_top=False, weights=app_weights, input_shape=(input_size, input_size, 3), pooling=None, **extra)
    if path is not None:
        load_backbone_weights(app, path, label=kind)
    # A fresh functional wrapper over the same layers gives the sub-model a fixed name in Keras 2 and 3.
    backbone = keras.Model(app.input, app.output, name=BACKBONE_LAYER)
    backbone.trainable = not freeze_backbone

    inputs = grey_input(input_size)
    x = layers.Rescaling(scale, offset=offset, name="rescale")(inputs)
    x = layers.Concatenate(axis=-1, name="to_rgb")([x, x, x])
    x = backbone(x)
    x = layers.Activation("linear", name=FEATURES_LAYER)(x)
    outputs = softmax_head(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name=name or kind)


@register_model("efficientnet_b0", task="classify")
def efficientnet_b0(num_classes: int = 4, input_size: int = 256, weights="imagenet",
                    freeze_backbone: bool = False, dropout: float = 0.2, name: str = "efficientnet_b0"):
    return _build("efficientnet_b0", num_classes, input_size, weights, freeze_backbone, dropout, name)


@register_model("resnet50v2", task="classify")
def resnet50v2(num_classes: int = 4, input_size: int = 256, weights="imagenet",
               freeze_backbone: bool = False, dropout: float = 0.2, name: str = "resnet50v2"):
    return _build("resnet50v2", num_classes, input_size, weights, freeze_backbone, dropout, name)


@register_model("mobilenet_v3_small", task="classify")
def mobilenet_v3_small(num_classes: int = 4, input_size: int = 256, weights="imagenet",
                       freeze_backbone: bool = False, dropout: float = 0.2, name: str = "mobilenet_v3_small"):
    return _build("mobilenet_v3_small", num_classes, input_size, weights, freeze_backbone, dropout, name)


@register_model("mobilenet_v3_large", task="classify")
def mobilenet_v3_large(num_classes: int = 4, input_size: int = 256, weights="imagenet",
                       freeze_backbone: bool = False, dropout: float = 0.2, name: str = "mobilenet_v3_large"):
    return _build("mobilenet_v3_large", num_classes, input_size, weights, freeze_backbone, dropout, name)


def _is_batchnorm(layer) -> bool:
    return isinstance(layer, layers.BatchNormalization)


def set_backbone_trainable(model: keras.Model, trainable: bool, fine_tune_from: float = 0.0) -> int:
    """Freeze or unfreeze the "backbone" sub-model for freeze-then-fine-tune; returns the model's number of
    trainable weight tensors. Recompile the model afterwards (Keras reads `trainable` at compile time).

    trainable=False: the whole backbone is frozen (BatchNorm then runs in inference mode).
    trainable=True: backbone layers from `fine_tune_from` (a fraction of its layers, 0.0 = all, 0.7 = the last
    30%) onwards become trainable; earlier layers stay frozen, and BatchNorm layers always stay frozen (and so
    in inference mode), as the Keras transfer-learning guide recommends.
    """
    try:
        backbone = model.get_layer(BACKBONE_LAYER)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no {BACKBONE_LAYER!r} layer (not a backbone classifier)") from None
    if not 0.0 <= float(fine_tune_from) < 1.0:
        raise ValueError(f"fine_tune_from must be in [0, 1), got {fine_tune_from}")
    if not trainable:
        backbone.trainable = False
    else:
        backbone.trainable = True
        sub = backbone.layers
        cut = int(len(sub) * float(fine_tune_from))
        for i, layer in enumerate(sub):
            if i < cut or _is_batchnorm(layer):
                layer.trainable = False
    return len(model.trainable_weights)
