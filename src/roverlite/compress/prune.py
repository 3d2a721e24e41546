"""Magnitude pruning with TFMOT: wrap a model for pruning, fine-tune it, strip the wrappers.

:func:`prune` and :func:`strip` are a pair, like TFMOT's ``prune_low_magnitude`` /
``strip_pruning``: ``prune`` returns a new model whose prunable kernels (Conv2D, Conv2DTranspose,
Dense, ...) are wrapped in ``PruneLowMagnitude``; :func:`fine_tune_pruned` trains it with the
``UpdatePruningStep`` callback while the masks follow the sparsity schedule; ``strip`` returns a
plain tf_keras model with the zeros baked into its kernels.

Unstructured (element-wise) sparsity does not make the model smaller on disk or faster on the
runtimes roverlite targets: a zero is stored and multiplied like any other weight (dense TFLite and
ONNX kernels). It shows only when the weights are compressed, which is what :func:`zipped_size`
measures (the size of an over-the-air update, or of a bundle on a rover's flash). To cut MACs,
use :mod:`roverlite.compress.structured`; to keep the zeros through quantization-aware training,
use :func:`roverlite.compress.qat.quantize_aware` with ``preserve_sparsity=True``.

Example:
    >>> cfg = PruneConfig(target_sparsity=0.5, end_fraction=0.75, frequency=50)
    >>> pruned = prune(model, cfg, total_steps=epochs * steps)          # doctest: +SKIP
    >>> fine_tune_pruned(pruned, train_ds, epochs, steps, loss, opt)    # doctest: +SKIP
    >>> small = strip(pruned)                                           # doctest: +SKIP
    >>> sparsity_report(small)                                          # doctest: +SKIP
    [('enc0_1_conv', 0.5), ...]
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roverlite._tf import keras, tf
from roverlite.compress.finetune import fit_wrapped

# isort: split
# TFMOT only after roverlite._tf, which selects Keras 2 before TensorFlow loads.
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from roverlite.config import did_you_mean

__all__ = [
    "SCHEDULES",
    "PruneConfig",
    "fine_tune_pruned",
    "is_pruning_wrapped",
    "kernel_sparsity",
    "prune",
    "sparsity_report",
    "strip",
    "zipped_size",
]

logger = logging.getLogger(__name__)

SCHEDULES = ("polynomial", "constant")



# === Config ===


@dataclass(frozen=True)
class PruneConfig:
    """How far and how fast to prune.

    Pruning runs from a begin step to an end step of fine-tuning, updating the masks every
    ``frequency`` optimiser steps. Give each end either as a step or as a fraction of the
    fine-tuning steps (``total_steps`` of :func:`prune`); not both. Unset: begin at 0 and end at
    0.75 of fine-tuning, which leaves the last quarter to recover accuracy at the final sparsity.

    Attributes:
        target_sparsity: fraction of zeros in each pruned kernel at the end, in ``[0, 1)``.
            0 wraps the model but keeps every weight (a no-op, useful as a control run).
        schedule: ``"polynomial"`` (TFMOT ``PolynomialDecay`` from 0 up to the target, cubic:
            fast early, gentle late) or ``"constant"`` (``ConstantSparsity``: the target at
            every mask update from the begin step).
        begin_step, end_step: optimiser steps (the first training step is 1).
        begin_fraction, end_fraction: fractions of the fine-tuning steps, in ``[0, 1]``.
        frequency: optimiser steps between mask updates.
        skip_layers: layer names or shell patterns left dense. The default keeps the final
            1x1 ``logits`` conv dense: it is tiny and every class score goes through it.
    """

    target_sparsity: float = 0.5
    schedule: str = "polynomial"
    begin_step: int | None = None
    end_step: int | None = None
    begin_fraction: float | None = None
    end_fraction: float | None = None
    frequency: int = 100
    skip_layers: tuple[str, ...] = ("logits",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip_layers", tuple(self.skip_layers))
        if not 0.0 <= float(self.target_sparsity) < 1.0:
            raise ValueError(f"Expected target_sparsity in [0, 1). Received: target_sparsity={self.target_sparsity}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"Expected schedule in {SCHEDULES}. Received: schedule={self.schedule!r}."
                + did_you_mean(self.schedule, SCHEDULES)
            )
        if isinstance(self.frequency, bool) or not isinstance(self.frequency, int) or self.frequency < 1:
            raise ValueError(f"Expected frequency to be an integer >= 1. Received: frequency={self.frequency!r}.")
        for end in ("begin", "end"):
            self._check_end(end)
        if self.begin_step is not None and self.end_step is not None:
            _check_step_range(self.begin_step, self.end_step, self.frequency, self.schedule)
        if self.begin_fraction is not None and self.end_fraction is not None and self.begin_fraction >= self.end_fraction:
            raise ValueError(
                "Expected begin_fraction < end_fraction. "
                f"Received: begin_fraction={self.begin_fraction}, end_fraction={self.end_fraction}."
            )
        if any(not isinstance(p, str) or not p for p in self.skip_layers):
            raise ValueError(f"Expected skip_layers as non-empty names or patterns. Received: {list(self.skip_layers)}.")

    def _check_end(self, end: str) -> None:
        step, fraction = getattr(self, f"{end}_step"), getattr(self, f"{end}_fraction")
        if step is not None and fraction is not None:
            raise ValueError(
                f"Expected either {end}_step or {end}_fraction, not both. "
                f"Received: {end}_step={step}, {end}_fraction={fraction}."
            )
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise ValueError(f"Expected {end}_step to be an integer >= 0. Received: {end}_step={step!r}.")
        if fraction is not None and not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"Expected {end}_fraction in [0, 1]. Received: {end}_fraction={fraction}.")

    @property
    def uses_fractions(self) -> bool:
        """Whether resolving the schedule needs the number of fine-tuning steps."""
        return self.begin_step is None or self.end_step is None

    def resolve_steps(self, total_steps: int | None = None) -> tuple[int, int]:
        """``(begin_step, end_step)`` of the schedule for ``total_steps`` of fine-tuning.

        An end given as a fraction is rounded to a step, then the end is moved down to the last
        mask update (``begin + k * frequency``): TFMOT updates the masks only on those steps, and
        a polynomial schedule whose end falls between two updates never reaches the target.

        Raises:
            ValueError: when fractions are used without ``total_steps``, when fewer than one mask
                update fits, or when the end lies beyond ``total_steps``.
        """
        if total_steps is not None and (isinstance(total_steps, bool) or int(total_steps) < 1):
            raise ValueError(f"Expected total_steps >= 1. Received: total_steps={total_steps!r}.")
        if self.uses_fractions and total_steps is None:
            raise ValueError(
                "Expected total_steps (epochs x steps per epoch of fine-tuning) to place a schedule given "
                f"as fractions. Received: total_steps=None with begin_fraction={self.begin_fraction}, "
                f"end_fraction={self.end_fraction}."
            )
        begin = self.begin_step if self.begin_step is not None else round((self.begin_fraction or 0.0) * total_steps)
        if self.end_step is not None:
            end = self.end_step
        else:
            fraction = 0.75 if self.end_fraction is None else self.end_fraction
            end = round(fraction * total_steps)
            end = begin + (end - begin) // self.frequency * self.frequency
        _check_step_range(begin, end, self.frequency, self.schedule)
        if total_steps is not None and end > total_steps:
            raise ValueError(
                f"Expected the schedule to end within the {total_steps} fine-tuning steps. "
                f"Received: end_step={end}."
            )
        return begin, end


def _check_step_range(begin: int, end: int, frequency: int, schedule: str) -> None:
    if end - begin < frequency:
        raise ValueError(
            f"Expected at least one mask update: end_step - begin_step >= frequency={frequency}. "
            f"Received: begin_step={begin}, end_step={end}. Lower frequency or fine-tune longer."
        )
    if schedule == "polynomial" and (end - begin) % frequency:
        raise ValueError(
            "Expected end_step - begin_step to be a multiple of frequency, so that the last mask update "
            f"lands on end_step where the polynomial schedule reaches the target. Received: "
            f"begin_step={begin}, end_step={end}, frequency={frequency}."
        )


# === Apply / strip ===


def is_pruning_wrapped(model: keras.Model) -> bool:
    """Whether any layer of ``model`` is still wrapped by TFMOT for pruning."""
    return any(isinstance(layer, PruneLowMagnitude) for layer in model.layers)


def prune(model: keras.Model, cfg: PruneConfig, total_steps: int | None = None) -> keras.Model:
    """A copy of ``model`` with its prunable kernels wrapped for magnitude pruning.

    The input model is left untouched (its weights are copied, not shared). Layers with nothing
    to prune (BatchNorm, activations, pooling, Concatenate, ...) stay unwrapped. Compile and train
    the result with :func:`fine_tune_pruned` (or with ``UpdatePruningStep`` in the callbacks),
    then call :func:`strip`.

    Args:
        model: a tf_keras functional or Sequential model.
        cfg: the sparsity target and schedule.
        total_steps: optimiser steps of the fine-tuning to come; needed when ``cfg`` gives the
            schedule as fractions.

    Returns:
        The wrapped model, uncompiled.

    Raises:
        ValueError: for a layer with weights that TFMOT cannot prune (named; add it to
            ``cfg.skip_layers`` to keep it dense), a ``skip_layers`` entry that matches no layer,
            a model that is already wrapped, or a schedule that does not fit ``total_steps``.
    """
    _check_prunable_model(model)
    skipped = _skipped_layers(model, cfg.skip_layers)
    _check_supported(model, skipped)
    begin, end = cfg.resolve_steps(total_steps)
    schedule = _schedule(cfg, begin, end)

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())

    def wrap(layer):
        if layer.name in skipped or not _has_prunable_weights(layer):
            return layer
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)

    pruned = keras.models.clone_model(copy, clone_function=wrap)
    wrapped = [layer.layer.name for layer in pruned.layers if isinstance(layer, PruneLowMagnitude)]
    logger.info(
        "Pruning %d layers of %s to %.0f%% sparsity (%s, steps %d..%d every %d); kept dense: %s.",
        len(wrapped), model.name, 100 * cfg.target_sparsity, cfg.schedule, begin, end, cfg.frequency,
        sorted(skipped) or "none",
    )
    return pruned


def strip(model: keras.Model) -> keras.Model:
    """A plain tf_keras model with the pruning wrappers removed and the zeros in the kernels.

    The masks are applied once more before stripping, so the result is sparse even when the last
    optimiser step ran after the last mask application (a custom training loop, an interrupted
    ``fit``). The result does not share variables with ``model``. A model without wrappers comes
    back as an equal copy.
    """
    for layer in model.layers:
        if isinstance(layer, PruneLowMagnitude) and layer.pruning_obj is not None:
            layer.pruning_obj.weight_mask_op()
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    out = keras.models.clone_model(stripped)
    out.set_weights(stripped.get_weights())
    return out


def fine_tune_pruned(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    epochs: int,
    steps: int | None,
    loss: keras.losses.Loss,
    optimizer: keras.optimizers.Optimizer,
    validation_data: tf.data.Dataset | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> keras.callbacks.History:
    """Compile and train a model returned by :func:`prune`, with ``UpdatePruningStep``.

    Args:
        model: the wrapped model; trained in place.
        train_ds: batches of ``(images, masks)``, e.g. from ``make_dataset(..., training=True)``.
        epochs: passes over ``steps`` batches.
        steps: batches per epoch (``None`` = the whole dataset each epoch). ``epochs * steps``
            should equal the ``total_steps`` given to :func:`prune`.
        loss: e.g. ``build_loss(...)``.
        optimizer: a fresh optimiser (TFMOT's wrappers add variables an old one has not seen).
        validation_data: optional dataset evaluated after each epoch.
        callbacks: extra callbacks.

    Returns:
        The Keras ``History``.

    Raises:
        ValueError: when ``model`` has no pruning wrappers (call :func:`prune` first).
    """
    if not is_pruning_wrapped(model):
        raise ValueError(
            f"Expected a model wrapped by roverlite.compress.prune. Received: {model.name!r} with no pruning wrappers."
        )

    return fit_wrapped(model, train_ds, epochs, steps, loss, optimizer, validation_data,
                       [tfmot.sparsity.keras.UpdatePruningStep(), *callbacks])


# === Measuring ===


def sparsity_report(model: keras.Model) -> list[tuple[str, float]]:
    """``(layer name, fraction of zeros)`` of every prunable kernel, in graph order.

    Works on plain, pruning-wrapped and QAT-wrapped models (wrapped layers are reported under the
    inner layer's name); layers kept dense appear too, usually with 0.0.
    """
    rows = []
    for layer in model.layers:
        inner = layer
        while isinstance(inner, keras.layers.Wrapper):
            inner = inner.layer
        for weight in _kernels(layer):
            rows.append((inner.name, float(np.mean(weight.numpy() == 0))))
    return rows


def kernel_sparsity(model: keras.Model) -> float:
    """Fraction of zeros over all conv / dense kernels, weighted by their sizes (wrappers looked through)."""
    zeros = total = 0
    for layer in model.layers:
        for weight in layer.weights:
            if weight.name.rsplit("/", 1)[-1].split(":")[0] in ("kernel", "depthwise_kernel", "pointwise_kernel"):
                values = weight.numpy()
                zeros += int(np.count_nonzero(values == 0))
                total += values.size
    return zeros / total if total else 0.0


def zipped_size(model_or_path: keras.Model | str | os.PathLike | bytes) -> int:
    """Bytes of the gzip-compressed weights: the only size that unstructured sparsity reduces.

    A pruned model's weight file is as large as the dense one (zeros are stored as float32), and
    so is a TFLite flatbuffer; compressed, the runs of zeros shrink. This measures what an update
    sent to a rover, or a compressed bundle, would cost.

    Args:
        model_or_path: a stripped tf_keras model (its weights are saved to a temporary HDF5 file),
            a file (``.h5``, ``.tflite``, ``.onnx``: gzip of its bytes), a folder (a SavedModel:
            deflate-zip of all its files) or the bytes of an artifact.

    Returns:
        Compressed size in bytes (gzip level 9, no timestamp, so equal inputs give equal sizes).

    Raises:
        ValueError: for a model still wrapped for pruning (strip it first; the masks would be
            counted too).
        FileNotFoundError: for a path that does not exist.
    """
    if isinstance(model_or_path, (bytes, bytearray)):
        return len(gzip.compress(bytes(model_or_path), compresslevel=9, mtime=0))
    if isinstance(model_or_path, keras.Model):
        if is_pruning_wrapped(model_or_path):
            raise ValueError(
                "Expected a stripped model (roverlite.compress.strip). "
                f"Received: {model_or_path.name!r}, still wrapped for pruning."
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "weights.h5"
            model_or_path.save_weights(str(path))
            return zipped_size(path)
    path = Path(model_or_path)
    if path.is_file():
        return len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))
    if path.is_dir():
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                archive.write(file, file.relative_to(path))
        return buffer.getbuffer().nbytes
    raise FileNotFoundError(f"Expected a model, a file or a folder. Received: {str(path)!r}, which does not exist.")


# === Helpers ===


def _check_prunable_model(model) -> None:
    if not isinstance(model, keras.Model) or not (isinstance(model, keras.Sequential) or model._is_graph_network):
        raise ValueError(
            "Expected a tf_keras functional or Sequential model. "
            f"Received: {type(model).__module__}.{type(model).__name__}."
        )
    if is_pruning_wrapped(model):
        raise ValueError(f"Expected an unpruned model. Received: {model.name!r}, already wrapped for pruning.")


def _skipped_layers(model, patterns: Sequence[str]) -> set[str]:
    names = [layer.name for layer in model.layers]
    skipped: set[str] = set()
    for pattern in patterns:
        matched = fnmatch.filter(names, pattern)
        if not matched:
            raise ValueError(
                f"Expected every skip_layers entry to match a layer of {model.name!r}. "
                f"Received: {pattern!r}, which matches none." + did_you_mean(pattern, names)
            )
        skipped.update(matched)
    return skipped


def _has_prunable_weights(layer) -> bool:
    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer) or hasattr(layer, "get_prunable_weights"):
        return True
    return prune_registry.PruneRegistry.supports(layer) and bool(prune_registry.PruneRegistry._weight_names(layer))


def _check_supported(model, skipped: set[str]) -> None:
    # Checked up front so the error names every offending layer, not TFMOT's first failure deep
    # inside clone_model.
    bad = [
        f"{layer.name!r} ({type(layer).__name__})"
        for layer in model.layers
        if layer.name not in skipped
        and layer.weights
        and not isinstance(layer, keras.layers.InputLayer)
        and not _has_prunable_weights(layer)
        and not prune_registry.PruneRegistry.supports(layer)
    ]
    if bad:
        raise ValueError(
            "Cannot prune layer(s) " + ", ".join(bad) + ": TFMOT's prune registry has no entry for them. "
            "Expected built-in Conv/Dense-type layers or a tfmot PrunableLayer. Add them to "
            "PruneConfig.skip_layers to keep them dense."
        )


def _schedule(cfg: PruneConfig, begin: int, end: int):
    if cfg.schedule == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(cfg.target_sparsity, begin, end, cfg.frequency)
    return tfmot.sparsity.keras.PolynomialDecay(0.0, cfg.target_sparsity, begin, end, frequency=cfg.frequency)


def _kernels(layer) -> list:
    # By variable name, not attribute: TFMOT's QuantizeWrapper replaces `layer.kernel` with the
    # fake-quantized tensor, while the variable keeps its name.
    names = ("kernel", "depthwise_kernel", "pointwise_kernel")
    return [w for w in layer.weights if w.name.rsplit("/", 1)[-1].split(":")[0] in names]
