"""Learning-rate schedules (registered: they are saved inside checkpoints with the optimizer)."""
from __future__ import annotations

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="neuralscan")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then cosine decay to `peak * final_fraction`."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, final_fraction: float = 0.01):
        self.peak = float(peak)
        self.total_steps = int(max(1, total_steps))
        self.warmup_steps = int(max(0, warmup_steps))
        self.final_fraction = float(final_fraction)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.cast(max(1, self.warmup_steps), tf.float32)
        decay_steps = tf.cast(max(1, self.total_steps - self.warmup_steps), tf.float32)
        progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + tf.cos(math.pi * progress))
        return self.peak * tf.where(step < self.warmup_steps, (step + 1) / warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "final_fraction": self.final_fraction}


@keras.saving.register_keras_serializable(package="neuralscan")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Smith's one-cycle: cosine rise from peak/25 to peak over 30% of steps, then cosine fall to peak/1e4."""

    def __init__(self, peak: float, total_steps: int, pct_start: float = 0.3):
        self.peak = float(peak)
        self.total_steps = int(max(1, total_steps))
        self.pct_start = float(pct_start)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        up = tf.cast(max(1, int(self.total_steps * self.pct_start)), tf.float32)
        down = tf.cast(max(1, self.total_steps), tf.float32) - up
        start, end = self.peak / 25.0, self.peak / 1e4
        a = tf.clip_by_value(step / up, 0.0, 1.0)
        b = tf.clip_by_value((step - up) / tf.maximum(down, 1.0), 0.0, 1.0)
        rising = start + (self.peak - start) * 0.5 * (1 - tf.cos(math.pi * a))
        falling = end + (self.peak - end) * 0.5 * (1 + tf.cos(math.pi * b))
        return tf.where(step < up, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "pct_start": self.pct_start}


def make_schedule(kind: str, peak: float, total_steps: int, warmup_steps: int = 0):
    if kind == "cosine":
        return WarmupCosine(peak, total_steps, warmup_steps)
    if kind == "onecycle":
        return OneCycle(peak, total_steps)
    return float(peak)
