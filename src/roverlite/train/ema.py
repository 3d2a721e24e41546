"""Exponential moving average (EMA) of a model's weights during training.

Small-data runs with small batches (CWFID: 30 images, batch 4, 8 steps an epoch) validate very
differently from one epoch to the next: the weights and BatchNorm's moving statistics follow
the last few batches. An average of the weights over the last few hundred steps is the model
that validation, the best checkpoint and export then use; the optimiser keeps training the raw
weights. Every weight is averaged, BatchNorm's moving mean and variance included (as timm's
``ModelEmaV2`` does), so the averaged model is self-consistent.

The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the first
steps' random weights are forgotten quickly. The averages are ``tf.Variable``s of a
``tf.Module`` and go into the training checkpoint, so ``--resume`` continues them exactly.

Example:
    >>> ema = WeightEMA(model, decay=0.99)
    >>> model.fit(dataset, callbacks=[ema.callback()])
    >>> with ema.applied(model):
    ...     evaluate(model)          # the averaged weights; the raw ones are back afterwards
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from roverlite._tf import keras, tf

__all__ = ["WeightEMA", "check_decay"]


def check_decay(decay: float) -> float:
    """``decay`` as a float, or ValueError when it is not in (0, 1)."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay) or not 0 < decay < 1:
        raise ValueError(f"Expected an EMA decay in (0, 1), such as 0.99. Received: {decay!r}.")
    return float(decay)


class WeightEMA(tf.Module):
    """Moving averages of every weight of ``model``, updated after each training batch.

    Args:
        model: the model being trained (built: its weights exist).
        decay: the largest per-step decay; the average spans about ``1 / (1 - decay)`` steps.

    Raises:
        ValueError: for a decay outside (0, 1).
    """

    def __init__(self, model: keras.Model, decay: float) -> None:
        super().__init__(name="weight_ema")
        self.decay = check_decay(decay)
        self._weights = list(model.weights)
        # Float weights are averaged in float32 (mixed precision keeps float32 variables anyway).
        self.averages = [tf.Variable(w.numpy(), trainable=False, name=f"ema_{i}") for i, w in enumerate(self._weights)]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_updates")

    @tf.function
    def update(self) -> None:
        """Move every average one step towards the current weights."""
        n = tf.cast(self.updates.assign_add(1), tf.float32)
        decay = tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + n) / (10.0 + n))
        for average, weight in zip(self.averages, self._weights):
            if average.dtype.is_floating:
                d = tf.cast(decay, average.dtype)
                average.assign(d * average + (1 - d) * tf.cast(weight, average.dtype))
            else:
                average.assign(weight)

    def callback(self) -> keras.callbacks.Callback:
        """A Keras callback that updates the averages after every training batch."""
        return keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: self.update())

    @contextlib.contextmanager
    def applied(self, model: keras.Model) -> Iterator[keras.Model]:
        """Swap the averaged weights into ``model`` for the ``with`` block, then put the raw ones back."""
        raw = model.get_weights()
        model.set_weights([a.numpy() for a in self.averages])
        try:
            yield model
        finally:
            model.set_weights(raw)
