"""The ``qat`` step: quantization-aware training (:mod:`roverlite.compress.qat`); the model stays QAT-wrapped."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from roverlite.compress._registry import StepContext, TrainingStep, register_step

__all__ = ["QatStep"]


@register_step("qat")
@dataclass(frozen=True)
class QatStep(TrainingStep):
    """Quantization-aware training (:mod:`roverlite.compress.qat`); the model stays QAT-wrapped.

    Attributes:
        epochs: fine-tuning epochs.
        preserve_sparsity: keep a pruned model's zeros (PQAT).
        learning_rate: peak rate (default: a tenth of ``train.learning_rate``).
        class_weighting, loss: this step's hard loss (see "Hard loss" in :mod:`roverlite.compress.recipe`).
    """

    epochs: int = 2
    preserve_sparsity: bool = False
    learning_rate: float | None = None
    class_weighting: str | None = None
    loss: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        self._check_training()

    once: ClassVar[bool] = True
    quantizes: ClassVar[bool] = True

    def run(self, model: Any, ctx: StepContext) -> tuple[Any, dict[str, Any]]:
        """Wrap ``model`` for quantization-aware training and fine-tune it; returns the QAT model."""
        from roverlite.compress.prune import kernel_sparsity
        from roverlite.compress.qat import fine_tune_qat, quantize_aware

        tune, index = ctx.training, ctx.index
        qat = quantize_aware(model, preserve_sparsity=self.preserve_sparsity)
        learning_rate = tune.learning_rate("qat", self.learning_rate)
        bar = tune.bar(f"{index} qat", self.epochs)
        fine_tune_qat(
            qat, tune.dataset(index), self.epochs, tune.steps, tune.loss(self),
            tune.optimizer(learning_rate, self.epochs), callbacks=[bar],
        )
        details: dict[str, Any] = {"learning_rate": learning_rate, "last_epoch": bar.last_logs}
        if self.preserve_sparsity:
            details["sparsity"] = kernel_sparsity(qat)
        return qat, details

    def source_details(self) -> dict[str, Any]:
        return {"preserve_sparsity": self.preserve_sparsity}
