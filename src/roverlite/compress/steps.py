"""What each recipe step does to the model: one function per step kind, sharing one fine-tuning setup.

Every step that trains uses the run's own training recipe, so a compressed model learns on what the
teacher learnt on: the train split through :func:`roverlite.data.pipeline.make_dataset` with the
run config's ``data`` and ``augment`` sections, :func:`roverlite.train.losses.build_loss` with
``train.loss`` and class weights from the split's pixel counts (``train.class_weighting``), and
:func:`roverlite.train.optim.build_optimizer` (AdamW, cosine decay). Only the learning rate, the
epochs and, when a step sets them, the loss terms and class weighting come from the step (see
:data:`DEFAULT_LR_FRACTION`).

Each ``run_*`` function is what a step class's ``run`` (:mod:`roverlite.compress.recipe`, registered
with :func:`~roverlite.compress._registry.register_step`) does: it takes the step, the current Keras
model and a :class:`FineTune`, and returns ``(new model, details)``; ``details`` is JSON-ready and lands in ``recipe_result.json``.
The input model is never changed in place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from roverlite._tf import keras
from roverlite.compress.decoder import NEAREST_DECODER_OVERRIDES, nearest_decoder
from roverlite.compress.distill import DistillConfig, distill
from roverlite.compress.prune import PruneConfig, fine_tune_pruned, prune, sparsity_report, strip
from roverlite.compress.qat import fine_tune_qat, quantize_aware
from roverlite.compress.resolution import HALF_RESOLUTION_OVERRIDES, half_resolution
from roverlite.compress.structured import level_scores, structured_prune
from roverlite.config import Config
from roverlite.train.macs import count_macs
from roverlite.train.optim import jit_compile_for

__all__ = ["DEFAULT_LR_FRACTION", "FineTune", "run_distill", "run_prune", "run_qat", "run_structured"]

logger = logging.getLogger(__name__)

# Fraction of the run's train.learning_rate a step uses when it names none. Distillation trains a
# student from scratch (the full rate, with the run's warm-up). Pruning and QAT adjust a trained
# model and only need to settle (a tenth, as roverlite.compress.qat advises for QAT). A thinned
# model has to re-learn: keeping 70 % of a 32x32 smoke teacher's filters (mIoU 0.507 -> 0.14) and
# fine-tuning 4 short epochs recovered 0.381 at 0.1x, 0.442 at 0.5x and 0.456 at 1x the rate.
DEFAULT_LR_FRACTION: Mapping[str, float] = {"distill": 1.0, "prune": 0.1, "structured": 0.5, "qat": 0.1}
# Width step of a latency table measured for a `structured` step with granularity 1 (every width
# would be hundreds of level models for unet_s; int8 SIMD kernels want multiples of 8 anyway).
LATENCY_TABLE_GRANULARITY = 8


# === Fine-tuning setup ===


class FineTune:
    """The training split, loss, optimiser and progress bars every training step shares.

    Args:
        cfg: the run config (``data``, ``augment`` and ``train`` are used).
        images, masks: the train split (uint8), e.g. from ``load_split(cfg.data, "train")``.
        progress: show a tqdm bar per step.
        out_dir: the recipe's output folder, where steps cache what they measure (``None``: no cache).
    """

    def __init__(
        self, cfg: Config, images: np.ndarray, masks: np.ndarray, progress: bool = True, out_dir: Path | None = None
    ) -> None:
        self.cfg = cfg
        self.out_dir = None if out_dir is None else Path(out_dir)  # the recipe's run folder (caches go there)
        self.images, self.masks = images, masks
        self.progress = progress
        self.pixel_counts = np.bincount(masks.reshape(-1), minlength=256)[: cfg.data.num_classes].astype(np.float64)
        self.steps = int(self._dataset(0).cardinality())

    def _dataset(self, seed: int) -> Any:
        from roverlite.data.pipeline import make_dataset

        return make_dataset(
            self.images, self.masks, self.cfg.data, self.cfg.augment,
            training=True, batch_size=self.cfg.train.batch_size, seed=seed,
        )

    def dataset(self, index: int) -> Any:
        """Training batches for step ``index``, repeated: pass ``steps_per_epoch=self.steps``.

        The seed depends on ``train.seed`` and the step, so a rerun of a recipe sees the same
        batches, and two steps do not see the same order.
        """
        return self._dataset(self.cfg.train.seed * 100_003 + 7_919 * index).repeat()

    def weights(self, class_weighting: str | None = None) -> np.ndarray:
        """Class weights of the train split by ``class_weighting`` (default: the run's ``train.class_weighting``)."""
        from roverlite.train.losses import class_weights_from_counts

        return class_weights_from_counts(self.pixel_counts, class_weighting or self.cfg.train.class_weighting)

    def loss(self, step: Any = None) -> Any:
        """The hard loss of ``step`` (its :class:`~roverlite.compress._registry.HardLoss`): its ``loss``
        terms and ``class_weighting`` where it sets them, else the run's (``train.loss``,
        ``train.class_weighting``); the ignore label always."""
        from roverlite.train.losses import build_loss

        data, train = self.cfg.data, self.cfg.train
        hard = getattr(step, "hard_loss", None)
        terms = (hard.loss if hard is not None else None) or train.loss
        weights = self.weights(hard.class_weighting if hard is not None else None)
        return build_loss(terms, data.num_classes, data.ignore_index, weights, train.focal_gamma)

    def learning_rate(self, kind: str, value: float | None) -> float:
        """``value``, or the run's rate scaled by :data:`DEFAULT_LR_FRACTION` for the step kind."""
        return float(value) if value is not None else self.cfg.train.learning_rate * DEFAULT_LR_FRACTION[kind]

    def optimizer(self, learning_rate: float, epochs: int, warmup_epochs: float = 0.0) -> Any:
        """A fresh AdamW on a cosine schedule over ``epochs`` epochs of :attr:`steps` batches."""
        from roverlite.train.optim import build_optimizer

        return build_optimizer(learning_rate, self.cfg.train.weight_decay, self.steps, epochs, warmup_epochs)

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


# === Steps ===


def run_distill(step: Any, model: keras.Model, ctx: FineTune, index: int) -> tuple[keras.Model, dict[str, Any]]:
    """Train a fresh ``step.student`` against ``model`` (the frozen teacher); returns the student."""
    from roverlite.train.models import create_model

    student = create_model(
        step.student,
        input_shape=tuple(int(s) for s in model.input_shape[1:]),
        num_classes=int(model.output_shape[-1]),
        **dict(step.student_overrides),
    )
    cfg = DistillConfig(
        temperature=step.temperature, alpha=step.alpha, feature_weight=step.feature_weight,
        ignore_index=ctx.cfg.data.ignore_index,
        class_weights=ctx.weights(step.class_weighting) if step.class_weighted_kd else None,  # made floats
    )
    learning_rate = ctx.learning_rate("distill", step.learning_rate)
    bar = ctx.bar(f"{index} distill -> {step.student}", step.epochs)
    distill(
        model, student, ctx.dataset(index), None, cfg, step.epochs,
        optimizer=ctx.optimizer(learning_rate, step.epochs, ctx.cfg.train.warmup_epochs),
        hard_loss=ctx.loss(step), steps_per_epoch=ctx.steps, callbacks=[bar],
        jit_compile=jit_compile_for(ctx.cfg.train.jit_compile, student),
    )
    details = {"teacher": model.name, "student": step.student, "learning_rate": learning_rate}
    return student, {**details, "last_epoch": bar.last_logs}


def run_prune(step: Any, model: keras.Model, ctx: FineTune, index: int) -> tuple[keras.Model, dict[str, Any]]:
    """Magnitude-prune ``model`` while fine-tuning, then strip the wrappers (zeros stay in the kernels)."""
    total = step.epochs * ctx.steps
    frequency = step.frequency if step.frequency is not None else auto_frequency(total)
    cfg = PruneConfig(
        target_sparsity=step.target_sparsity, schedule=step.schedule, frequency=frequency,
        end_fraction=step.end_fraction, skip_layers=step.skip_layers,
    )
    pruned = prune(model, cfg, total_steps=total)
    learning_rate = ctx.learning_rate("prune", step.learning_rate)
    bar = ctx.bar(f"{index} prune {step.target_sparsity:.0%}", step.epochs)
    fine_tune_pruned(
        pruned, ctx.dataset(index), step.epochs, ctx.steps, ctx.loss(step),
        ctx.optimizer(learning_rate, step.epochs), callbacks=[bar],
    )
    stripped = strip(pruned)
    return stripped, {
        "frequency": frequency,
        "learning_rate": learning_rate,
        "sparsity": kernel_sparsity(stripped),
        "layers": dict(sparsity_report(stripped)),
        "last_epoch": bar.last_logs,
    }


def run_structured(
    step: Any, model: keras.Model, ctx: FineTune, index: int
) -> tuple[keras.Model, dict[str, Any]]:
    """Remove filters per U-Net level, then fine-tune the thinner model (``epochs`` may be 0).

    With ``step.alpha > 0`` the fine-tuning is a distillation from ``model`` (the unpruned input,
    frozen): prune, then distill, the thin model starting from the teacher's own filters. With a
    ``table`` the keep ratios come from a latency search (:mod:`roverlite.compress.channel_search`)
    and the chosen model is timed against the unpruned one (``details["latency_search"]``).
    """
    keep_ratio, search = step.keep_ratio, None
    if step.table is not None:
        search, source = _latency_search(step, model, ctx)
        keep_ratio = search.keep_ratios
    thin, report = structured_prune(model, keep_ratio, step.criterion, _granularity(step, search))
    details: dict[str, Any] = {**report.to_dict(), "unet_overrides": report.unet_overrides()}
    details.pop("filters")
    thin = _reshape(step, thin, details)
    if step.decoder or step.resolution != 1.0:
        details["macs_after"] = int(count_macs(thin).macs)
    if search is not None:
        from roverlite.compress.channel_search import measure_choice

        search = measure_choice(search, _reshape(step, model, {"unet_overrides": {}}), thin)
        details["latency_search"] = {**search.to_dict(), "table": source}
    if not step.epochs:
        return thin, details
    learning_rate = ctx.learning_rate("structured", step.learning_rate)
    optimizer = ctx.optimizer(learning_rate, step.epochs)
    bar = ctx.bar(f"{index} structured x{report.mac_reduction:.1f}", step.epochs)
    if step.alpha > 0:
        cfg = DistillConfig(
            temperature=step.temperature, alpha=step.alpha, ignore_index=ctx.cfg.data.ignore_index,
            class_weights=ctx.weights(step.class_weighting) if step.class_weighted_kd else None,
        )
        distill(
            model, thin, ctx.dataset(index), None, cfg, step.epochs, optimizer=optimizer,
            hard_loss=ctx.loss(step), steps_per_epoch=ctx.steps, callbacks=[bar],
            jit_compile=jit_compile_for(ctx.cfg.train.jit_compile, thin),
        )
        details.update(distilled_from=model.name, alpha=step.alpha, temperature=step.temperature)
    else:
        thin.compile(optimizer=optimizer, loss=ctx.loss(step), jit_compile=jit_compile_for(ctx.cfg.train.jit_compile, thin))
        thin.fit(ctx.dataset(index), epochs=step.epochs, steps_per_epoch=ctx.steps, callbacks=[bar], verbose=0)
    details.update(learning_rate=learning_rate, last_epoch=bar.last_logs)
    return thin, details


def _reshape(step: Any, model: keras.Model, details: dict[str, Any]) -> keras.Model:
    """``model`` with the step's decoder and resolution changes (recorded in ``details``)."""
    if step.decoder == "nearest":
        model = nearest_decoder(model)
        details["unet_overrides"].update(NEAREST_DECODER_OVERRIDES)
        details["decoder"] = "nearest"
    if step.resolution == 0.5:
        model = half_resolution(model)
        details["unet_overrides"].update(HALF_RESOLUTION_OVERRIDES)
        details["resolution"] = 0.5
    return model


def _granularity(step: Any, search: Any) -> int:
    """The step's granularity; with granularity 1 a search moves in its table's steps."""
    return search.granularity if search is not None else step.granularity


def _latency_search(step: Any, model: keras.Model, ctx: FineTune) -> tuple[Any, str]:
    """Per-level keep ratios from the step's latency table (measured here for ``table: this``)."""
    from roverlite.compress.channel_search import search_channels
    from roverlite.compress.latency_table import check_table_fits, load_latency_table

    shipped = _reshape(step, model, {"unet_overrides": {}})  # the architecture the table must describe
    if step.table == "this":
        table, source = _table_here(step, shipped, ctx)
    else:
        table, source = load_latency_table(step.table), step.table
        check_table_fits(table, shipped, f"latency table {step.table!r}")
    granularity = table.granularity if step.granularity == 1 else step.granularity
    search = search_channels(table, level_scores(model, step.criterion), step.target_latency_ms, step.latency_ratio,
                             granularity, step.threads)
    return search, source


def _table_here(step: Any, shipped: keras.Model, ctx: FineTune) -> tuple[Any, str]:
    """Measure the table on this machine, or reuse the run folder's cached one when it fits."""
    from roverlite.compress.latency_table import check_table_fits, load_latency_table, measure_latency_table
    from roverlite.deploy.hostinfo import usable_cpus

    granularity = step.granularity if step.granularity > 1 else LATENCY_TABLE_GRANULARITY
    threads = (step.threads,) if step.threads else tuple(t for t in (1, 2) if t <= usable_cpus())
    cache = None if ctx.out_dir is None else ctx.out_dir / "latency_table.json"
    if cache is not None and cache.is_file():
        try:
            table = load_latency_table(cache)
            check_table_fits(table, shipped)
            if granularity % table.granularity == 0 and set(threads) <= set(table.threads):
                logger.info("latency table: reusing %s", cache)
                return table, str(cache)
        except ValueError as err:
            logger.info("latency table: measuring again (%s)", err)
    logger.info("latency table: timing every level of %s on this machine (granularity %d, threads %s)",
                shipped.name, granularity, list(threads))
    table = measure_latency_table(shipped, granularity, threads)
    if cache is None:
        return table, "this"
    table.save(cache)
    return table, str(cache)


def run_qat(step: Any, model: keras.Model, ctx: FineTune, index: int) -> tuple[keras.Model, dict[str, Any]]:
    """Wrap ``model`` for quantization-aware training and fine-tune it; returns the QAT model."""
    qat = quantize_aware(model, preserve_sparsity=step.preserve_sparsity)
    learning_rate = ctx.learning_rate("qat", step.learning_rate)
    bar = ctx.bar(f"{index} qat", step.epochs)
    fine_tune_qat(
        qat, ctx.dataset(index), step.epochs, ctx.steps, ctx.loss(step),
        ctx.optimizer(learning_rate, step.epochs), callbacks=[bar],
    )
    details: dict[str, Any] = {"learning_rate": learning_rate, "last_epoch": bar.last_logs}
    if step.preserve_sparsity:
        details["sparsity"] = kernel_sparsity(qat)
    return qat, details


# === Helpers ===


def auto_frequency(total_steps: int) -> int:
    """Optimiser steps between mask updates when a prune step gives none: about 8 updates, at most 100 apart."""
    return max(1, min(100, total_steps // 8))


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
