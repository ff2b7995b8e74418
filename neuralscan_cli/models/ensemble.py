"""`ensemble`: several trained classifiers behind one input, their class probabilities averaged.

One network, so an ensemble is an ordinary bundle: one `model.weights.h5`, one OpenVINO IR, one INT8 export,
and every command (classify, evaluate, export, bench, the segmenter's gate) reads it unchanged. Each member
is a registry model built under the name `member{i}`, a nested sub-model, so the members' identical layer
names do not collide and each member's own weights file loads into its sub-model as it is.
"""
from __future__ import annotations

import keras
from keras import layers

from .attention_cnn import grey_input
from .registry import create_model, model_options, model_task, register_model

MEMBER_PREFIX = "member"
MEAN_LAYER = "ensemble_mean"
# INT8 export keeps the averaging in FP32: quantising the members' softmax outputs before the mean left the
# top-1 calls unchanged but doubled the calibration error (ECE 0.087 -> 0.19 on the shipped ensemble)
INT8_KEEP_FP32 = (rf"(.*/)?{MEAN_LAYER}(_\d+)?/.*",)


def member_models(model: keras.Model) -> list[keras.Model]:
    """The member sub-models of an `ensemble` network (empty for any other network)."""
    return [layer for layer in model.layers
            if isinstance(layer, keras.Model) and layer.name.startswith(MEMBER_PREFIX)]


@register_model("ensemble", task="classify")
def ensemble(members=(), num_classes: int = 4, input_size: int = 160, name: str = "ensemble") -> keras.Model:
    """Mean of the members' softmax outputs. members: [{"name": registry model, "options": {...}}, ...]."""
    members = list(members)
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
    image = grey_input(int(input_size))
    outputs = []
    for i, spec in enumerate(members, start=1):
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValueError(f"ensemble member {i} must be a mapping with a 'name' (and 'options'), got {spec!r}")
        arch = spec["name"]
        if arch == "ensemble" or model_task(arch) != "classify":
            raise ValueError(f"ensemble member {i}: '{arch}' is not a classifier")
        opts = dict(spec.get("options") or {})
        valid = model_options(arch)
        opts.update(input_size=int(input_size), name=f"{MEMBER_PREFIX}{i}")
        if "num_classes" in valid:
            opts["num_classes"] = int(num_classes)
        if "weights" in valid:
            opts["weights"] = "none"  # the member's trained weights are loaded after building
        outputs.append(create_model(arch, **opts)(image))
    probs = layers.Average(dtype="float32", name=MEAN_LAYER)(outputs)
    return keras.Model(image, probs, name=name)
