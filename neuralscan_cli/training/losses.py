"""Training losses, registered so that a `.keras` checkpoint holding them reloads (for --resume).

Written with TensorFlow ops: inside a loss function both Keras 2.15 and Keras 3 (TensorFlow backend) hand
over plain tensors, so one definition serves both.
"""
from __future__ import annotations

import keras
import tensorflow as tf

_SMOOTH = 1.0


def _flat(y_true, y_pred):
    y_true = tf.cast(tf.reshape(y_true, [tf.shape(y_true)[0], -1]), tf.float32)
    y_pred = tf.cast(tf.reshape(y_pred, [tf.shape(y_pred)[0], -1]), tf.float32)
    return y_true, y_pred


@keras.saving.register_keras_serializable(package="neuralscan")
def dice_bce_loss(y_true, y_pred):
    """Soft Dice (per image; an empty truth and empty prediction score 1) plus binary cross-entropy."""
    t, p = _flat(y_true, y_pred)
    inter = tf.reduce_sum(t * p, axis=1)
    dice = (2.0 * inter + _SMOOTH) / (tf.reduce_sum(t, axis=1) + tf.reduce_sum(p, axis=1) + _SMOOTH)
    p = tf.clip_by_value(p, 1e-7, 1.0 - 1e-7)
    bce = -tf.reduce_mean(t * tf.math.log(p) + (1.0 - t) * tf.math.log(1.0 - p), axis=1)
    return (1.0 - dice) + bce


@keras.saving.register_keras_serializable(package="neuralscan")
def focal_tversky_loss(y_true, y_pred, alpha=0.7, gamma=0.75):
    """Focal Tversky (Abraham & Khan 2019): weighs missed tumour (false negatives) above false positives.

    Pooled over the whole batch, as the paper computes it (every image gets the batch's value). Per image, a
    no-tumour image scores Tversky ~0 for a few stray pixels, which outweighs the tumour images: trained that way
    on our mix of tumour and no-tumour images the segmenter collapsed to empty masks (val Dice 0 from epoch 3)."""
    t, p = _flat(y_true, y_pred)
    tp = tf.reduce_sum(t * p)
    fn = tf.reduce_sum(t * (1.0 - p))
    fp = tf.reduce_sum((1.0 - t) * p)
    tversky = (tp + _SMOOTH) / (tp + alpha * fn + (1.0 - alpha) * fp + _SMOOTH)
    return tf.pow(1.0 - tversky, gamma) * tf.ones([tf.shape(t)[0]])


@keras.saving.register_keras_serializable(package="neuralscan")
def tumour_fraction_loss(y_true, y_pred):
    """Dice + BCE between a coarse (N, h, w, 1) prediction and the fraction of each cell of the full-size
    (N, S, S, 1) mask that is tumour (S a multiple of h): the loss of the classifier's auxiliary mask head."""
    h, w = tf.shape(y_pred)[1], tf.shape(y_pred)[2]
    cell = tf.shape(y_true)[1] // h
    cells = tf.reshape(tf.cast(y_true, tf.float32), [-1, h, cell, w, cell])
    return dice_bce_loss(tf.reduce_mean(cells, axis=[2, 4]), y_pred)


LOSSES = {"dice_bce": dice_bce_loss, "focal_tversky": focal_tversky_loss}


@keras.saving.register_keras_serializable(package="neuralscan")
class SetCrossEntropy(keras.losses.Loss):
    """Cross-entropy against a set of allowed classes: -(1 - e) log(sum of p over the set) - e mean_k log p_k.

    y_true is (N, K) with 1 on the allowed classes. For a one-hot row this is exactly categorical
    cross-entropy with label smoothing e; for a partial label (several ones, see data.labels) the model may
    spread the set's probability over its members as it finds best.
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "set_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        p = tf.clip_by_value(tf.cast(y_pred, tf.float32), 1e-7, 1.0)
        in_set = tf.clip_by_value(tf.reduce_sum(y_true * p, axis=-1), 1e-7, 1.0)
        loss = -tf.math.log(in_set)
        if self.label_smoothing:
            loss = (1.0 - self.label_smoothing) * loss - self.label_smoothing * tf.reduce_mean(tf.math.log(p), axis=-1)
        return loss

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def dice_scores(masks_true, probs, threshold: float = 0.5):
    """Hard Dice per image (numpy), 1 where truth and prediction are both empty."""
    from ..evaluation.metrics import dice_per_image

    return dice_per_image(masks_true, probs, threshold)


@keras.saving.register_keras_serializable(package="neuralscan")
def set_accuracy(y_true, y_pred):
    """1 where the predicted class is one of the allowed classes of y_true (plain accuracy for one-hot rows)."""
    hit = tf.one_hot(tf.argmax(y_pred, axis=-1), tf.shape(y_pred)[-1]) * tf.cast(y_true, tf.float32)
    return tf.reduce_sum(hit, axis=-1)
