"""tf.data input pipelines from a dataset cache, with batch-wise augmentation applied jointly to image and mask.

Augmentation runs on whole batches (one projective-transform op per batch instead of per image), which is
what keeps a 2-core CPU feeding the model. Geometric steps use the same matrices for image (bilinear) and
mask (nearest), so masks stay aligned.
"""
from __future__ import annotations

import math

import numpy as np


def _affine_matrices(tf, batch, size: int, aug: dict, rand):
    """Per-sample 8-parameter projective transforms (output -> input coordinates)."""
    rot = rand([batch], -1.0, 1.0) * (aug.get("rotation_deg", 0.0) * math.pi / 180.0)
    zoom = 1.0 + rand([batch], -1.0, 1.0) * aug.get("zoom", 0.0)
    shift = aug.get("shift", 0.0) * size
    tx = rand([batch], -1.0, 1.0) * shift
    ty = rand([batch], -1.0, 1.0) * shift
    ones = tf.ones([batch])
    flip_x = tf.where(rand([batch], 0.0, 1.0) < 0.5, -ones, ones) if aug.get("flip_lr") else ones
    flip_y = tf.where(rand([batch], 0.0, 1.0) < 0.5, -ones, ones) if aug.get("flip_ud") else ones
    c = (size - 1) / 2.0
    cos, sin = tf.cos(rot) / zoom, tf.sin(rot) / zoom
    a0, a1 = cos * flip_x, -sin * flip_y
    b0, b1 = sin * flip_x, cos * flip_y
    a2 = c - a0 * c - a1 * c - tx
    b2 = c - b0 * c - b1 * c - ty
    zeros = tf.zeros([batch])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _transform(tf, images, matrices, size, interpolation):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=matrices, output_shape=tf.constant([size, size], dtype=tf.int32),
        fill_value=0.0, interpolation=interpolation, fill_mode="CONSTANT")


def _intensity(tf, x, aug: dict, rand, normal):
    batch = tf.shape(x)[0]
    shape = tf.stack([batch, 1, 1, 1])
    if aug.get("contrast"):
        x = (x - 0.5) * (1.0 + rand(shape, -1.0, 1.0) * aug["contrast"]) + 0.5
    if aug.get("brightness"):
        x = x + rand(shape, -1.0, 1.0) * aug["brightness"]
    x = tf.clip_by_value(x, 0.0, 1.0)
    if aug.get("gamma"):
        x = tf.pow(x + 1e-6, tf.exp(rand(shape, -1.0, 1.0) * aug["gamma"]))
    if aug.get("noise_std"):
        x = x + normal(tf.shape(x)) * aug["noise_std"]
    return tf.clip_by_value(x, 0.0, 1.0)


def make_dataset(images_u8: np.ndarray, targets: np.ndarray, *, task: str, num_classes: int, batch_size: int,
                 input_size: int, training: bool, augment: dict | None = None, sample_weights: np.ndarray | None = None,
                 seed: int = 42, masks: np.ndarray | None = None, mask_weights: np.ndarray | None = None):
    """A batched, prefetched tf.data pipeline.

    images_u8: (N, S, S) uint8 from the cache; targets: class indices or (N, K) 0/1 sets of allowed classes
    (classify), or (N, S, S) 0/1 masks (segment). Yields (x float32 (B, s, s, 1) in [0, 1], y[, w]) with s = input_size.

    Mask-supervised classification (masks given with task "classify"): the (N, S, S) masks are transformed with
    their images and the batch is (x, (y, mask (B, S, S, 1)), (w, mask_weights)), mask_weights being 0 where
    an image has no mask truth (see losses.tumour_fraction_loss).
    """
    import tensorflow as tf

    aug = dict(augment or {})
    size = int(images_u8.shape[1])
    with_masks = masks is not None and task == "classify"
    n = len(images_u8)
    element = {"x": images_u8, "y": targets}
    if sample_weights is not None or with_masks:
        element["w"] = (np.ones(n, np.float32) if sample_weights is None else sample_weights.astype(np.float32))
    if with_masks:
        element["m"] = masks
        element["mw"] = (np.ones(n, np.float32) if mask_weights is None else mask_weights.astype(np.float32))
    ds = tf.data.Dataset.from_tensor_slices(element)
    if training:
        ds = ds.shuffle(min(n, 4096), seed=seed, reshuffle_each_iteration=True)
    # training drops the ragged last batch: a batch of one or two makes BatchNorm statistics meaningless
    # (and crashed TF 2.15 + oneDNN here on some sizes)
    ds = ds.batch(batch_size, drop_remainder=training and n >= batch_size)
    # stateless random ops seeded by a per-batch key from a seeded stream: the same seed gives the same
    # augmentation in every run however the parallel map schedules batches, and each epoch differs
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, keys))

    def to_batch(batch, key):
        calls = [0]

        def next_seed():
            calls[0] += 1
            return tf.stack([key, tf.constant(calls[0], tf.int64)])

        def rand(shape, lo, hi):
            return tf.random.stateless_uniform(shape, seed=next_seed(), minval=lo, maxval=hi)

        def normal(shape):
            return tf.random.stateless_normal(shape, seed=next_seed())

        x = tf.cast(batch["x"], tf.float32)[..., None] / 255.0
        y = batch["y"]
        if task == "segment":
            y = tf.cast(y, tf.float32)[..., None]
        elif len(y.shape) == 2:  # (B, K) sets of allowed classes (data.labels), used as they are
            y = tf.cast(y, tf.float32)
        else:
            y = tf.one_hot(tf.cast(y, tf.int32), num_classes)
        m = tf.cast(batch["m"], tf.float32)[..., None] if with_masks else None
        if training and aug:
            b = tf.shape(x)[0]
            mat = _affine_matrices(tf, b, size, aug, rand)
            x = _transform(tf, x, mat, size, "BILINEAR")
            if task == "segment":
                y = _transform(tf, y, mat, size, "NEAREST")
            if with_masks:
                m = _transform(tf, m, mat, size, "NEAREST")
            x = _intensity(tf, x, aug, rand, normal)
        if input_size != size:
            x = tf.image.resize(x, [input_size, input_size], method="bilinear", antialias=True)
            if task == "segment":
                y = tf.image.resize(y, [input_size, input_size], method="nearest")
        if with_masks:
            return x, (y, m), (batch["w"], batch["mw"])
        if "w" in batch:
            return x, y, batch["w"]
        return x, y

    ds = ds.map(to_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)  # seeded runs repeat exactly
    return ds.prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Training batches per epoch, matching `make_dataset(training=True)`."""
    return n // batch_size if n >= batch_size else 1


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weight per class (mean 1 over the samples)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return w.astype(np.float32)
