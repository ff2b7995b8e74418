"""Segmenters: `unet` (Ronneberger et al. 2015) and `attention_unet` (attention gates on the skip connections,
Oktay et al. 2018). Input float32 (N, S, S, 1) grey in [0, 1] (rescaled to [-1, 1] inside, like
`attention_cnn`); output float32 (N, S, S, 1) sigmoid probabilities.

Encoder level k has base_filters * 2**(k-1) channels (two 3x3 conv + BatchNorm + ReLU, then 2x2 max-pool);
the bottleneck has base_filters * 2**depth. Decoder: 2x2 stride-2 Conv2DTranspose, concatenate the (gated)
skip, two 3x3 conv + BatchNorm + ReLU. Only stock Keras layers: saves as `.keras` and converts to OpenVINO on
Keras 2 and 3.

Encoder layers are named like the matching convolutions of `attention_cnn` so that
`init_encoder_from_classifier` can copy a trained classifier's filters into the encoder:

  U-Net level 1:  stem_conv (1 -> f),        s1_b1_conv1 (f -> f)     [+ the BatchNorms stem_bn, s1_b1_bn1]
  U-Net level k:  s{k}_b1_conv1 (f/2 -> f),   s{k}_b1_conv2 (f -> f)   [+ s{k}_b1_bn1, s{k}_b1_bn2]

With attention_cnn widths == (base_filters, 2*base_filters, 4*base_filters, 8*base_filters), e.g.
attention_cnn default widths (32, 64, 128, 256) and unet base_filters=32, depth=4, all 8 encoder convs and their
BatchNorms (16 layers) are copied.
"""
from __future__ import annotations

import keras
from keras import layers

from .attention_cnn import _check_size, conv_bn_act, grey_input
from .registry import register_model

MASK_LAYER = "mask"


def _encoder_names(level: int) -> list[tuple[str, str, str]]:
    """(conv, bn, act) layer names of the two convs of encoder `level` (1-based), matching attention_cnn."""
    if level == 1:
        return [("stem_conv", "stem_bn", "stem_act"), ("s1_b1_conv1", "s1_b1_bn1", "s1_b1_act1")]
    p = f"s{level}_b1"
    return [(f"{p}_conv1", f"{p}_bn1", f"{p}_act1"), (f"{p}_conv2", f"{p}_bn2", f"{p}_act2")]


def attention_gate(x, g, inter: int, name: str):
    """Additive attention gate (Oktay et al. 2018): skip `x` (H, W, C) gated by the coarser `g` (H/2, W/2, *).

    theta(x) (2x2 stride-2 conv) + phi(g) (1x1 conv) -> ReLU -> psi (1x1 conv, 1 ch) -> sigmoid -> bilinear
    upsampling to (H, W) -> alpha; output = BN(1x1 conv(x * alpha)).
    """
    c = x.shape[-1]
    theta = layers.Conv2D(inter, 2, strides=2, padding="same", use_bias=False, name=f"{name}_theta")(x)
    phi = layers.Conv2D(inter, 1, padding="same", name=f"{name}_phi")(g)
    f = layers.Activation("relu", name=f"{name}_relu")(layers.Add(name=f"{name}_add")([theta, phi]))
    psi = layers.Conv2D(1, 1, padding="same", name=f"{name}_psi")(f)
    psi = layers.Activation("sigmoid", name=f"{name}_sigmoid")(psi)
    alpha = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_alpha")(psi)
    y = layers.Multiply(name=f"{name}_gate")([x, alpha])
    y = layers.Conv2D(c, 1, use_bias=False, name=f"{name}_out")(y)
    return layers.BatchNormalization(name=f"{name}_out_bn")(y)


def _build_unet(input_size: int, base_filters: int, depth: int, dropout: float, name: str,
                gated: bool) -> keras.Model:
    depth, base_filters = int(depth), int(base_filters)
    if depth < 1 or base_filters < 1:
        raise ValueError(f"depth and base_filters must be >= 1, got {depth}, {base_filters}")
    input_size = _check_size(input_size, 2 ** depth)
    inputs = grey_input(input_size)
    x = layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)

    skips = []
    for level in range(1, depth + 1):
        f = base_filters * 2 ** (level - 1)
        for conv, bn, act in _encoder_names(level):
            x = conv_bn_act(x, f, 3, 1, "relu", name=conv, bn_name=bn, act_name=act)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)

    f = base_filters * 2 ** depth
    x = conv_bn_act(x, f, 3, 1, "relu", name="bottleneck_conv1")
    if dropout:
        x = layers.Dropout(float(dropout), name="bottleneck_dropout")(x)
    x = conv_bn_act(x, f, 3, 1, "relu", name="bottleneck_conv2")

    for level in range(depth, 0, -1):
        f = base_filters * 2 ** (level - 1)
        skip = skips[level - 1]
        if gated:
            skip = attention_gate(skip, x, max(1, f // 2), name=f"dec{level}_att")
        up = layers.Conv2DTranspose(f, 2, strides=2, padding="same", name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([up, skip])
        x = conv_bn_act(x, f, 3, 1, "relu", name=f"dec{level}_conv1")
        x = conv_bn_act(x, f, 3, 1, "relu", name=f"dec{level}_conv2")

    x = layers.Conv2D(1, 1, name="mask_logits")(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name=MASK_LAYER)(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("unet", task="segment")
def unet(input_size: int = 256, base_filters: int = 16, depth: int = 4, dropout: float = 0.1,
         name: str = "unet") -> keras.Model:
    return _build_unet(input_size, base_filters, depth, dropout, name, gated=False)


@register_model("attention_unet", task="segment")
def attention_unet(input_size: int = 256, base_filters: int = 16, depth: int = 4, dropout: float = 0.1,
                   name: str = "attention_unet") -> keras.Model:
    return _build_unet(input_size, base_filters, depth, dropout, name, gated=True)


def init_encoder_from_classifier(unet_model: keras.Model, classifier_model: keras.Model) -> int:
    """Copy weights from `classifier_model` into `unet_model` for every layer whose name exists in both and
    whose weight shapes all match (see the module docstring for the names). Returns the number of layers
    copied (0 when nothing lines up, e.g. a keras.applications backbone classifier)."""
    by_name = {layer.name: layer for layer in classifier_model.layers}
    copied = 0
    for layer in unet_model.layers:
        src = by_name.get(layer.name)
        if src is None or not layer.weights or len(src.weights) != len(layer.weights):
            continue
        src_w = src.get_weights()
        if all(tuple(a.shape) == tuple(b.shape) for a, b in zip(src_w, layer.get_weights())):
            layer.set_weights(src_w)
            copied += 1
    return copied
