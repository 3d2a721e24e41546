"""Compression recipes: a YAML chain of steps, checked whole before any work, run with a gate per step.

A recipe names its steps in order and the accuracy floors every step's artifact must keep::

    name: student-int8
    steps:
      - distill: {student: unet_xs, epochs: 8, temperature: 4.0, alpha: 0.5}
      - qat: {epochs: 2}
      - export: {formats: [tflite_int8]}
    gate: {max_miou_drop: 0.02, max_rare_class_drop: 0.10, rare_classes: [big_rock]}

Step kinds (one frozen, validated dataclass each; unknown kinds and keys are refused with the
closest valid name): ``distill`` (:class:`DistillStep`), ``prune`` (:class:`PruneStep`),
``structured`` (:class:`StructuredStep`), ``qat`` (:class:`QatStep`), ``export``
(:class:`ExportStep`); the ``gate`` section is a :class:`~roverlite.compress.gate.GateConfig`.

Latency-aware structured pruning: instead of a ``keep_ratio``, a ``structured`` step may give
``latency_ratio`` (of the unpruned model's int8 p50) or ``target_latency_ms`` with a ``table``,
and the per-level widths are searched on measured latencies (granularity steps, where they save
the most time per unit of filter importance; :mod:`roverlite.compress.channel_search`)::

    - structured: {latency_ratio: 0.5, granularity: 16, table: this, decoder: nearest, epochs: 12}

``table: this`` measures the table here and caches it as ``latency_table.json`` in the run folder;
``table: FILE`` reads one from ``roverlite latency-table`` run on the target. The step's result
records the chosen keep ratios, the predicted and the measured int8 ms.

Hard loss: every training step (``distill``, ``prune``, ``structured``, ``qat``) trains with the
run's ``train.loss`` terms and ``train.class_weighting``. A step replaces them for itself alone with
``loss`` (terms as in ``train.loss``, e.g. ``{cross_entropy: 1.0, dice: 2.0}``) and
``class_weighting`` (``none``, ``inverse``, ``inverse_sqrt`` or ``median``); null keeps the run's.

Order rules, checked when the recipe is built (so before any data is read or model trained),
each error giving its reason:

* nothing follows an ``export`` except another ``export``: the export ends the chain;
* ``prune``, ``structured`` and ``distill`` never follow ``qat``: a QAT-wrapped model cannot be
  pruned or distilled (strip or convert it first);
* ``qat`` at most once: its model is already quantization-wrapped;
* after ``qat``, exports are int8 TFLite only: the fake-quant ops do not convert to ONNX (or
  convert to a QDQ graph that a float self-check cannot judge).

:func:`roverlite.compress.runner.run_recipe` runs a recipe on a teacher (see its docstring for the
output folder). Each step class is registered with
:func:`~roverlite.compress._registry.register_step` and does its work in ``run(model, ctx)``
(the training bodies and the shared fine-tuning set-up are in :mod:`roverlite.compress.steps`);
its class attributes (``produces_model``, ``ends_chain``, ``once``, ``needs_float_model``,
``quantizes``) give the order rules and the runner's generic save/export path, and every
training step's ``class_weighting``/``loss`` are one :class:`HardLoss`, validated once.

Example:
    >>> from roverlite.compress import run_recipe
    >>> recipe = load_recipe("configs/recipes/student_int8.yaml")
    >>> result = run_recipe("runs/mars-teacher", recipe, "runs/mars-student-int8")  # doctest: +SKIP
    >>> [(a["format"], a["miou"]) for a in result.final_artifacts]                    # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from roverlite.compress._registry import STEP_TYPES, HardLoss, StepBase, StepContext, TrainingStep, register_step
from roverlite.compress.gate import GateConfig
from roverlite.config import ConfigError, ModelConfig, did_you_mean, from_plain, to_plain

__all__ = [
    "STEP_KINDS",
    "STEP_TYPES",
    "DistillStep",
    "ExportStep",
    "HardLoss",
    "PruneStep",
    "QatStep",
    "Recipe",
    "StepContext",
    "StructuredStep",
    "load_recipe",
    "register_step",
]

logger = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# === Steps ===


@register_step("distill")
@dataclass(frozen=True)
class DistillStep(TrainingStep):
    """Train a fresh student preset to match the current model (the frozen teacher).

    Attributes:
        student: a registered model name (``roverlite.train.models.list_models``), e.g. ``unet_xs``.
        student_overrides: ``build_unet`` arguments changed from the preset (e.g. ``base_width``).
        epochs: passes over the train split.
        temperature, alpha, feature_weight: as in :class:`~roverlite.compress.distill.DistillConfig`;
            ``alpha: 0`` trains the same student on the labels alone (the from-scratch ablation).
        class_weighted_kd: weight the soft term's pixels by the class weights of the hard loss, so
            rare classes count as much in both terms.
        class_weighting, loss: this step's hard loss (see "Hard loss" in the module docstring).
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
        _check_count(self.epochs, "distill.epochs", 1)
        _check_rate(self.learning_rate, "distill.learning_rate")
        self._check_hard_loss()
        from roverlite.compress.distill import DistillConfig

        DistillConfig(temperature=self.temperature, alpha=self.alpha, feature_weight=self.feature_weight)

    needs_float_model: ClassVar[bool] = True

    def run(self, model: Any, ctx: StepContext) -> tuple[Any, dict[str, Any]]:
        """Train a fresh student against ``model`` (the frozen teacher); see ``steps.run_distill``."""
        from roverlite.compress import steps

        return steps.run_distill(self, model, ctx.training, ctx.index)

    def preflight(self) -> None:
        from roverlite.train.models import model_args

        model_args(self.student, **dict(self.student_overrides))

    def model_config(self, current: ModelConfig, details: Mapping[str, Any]) -> ModelConfig:
        return ModelConfig(name=self.student, overrides=dict(self.student_overrides))


@register_step("prune")
@dataclass(frozen=True)
class PruneStep(TrainingStep):
    """Magnitude pruning during fine-tuning (:mod:`roverlite.compress.prune`), then strip.

    Attributes:
        target_sparsity, schedule, end_fraction, skip_layers: as in :class:`~roverlite.compress.prune.PruneConfig`.
        epochs: fine-tuning epochs (the schedule is placed within them).
        frequency: optimiser steps between mask updates (default: about 8 updates over the
            fine-tuning, at most 100 steps apart; see ``steps.auto_frequency``).
        learning_rate: peak rate (default: a tenth of ``train.learning_rate``).
        class_weighting, loss: this step's hard loss (see "Hard loss" in the module docstring).
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
        _check_count(self.epochs, "prune.epochs", 1)
        _check_rate(self.learning_rate, "prune.learning_rate")
        self._check_hard_loss()
        from roverlite.compress.prune import PruneConfig

        PruneConfig(
            target_sparsity=self.target_sparsity, schedule=self.schedule, frequency=self.frequency or 1,
            end_fraction=self.end_fraction, skip_layers=self.skip_layers,
        )

    needs_float_model: ClassVar[bool] = True

    def run(self, model: Any, ctx: StepContext) -> tuple[Any, dict[str, Any]]:
        """Magnitude-prune while fine-tuning, then strip; see ``steps.run_prune``."""
        from roverlite.compress import steps

        return steps.run_prune(self, model, ctx.training, ctx.index)


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
            (a 2x2 average-pool stem and nearest-upsampled logits, every weight kept; see
            ``roverlite.compress.resolution``) before the fine-tune: on CPUs the time of a small
            int8 U-Net is spent at full resolution.
        decoder: ``null`` (keep the model's), or ``nearest`` to replace every transposed-conv
            up-sampling by a 1x1 conv and nearest up-sampling (``roverlite.compress.decoder``),
            before the fine-tune: int8 ``TRANSPOSE_CONV`` is slow on XNNPACK.
        epochs: fine-tuning epochs (0 = none).
        learning_rate: peak rate (default: half of ``train.learning_rate``: the thinner model
            re-learns more than a pruned or QAT one, see ``steps.DEFAULT_LR_FRACTION``).
        alpha: weight of a distillation term while fine-tuning, in ``[0, 1]``: the thin model
            learns from the unpruned one (the step's input, frozen) as a distilled student does,
            with ``1 - alpha`` on the labels. 0 (default): labels only.
        temperature: softmax temperature of that term (as in ``distill``).
        class_weighted_kd: weight that term's pixels by the hard loss's class weights (as in
            ``distill``); needs ``alpha > 0``.
        class_weighting, loss: this step's hard loss (see "Hard loss" in the module docstring).
    """

    keep_ratio: Any = None
    latency_ratio: float | None = None
    target_latency_ms: float | None = None
    table: str | None = None
    threads: int | None = None
    criterion: str = "l1"
    granularity: int = 1
    resolution: float = 1.0
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
        _check_count(self.epochs, "structured.epochs", 0)
        _check_count(self.granularity, "structured.granularity", 1)
        if isinstance(self.resolution, bool) or self.resolution not in (1.0, 0.5):
            raise ConfigError(f"Expected structured.resolution 1.0 or 0.5. Received: {self.resolution!r}.")
        if self.decoder not in (None, "nearest"):
            raise ConfigError(f"Expected structured.decoder null or 'nearest'. Received: {self.decoder!r}."
                              + did_you_mean(str(self.decoder), ("nearest",)))
        _check_rate(self.learning_rate, "structured.learning_rate")
        self._check_hard_loss()
        from roverlite.compress.distill import DistillConfig

        DistillConfig(temperature=self.temperature, alpha=self.alpha)
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

    def run(self, model: Any, ctx: StepContext) -> tuple[Any, dict[str, Any]]:
        """Remove filters per level, then fine-tune; see ``steps.run_structured``."""
        from roverlite.compress import steps

        return steps.run_structured(self, model, ctx.training, ctx.index)

    def model_config(self, current: ModelConfig, details: Mapping[str, Any]) -> ModelConfig:
        return ModelConfig(name=current.name, overrides={**current.overrides, **details["unet_overrides"]})


@register_step("qat")
@dataclass(frozen=True)
class QatStep(TrainingStep):
    """Quantization-aware training (:mod:`roverlite.compress.qat`); the model stays QAT-wrapped.

    Attributes:
        epochs: fine-tuning epochs.
        preserve_sparsity: keep a pruned model's zeros (PQAT).
        learning_rate: peak rate (default: a tenth of ``train.learning_rate``).
        class_weighting, loss: this step's hard loss (see "Hard loss" in the module docstring).
    """

    epochs: int = 2
    preserve_sparsity: bool = False
    learning_rate: float | None = None
    class_weighting: str | None = None
    loss: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        _check_count(self.epochs, "qat.epochs", 1)
        _check_rate(self.learning_rate, "qat.learning_rate")
        self._check_hard_loss()

    once: ClassVar[bool] = True
    quantizes: ClassVar[bool] = True

    def run(self, model: Any, ctx: StepContext) -> tuple[Any, dict[str, Any]]:
        """Wrap for QAT and fine-tune; see ``steps.run_qat``."""
        from roverlite.compress import steps

        return steps.run_qat(self, model, ctx.training, ctx.index)

    def source_details(self) -> dict[str, Any]:
        return {"preserve_sparsity": self.preserve_sparsity}


@register_step("export")
@dataclass(frozen=True)
class ExportStep(StepBase):
    """Export the current model to each format (``roverlite.export``); the gate judges every artifact.

    Attributes:
        formats: names from ``roverlite.export.list_formats()``.
        int8_io: int8 TFLite with int8 input/output (``false``: float I/O).
        representative_count: train images used to calibrate int8 formats.
        check_images: validation images of the export's own self-check: all of them up to this
            many, else a seeded subset (``roverlite.export.verify.choose_check_images``).
    """

    formats: tuple[str, ...] = ("tflite_int8",)
    int8_io: bool = True
    representative_count: int = 100
    check_images: int = 512

    def __post_init__(self) -> None:
        from roverlite.export.formats import get_format

        object.__setattr__(self, "formats", (self.formats,) if isinstance(self.formats, str) else tuple(self.formats))
        if not self.formats:
            raise ConfigError("export.formats is empty. Expected at least one format, e.g. [tflite_int8].")
        for name in self.formats:
            get_format(name)
        duplicates = sorted({f for f in self.formats if self.formats.count(f) > 1})
        if duplicates:
            raise ConfigError(f"Expected each export format once. Received: {duplicates} more than once.")
        _check_count(self.representative_count, "export.representative_count", 1)
        _check_count(self.check_images, "export.check_images", 1)

    produces_model: ClassVar[bool] = False
    ends_chain: ClassVar[bool] = True

    def run(self, model: Any, ctx: StepContext) -> tuple[Any, dict[str, Any]]:
        """Nothing to do to the model: the runner exports it in :meth:`export_settings`' formats."""
        return model, {}

    def export_settings(self, quantized: bool) -> ExportStep:
        return self


Step = DistillStep | PruneStep | StructuredStep | QatStep | ExportStep
STEP_KINDS = tuple(STEP_TYPES)


# === Recipe ===


@dataclass(frozen=True)
class Recipe:
    """A named chain of steps and the gate every step's artifact must pass.

    Attributes:
        name: used in artifact names (letters, digits, ``.``, ``_``, ``-``).
        steps: the chain, in order (see the module docstring for the order rules).
        gate: the accuracy floors.
        description: free text, kept in ``recipe.yaml`` and the sidecars.
    """

    name: str
    steps: tuple[Step, ...]
    gate: GateConfig = field(default_factory=GateConfig)
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SAFE_NAME.fullmatch(self.name):
            raise ConfigError(
                f"Expected a recipe name of letters, digits, '.', '_' or '-'. Received: name={self.name!r}."
            )
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ConfigError("Expected at least one step in the recipe. Received: steps=[].")
        _check_order(self.steps)

    # === Serialisation ===

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` reads back to an equal recipe."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["steps"] = [{step.kind: to_plain(step)} for step in self.steps]
        out["gate"] = to_plain(self.gate)
        return out

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        """The recipe as YAML, every default written out; saved atomically when ``path`` is given."""
        import yaml

        from roverlite._yaml import config_dumper

        text = yaml.dump(self.to_dict(), Dumper=config_dumper(), sort_keys=False, default_flow_style=None)
        if path is not None:
            from roverlite.io import atomic_write_text

            atomic_write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Recipe:
        """Build a recipe from plain data, refusing unknown keys and step kinds with a suggestion.

        Raises:
            ConfigError: an unknown key or kind, a bad value (named by its place, e.g.
                ``steps[1].prune.target_sparsity``), or a step out of order.
        """
        if not isinstance(raw, Mapping):
            raise ConfigError(f"Expected a mapping at the top of the recipe. Received: {type(raw).__name__}.")
        keys = ("name", "description", "steps", "gate")
        for key in raw:
            if key not in keys:
                raise ConfigError(f"Unknown recipe key {key!r}." + did_you_mean(key, keys))
        if "name" not in raw or "steps" not in raw:
            raise ConfigError(f"Expected a recipe with 'name' and 'steps'. Received keys: {sorted(raw)}.")
        steps = raw["steps"]
        if not isinstance(steps, list):
            raise ConfigError(f"Expected 'steps' as a list of {{kind: settings}}. Received: {steps!r}.")
        return cls(
            name=raw["name"],
            steps=tuple(_parse_step(item, i) for i, item in enumerate(steps)),
            gate=from_plain(GateConfig, raw.get("gate"), "gate"),
            description=str(raw.get("description") or ""),
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> Recipe:
        return load_recipe(path)


def load_recipe(source: str | os.PathLike | Mapping[str, Any] | Recipe) -> Recipe:
    """A :class:`Recipe` from a YAML file, plain data, or a recipe (returned as is).

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not valid YAML, or not a valid recipe.
    """
    if isinstance(source, Recipe):
        return source
    if isinstance(source, Mapping):
        return Recipe.from_dict(source)
    import yaml

    from roverlite._yaml import parse_yaml

    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe file not found. Expected a YAML file. Received: {str(path)!r}.")
    try:
        # Aliases, duplicate keys and runaway numbers refused, YAML 1.2 scalars (1e-3 is a number).
        raw = parse_yaml(path.read_text(), f"Recipe {str(path)!r}")
    except yaml.YAMLError as err:
        raise ConfigError(f"Recipe {str(path)!r} is not valid YAML: {err}".splitlines()[0]) from None
    try:
        return Recipe.from_dict(raw if raw is not None else {})
    except ConfigError as err:
        raise ConfigError(f"{path.name}: {err}") from None


def _parse_step(item: Any, index: int) -> Step:
    where = f"steps[{index}]"
    if not isinstance(item, Mapping) or len(item) != 1:
        raise ConfigError(
            f"Expected {where} as one {{kind: settings}} entry, e.g. {{prune: {{target_sparsity: 0.5}}}}. "
            f"Received: {item!r}."
        )
    (kind, settings), = item.items()
    if kind not in STEP_TYPES:
        raise ConfigError(
            f"Unknown step kind at {where}. Expected one of {list(STEP_KINDS)}. Received: {kind!r}."
            + did_you_mean(str(kind), STEP_KINDS)
        )
    try:
        return from_plain(STEP_TYPES[kind], settings, f"{where}.{kind}")
    except ConfigError:
        raise
    except ValueError as err:  # a technique's own config check (PruneConfig, get_format, ...)
        raise ConfigError(f"{where}.{kind}: {err}") from None


def _check_order(steps: tuple[Step, ...]) -> None:
    """The chain rules, read from each step class's attributes (see ``_registry.StepBase``)."""
    quantized_at = end_at = None
    seen: dict[str, int] = {}
    for i, step in enumerate(steps):
        if not isinstance(step, tuple(STEP_TYPES.values())):
            raise ConfigError(
                f"Expected recipe steps of kinds {list(STEP_TYPES)}. Received: {type(step).__name__} at steps[{i}]."
            )
        if end_at is not None and step.kind != steps[end_at].kind:
            raise ConfigError(
                f"Step steps[{i}] ({step.kind}) comes after the export at steps[{end_at}]. Expected nothing after "
                "an export except another export: the export ends the chain, and its artifacts are what ships."
            )
        if step.once and step.kind in seen:
            raise ConfigError(
                f"Expected {step.kind} at most once. Received: a second {step.kind} at steps[{i}] (the first is "
                f"steps[{seen[step.kind]}]); its model is already quantization-wrapped."
            )
        if step.needs_float_model and quantized_at is not None:
            raise ConfigError(
                f"Step steps[{i}] ({step.kind}) comes after qat at steps[{quantized_at}]. Expected prune, structured and "
                "distill before qat: a QAT-wrapped model cannot be pruned or distilled (strip or convert it first)."
            )
        if step.ends_chain and quantized_at is not None:
            _check_qat_formats(step, i)
        seen.setdefault(step.kind, i)
        quantized_at = i if step.quantizes else quantized_at
        end_at = i if step.ends_chain and end_at is None else end_at


def _check_qat_formats(step: ExportStep, index: int) -> None:
    from roverlite.export.formats import get_format

    bad = [f for f in step.formats if not (get_format(f).runtime == "litert" and get_format(f).precision == "int8")]
    if bad:
        raise ConfigError(
            f"Export at steps[{index}] follows qat with formats {bad}. Expected int8 TFLite only (tflite_int8) after "
            "qat: fake-quant ops do not convert to ONNX or float TFLite. Export those from a recipe without qat."
        )


def _check_count(value: Any, where: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"Expected {where} to be an integer >= {minimum}. Received: {value!r}.")


def _check_rate(value: Any, where: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
        raise ConfigError(f"Expected {where} > 0 or null (the step's default). Received: {value!r}.")


def _check_latency_target(step: Any) -> None:
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
        _check_count(step.threads, "structured.threads", 1)
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

