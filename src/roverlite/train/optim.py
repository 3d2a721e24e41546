"""AdamW with linear warm-up and cosine decay, the optimiser every roverlite model trains with."""

from __future__ import annotations

import logging
import math

from roverlite._tf import keras, tf


@keras.utils.register_keras_serializable(package="roverlite")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine decay to ``floor``.

    The schedule is a pure function of the optimiser's step counter, which is saved in every
    checkpoint, so a resumed run continues on exactly the same curve.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, floor: float = 0.0):
        super().__init__()
        if total_steps < 1:
            raise ValueError(f"Expected total_steps >= 1. Received: total_steps={total_steps}.")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"Expected 0 <= warmup_steps <= total_steps={total_steps}. Received: warmup_steps={warmup_steps}."
            )
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.floor = float(floor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.cast(max(self.warmup_steps, 1), tf.float32)
        decay_steps = tf.cast(max(self.total_steps - self.warmup_steps, 1), tf.float32)
        progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = self.floor + 0.5 * (self.peak - self.floor) * (1.0 + tf.cos(math.pi * progress))
        warmup = self.peak * (step + 1.0) / warm
        return tf.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self) -> dict:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "floor": self.floor,
        }


def build_optimizer(
    learning_rate: float,
    weight_decay: float,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float,
) -> keras.optimizers.Optimizer:
    """AdamW on a warm-up + cosine schedule spanning ``epochs`` epochs.

    Norm scales and biases are excluded from weight decay, as is usual for AdamW.
    """
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total, int(round(warmup_epochs * steps_per_epoch)))
    schedule = WarmupCosine(learning_rate, total_steps=total, warmup_steps=warmup, floor=learning_rate * 0.01)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def _no_xla_gradient(layer: keras.layers.Layer) -> bool:
    """A nearest up-sampling: its gradient, ResizeNearestNeighborGrad, has no XLA CPU kernel."""
    return isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "nearest"


def jit_compile_for(requested: bool, *models: keras.Model) -> bool:
    """``train.jit_compile`` for a train step through ``models``: off where XLA cannot compile its gradient.

    A nearest ``UpSampling2D`` (the nearest decoder, the half-resolution logits) back-propagates through
    ``ResizeNearestNeighborGrad``, which has no XLA CPU kernel: that step trains without XLA (slower, same
    numbers) and says so in the log instead of failing after the data has loaded.
    """
    if not requested:
        return False
    blocked = [layer.name for model in models for layer in model.layers if _no_xla_gradient(layer)]
    if blocked:
        logging.getLogger(__name__).info(
            "train.jit_compile is on, but XLA cannot compile the gradient of %s (nearest up-sampling): "
            "this step trains without XLA", ", ".join(blocked[:3]) + (" ..." if len(blocked) > 3 else ""),
        )
        return False
    return True
