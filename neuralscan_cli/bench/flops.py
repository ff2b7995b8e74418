"""Operations per image of a Keras model, from its layers' shapes: 2 x the multiply-accumulates of Conv2D,
DepthwiseConv2D, SeparableConv2D, Conv2DTranspose and Dense layers (nested models included).

Everything else (BatchNorm, activations, pooling, attention's element-wise products) is left out: it is small
next to the convolutions and is not where INT8 VNNI peak applies. Works on Keras 2 and Keras 3 (channels-last).
"""
from __future__ import annotations

import math


def _shape(tensor) -> tuple:
    return tuple(None if d is None else int(d) for d in tuple(tensor.shape))


def _io_shapes(layer) -> tuple[tuple, tuple]:
    return _shape(layer.input), _shape(layer.output)


def layer_macs(layer) -> int | None:
    """Multiply-accumulates of one call of `layer` on one image; None for layers not counted."""
    from keras import layers as L

    kinds = [(getattr(L, n, None), n) for n in ("SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose", "Conv2D",
                                                   "Dense")]
    kind = next((n for cls, n in kinds if cls is not None and isinstance(layer, cls)), None)
    if kind is None:
        return None
    (inp, out) = _io_shapes(layer)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        inp = (inp[0], *inp[2:], inp[1])
        out = (out[0], *out[2:], out[1])
    if kind == "Dense":
        lead = math.prod(d for d in inp[1:-1]) if len(inp) > 2 else 1
        return int(lead * inp[-1] * layer.units)
    kh, kw = layer.kernel_size
    cin = inp[-1]
    oh, ow = out[1], out[2]
    if kind == "DepthwiseConv2D":
        return int(oh * ow * cin * layer.depth_multiplier * kh * kw)
    if kind == "SeparableConv2D":
        mid = cin * layer.depth_multiplier
        return int(oh * ow * (mid * kh * kw + mid * layer.filters))
    if kind == "Conv2DTranspose":  # every input pixel scatters a kh x kw x filters patch
        return int(inp[1] * inp[2] * cin * kh * kw * layer.filters)
    groups = int(getattr(layer, "groups", 1) or 1)
    return int(oh * ow * layer.filters * kh * kw * (cin // groups))


def _walk(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):  # a nested model (e.g. a keras.applications backbone)
            yield from _walk(layer)
        else:
            yield layer


def count_flops(model) -> dict:
    """{"flops": 2 * MACs per image, "macs", "by_type": {layer class: MACs}, "skipped": [layer names]}."""
    macs, by_type, skipped = 0, {}, []
    for layer in _walk(model):
        try:
            m = layer_macs(layer)
        except (AttributeError, ValueError, TypeError, IndexError):  # e.g. a layer shared between several calls
            skipped.append(layer.name)
            continue
        if m is None:
            continue
        macs += m
        name = type(layer).__name__
        by_type[name] = by_type.get(name, 0) + m
    return {"flops": 2 * macs, "macs": macs, "by_type": by_type, "skipped": skipped}
