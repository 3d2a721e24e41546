"""The training set-up a run's ``train`` section describes: seed, batches, class weights, loss, optimiser.

One set of functions for every place that trains on a run's recipe: :func:`roverlite.train.fit.train`
(the teacher) and the fine-tuning of compression steps
(:class:`roverlite.compress.finetune.FineTune`), so a compressed model learns on what its teacher
learnt on. A caller overrides only what it must (a step's learning rate, epochs, loss terms or class
weighting); everything else is read from the config.

Example:
    >>> counts = class_pixel_counts(train.masks, cfg.data.num_classes)
    >>> loss = train_loss(cfg, class_weights(cfg, counts))
    >>> optimizer = train_optimizer(cfg, steps_per_epoch=steps)
    >>> compile_for_training(model, cfg, optimizer, loss)                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from roverlite._tf import keras
from roverlite.config import Config
from roverlite.data.pipeline import make_dataset
from roverlite.train import losses
from roverlite.train.optim import build_optimizer, jit_compile_for

__all__ = [
    "batch_seed",
    "class_pixel_counts",
    "class_weights",
    "compile_for_training",
    "seed_everything",
    "train_batches",
    "train_loss",
    "train_optimizer",
]


# === Seeds and batches ===


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (weight initialisation, dropout) with ``train.seed``."""
    keras.utils.set_random_seed(int(seed))


def batch_seed(seed: int, epoch: int = 0, stream: int = 0) -> int:
    """The shuffle-and-augment seed of one epoch of one training stream.

    A stream is one thing that trains (0: the run itself; a compression step: its index in the
    recipe), so a rerun sees the same batches and two streams do not see the same order.
    """
    return int(seed) * 100_003 + 7_919 * int(stream) + int(epoch)


def train_batches(images: np.ndarray, masks: np.ndarray, cfg: Config, seed: int) -> Any:
    """The shuffled, augmented, oversampled train batches of ``cfg`` (one epoch; ``.repeat()`` for more)."""
    return make_dataset(images, masks, cfg.data, cfg.augment, training=True, batch_size=cfg.train.batch_size, seed=seed)


# === Loss ===


def class_pixel_counts(masks: np.ndarray, num_classes: int) -> np.ndarray:
    """Labelled pixels per class (the ignore label and other ids above the classes left out)."""
    counts = np.bincount(np.asarray(masks).reshape(-1), minlength=256)
    return counts[:num_classes].astype(np.float64)


def class_weights(cfg: Config, pixel_counts: Sequence[float], weighting: str | None = None) -> np.ndarray:
    """Class weights from the train split's pixel counts by ``weighting`` (default: ``train.class_weighting``)."""
    return losses.class_weights_from_counts(pixel_counts, weighting or cfg.train.class_weighting)


def train_loss(
    cfg: Config, weights: Sequence[float] | None, terms: Mapping[str, float] | None = None
) -> losses.CombinedLoss:
    """The label loss: ``terms`` (default: ``train.loss``) with class ``weights``, the ignore label and
    ``train.focal_gamma``."""
    data = cfg.data
    # Looked up on the module at call time, so a test can watch what every trainer builds.
    terms = terms or cfg.train.loss
    return losses.build_loss(terms, data.num_classes, data.ignore_index, weights, cfg.train.focal_gamma)


# === Optimiser ===


def train_optimizer(
    cfg: Config,
    steps_per_epoch: int,
    epochs: int | None = None,
    learning_rate: float | None = None,
    warmup_epochs: float | None = None,
) -> Any:
    """A fresh AdamW (``train.weight_decay``) on a warm-up + cosine schedule over ``epochs`` epochs.

    ``None`` takes the run's value: ``train.epochs``, ``train.learning_rate``, ``train.warmup_epochs``.
    """
    train = cfg.train
    return build_optimizer(
        train.learning_rate if learning_rate is None else float(learning_rate),
        train.weight_decay,
        steps_per_epoch,
        train.epochs if epochs is None else int(epochs),
        train.warmup_epochs if warmup_epochs is None else float(warmup_epochs),
    )


def compile_for_training(model: keras.Model, cfg: Config, optimizer: Any, loss: Any) -> keras.Model:
    """Compile ``model`` with XLA where ``train.jit_compile`` asks for it and its gradient allows it."""
    # XLA fuses the train step: ~1.2x the images/s of unet_s on 2 AVX2 cores (measured, see configs/mars.yaml).
    model.compile(optimizer=optimizer, loss=loss, jit_compile=jit_compile_for(cfg.train.jit_compile, model))
    return model
