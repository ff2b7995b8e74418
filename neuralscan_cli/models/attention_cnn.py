"""From-scratch CNN classifiers: `attention_cnn` (residual CNN with CBAM/SE attention) and `small_cnn` (tests).

Both take float32 (N, S, S, 1) grey images in [0, 1] and rescale to [-1, 1] inside the model. Only stock
Keras layers are used (no custom layers, no Lambda), so the models save/load as `.keras` and convert to
OpenVINO on Keras 2.15 and Keras 3 alike.

Grad-CAM: the last convolutional feature map is the layer named `FEATURES_LAYER` ("features").

CBAM (Woo et al. 2018) needs per-pixel mean and max over channels for its spatial attention. Keras has no
stock layer for a channel-wise reduction, so it is built as Reshape (H*W, C) -> Permute (C, H*W) ->
GlobalAverage/GlobalMaxPooling1D -> Reshape (H, W, 1): a transpose and a reduction, which is exact, needs no
custom layer, and converts to OpenVINO as Transpose + ReduceMean/ReduceMax. It needs static H and W, which
every model here has (the input size is fixed when the model is built).
"""
from __future__ import annotations

import keras
from keras import layers

from .registry import register_model

FEATURES_LAYER = "features"

# Layers the INT8 export keeps in FP32 (regexes on OpenVINO node names, which carry the Keras layer names):
# the channel-attention MLPs of CBAM and SE. They act on globally pooled (N, C) vectors, where one per-tensor
# INT8 scale flattens the small differences between channels that the gate is made of. With every layer INT8
# the shipped classifier agreed with FP32 on 92% of its held-out calls (90% for the fold-4 model on fold 4);
# with these FP32, 98% (with export's full bias correction), at no measurable speed cost (<0.1% of FLOPs).
# Keras 3 suffixes the names in the converted graph ("..._fc1_1/MatMul").
INT8_KEEP_FP32 = (r".*_att_ca_(fc1|fc2|add|sigmoid)(_\d+)?/.*", r".*_att_fc[12](_\d+)?/.*")


def _check_size(input_size: int, multiple: int = 32) -> int:
    input_size = int(input_size)
    if input_size <= 0 or input_size % multiple:
        raise ValueError(f"input_size must be a positive multiple of {multiple}, got {input_size}")
    return input_size


def grey_input(input_size: int, name: str = "image"):
    """The common model input: (S, S, 1) float32 in [0, 1]."""
    return keras.Input(shape=(input_size, input_size, 1), dtype="float32", name=name)


def softmax_head(x, num_classes: int, dropout: float):
    """GAP -> dropout -> Dense -> float32 softmax (float32 even under mixed_bfloat16)."""
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(float(dropout), name="head_dropout")(x)
    x = layers.Dense(int(num_classes), name="logits")(x)
    return layers.Activation("softmax", dtype="float32", name="probs")(x)


def conv_bn_act(x, filters: int, kernel: int, strides: int, activation: str, name: str,
                bn_name: str | None = None, act_name: str | None = None):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=name)(x)
    x = layers.BatchNormalization(name=bn_name or f"{name}_bn")(x)
    return layers.Activation(activation, name=act_name or f"{name}_act")(x)


# --- attention -------------------------------------------------------------------------------------------

def squeeze_excite(x, reduction: int, name: str):
    """SE block (Hu et al. 2018): GAP -> Dense(C/r, relu) -> Dense(C, sigmoid) -> scale channels."""
    c = x.shape[-1]
    hidden = max(4, c // reduction)
    s = layers.GlobalAveragePooling2D(name=f"{name}_gap")(x)
    s = layers.Dense(hidden, activation="relu", name=f"{name}_fc1")(s)
    s = layers.Dense(c, activation="sigmoid", name=f"{name}_fc2")(s)
    s = layers.Reshape((1, 1, c), name=f"{name}_reshape")(s)
    return layers.Multiply(name=f"{name}_scale")([x, s])


def channel_pool(x, name: str):
    """(N, H, W, C) -> (N, H, W, 2): per-pixel mean and max over channels, from stock layers."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    t = layers.Reshape((h * w, c), name=f"{name}_flat")(x)
    t = layers.Permute((2, 1), name=f"{name}_transpose")(t)  # (N, C, H*W): pool over the C "steps"
    mean = layers.GlobalAveragePooling1D(name=f"{name}_mean")(t)
    mx = layers.GlobalMaxPooling1D(name=f"{name}_max")(t)
    pooled = layers.Concatenate(name=f"{name}_concat")([mean, mx])  # (N, 2*H*W): [means..., maxes...]
    pooled = layers.Reshape((2, h, w), name=f"{name}_unflat")(pooled)
    return layers.Permute((2, 3, 1), name=f"{name}_hwc")(pooled)  # (N, H, W, 2)


def cbam(x, reduction: int, name: str, spatial_kernel: int = 7):
    """CBAM (Woo et al. 2018): channel attention (shared MLP on avg- and max-pooled) then spatial attention."""
    c = x.shape[-1]
    hidden = max(4, c // reduction)
    fc1 = layers.Dense(hidden, activation="relu", name=f"{name}_ca_fc1")
    fc2 = layers.Dense(c, name=f"{name}_ca_fc2")
    avg = fc2(fc1(layers.GlobalAveragePooling2D(name=f"{name}_ca_gap")(x)))
    mx = fc2(fc1(layers.GlobalMaxPooling2D(name=f"{name}_ca_gmp")(x)))
    ca = layers.Activation("sigmoid", name=f"{name}_ca_sigmoid")(layers.Add(name=f"{name}_ca_add")([avg, mx]))
    ca = layers.Reshape((1, 1, c), name=f"{name}_ca_reshape")(ca)
    x = layers.Multiply(name=f"{name}_ca_scale")([x, ca])

    sa = channel_pool(x, name=f"{name}_sa_pool")
    sa = layers.Conv2D(1, spatial_kernel, padding="same", use_bias=False, name=f"{name}_sa_conv")(sa)
    sa = layers.BatchNormalization(name=f"{name}_sa_bn")(sa)
    sa = layers.Activation("sigmoid", name=f"{name}_sa_sigmoid")(sa)
    return layers.Multiply(name=f"{name}_sa_scale")([x, sa])


def apply_attention(x, kind: str, name: str, reduction: int = 8):
    if kind == "cbam":
        return cbam(x, reduction, name)
    if kind == "se":
        return squeeze_excite(x, reduction, name)
    return x


# --- residual CNN ----------------------------------------------------------------------------------------

def residual_block(x, filters: int, strides: int, attention: str, activation: str, name: str,
                   out_name: str | None = None):
    """Basic ResNet block (two 3x3 convs) with attention on the residual branch before the add."""
    shortcut = x
    y = conv_bn_act(x, filters, 3, strides, activation, name=f"{name}_conv1", bn_name=f"{name}_bn1",
                    act_name=f"{name}_act1")
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    y = apply_attention(y, attention, name=f"{name}_att")
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False, kernel_initializer="he_normal",
                                 name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation(activation, name=out_name or f"{name}_out")(y)


def attention_cnn_encoder(inputs, widths, blocks_per_stage, attention: str, activation: str) -> list:
    """The attention_cnn trunk on a grey input: [stem (S/2), stage 1 (S/4), ..., last stage (S/2**(n+1))].

    Shared by the classifier and `attention_cnn_unet`, so the layer names (and a trained classifier's
    weights) are the same in both. The last stage's last block is the layer "features".
    """
    x = layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)  # [0, 1] -> [-1, 1]
    x = conv_bn_act(x, widths[0], 3, 2, activation, name="stem_conv", bn_name="stem_bn", act_name="stem_act")
    maps = [x]
    n_stages = len(widths)
    for s, (width, n_blocks) in enumerate(zip(widths, blocks_per_stage), start=1):
        for b in range(1, n_blocks + 1):
            last = s == n_stages and b == n_blocks
            x = residual_block(x, width, 2 if b == 1 else 1, attention, activation, name=f"s{s}_b{b}",
                               out_name=FEATURES_LAYER if last else None)
        maps.append(x)
    return maps


ATTENTIONS = ("cbam", "se", "none")
ACTIVATIONS = ("relu", "swish")


def check_trunk_options(input_size, widths, blocks_per_stage, attention: str, activation: str):
    """Validated (input_size, widths, blocks_per_stage) for `attention_cnn_encoder`; ValueError otherwise."""
    input_size = _check_size(input_size)
    widths, blocks_per_stage = tuple(int(w) for w in widths), tuple(int(b) for b in blocks_per_stage)
    if len(widths) != len(blocks_per_stage) or not widths:
        raise ValueError(f"widths {widths} and blocks_per_stage {blocks_per_stage} must have the same length >= 1")
    if min(blocks_per_stage) < 1 or min(widths) < 1:
        raise ValueError("widths and blocks_per_stage must be positive")
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if input_size % (2 ** (len(widths) + 1)):
        raise ValueError(f"input_size {input_size} must be a multiple of {2 ** (len(widths) + 1)} "
                         f"for {len(widths)} stages")
    return input_size, widths, blocks_per_stage


@register_model("attention_cnn", task="classify")
def attention_cnn(num_classes: int = 4, input_size: int = 256, widths=(32, 64, 128, 256),
                  blocks_per_stage=(1, 1, 2, 1), attention: str = "cbam", dropout: float = 0.3,
                  activation: str = "relu", name: str = "attention_cnn") -> keras.Model:
    """Residual CNN with CBAM/SE attention in every block, sized for CPU training.

    Stem: 3x3 conv stride 2 (widths[0] channels). Each stage starts with a stride-2 block, so the feature map
    is S/32 (8x8 at 256) at the end. Layer names: stem_conv/stem_bn, s{stage}_b{block}_conv1/bn1/conv2/bn2
    (stage, block from 1) — `unet.init_encoder_from_classifier` relies on these. The last block's output
    is the layer "features" (the Grad-CAM target).
    """
    input_size, widths, blocks_per_stage = check_trunk_options(input_size, widths, blocks_per_stage, attention,
                                                               activation)
    inputs = grey_input(input_size)
    x = attention_cnn_encoder(inputs, widths, blocks_per_stage, attention, activation)[-1]
    outputs = softmax_head(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name=name)


@register_model("small_cnn", task="classify")
def small_cnn(num_classes: int = 4, input_size: int = 64, width: int = 8, dropout: float = 0.0,
              name: str = "small_cnn") -> keras.Model:
    """A tiny 3-conv classifier (about 6k parameters at width 8) for fast tests and quick benchmarks."""
    input_size = _check_size(input_size, 8)
    inputs = grey_input(input_size)
    x = layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)
    x = conv_bn_act(x, width, 3, 2, "relu", name="conv1")
    x = conv_bn_act(x, width * 2, 3, 2, "relu", name="conv2")
    x = conv_bn_act(x, width * 4, 3, 2, "relu", name="conv3", act_name=FEATURES_LAYER)
    outputs = softmax_head(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name=name)
