"""Grad-CAM: where in the image a classifier's evidence for a class lies.

The heat map is the ReLU of the feature maps of the last convolutional block weighted by the spatially
averaged gradient of the class probability with respect to them, upsampled to the image and scaled to [0, 1].
Works with Keras 2 (TF 2.15) and Keras 3: the gradient model is built from `model.inputs` and layer outputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

FEATURES_LAYER = "features"  # architectures name their last feature map so Grad-CAM needs no guessing


def _output_rank(layer) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):  # a layer never called / with several outputs
        return None


def find_gradcam_layer(model, layer_name: str | None = None):
    """The layer to explain: `layer_name`, else one named 'features', else the last layer with a 4-D output."""
    if layer_name:
        return model.get_layer(layer_name)
    try:
        layer = model.get_layer(FEATURES_LAYER)
        if _output_rank(layer) == 4:
            return layer
    except ValueError:
        pass
    for layer in reversed(model.layers):
        if type(layer).__name__ == "InputLayer":
            continue
        if _output_rank(layer) == 4:
            return layer
    raise ValueError(f"model {model.name} has no layer with a 4-D output to explain")


def grad_cam(keras_model, images01: np.ndarray, class_index=None, layer_name: str | None = None,
             batch_size: int = 16) -> np.ndarray:
    """Heat maps (N, S, S) in [0, 1] for `class_index` (an int, one int per image, or None: the predicted class)."""
    import keras
    import tensorflow as tf

    x = np.asarray(images01, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]
    n, h, w = x.shape[:3]
    from ..models.ensemble import member_models

    members = member_models(keras_model)
    if members and layer_name is None:
        # an ensemble: the mean of its members' maps for the class the ensemble (not each member) predicts
        if class_index is None:
            class_index = np.asarray(keras_model.predict(x, batch_size=batch_size, verbose=0)).argmax(axis=1)
        return np.mean([grad_cam(m, x, class_index, batch_size=batch_size) for m in members], axis=0)
    layer = find_gradcam_layer(keras_model, layer_name)
    # a model with auxiliary outputs is explained through its first (the class probabilities)
    # a single input is passed unwrapped: Keras 3 warns when a call's structure differs from the model's inputs
    inputs = keras_model.inputs[0] if len(keras_model.inputs) == 1 else keras_model.inputs
    grad_model = keras.Model(inputs, [layer.output, keras_model.outputs[0]])
    if class_index is not None:
        wanted = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (n,))
    heatmaps = np.zeros((n, h, w), dtype=np.float32)
    for start in range(0, n, batch_size):
        batch = tf.convert_to_tensor(x[start:start + batch_size])
        with tf.GradientTape() as tape:
            features, preds = grad_model(batch, training=False)
            if class_index is None:
                idx = tf.argmax(preds, axis=-1)
            else:
                idx = tf.constant(wanted[start:start + batch_size])
            score = tf.reduce_sum(tf.gather(preds, idx, axis=1, batch_dims=1))
        grads = tape.gradient(score, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # one weight per channel per image
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[..., None]
        cam = tf.image.resize(cam, (h, w), method="bilinear")[..., 0].numpy()
        peak = cam.reshape(len(cam), -1).max(1)
        cam = np.where(peak[:, None, None] > 0, cam / np.maximum(peak, 1e-12)[:, None, None], 0.0)
        heatmaps[start:start + len(cam)] = np.clip(cam, 0, 1)
    return heatmaps


def save_gradcam_overlays(images01: np.ndarray, heatmaps: np.ndarray, paths: Sequence[str], out_dir: str | Path,
                          titles: Sequence[str] | None = None, alpha: float = 0.4) -> list[Path]:
    """One PNG per image: the scan in grey under the heat map (jet, `alpha`), named '<rank>_<source stem>.png'."""
    from matplotlib import colormaps

    from .plots import _new_figure, _save

    out_dir = Path(out_dir)
    jet = colormaps["jet"]
    written = []
    for k, (img, heat, src) in enumerate(zip(images01, heatmaps, paths)):
        grey = np.repeat(np.clip(np.asarray(img, dtype=np.float32).squeeze(), 0, 1)[..., None], 3, axis=2)
        blended = np.clip((1 - alpha) * grey + alpha * jet(np.asarray(heat).squeeze())[..., :3], 0, 1)
        fig = _new_figure(4, 4.3)
        ax = fig.add_axes((0, 0, 1, 0.9))
        ax.imshow(blended, interpolation="nearest")
        ax.set_axis_off()
        if titles is not None:
            fig.suptitle(titles[k], fontsize=8)
        written.append(_save(fig, out_dir / f"{k + 1:03d}_{Path(str(src)).stem}.png"))
    return written
