"""Segmentation losses with an ignore label, and class weights from pixel counts.

Every loss takes integer labels ``y_true`` of shape ``(B, H, W)`` (or ``(B, H, W, 1)``) and
logits ``y_pred`` of shape ``(B, H, W, K)`` and returns a scalar. Logits are cast to float32 first,
so float16 logits under mixed precision cannot overflow the softmax.

Reduction (the same for cross-entropy and focal): a weighted mean over the non-ignored pixels of
the batch, ``sum_i w[y_i] * l_i / sum_i w[y_i]`` (PyTorch's ``CrossEntropyLoss(weight=...)``
convention). Weights therefore change how much each class counts relative to the others, not the
overall scale of the loss. A batch with no counted pixel (all ignored, or all of weight 0) gives 0,
with zero gradient, not NaN.

Dice is computed over the whole batch per class (batch dice, steadier for rare classes than per
image) and averaged over the classes present in the batch's counted labels, weighted by the class
weights; a batch with no counted pixel gives 0.

The loss objects are ``keras.losses.Loss`` subclasses whose ``call`` already returns the scalar,
so Keras' default reduction leaves it unchanged and still scales it per replica under a
distribution strategy. Keras ``sample_weight`` is not supported: use class weights.

Example:
    >>> loss = build_loss({"cross_entropy": 1.0, "dice": 0.5}, num_classes=4, ignore_index=255,
    ...                   class_weights=class_weights_from_counts(counts, "inverse_sqrt"))
    >>> model.compile(optimizer="adamw", loss=loss)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from roverlite._tf import keras, tf
from roverlite.config import CLASS_WEIGHTINGS, did_you_mean

__all__ = [
    "WEIGHTING_METHODS",
    "CombinedLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "build_loss",
    "class_weights_from_counts",
    "masked_cross_entropy",
    "masked_dice",
    "masked_focal",
    "pixel_weights",
    "weighted_mean",
]

WEIGHTING_METHODS = CLASS_WEIGHTINGS

_DICE_EPS = 1e-6


# === Class weights ===


def class_weights_from_counts(pixel_counts: Sequence[float], method: str = "inverse") -> np.ndarray:
    """Per-class loss weights from training-set pixel counts (ignored pixels not included).

    Args:
        pixel_counts: ``K`` non-negative counts, index = class id.
        method: ``"none"`` (all ones), ``"inverse"`` (``1 / f``), ``"inverse_sqrt"``
            (``1 / sqrt(f)``, gentler) or ``"median"`` (median frequency balancing,
            ``median(f) / f``, Eigen & Fergus 2015), with ``f`` the class frequency.

    Returns:
        float32 array of ``K`` weights. Except for ``"none"``, classes with zero pixels get weight
        0 (they never occur as a label, and a 0 also keeps them out of dice) and the weights are
        scaled so that their mean over the present classes is 1. ``"none"`` returns ones.

    Raises:
        ValueError: for an unknown method, negative counts or no pixels at all.
    """
    if method not in WEIGHTING_METHODS:
        raise ValueError(
            f"Expected method in {WEIGHTING_METHODS}. Received: method={method!r}."
            + did_you_mean(method, WEIGHTING_METHODS)
        )
    counts = np.asarray(pixel_counts, dtype=np.float64).reshape(-1)
    if counts.size == 0 or (counts < 0).any() or not np.isfinite(counts).all():
        raise ValueError(f"Expected one non-negative count per class. Received: pixel_counts={counts.tolist()}.")
    if method == "none":
        return np.ones(counts.size, np.float32)
    present = counts > 0
    if not present.any():
        raise ValueError(f"Expected at least one class with pixels. Received: pixel_counts={counts.tolist()}.")
    freq = counts[present] / counts.sum()
    if method == "inverse":
        w = 1.0 / freq
    elif method == "inverse_sqrt":
        w = 1.0 / np.sqrt(freq)
    else:
        w = np.median(freq) / freq
    weights = np.zeros(counts.size)
    weights[present] = w / w.mean()
    return weights.astype(np.float32)


# === Functional losses ===


def _prepare(y_true, y_pred, ignore_index: int | None):
    """float32 logits, safe int labels (ignored -> 0) and a float mask of counted pixels."""
    logits = tf.cast(y_pred, tf.float32)
    num_classes = logits.shape[-1]
    labels = tf.cast(y_true, tf.int32)
    if labels.shape.rank == logits.shape.rank:
        labels = tf.squeeze(labels, axis=-1)
    valid = tf.logical_and(labels >= 0, labels < num_classes)
    if ignore_index is not None:
        valid = tf.logical_and(valid, labels != ignore_index)
    safe = tf.where(valid, labels, tf.zeros_like(labels))
    return logits, safe, tf.cast(valid, tf.float32)


def _pixel_weights(labels, mask, class_weights):
    if class_weights is None:
        return mask
    w = tf.gather(tf.constant(class_weights, tf.float32), labels)
    return w * mask


def pixel_weights(y_true, y_pred, ignore_index: int | None = 255, class_weights: Sequence[float] | None = None):
    """Each pixel's weight in these losses: 0 where not counted, else 1 or its label's class weight.

    A pixel is not counted when its label is ``ignore_index`` or outside ``0..K-1`` (``K`` =
    ``y_pred``'s last axis). Other per-pixel losses (e.g. distillation's) use it to count the same
    pixels the same way.
    """
    _, labels, mask = _prepare(y_true, y_pred, ignore_index)
    return _pixel_weights(labels, mask, class_weights)


def weighted_mean(values, weights):
    """``sum(values * weights) / sum(weights)``; 0 (and a zero gradient) when every weight is 0."""
    # divide_no_nan: an all-ignored batch gives 0 and a zero gradient instead of 0/0 = NaN.
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), tf.reduce_sum(weights))


def masked_cross_entropy(y_true, y_pred, ignore_index: int | None = 255, class_weights: Sequence[float] | None = None):
    """Softmax cross-entropy, weighted mean over non-ignored pixels (see module docstring)."""
    logits, labels, mask = _prepare(y_true, y_pred, ignore_index)
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return weighted_mean(nll, _pixel_weights(labels, mask, class_weights))


def masked_focal(
    y_true,
    y_pred,
    gamma: float = 2.0,
    ignore_index: int | None = 255,
    class_weights: Sequence[float] | None = None,
):
    """Focal loss ``-(1 - p_t)**gamma * log(p_t)`` (Lin et al., 2017), reduced like cross-entropy.

    Class weights play the role of the per-class ``alpha``; ``gamma=0`` gives cross-entropy.
    """
    logits, labels, mask = _prepare(y_true, y_pred, ignore_index)
    log_p = tf.nn.log_softmax(logits, axis=-1)
    log_pt = tf.reduce_sum(log_p * tf.one_hot(labels, tf.shape(logits)[-1]), axis=-1)
    # pow(0, gamma) has an infinite derivative for gamma < 1; the clip keeps the base positive.
    focus = tf.pow(tf.maximum(1.0 - tf.exp(log_pt), 1e-12), gamma)
    return weighted_mean(-focus * log_pt, _pixel_weights(labels, mask, class_weights))


def masked_dice(y_true, y_pred, ignore_index: int | None = 255, class_weights: Sequence[float] | None = None):
    """``1 - weighted mean soft dice`` over the classes present in the counted labels.

    Per class ``c``: ``dice_c = 2 * sum(p_c * y_c) / (sum(p_c) + sum(y_c))`` over counted pixels
    of the whole batch, with softmax probabilities ``p``.
    """
    logits, labels, mask = _prepare(y_true, y_pred, ignore_index)
    num_classes = logits.shape[-1]
    probs = tf.nn.softmax(logits, axis=-1) * mask[..., None]
    onehot = tf.one_hot(labels, num_classes) * mask[..., None]
    axes = list(range(logits.shape.rank - 1))
    inter = tf.reduce_sum(probs * onehot, axis=axes)
    card = tf.reduce_sum(probs, axis=axes) + tf.reduce_sum(onehot, axis=axes)
    dice = (2.0 * inter + _DICE_EPS) / (card + _DICE_EPS)
    present = tf.cast(tf.reduce_sum(onehot, axis=axes) > 0, tf.float32)
    weights = present if class_weights is None else present * tf.constant(class_weights, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(weights * (1.0 - dice)), tf.reduce_sum(weights))


# === Keras loss objects ===


class _MaskedLoss(keras.losses.Loss):
    def __init__(
        self,
        ignore_index: int | None = 255,
        class_weights: Sequence[float] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.ignore_index = ignore_index
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ignore_index": self.ignore_index, "class_weights": self.class_weights}


@keras.utils.register_keras_serializable(package="roverlite")
class CrossEntropyLoss(_MaskedLoss):
    """Weighted softmax cross-entropy with an ignore label (see :func:`masked_cross_entropy`)."""

    def __init__(self, ignore_index=255, class_weights=None, name="cross_entropy", **kwargs):
        super().__init__(ignore_index, class_weights, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return masked_cross_entropy(y_true, y_pred, self.ignore_index, self.class_weights)


@keras.utils.register_keras_serializable(package="roverlite")
class FocalLoss(_MaskedLoss):
    """Focal loss with an ignore label (see :func:`masked_focal`)."""

    def __init__(self, gamma=2.0, ignore_index=255, class_weights=None, name="focal", **kwargs):
        super().__init__(ignore_index, class_weights, name=name, **kwargs)
        if float(gamma) < 0:
            raise ValueError(f"Expected focal gamma >= 0. Received: gamma={gamma}.")
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        return masked_focal(y_true, y_pred, self.gamma, self.ignore_index, self.class_weights)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@keras.utils.register_keras_serializable(package="roverlite")
class DiceLoss(_MaskedLoss):
    """Soft multiclass dice with an ignore label and class weights (see :func:`masked_dice`)."""

    def __init__(self, ignore_index=255, class_weights=None, name="dice", **kwargs):
        super().__init__(ignore_index, class_weights, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return masked_dice(y_true, y_pred, self.ignore_index, self.class_weights)


@keras.utils.register_keras_serializable(package="roverlite")
class CombinedLoss(keras.losses.Loss):
    """Weighted sum of loss terms: ``sum_k weight_k * loss_k``."""

    def __init__(self, terms: Sequence[tuple[float, keras.losses.Loss]] = (), name="loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.terms = [(float(w), loss) for w, loss in terms]

    def call(self, y_true, y_pred):
        return tf.add_n([w * loss.call(y_true, y_pred) for w, loss in self.terms])

    def get_config(self):
        terms = [[w, keras.losses.serialize(loss)] for w, loss in self.terms]
        return {**super().get_config(), "terms": terms}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["terms"] = [(w, keras.losses.deserialize(loss)) for w, loss in config.get("terms", [])]
        return cls(**config)


def build_loss(
    loss_terms: Mapping[str, float],
    num_classes: int,
    ignore_index: int | None = 255,
    class_weights: Sequence[float] | None = None,
    focal_gamma: float = 2.0,
) -> CombinedLoss:
    """The weighted sum of the named terms (``cross_entropy``, ``dice``, ``focal``).

    Args:
        loss_terms: ``{term: weight}``, e.g. ``TrainConfig.loss``.
        num_classes: ``K``; checks the length of ``class_weights``.
        ignore_index: label excluded from every term.
        class_weights: ``K`` weights used by every term (``None`` = uniform).
        focal_gamma: focusing parameter of the focal term.

    Raises:
        ValueError: for an unknown term, a non-positive weight or class weights of the wrong length.
    """
    makers = {
        "cross_entropy": lambda: CrossEntropyLoss(ignore_index, class_weights),
        "dice": lambda: DiceLoss(ignore_index, class_weights),
        "focal": lambda: FocalLoss(focal_gamma, ignore_index, class_weights),
    }
    if not loss_terms:
        raise ValueError("Expected at least one loss term, e.g. {'cross_entropy': 1.0}. Received: {}.")
    if class_weights is not None and len(class_weights) != num_classes:
        raise ValueError(
            f"Expected {num_classes} class weights. Received: {len(class_weights)} ({list(class_weights)})."
        )
    terms = []
    for name, weight in loss_terms.items():
        if name not in makers:
            raise ValueError(
                f"Expected loss terms from {tuple(makers)}. Received: {name!r}." + did_you_mean(name, makers)
            )
        if float(weight) <= 0:
            raise ValueError(f"Expected a positive weight for loss term {name!r}. Received: {weight}.")
        terms.append((float(weight), makers[name]()))
    return CombinedLoss(terms)
