"""The ``distill`` step: train a fresh student preset against the current model (the frozen teacher)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from roverlite.compress._registry import StepContext, TrainingStep, register_step
from roverlite.config import ConfigError, ModelConfig

__all__ = ["DistillStep", "soft_term_settings"]


@register_step("distill")
@dataclass(frozen=True)
class DistillStep(TrainingStep):
    """Train a fresh student preset to match the current model (the frozen teacher).

    Attributes:
        student: a registered model name (``roverlite.train.models.list_models``), e.g. ``unet_xs``.
        student_overrides: ``build_unet`` arguments changed from the preset (e.g. ``base_width``).
        epochs: passes over the train split.
        temperature, alpha, feature_weight: as in :class:`~roverlite.compress.distill.DistillConfig`
            (:meth:`distill_config` builds it); ``alpha: 0`` trains the same student on the labels
            alone (the from-scratch ablation).
        class_weighted_kd: weight the soft term's pixels by the class weights of the hard loss, so
            rare classes count as much in both terms.
        class_weighting, loss: this step's hard loss (see "Hard loss" in :mod:`roverlite.compress.recipe`).
        learning_rate: peak rate (default: the run's ``train.learning_rate``).
    """

    student: str = ""
    student_overrides: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 8
    temperature: float = 4.0
    alpha: float = 0.5
    feature_weight: float = 0.0
    class_weighted_kd: bool = False
    class_weighting: str | None = None
    loss: Mapping[str, float] | None = None
    learning_rate: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.student, str) or not self.student:
            raise ConfigError(
                "distill.student is required. Expected a registered model name such as 'unet_xs'. "
                f"Received: {self.student!r}."
            )
        if not isinstance(self.student_overrides, Mapping):
            raise ConfigError(f"Expected distill.student_overrides as a mapping. Received: {self.student_overrides!r}.")
        object.__setattr__(self, "student_overrides", dict(self.student_overrides))
        self._check_training()
        self.distill_config()

    needs_float_model: ClassVar[bool] = True

    def distill_config(self, ctx: Any = None) -> Any:
        """This step's :class:`~roverlite.compress.distill.DistillConfig` (with ``ctx``, a
        :class:`~roverlite.compress.finetune.FineTune`: the run's ignore label and the KD class weights)."""
        from roverlite.compress.distill import DistillConfig

        return DistillConfig(temperature=self.temperature, alpha=self.alpha, feature_weight=self.feature_weight,
                             **soft_term_settings(self, ctx))

    def run(self, model: Any, ctx: StepContext) -> tuple[Any, dict[str, Any]]:
        """Train a fresh ``student`` against ``model`` (the frozen teacher); returns the student."""
        from roverlite.compress.distill import distill
        from roverlite.train.models import create_model

        tune, index = ctx.training, ctx.index
        student = create_model(
            self.student,
            input_shape=tuple(int(s) for s in model.input_shape[1:]),
            num_classes=int(model.output_shape[-1]),
            **dict(self.student_overrides),
        )
        learning_rate = tune.learning_rate("distill", self.learning_rate)
        bar = tune.bar(f"{index} distill -> {self.student}", self.epochs)
        distill(
            model, student, tune.dataset(index), None, self.distill_config(tune), self.epochs,
            optimizer=tune.optimizer(learning_rate, self.epochs, tune.cfg.train.warmup_epochs),
            hard_loss=tune.loss(self), steps_per_epoch=tune.steps, callbacks=[bar],
            jit_compile=tune.jit_compile(student),
        )
        details = {"teacher": model.name, "student": self.student, "learning_rate": learning_rate}
        return student, {**details, "last_epoch": bar.last_logs}

    def preflight(self) -> None:
        from roverlite.train.models import model_args

        model_args(self.student, **dict(self.student_overrides))

    def model_config(self, current: ModelConfig, details: Mapping[str, Any]) -> ModelConfig:
        return ModelConfig(name=self.student, overrides=dict(self.student_overrides))


def soft_term_settings(step: Any, ctx: Any) -> dict[str, Any]:
    """The run-dependent part of a distilling step's ``DistillConfig``: the ignore label, and the
    hard loss's class weights for the soft term when ``step.class_weighted_kd`` (none without ``ctx``)."""
    if ctx is None:
        return {}
    weights = ctx.weights(step.class_weighting) if step.class_weighted_kd else None
    return {"ignore_index": ctx.cfg.data.ignore_index, "class_weights": weights}
