"""Quantization-aware training (QAT) with TFMOT's default 8-bit scheme, optionally sparsity-preserving.

:func:`quantize_aware` returns a copy of a tf_keras model with fake-quantization on weights and
activations as int8 TFLite will run them (per-channel symmetric conv weights, per-tensor
asymmetric activations, BatchNorm folded into the preceding conv); :func:`fine_tune_qat` trains
it for a few epochs so the weights adapt to the rounding. The result converts to a full-int8
TFLite model with ``roverlite.export`` (no separate calibration needed: the ranges were learnt).

Pruned models: strip the pruning wrappers first (:func:`roverlite.compress.prune.strip`), then
use ``preserve_sparsity=True`` (TFMOT's prune-preserving QAT, PQAT): each weight quantizer
multiplies by a mask of the weights that are non-zero when QAT starts, so fine-tuning cannot
re-grow pruned weights. Plain QAT would let the zeros drift away.

TFMOT 0.8.1's prune-preserving registry has no entry for ``Conv2DTranspose`` (the U-Net's
up-convolution), so ``Default8BitPrunePreserveQuantizeScheme`` refuses roverlite's transpose
decoders. This module extends that registry with the same prune-preserving per-tensor quantizer
TFMOT uses for Dense layers, which is what its default scheme already does for Conv2DTranspose
(per-tensor; its transpose of the kernel around the quantizer changes nothing per-tensor).

Example:
    >>> qat = quantize_aware(strip(pruned), preserve_sparsity=True)      # doctest: +SKIP
    >>> fine_tune_qat(qat, train_ds, epochs=2, steps=None, loss=loss, optimizer=opt)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from roverlite._tf import keras, tf
from roverlite.compress.finetune import fit_wrapped

# isort: split
# TFMOT only after roverlite._tf, which selects Keras 2 before TensorFlow loads.
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
    prune_preserve_quantize_registry as _pp_registry,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry as _default_registry,
)

from roverlite.compress.prune import is_pruning_wrapped

__all__ = ["fine_tune_qat", "is_quantize_wrapped", "quantize_aware"]

logger = logging.getLogger(__name__)

_qkeras = tfmot.quantization.keras


# === Prune-preserving scheme with Conv2DTranspose ===


class _PrunePreserveRegistry(_pp_registry.Default8bitPrunePreserveQuantizeRegistry):
    """TFMOT's prune-preserving 8-bit registry plus Conv2DTranspose."""

    _LAYERS_CONFIG_MAP: ClassVar[dict] = {
        **_pp_registry.PrunePreserveQuantizeRegistry._LAYERS_CONFIG_MAP,
        keras.layers.Conv2DTranspose: _pp_registry._PrunePreserveInfo(
            ["kernel"], ["Default8BitConvTransposeQuantizeConfig"]
        ),
    }

    def __init__(self) -> None:
        super().__init__()
        self._config_quantizer_map["Default8BitConvTransposeQuantizeConfig"] = (
            _pp_registry.PrunePreserveDefault8BitWeightsQuantizer()
        )


class _PrunePreserveScheme(tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme):
    def get_quantize_registry(self):
        return _PrunePreserveRegistry()


# === Apply ===


def is_quantize_wrapped(model: keras.Model) -> bool:
    """Whether ``model`` already carries TFMOT quantization wrappers."""
    return any(isinstance(layer, _qkeras.QuantizeWrapper) for layer in model.layers)


def quantize_aware(model: keras.Model, preserve_sparsity: bool = False) -> keras.Model:
    """A copy of ``model`` with fake-quantization for int8 QAT (the input model is unchanged).

    Args:
        model: a plain tf_keras functional model (stripped if it was pruned).
        preserve_sparsity: keep the zeros of a pruned model through QAT (PQAT). Use it for
            models from :func:`roverlite.compress.prune.strip`; on a dense model it only costs a
            mask per kernel.

    Returns:
        The QAT model, uncompiled.

    Raises:
        ValueError: for a model still wrapped for pruning (strip it first), a model already
            wrapped for quantization, or layers TFMOT's 8-bit scheme cannot quantize (named;
            e.g. ``Multiply`` in squeeze-excitation and attention gates).
    """
    if is_pruning_wrapped(model):
        raise ValueError(
            "Expected a stripped model: QAT cannot wrap pruning wrappers. Call "
            f"roverlite.compress.strip(model) first. Received: {model.name!r}, still wrapped for pruning."
        )
    if is_quantize_wrapped(model):
        raise ValueError(f"Expected a float model. Received: {model.name!r}, already wrapped for quantization.")
    _check_quantizable(model)
    scheme = _PrunePreserveScheme() if preserve_sparsity else _qkeras.default_8bit.Default8BitQuantizeScheme()
    try:
        qat = _qkeras.quantize_apply(_qkeras.quantize_annotate_model(model), scheme=scheme)
    except RuntimeError as err:
        # TFMOT reports an unsupported layer as RuntimeError("Layer <name>:<class> is not supported...").
        raise ValueError(f"Cannot quantize {model.name!r} for QAT: {err}") from None
    logger.info(
        "QAT model for %s (%s): %d quantize-wrapped layers.",
        model.name, "sparsity-preserving" if preserve_sparsity else "default 8-bit",
        sum(isinstance(layer, _qkeras.QuantizeWrapper) for layer in qat.layers),
    )
    return qat


def fine_tune_qat(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    epochs: int,
    steps: int | None,
    loss: keras.losses.Loss,
    optimizer: keras.optimizers.Optimizer,
    validation_data: tf.data.Dataset | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> keras.callbacks.History:
    """Compile and train a model returned by :func:`quantize_aware`, in place.

    Use a small learning rate (about a tenth of the training peak): the weights only need to
    settle onto the quantization grid.

    Args:
        model: the QAT model.
        train_ds: batches of ``(images, masks)``.
        epochs: passes over ``steps`` batches.
        steps: batches per epoch (``None`` = the whole dataset).
        loss: e.g. ``build_loss(...)``.
        optimizer: a fresh optimiser.
        validation_data: optional dataset evaluated after each epoch.
        callbacks: extra callbacks.

    Returns:
        The Keras ``History``.

    Raises:
        ValueError: for a model without quantization wrappers.
    """
    if not is_quantize_wrapped(model):
        raise ValueError(
            f"Expected a model from roverlite.compress.quantize_aware. Received: {model.name!r} with no quantize wrappers."
        )

    return fit_wrapped(model, train_ds, epochs, steps, loss, optimizer, validation_data, callbacks)


def _check_quantizable(model: keras.Model) -> None:
    # Checked up front so the error names every offending layer; TFMOT stops at the first.
    # BatchNorm is not in the registry: TFMOT's layout transforms fold it into the conv before it
    # (a BatchNorm after anything else still fails inside quantize_apply, rephrased there).
    registry = _default_registry.Default8BitQuantizeRegistry()
    exempt = (keras.layers.InputLayer, keras.layers.BatchNormalization)
    bad = [
        f"{layer.name!r} ({type(layer).__name__})"
        for layer in model.layers
        if not isinstance(layer, exempt) and not registry.supports(layer)
    ]
    if bad:
        raise ValueError(
            "Cannot quantize layer(s) " + ", ".join(bad) + " for QAT: TFMOT's default 8-bit scheme has no "
            "entry for them. Expected Conv, BatchNorm, ReLU, pooling, Add, Concatenate, UpSampling and "
            "Conv2DTranspose layers (build the model without squeeze_excite / attention_gates, or use "
            "post-training int8 quantization at export)."
        )
