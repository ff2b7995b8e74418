"""Auxiliary training heads: a classifier plus a coarse tumour-mask output, for mask-supervised training.

`with_mask_head(classifier)` returns a two-output training model (class probabilities, and a sigmoid map at
the resolution of the classifier's "features" layer: S/32 for attention_cnn, S/8 for small_cnn) that shares
every layer with `classifier`. Only
the classifier is saved and shipped; the head exists to make the last feature map say where the tumour is,
so the pooled features the class is read from come from the tumour rather than from the rest of the scan.
"""
from __future__ import annotations

import keras
from keras import layers

from .attention_cnn import FEATURES_LAYER

MASK_HEAD_LAYER = "aux_mask"


def with_mask_head(classifier: keras.Model) -> keras.Model:
    """(probs, mask map) training model sharing `classifier`'s layers; outputs named "probs" and "aux_mask"."""
    try:
        features = classifier.get_layer(FEATURES_LAYER).output
    except ValueError:
        raise ValueError(f"model {classifier.name!r} has no {FEATURES_LAYER!r} layer to attach a mask head to") from None
    m = layers.Conv2D(1, 1, name=f"{MASK_HEAD_LAYER}_conv")(features)
    m = layers.Activation("sigmoid", dtype="float32", name=MASK_HEAD_LAYER)(m)
    return keras.Model(classifier.inputs, [classifier.outputs[0], m], name=f"{classifier.name}_with_mask")


def classifier_of(training_model: keras.Model) -> keras.Model:
    """The classifier inside a `with_mask_head` model (shares its layers), or the model itself."""
    if len(training_model.outputs) == 1:
        return training_model
    return keras.Model(training_model.inputs, training_model.outputs[0], name=training_model.name.removesuffix("_with_mask"))
