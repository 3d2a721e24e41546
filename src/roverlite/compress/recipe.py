"""Compression recipes: a YAML chain of steps, checked whole before any work, run with a gate per step.

A recipe names its steps in order and the accuracy floors every step's artifact must keep::

    name: student-int8
    steps:
      - distill: {student: unet_xs, epochs: 8, temperature: 4.0, alpha: 0.5}
      - qat: {epochs: 2}
      - export: {formats: [tflite_int8]}
    gate: {max_miou_drop: 0.02, max_rare_class_drop: 0.10, rare_classes: [big_rock]}

Step kinds (one frozen, validated dataclass each, in :mod:`roverlite.compress.steps`; unknown kinds
and keys are refused with the closest valid name): ``distill`` (:class:`~.steps.distill.DistillStep`),
``prune`` (:class:`~.steps.prune.PruneStep`), ``structured`` (:class:`~.steps.structured.StructuredStep`),
``qat`` (:class:`~.steps.qat.QatStep`), ``export`` (:class:`~.steps.export.ExportStep`); the ``gate``
section is a :class:`~roverlite.compress.gate.GateConfig`.

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
:func:`~roverlite.compress._registry.register_step` and does its work in ``run(model, ctx)`` (in its
own module of :mod:`roverlite.compress.steps`, fine-tuning with
:class:`~roverlite.compress.finetune.FineTune`); its class attributes (``produces_model``,
``ends_chain``, ``once``, ``needs_float_model``, ``quantizes``) give the order rules and the
runner's generic save/export path, and every training step's ``class_weighting``/``loss`` are one
:class:`~roverlite.compress._registry.HardLoss`, validated once.

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
from typing import Any

from roverlite._yaml import config_dumper, parse_yaml
from roverlite.compress._registry import STEP_TYPES
from roverlite.compress.gate import GateConfig
from roverlite.compress.steps import ExportStep, Step
from roverlite.config import ConfigError, did_you_mean, from_plain, to_plain
from roverlite.export.formats import get_format
from roverlite.io import atomic_write_text

__all__ = ["STEP_KINDS", "STEP_TYPES", "Recipe", "Step", "load_recipe"]

logger = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
STEP_KINDS = tuple(STEP_TYPES)  # every kind, registered by importing roverlite.compress.steps


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
        # PyYAML is optional ([train] extra), imported on use as in roverlite._yaml
        import yaml

        text = yaml.dump(self.to_dict(), Dumper=config_dumper(), sort_keys=False, default_flow_style=None)
        if path is not None:
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
    # PyYAML is optional ([train] extra), imported on use as in roverlite._yaml
    import yaml

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
    bad = [f for f in step.formats if not (get_format(f).runtime == "litert" and get_format(f).precision == "int8")]
    if bad:
        raise ConfigError(
            f"Export at steps[{index}] follows qat with formats {bad}. Expected int8 TFLite only (tflite_int8) after "
            "qat: fake-quant ops do not convert to ONNX or float TFLite. Export those from a recipe without qat."
        )
