"""`attention_cnn_unet`: a U-Net whose encoder is the `attention_cnn` classifier trunk (residual blocks with
CBAM), for in-domain transfer: `--init-from CLASSIFIER` copies a trained classifier's whole trunk into it.

Why: the plain U-Nets learn their encoder from the masks alone and place many glioma masks on the wrong
structure; a classifier trained on the same scans to tell the tumour types apart (and, with mask supervision,
where the tumour is) has already learnt what a tumour looks like, over a wider field of view (S/32 at the end).

Encoder: `attention_cnn_encoder` (same layer names, so `init_encoder_from_classifier` copies every trunk
layer whose name and shapes match). Decoder, coarse to fine: at each trunk resolution S/16 .. S/2, a 2x2
stride-2 Conv2DTranspose, the trunk map of that resolution through an attention gate (Oktay et al. 2018), two
3x3 conv + BatchNorm + ReLU; then one step to full resolution, where the skip is a shallow conv on the input
(the trunk starts at S/2), so edges are drawn at the scan's own resolution. Input float32 (N, S, S, 1) in
[0, 1]; output float32 (N, S, S, 1) sigmoid. Stock Keras layers only (saves as `.keras`, converts to OpenVINO
on Keras 2 and 3).
"""
from __future__ import annotations

import keras
from keras import layers

from .attention_cnn import attention_cnn_encoder, check_trunk_options, conv_bn_act, grey_input
from .registry import register_model
from .unet import MASK_LAYER, attention_gate


@register_model("attention_cnn_unet", task="segment")
def attention_cnn_unet(input_size: int = 256, widths=(32, 64, 128, 256), blocks_per_stage=(1, 1, 2, 1),
                       attention: str = "cbam", activation: str = "relu", decoder_widths=(128, 64, 32, 32),
                       full_res_filters: int = 16, dropout: float = 0.1,
                       name: str = "attention_cnn_unet") -> keras.Model:
    """widths / blocks_per_stage / attention / activation: the trunk, as in `attention_cnn` (they must equal
    the classifier's to initialise from it). decoder_widths: channels of the decoder steps at S/16, S/8, S/4,
    S/2 for four stages (one per trunk map below the deepest, deepest first); full_res_filters: the last step's.
    """
    input_size, widths, blocks_per_stage = check_trunk_options(input_size, widths, blocks_per_stage, attention,
                                                               activation)
    decoder_widths = tuple(int(w) for w in decoder_widths)
    if len(decoder_widths) != len(widths) or min(decoder_widths) < 1 or int(full_res_filters) < 1:
        raise ValueError(f"decoder_widths needs {len(widths)} positive widths (one per trunk map from S/"
                         f"{2 ** len(widths)} to S/2), got {decoder_widths}; full_res_filters must be >= 1")

    inputs = grey_input(input_size)
    maps = attention_cnn_encoder(inputs, widths, blocks_per_stage, attention, activation)
    x = maps[-1]
    if dropout:
        x = layers.Dropout(float(dropout), name="deep_dropout")(x)
    # maps[:-1] = [stem S/2, stage 1 S/4, ..., stage n-1 S/2**n]; the decoder walks them deepest first
    for step, (skip, f) in enumerate(zip(reversed(maps[:-1]), decoder_widths), start=1):
        x = _decoder_step(x, skip, f, name=f"dec{step}")
    full = conv_bn_act(layers.Rescaling(2.0, offset=-1.0, name="full_rescale")(inputs), int(full_res_filters), 3,
                       1, "relu", name="full_conv")
    x = _decoder_step(x, full, int(full_res_filters), name=f"dec{len(decoder_widths) + 1}", gated=False)
    x = layers.Conv2D(1, 1, name="mask_logits")(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name=MASK_LAYER)(x)
    return keras.Model(inputs, outputs, name=name)


def _decoder_step(x, skip, filters: int, name: str, gated: bool = True):
    """Upsample `x` 2x, join the (gated) `skip` of that resolution, two 3x3 conv + BN + ReLU."""
    if gated:
        skip = attention_gate(skip, x, max(1, filters // 2), name=f"{name}_att")
    up = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"{name}_up")(x)
    x = layers.Concatenate(name=f"{name}_concat")([up, skip])
    x = conv_bn_act(x, filters, 3, 1, "relu", name=f"{name}_conv1")
    return conv_bn_act(x, filters, 3, 1, "relu", name=f"{name}_conv2")
