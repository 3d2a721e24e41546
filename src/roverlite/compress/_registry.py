"""The step registry: every recipe step kind is one frozen class registered under its name.

A step class holds its validated settings (a frozen dataclass read from YAML), says how it fits in
a chain (class attributes below) and does its work in ``run(model, ctx)``; the recipe parser builds
steps from :data:`STEP_TYPES` and the runner loops over them without knowing any kind::

    @register_step("prune")
    @dataclass(frozen=True)
    class PruneStep(TrainingStep):
        target_sparsity: float = 0.5
        def run(self, model, ctx): ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from roverlite.config import CLASS_WEIGHTINGS, ConfigError, ModelConfig, check_loss_terms, did_you_mean

__all__ = [
    "STEP_TYPES",
    "HardLoss",
    "StepBase",
    "StepContext",
    "TrainingStep",
    "check_count",
    "check_rate",
    "register_step",
]

_STEP_TYPES: dict[str, type] = {}
STEP_TYPES: Mapping[str, type] = MappingProxyType(_STEP_TYPES)


def register_step(kind: str) -> Callable[[type], type]:
    """Register a step class under ``kind`` (its YAML key); sets ``cls.kind``."""

    def add(cls: type) -> type:
        if kind in _STEP_TYPES:
            raise ValueError(f"Expected each step kind registered once. Received: {kind!r} a second time.")
        cls.kind = kind
        _STEP_TYPES[kind] = cls
        return cls

    return add


# === Context ===


@dataclass(frozen=True)
class StepContext:
    """What a step may use besides its input model.

    Attributes:
        index: the step's position in the recipe (from 1); seeds its batches.
        out_dir: the recipe's run folder (caches go there; ``None``: no cache).
        fine_tune: returns the shared training set-up
            (:class:`~roverlite.compress.finetune.FineTune`: data, loss, optimiser, seed), built on
            first use so that steps which do not train read no training data.
    """

    index: int
    out_dir: Path | None = None
    fine_tune: Callable[[], Any] | None = None

    @property
    def training(self) -> Any:
        return None if self.fine_tune is None else self.fine_tune()


# === Hard loss ===


@dataclass(frozen=True)
class HardLoss:
    """The label loss of a training step: ``None`` fields keep the run's ``train`` settings.

    Attributes:
        class_weighting: ``none``, ``inverse``, ``inverse_sqrt`` or ``median``.
        loss: loss terms as in ``train.loss``, e.g. ``{cross_entropy: 1.0, dice: 2.0}``.
        where: the step kind, for error messages.
    """

    class_weighting: str | None = None
    loss: Mapping[str, float] | None = None
    where: str = "step"

    def __post_init__(self) -> None:
        weighting = self.class_weighting
        if weighting is not None and weighting not in CLASS_WEIGHTINGS:
            raise ConfigError(
                f"Expected {self.where}.class_weighting in {CLASS_WEIGHTINGS} or null (the run's train.class_weighting). "
                f"Received: {weighting!r}." + did_you_mean(str(weighting), CLASS_WEIGHTINGS)
            )
        if self.loss is not None:
            check_loss_terms(self.loss, f"{self.where}.loss")
            object.__setattr__(self, "loss", {name: float(weight) for name, weight in self.loss.items()})


# === Base classes ===


class StepBase:
    """Defaults every registered step shares; subclasses are frozen dataclasses.

    Class attributes (the chain rules and the runner's generic path read them):
        kind: the registered name.
        produces_model: the step changes the model (and its folder holds it); ``False`` for export.
        ends_chain: only steps of the same kind may follow.
        once: at most one per recipe.
        needs_float_model: cannot follow a step that sets ``quantizes``.
        quantizes: the model leaves the step QAT-wrapped.
    """

    kind: ClassVar[str] = ""
    produces_model: ClassVar[bool] = True
    ends_chain: ClassVar[bool] = False
    once: ClassVar[bool] = False
    needs_float_model: ClassVar[bool] = False
    quantizes: ClassVar[bool] = False

    def run(self, model: Any, ctx: StepContext) -> tuple[Any, dict[str, Any]]:
        """Returns ``(new model, details)``; ``details`` is JSON-ready. The input is never changed."""
        raise NotImplementedError(f"Expected {type(self).__name__}.run. Received: none.")

    def preflight(self) -> None:
        """Checks that need the model registry, run before any data is read."""

    def model_config(self, current: ModelConfig, details: Mapping[str, Any]) -> ModelConfig:
        """The ``model`` section that rebuilds this step's output architecture."""
        return current

    def export_settings(self, quantized: bool) -> Any:
        """The export (an ``export`` step) whose artifact the gate judges after this step:
        float TFLite, or int8 TFLite once the model is QAT-wrapped."""
        return STEP_TYPES["export"](formats=("tflite_int8",) if quantized else ("tflite",))

    def source_details(self) -> dict[str, Any]:
        """Extra provenance of the step's saved model, written into sidecars."""
        return {}


class TrainingStep(StepBase):
    """A step that trains on the labels: ``epochs``, ``learning_rate``, ``class_weighting`` and ``loss``
    fields, the last two one :class:`HardLoss`."""

    @property
    def hard_loss(self) -> HardLoss:
        return HardLoss(self.class_weighting, self.loss, self.kind)  # type: ignore[attr-defined]

    def _check_training(self, min_epochs: int = 1) -> None:
        """Check the fields every training step has (the hard loss validated once, by :class:`HardLoss`)."""
        check_count(self.epochs, f"{self.kind}.epochs", min_epochs)  # type: ignore[attr-defined]
        check_rate(self.learning_rate, f"{self.kind}.learning_rate")  # type: ignore[attr-defined]
        object.__setattr__(self, "loss", self.hard_loss.loss)


# === Checks ===


def check_count(value: Any, where: str, minimum: int) -> None:
    """An integer (not a bool) >= ``minimum``, else a ConfigError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"Expected {where} to be an integer >= {minimum}. Received: {value!r}.")


def check_rate(value: Any, where: str) -> None:
    """A learning rate > 0, or None (the step's default)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
        raise ConfigError(f"Expected {where} > 0 or null (the step's default). Received: {value!r}.")
