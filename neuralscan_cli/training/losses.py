"""Segmentation losses, registered so that a `.keras` checkpoint holding them reloads (for --resume).

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
    """Focal Tversky (Abraham & Khan 2019): weighs missed tumour (false negatives) above false positives."""
    t, p = _flat(y_true, y_pred)
    tp = tf.reduce_sum(t * p, axis=1)
    fn = tf.reduce_sum(t * (1.0 - p), axis=1)
    fp = tf.reduce_sum((1.0 - t) * p, axis=1)
    tversky = (tp + _SMOOTH) / (tp + alpha * fn + (1.0 - alpha) * fp + _SMOOTH)
    return tf.pow(1.0 - tversky, gamma)


LOSSES = {"dice_bce": dice_bce_loss, "focal_tversky": focal_tversky_loss}


def dice_scores(masks_true, probs, threshold: float = 0.5):
    """Hard Dice per image (numpy), 1 where truth and prediction are both empty."""
    import numpy as np

    t = np.asarray(masks_true).reshape(len(masks_true), -1) > 0
    p = np.asarray(probs).reshape(len(probs), -1) > threshold
    inter = (t & p).sum(1)
    denom = t.sum(1) + p.sum(1)
    return np.where(denom == 0, 1.0, 2.0 * inter / np.maximum(denom, 1))
