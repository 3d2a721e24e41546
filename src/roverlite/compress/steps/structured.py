"""The ``structured`` step: filter pruning into a thinner dense U-Net, optionally re-shaped, then fine-tuned.

The filters go by :func:`roverlite.compress.structured.structured_prune`, per level by a keep ratio or
by a latency search (:mod:`roverlite.compress.channel_search`) on a measured table
(:mod:`roverlite.compress.latency_table`); the decoder and resolution changes are
:mod:`roverlite.compress.decoder` and :mod:`roverlite.compress.resolution`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from roverlite.compress._registry import StepContext, TrainingStep, check_count, register_step
from roverlite.compress.decoder import SWAPS
from roverlite.compress.resolution import STEMS
from roverlite.compress.steps.distill import soft_term_settings
from roverlite.config import ConfigError, ModelConfig, did_you_mean
from roverlite.deploy.hostinfo import usable_cpus

__all__ = ["DECODERS", "LATENCY_TABLE_GRANULARITY", "STEMS", "StructuredStep"]

logger = logging.getLogger(__name__)

# structured.decoder / structured.stem values, named by the modules that implement them.
DECODERS = SWAPS
# Width step of a latency table measured for a `structured` step with granularity 1 (every width
# would be hundreds of level models for unet_s; int8 SIMD kernels want multiples of 8 anyway).
LATENCY_TABLE_GRANULARITY = 8


@register_step("structured")
@dataclass(frozen=True)
class StructuredStep(TrainingStep):
    """Filter pruning into a thinner dense U-Net (:mod:`roverlite.compress.structured`), then fine-tune.

    Attributes:
        keep_ratio: fraction of filters kept, in ``(0, 1]``: one number, or one per U-Net level
            (bottleneck last). Default 0.5 when neither latency target is given.
        latency_ratio, target_latency_ms: instead of ``keep_ratio`` (exactly one of the three):
            choose the per-level widths by a latency search
            (:mod:`roverlite.compress.channel_search`) until the predicted int8 p50 is at most
            this fraction of the unpruned model's, or this many ms.
        table: the latency table the search reads: a JSON file from ``roverlite latency-table``
            (measured on the target, with the step's ``decoder`` and ``resolution``), or ``this``
            to measure here (cached in the run folder as ``latency_table.json``).
        threads: which of the table's thread counts to search for (default: its first).
        criterion: ``l1`` or ``bn``.
        granularity: round kept filters per group to a multiple of this (1 = none; 8 or 16 for
            int8 SIMD kernels; see ``structured_prune``). A latency search moves in steps of it
            (with 1: in the table's steps; ``table: this`` then measures multiples of 8).
        resolution: ``1.0``, or ``0.5`` to run the thinned model at half its input resolution
            (see ``roverlite.compress.resolution``) before the fine-tune: on CPUs the time of a
            small int8 U-Net is spent at full resolution.
        stem: with ``resolution: 0.5``, ``pool`` (a 2x2 average-pool stem and nearest-upsampled
            logits, every weight kept) or ``shuffle`` (space-to-depth stem and depth-to-space
            logits, weights rearranged to the same function; every op delegated to XNNPACK in int8).
        decoder: ``null`` (keep the model's), ``nearest`` to replace every transposed-conv
            up-sampling by a 1x1 conv and nearest up-sampling, or ``shuffle`` by a 1x1 conv to 4x
            the channels and depth-to-space (exact; ``roverlite.compress.decoder``), before the
            fine-tune: int8 ``TRANSPOSE_CONV`` is slow on XNNPACK and int8 nearest resizing is not
            delegated.
        epochs: fine-tuning epochs (0 = none).
        learning_rate: peak rate (default: half of ``train.learning_rate``: the thinner model
            re-learns more than a pruned or QAT one, see ``finetune.DEFAULT_LR_FRACTION``).
        alpha: weight of a distillation term while fine-tuning, in ``[0, 1]``: the thin model
            learns from the unpruned one (the step's input, frozen) as a distilled student does,
            with ``1 - alpha`` on the labels. 0 (default): labels only.
        temperature: softmax temperature of that term (as in ``distill``).
        class_weighted_kd: weight that term's pixels by the hard loss's class weights (as in
            ``distill``); needs ``alpha > 0``.
        class_weighting, loss: this step's hard loss (see "Hard loss" in :mod:`roverlite.compress.recipe`).
    """

    keep_ratio: Any = None
    latency_ratio: float | None = None
    target_latency_ms: float | None = None
    table: str | None = None
    threads: int | None = None
    criterion: str = "l1"
    granularity: int = 1
    resolution: float = 1.0
    stem: str = "pool"
    decoder: str | None = None
    epochs: int = 2
    learning_rate: float | None = None
    alpha: float = 0.0
    temperature: float = 1.0
    class_weighted_kd: bool = False
    class_weighting: str | None = None
    loss: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        from roverlite.compress.structured import CRITERIA

        _check_latency_target(self)
        if self.keep_ratio is not None or self.table is None:
            object.__setattr__(self, "keep_ratio", _keep_ratio(0.5 if self.keep_ratio is None else self.keep_ratio))
        if self.criterion not in CRITERIA:
            raise ConfigError(
                f"Expected structured.criterion in {CRITERIA}. Received: {self.criterion!r}."
                + did_you_mean(self.criterion, CRITERIA)
            )
        check_count(self.granularity, "structured.granularity", 1)
        if isinstance(self.resolution, bool) or self.resolution not in (1.0, 0.5):
            raise ConfigError(f"Expected structured.resolution 1.0 or 0.5. Received: {self.resolution!r}.")
        if self.decoder not in (None, *DECODERS):
            raise ConfigError(f"Expected structured.decoder null or one of {DECODERS}. Received: {self.decoder!r}."
                              + did_you_mean(str(self.decoder), DECODERS))
        if self.stem not in STEMS:
            raise ConfigError(f"Expected structured.stem in {STEMS}. Received: {self.stem!r}."
                              + did_you_mean(str(self.stem), STEMS))
        if self.stem != "pool" and self.resolution == 1.0:
            raise ConfigError("structured.stem sets how a half-resolution model is entered and left. Expected "
                              f"structured.resolution 0.5 with it. Received: stem={self.stem!r}, resolution=1.0.")
        self._check_training(min_epochs=0)
        self.distill_config()
        if self.alpha > 0 and not self.epochs:
            raise ConfigError(
                "structured.alpha > 0 distills while fine-tuning. Expected structured.epochs >= 1 with it. "
                f"Received: alpha={self.alpha}, epochs={self.epochs}."
            )
        if self.class_weighted_kd and not self.alpha > 0:
            raise ConfigError(
                "structured.class_weighted_kd weights the distillation term. Expected structured.alpha > 0 with it. "
                f"Received: alpha={self.alpha}."
            )

    needs_float_model: ClassVar[bool] = True

    def distill_config(self, ctx: Any = None) -> Any:
        """The :class:`~roverlite.compress.distill.DistillConfig` of the fine-tune's distillation term
        (with ``ctx``: the run's ignore label and the KD class weights)."""
        from roverlite.compress.distill import DistillConfig

        return DistillConfig(temperature=self.temperature, alpha=self.alpha, **soft_term_settings(self, ctx))

    def run(self, model: Any, ctx: StepContext) -> tuple[Any, dict[str, Any]]:
        """Remove filters per U-Net level, then fine-tune the thinner model (``epochs`` may be 0).

        With ``alpha > 0`` the fine-tuning is a distillation from ``model`` (the unpruned input,
        frozen): prune, then distill, the thin model starting from the teacher's own filters. With a
        ``table`` the keep ratios come from a latency search (:mod:`roverlite.compress.channel_search`)
        and the chosen model is timed against the unpruned one (``details["latency_search"]``).
        """
        from roverlite.compress.structured import structured_prune
        from roverlite.train.macs import count_macs

        keep_ratio, search = self.keep_ratio, None
        if self.table is not None:
            search, source = self._latency_search(model, ctx)
            keep_ratio = search.keep_ratios
        granularity = search.granularity if search is not None else self.granularity
        thin, report = structured_prune(model, keep_ratio, self.criterion, granularity)
        details: dict[str, Any] = {**report.to_dict(), "unet_overrides": report.unet_overrides()}
        details.pop("filters")
        thin = self._reshape(thin, details)
        if self.decoder or self.resolution != 1.0:
            details["macs_after"] = int(count_macs(thin).macs)
        if search is not None:
            from roverlite.compress.channel_search import measure_choice

            search = measure_choice(search, self._reshape(model, {"unet_overrides": {}}), thin)
            details["latency_search"] = {**search.to_dict(), "table": source}
        if not self.epochs:
            return thin, details
        tune, index = ctx.training, ctx.index  # built here: a step that does not train reads no training data
        learning_rate = tune.learning_rate("structured", self.learning_rate)
        optimizer = tune.optimizer(learning_rate, self.epochs)
        bar = tune.bar(f"{index} structured x{report.macs_before / max(1, details['macs_after']):.1f}", self.epochs)
        if self.alpha > 0:
            from roverlite.compress.distill import distill

            distill(
                model, thin, tune.dataset(index), None, self.distill_config(tune), self.epochs, optimizer=optimizer,
                hard_loss=tune.loss(self), steps_per_epoch=tune.steps, callbacks=[bar],
                jit_compile=tune.jit_compile(thin),
            )
            details.update(distilled_from=model.name, alpha=self.alpha, temperature=self.temperature)
        else:
            tune.compile(thin, optimizer, tune.loss(self))
            thin.fit(tune.dataset(index), epochs=self.epochs, steps_per_epoch=tune.steps, callbacks=[bar], verbose=0)
        details.update(learning_rate=learning_rate, last_epoch=bar.last_logs)
        return thin, details

    def model_config(self, current: ModelConfig, details: Mapping[str, Any]) -> ModelConfig:
        return ModelConfig(name=current.name, overrides={**current.overrides, **details["unet_overrides"]})

    # === Helpers ===

    def _reshape(self, model: Any, details: dict[str, Any]) -> Any:
        """``model`` with the step's decoder and resolution changes (recorded in ``details``)."""
        from roverlite.compress.decoder import swap_decoder
        from roverlite.compress.resolution import half_resolution, half_resolution_overrides

        if self.decoder is not None:
            model = swap_decoder(model, self.decoder)
            details["unet_overrides"]["decoder"] = self.decoder  # what build_unet(decoder=...) builds
            details["decoder"] = self.decoder
        if self.resolution == 0.5:
            model = half_resolution(model, self.stem)
            details["unet_overrides"].update(half_resolution_overrides(self.stem))
            details.update(resolution=0.5, stem=self.stem)
        return model

    def _latency_search(self, model: Any, ctx: StepContext) -> tuple[Any, str]:
        """Per-level keep ratios from the step's latency table (measured here for ``table: this``)."""
        from roverlite.compress.channel_search import search_channels
        from roverlite.compress.latency_table import check_table_fits, load_latency_table
        from roverlite.compress.structured import level_scores

        shipped = self._reshape(model, {"unet_overrides": {}})  # the architecture the table must describe
        if self.table == "this":
            table, source = self._table_here(shipped, ctx)
        else:
            table, source = load_latency_table(self.table), self.table
            check_table_fits(table, shipped, f"latency table {self.table!r}")
        granularity = table.granularity if self.granularity == 1 else self.granularity
        search = search_channels(table, level_scores(model, self.criterion), self.target_latency_ms,
                                 self.latency_ratio, granularity, self.threads)
        return search, source

    def _table_here(self, shipped: Any, ctx: StepContext) -> tuple[Any, str]:
        """Measure the table on this machine, or reuse the run folder's cached one when it fits."""
        from roverlite.compress.latency_table import check_table_fits, load_latency_table, measure_latency_table

        granularity = self.granularity if self.granularity > 1 else LATENCY_TABLE_GRANULARITY
        threads = (self.threads,) if self.threads else tuple(t for t in (1, 2) if t <= usable_cpus())
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


# === Checks ===


def _check_latency_target(step: StructuredStep) -> None:
    """Exactly one of keep_ratio / latency_ratio / target_latency_ms; a table with a latency target only."""
    given = [k for k in ("keep_ratio", "latency_ratio", "target_latency_ms") if getattr(step, k) is not None]
    if len(given) > 1:
        raise ConfigError(
            "Expected exactly one of structured.keep_ratio, structured.latency_ratio and structured.target_latency_ms. "
            f"Received: {', '.join(given)}."
        )
    ratio, target = step.latency_ratio, step.target_latency_ms
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1):
        raise ConfigError(f"Expected structured.latency_ratio in (0, 1] (of the unpruned model's int8 p50). "
                          f"Received: {ratio!r}.")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))
                               or not 0 < target < float("inf")):
        raise ConfigError(f"Expected structured.target_latency_ms > 0 and finite. Received: {target!r}.")
    searching = ratio is not None or target is not None
    if searching and (not isinstance(step.table, str) or not step.table):
        raise ConfigError(
            "A latency target needs latencies. Expected structured.table: a JSON file from `roverlite latency-table`, "
            f"or 'this' to measure on this machine. Received: table={step.table!r}."
        )
    if not searching and (step.table is not None or step.threads is not None):
        raise ConfigError(
            "structured.table and structured.threads serve a latency search. Expected structured.latency_ratio or "
            f"structured.target_latency_ms with them. Received: table={step.table!r}, threads={step.threads!r}."
        )
    if step.threads is not None:
        check_count(step.threads, "structured.threads", 1)
    if ratio is not None:
        object.__setattr__(step, "latency_ratio", float(ratio))
    if target is not None:
        object.__setattr__(step, "target_latency_ms", float(target))


def _keep_ratio(value: Any) -> float | tuple[float, ...]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1 for v in values):
        raise ConfigError(
            "Expected structured.keep_ratio in (0, 1], as one number or one per U-Net level (bottleneck last). "
            f"Received: {value!r}."
        )
    floats = tuple(float(v) for v in values)
    return floats if isinstance(value, (list, tuple)) else floats[0]
