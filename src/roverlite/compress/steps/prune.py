"""The ``prune`` step: magnitude pruning during fine-tuning (:mod:`roverlite.compress.prune`), then strip."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from roverlite.compress._registry import StepContext, TrainingStep, register_step

__all__ = ["PruneStep", "auto_frequency"]


@register_step("prune")
@dataclass(frozen=True)
class PruneStep(TrainingStep):
    """Magnitude pruning during fine-tuning (:mod:`roverlite.compress.prune`), then strip.

    Attributes:
        target_sparsity, schedule, end_fraction, skip_layers: as in
            :class:`~roverlite.compress.prune.PruneConfig` (:meth:`prune_config` builds it).
        epochs: fine-tuning epochs (the schedule is placed within them).
        frequency: optimiser steps between mask updates (default: about 8 updates over the
            fine-tuning, at most 100 steps apart; see :func:`auto_frequency`).
        learning_rate: peak rate (default: a tenth of ``train.learning_rate``).
        class_weighting, loss: this step's hard loss (see "Hard loss" in :mod:`roverlite.compress.recipe`).
    """

    target_sparsity: float = 0.5
    epochs: int = 2
    schedule: str = "polynomial"
    frequency: int | None = None
    end_fraction: float | None = None
    skip_layers: tuple[str, ...] = ("logits",)
    learning_rate: float | None = None
    class_weighting: str | None = None
    loss: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip_layers", tuple(self.skip_layers))
        self._check_training()
        self.prune_config()

    needs_float_model: ClassVar[bool] = True

    def prune_config(self, total_steps: int | None = None) -> Any:
        """This step's :class:`~roverlite.compress.prune.PruneConfig`; ``total_steps`` (the
        fine-tuning's optimiser steps) sets the frequency when the step gives none."""
        from roverlite.compress.prune import PruneConfig

        frequency = self.frequency
        if frequency is None:  # unknown before the fine-tuning's length is: any valid value checks the rest
            frequency = auto_frequency(total_steps) if total_steps else 1
        return PruneConfig(
            target_sparsity=self.target_sparsity, schedule=self.schedule, frequency=frequency,
            end_fraction=self.end_fraction, skip_layers=self.skip_layers,
        )

    def run(self, model: Any, ctx: StepContext) -> tuple[Any, dict[str, Any]]:
        """Magnitude-prune ``model`` while fine-tuning, then strip the wrappers (zeros stay in the kernels)."""
        from roverlite.compress.prune import fine_tune_pruned, kernel_sparsity, prune, sparsity_report, strip

        tune, index = ctx.training, ctx.index
        total = self.epochs * tune.steps
        cfg = self.prune_config(total)
        pruned = prune(model, cfg, total_steps=total)
        learning_rate = tune.learning_rate("prune", self.learning_rate)
        bar = tune.bar(f"{index} prune {self.target_sparsity:.0%}", self.epochs)
        fine_tune_pruned(
            pruned, tune.dataset(index), self.epochs, tune.steps, tune.loss(self),
            tune.optimizer(learning_rate, self.epochs), callbacks=[bar],
        )
        stripped = strip(pruned)
        return stripped, {
            "frequency": cfg.frequency,
            "learning_rate": learning_rate,
            "sparsity": kernel_sparsity(stripped),
            "layers": dict(sparsity_report(stripped)),
            "last_epoch": bar.last_logs,
        }


def auto_frequency(total_steps: int) -> int:
    """Optimiser steps between mask updates when a prune step gives none: about 8 updates, at most 100 apart."""
    return max(1, min(100, total_steps // 8))
