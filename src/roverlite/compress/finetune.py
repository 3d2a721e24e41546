"""Fine-tuning inside a recipe: the training set-up every step shares, and the loop pruning and QAT share.

Every step that trains uses the run's own training recipe, so a compressed model learns on what the
teacher learnt on: :class:`FineTune` builds the train batches, class weights, hard loss and
optimiser with :mod:`roverlite.train.setup`, the functions :func:`roverlite.train.fit.train` uses.
Only the learning rate, the epochs and, when a step sets them, the loss terms and class weighting
come from the step (see :data:`DEFAULT_LR_FRACTION`). :func:`fit_wrapped` compiles and fits a model
wrapped by pruning or QAT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from roverlite._tf import keras
from roverlite.config import Config
from roverlite.train import setup
from roverlite.train.optim import jit_compile_for

__all__ = ["DEFAULT_LR_FRACTION", "FineTune", "StepBar", "fit_wrapped"]

# Fraction of the run's train.learning_rate a step uses when it names none. Distillation trains a
# student from scratch (the full rate, with the run's warm-up). Pruning and QAT adjust a trained
# model and only need to settle (a tenth, as roverlite.compress.qat advises for QAT). A thinned
# model has to re-learn: keeping 70 % of a 32x32 smoke teacher's filters (mIoU 0.507 -> 0.14) and
# fine-tuning 4 short epochs recovered 0.381 at 0.1x, 0.442 at 0.5x and 0.456 at 1x the rate.
DEFAULT_LR_FRACTION: Mapping[str, float] = {"distill": 1.0, "prune": 0.1, "structured": 0.5, "qat": 0.1}


# === Set-up ===


class FineTune:
    """The training split, loss, optimiser and progress bars every training step shares.

    Args:
        cfg: the run config (``data``, ``augment`` and ``train`` are used).
        images, masks: the train split (uint8), e.g. from ``load_split(cfg.data, "train")``.
        progress: show a tqdm bar per step.
    """

    def __init__(self, cfg: Config, images: np.ndarray, masks: np.ndarray, progress: bool = True) -> None:
        self.cfg = cfg
        self.images, self.masks = images, masks
        self.progress = progress
        self.pixel_counts = setup.class_pixel_counts(masks, cfg.data.num_classes)
        self.steps = int(self._dataset(0).cardinality())

    def _dataset(self, index: int) -> Any:
        seed = setup.batch_seed(self.cfg.train.seed, stream=index)
        return setup.train_batches(self.images, self.masks, self.cfg, seed)

    def dataset(self, index: int) -> Any:
        """Training batches for step ``index``, repeated: pass ``steps_per_epoch=self.steps``.

        The seed depends on ``train.seed`` and the step (:func:`roverlite.train.setup.batch_seed`),
        so a rerun of a recipe sees the same batches, and two steps do not see the same order.
        """
        return self._dataset(index).repeat()

    def weights(self, class_weighting: str | None = None) -> np.ndarray:
        """Class weights of the train split by ``class_weighting`` (default: the run's ``train.class_weighting``)."""
        return setup.class_weights(self.cfg, self.pixel_counts, class_weighting)

    def loss(self, step: Any = None) -> Any:
        """The hard loss of ``step`` (its :class:`~roverlite.compress._registry.HardLoss`): its ``loss``
        terms and ``class_weighting`` where it sets them, else the run's (``train.loss``,
        ``train.class_weighting``); the ignore label always."""
        hard = getattr(step, "hard_loss", None)
        if hard is None:
            return setup.train_loss(self.cfg, self.weights())
        return setup.train_loss(self.cfg, self.weights(hard.class_weighting), hard.loss)

    def learning_rate(self, kind: str, value: float | None) -> float:
        """``value``, or the run's rate scaled by :data:`DEFAULT_LR_FRACTION` for the step kind."""
        return float(value) if value is not None else self.cfg.train.learning_rate * DEFAULT_LR_FRACTION[kind]

    def optimizer(self, learning_rate: float, epochs: int, warmup_epochs: float = 0.0) -> Any:
        """A fresh AdamW on a cosine schedule over ``epochs`` epochs of :attr:`steps` batches."""
        return setup.train_optimizer(self.cfg, self.steps, epochs, learning_rate, warmup_epochs)

    def compile(self, model: keras.Model, optimizer: Any, loss: Any) -> keras.Model:
        """Compile ``model`` as the run's training does (XLA where ``train.jit_compile`` allows)."""
        return setup.compile_for_training(model, self.cfg, optimizer, loss)

    def jit_compile(self, *models: keras.Model) -> bool:
        """``train.jit_compile`` for a train step through ``models`` (off where XLA cannot compile it)."""
        return jit_compile_for(self.cfg.train.jit_compile, *models)

    def bar(self, label: str, epochs: int) -> StepBar:
        """A progress bar over all batches of a step (silent when progress is off)."""
        return StepBar(label, epochs * self.steps, self.progress)


class StepBar(keras.callbacks.Callback):
    """tqdm bar over a step's batches with the running loss; keeps the last epoch's logs."""

    def __init__(self, label: str, total: int, enabled: bool = True) -> None:
        super().__init__()
        self.label, self.total, self.enabled = label, total, enabled
        self.last_logs: dict[str, float] = {}
        self._bar = None

    def on_train_begin(self, logs=None):
        if self.enabled:
            # tqdm (optional, [train] extra) only when a bar is shown
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self.label, unit="batch", leave=False)

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(1)
            if logs and "loss" in logs:
                self._bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        self.last_logs = {k: round(float(v), 5) for k, v in (logs or {}).items()}

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# === Loop ===


def fit_wrapped(
    model: Any,
    train_ds: Any,
    epochs: int,
    steps: int | None,
    loss: Any,
    optimizer: Any,
    validation_data: Any = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Compile ``model`` (wrapped by pruning or QAT) and fit it; returns the Keras ``History``.

    The optimiser must be fresh: the wrappers add variables an earlier optimiser has not seen.
    """
    if int(epochs) < 1:
        raise ValueError(f"Expected epochs >= 1. Received: epochs={epochs}.")
    model.compile(optimizer=optimizer, loss=loss)
    return model.fit(
        train_ds,
        epochs=int(epochs),
        steps_per_epoch=steps,
        validation_data=validation_data,
        callbacks=list(callbacks),
        verbose=0,
    )
