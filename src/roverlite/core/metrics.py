"""Segmentation metrics from a confusion matrix: IoU per class, mIoU, pixel accuracy.

NumPy only, in the bottom layer (``roverlite.core``): training, export self-checks, gates and the
device runtime all score with this module, and a robot that has no TensorFlow runs it too (a device
bundle copies it), so nothing here may import TensorFlow or any other roverlite package.

Conventions:
    * The confusion matrix is ``(K, K)`` int64, rows = truth, columns = prediction.
    * Pixels whose truth is ``ignore_index``, negative or ``>= K`` are left out entirely.
    * A prediction outside ``[0, K)`` on a counted pixel raises ``ValueError``: it cannot be
      placed in a ``(K, K)`` matrix, and dropping it silently would shrink the truth row and
      inflate that class's IoU. Predictions come from an argmax over ``K`` logits, so an
      out-of-range id means a bug (wrong ``num_classes`` or an unmapped label), not a miss.
    * A class absent from both truth and prediction has IoU ``NaN`` and is left out of mIoU;
      a class that is only predicted (never true) has IoU 0.

Example:
    >>> stream = StreamingConfusion(num_classes=4, ignore_index=255)
    >>> for masks, preds in batches:  # doctest: +SKIP
    ...     stream.update(masks, preds)
    >>> stream.result(("soil", "bedrock", "sand", "big_rock"))["miou"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "StreamingConfusion",
    "class_iou_dict",
    "confusion_matrix",
    "hazard_rates",
    "hazard_summary",
    "iou_per_class",
    "mean_iou",
    "pixel_accuracy",
]


def _as_labels(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "biu":
        raise ValueError(f"Expected integer class ids for {what}. Received: dtype={array.dtype}.")
    return array.reshape(-1).astype(np.int64, copy=False)


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """Count (truth, prediction) pairs over all counted pixels.

    Args:
        y_true: integer class ids of any shape (e.g. ``(B, H, W)``).
        y_pred: integer class ids of the same shape (e.g. ``logits.argmax(-1)``).
        num_classes: ``K``.
        ignore_index: truth label excluded from the counts (``None`` = none).

    Returns:
        ``(K, K)`` int64 matrix, rows = truth, columns = prediction.

    Raises:
        ValueError: on mismatched shapes, non-integer inputs, or a prediction outside
            ``[0, K)`` on a counted pixel.
    """
    if int(num_classes) < 1:
        raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes}.")
    k = int(num_classes)
    t_shape, p_shape = np.shape(y_true), np.shape(y_pred)
    if t_shape != p_shape:
        raise ValueError(f"Expected y_true and y_pred of the same shape. Received: {t_shape} and {p_shape}.")
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    valid = (t >= 0) & (t < k)
    if ignore_index is not None:
        valid &= t != ignore_index
    if not valid.all():
        t, p = t[valid], p[valid]
    if p.size and (p.min() < 0 or p.max() >= k):
        bad = p[(p < 0) | (p >= k)]
        raise ValueError(
            f"Expected predictions in [0, {k}). Received: {bad.size} out-of-range predictions, e.g. {int(bad[0])}."
        )
    # One bincount over a flattened (truth, prediction) index is far faster than np.add.at.
    return np.bincount(k * t + p, minlength=k * k).reshape(k, k).astype(np.int64, copy=False)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """Intersection over union per class: ``TP / (TP + FP + FN)``.

    Returns:
        float64 array of length ``K``; ``NaN`` where a class is absent from both truth and
        prediction (its IoU is undefined, not 0 or 1).
    """
    cm = _check_cm(cm)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - np.diag(cm)
    iou = np.full(cm.shape[0], np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    return iou


def mean_iou(cm: np.ndarray, class_ids: Sequence[int] | None = None) -> float:
    """Mean IoU over ``class_ids`` (default all), skipping classes whose IoU is NaN.

    Returns ``NaN`` when every selected class is NaN (nothing to score).
    """
    iou = iou_per_class(cm)
    if class_ids is not None:
        ids = [int(i) for i in class_ids]
        bad = [i for i in ids if not 0 <= i < iou.size]
        if bad:
            raise ValueError(f"Expected class ids in [0, {iou.size}). Received: class_ids={ids}.")
        iou = iou[ids]
    iou = iou[~np.isnan(iou)]
    return float(iou.mean()) if iou.size else math.nan


def pixel_accuracy(cm: np.ndarray) -> float:
    """Fraction of counted pixels predicted correctly (``NaN`` when none were counted)."""
    cm = _check_cm(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else math.nan


def class_iou_dict(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """``{class_name: IoU}`` in class-id order; absent classes keep ``NaN``."""
    iou = iou_per_class(cm)
    if len(class_names) != iou.size:
        raise ValueError(
            f"Expected {iou.size} class names for a {iou.size}x{iou.size} confusion matrix. "
            f"Received: {len(class_names)} names {list(class_names)}."
        )
    return {str(name): float(v) for name, v in zip(class_names, iou)}


def hazard_rates(cm: Any, hazard: int, traversable: Sequence[int]) -> tuple[float, float]:
    """How often a hazard is driven over, and how often safe ground is called a hazard.

    For a hazard class ``h`` and the traversable classes ``T`` it must never be mistaken for
    (on Mars, big rock ``h`` and soil / sand ``T``), both rates come from the counted pixels of
    ``cm`` (rows truth, columns prediction; ignore-labelled pixels are never in it):

    * ``miss_rate = sum(cm[h, T]) / sum(cm[h, :])``: the share of true hazard pixels predicted
      as one of ``T``, the error that sends a rover onto a rock. A hazard predicted as a class
      outside ``T`` (big rock called bedrock) is an IoU error but not a miss.
    * ``false_rate = sum(cm[T, h]) / sum(cm[T, :])``: the share of true traversable pixels
      predicted as the hazard, the error that makes a rover detour around safe ground.

    Each is ``NaN`` when its denominator is 0 (no hazard pixels, or no traversable pixels, in the
    truth): undefined, not 0.

    Args:
        cm: ``(K, K)`` confusion matrix.
        hazard: the hazard class id.
        traversable: ids of the classes the hazard must not be predicted as (not ``hazard``).

    Returns:
        ``(miss_rate, false_rate)``.

    Example:
        >>> cm = [[90, 10], [30, 70]]  # rows: truth soil, rock; columns: prediction
        >>> hazard_rates(cm, hazard=1, traversable=[0])
        (0.3, 0.1)
    """
    cm = _check_cm(cm)
    k = cm.shape[0]
    ids = sorted({int(i) for i in traversable})
    if not 0 <= int(hazard) < k or not ids or any(not 0 <= i < k for i in ids) or int(hazard) in ids:
        raise ValueError(
            f"Expected a hazard id and traversable ids in [0, {k}), the hazard not among them. "
            f"Received: hazard={hazard}, traversable={list(traversable)}."
        )
    h = int(hazard)
    hazard_total, safe_total = cm[h].sum(), cm[ids].sum()
    miss = cm[h, ids].sum() / hazard_total if hazard_total else math.nan
    false = cm[ids, h].sum() / safe_total if safe_total else math.nan
    return float(miss), float(false)


def hazard_summary(
    cm: Any, class_names: Sequence[str], hazards: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, Any]]:
    """JSON-ready :func:`hazard_rates` for every declared hazard (``NaN`` becomes ``None``).

    Args:
        cm: ``(K, K)`` confusion matrix.
        class_names: one name per class.
        hazards: hazard class name -> traversable class names, e.g. ``{"big_rock": ["soil", "sand"]}``
            (``data.hazards`` of a config, ``hazards`` of a sidecar).

    Returns:
        ``{hazard: {"miss_rate", "false_rate", "traversable", "hazard_pixels", "traversable_pixels"}}``.
    """
    cm = _check_cm(cm)
    names = [str(n) for n in class_names]
    if len(names) != cm.shape[0]:
        raise ValueError(f"Expected {cm.shape[0]} class names. Received: {names}.")
    out = {}
    for hazard, safe in hazards.items():
        unknown = [n for n in (hazard, *safe) if n not in names]
        if unknown:
            raise ValueError(f"Expected hazard classes among {names}. Received: {unknown}.")
        h, ids = names.index(hazard), [names.index(n) for n in safe]
        miss, false = hazard_rates(cm, h, ids)
        out[str(hazard)] = {
            "miss_rate": _json_float(miss),
            "false_rate": _json_float(false),
            "traversable": [str(n) for n in safe],
            "hazard_pixels": int(cm[h].sum()),
            "traversable_pixels": int(cm[sorted(set(ids))].sum()),
        }
    return out


def _check_cm(cm: Any) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"Expected a square (K, K) confusion matrix. Received: shape={cm.shape}.")
    return cm


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class StreamingConfusion:
    """Accumulates a confusion matrix over batches, so a whole split never sits in memory.

    Args:
        num_classes: ``K``.
        ignore_index: truth label excluded from the counts (``None`` = none).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes}.")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._cm = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, y_true: Any, y_pred: Any) -> None:
        """Add one batch of integer truth and predicted ids (same shape)."""
        self._cm += confusion_matrix(y_true, y_pred, self.num_classes, self.ignore_index)

    def reset(self) -> None:
        self._cm[:] = 0

    def add_matrix(self, cm: Any) -> None:
        """Add a ``(K, K)`` confusion matrix counted elsewhere (e.g. another fold or worker)."""
        cm = _check_cm(cm)
        if cm.shape != self._cm.shape:
            raise ValueError(f"Expected a {self._cm.shape} confusion matrix. Received: shape {cm.shape}.")
        self._cm += cm.astype(np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """A copy of the accumulated ``(K, K)`` matrix (rows = truth, columns = prediction)."""
        return self._cm.copy()

    def result(
        self,
        class_names: Sequence[str] | None = None,
        eval_ids: Sequence[int] | None = None,
        hazards: Mapping[str, Sequence[str]] | None = None,
    ) -> dict[str, Any]:
        """JSON-ready summary; ``NaN`` values become ``None``.

        Args:
            class_names: one name per class (default ``"0"``, ``"1"``, ...).
            eval_ids: classes averaged into ``miou`` (default all), e.g. ``(1, 2, 3, 4)`` for
                AN2DL, whose class 0 is background.
            hazards: hazard class -> traversable classes (see :func:`hazard_summary`); when given
                (and not empty) the summary gains ``hazards``.

        Returns:
            ``{"miou", "per_class_iou": {name: iou}, "pixel_accuracy", "confusion_matrix"}``,
            with the matrix as nested lists of ints, plus ``hazards`` when declared.
        """
        names = [str(i) for i in range(self.num_classes)] if class_names is None else class_names
        per_class = class_iou_dict(self._cm, names)
        result = {
            "miou": _json_float(mean_iou(self._cm, eval_ids)),
            "per_class_iou": {name: _json_float(v) for name, v in per_class.items()},
            "pixel_accuracy": _json_float(pixel_accuracy(self._cm)),
            "confusion_matrix": self._cm.tolist(),
        }
        if hazards:
            result["hazards"] = hazard_summary(self._cm, names, hazards)
        return result
