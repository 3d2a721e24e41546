"""The fine-tuning loop that pruning and QAT share: compile with a fresh optimiser, then fit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
