"""Running a compression recipe on a teacher: every step trained, saved, exported and gated.

:func:`run_recipe` checks the whole recipe against the run config before any work (order rules,
formats, rare classes, student names, a fresh output folder), then for each step: runs it
(its ``run``, :mod:`roverlite.compress.steps`), saves the model, exports an artifact (float TFLite, or int8
TFLite once the model is QAT-wrapped; an ``export`` step exports its own formats), and runs the
accuracy gate on that artifact through ``roverlite.deploy`` against the teacher's float TFLite on
the same validation images. Output folder::

    recipe.yaml          the resolved recipe (every default written out)
    config.yaml          the run config every step trained with
    recipe_result.json   rewritten after each step: status, teacher, steps, artifacts, gate outcome
    0_teacher/           teacher float TFLite + sidecar, eval.json (the gate's reference)
    1_distill/           model.h5 + config.yaml (its model section rebuilds the student),
                         <recipe>-1-distill_tflite.tflite + sidecar, gate.json
    2_qat/               model.weights.h5, <recipe>-2-qat_tflite_int8.tflite + sidecar, gate.json
    3_export/            one artifact + sidecar per format, gate.json

A QAT model reloads from HDF5 only inside TFMOT's ``quantize_scope``, so it stays in memory for
the export and only its weights are saved: rebuild it with
``quantize_aware(load_model_file(<previous step>/model.h5), preserve_sparsity=...)`` and
``load_weights(model.weights.h5)``; ``recipe_result.json`` names both files.

Every sidecar's ``recipe`` entry holds the recipe, the step, the teacher's file and sha256 and the
source model's (for QAT: its weights file and the architecture file it was built on).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roverlite.compress.gate import GateError, GateReport, gate_artifact, raise_if_failed, write_gate
from roverlite.compress._registry import StepContext
from roverlite.compress.finetune import FineTune
from roverlite.compress.qdebug import debug_quantization
from roverlite.compress.recipe import Recipe, load_recipe
from roverlite.compress.steps import ExportStep, Step
from roverlite.config import Config, ConfigError, ModelConfig, load_config
from roverlite.core.documents import EVAL, RECIPE_RESULT
from roverlite.core.preprocessing import normalize
from roverlite.data.loader import cap_images, load_split
from roverlite.deploy.evaluate import evaluate_artifact
from roverlite.export import ExportSettings, export_model
from roverlite.export.formats import get_format
from roverlite.export.source import check_model_fits_config
from roverlite.export.verify import check_image_count, choose_check_images
from roverlite.io import ensure_writable_dir, sha256_file, write_document
from roverlite.train.crossval import fold_hint
from roverlite.train.evaluate import load_keras_model
from roverlite.train.macs import count_macs
from roverlite.train.modelfile import save_model_file
from roverlite.train.setup import seed_everything

__all__ = ["RecipeResult", "StepResult", "run_recipe"]

logger = logging.getLogger(__name__)

RESULT_FILE = "recipe_result.json"


# === Results ===


@dataclass(frozen=True)
class StepResult:
    """What one step produced.

    Attributes:
        index, kind: position (from 1) and step kind; the step folder is ``<index>_<kind>``.
        dir: the step folder.
        model_path: the saved Keras model (``None`` for QAT and export steps).
        weights_path: the QAT model's weights (QAT steps only).
        seconds: wall time of the step, export and gate included.
        cost: ``{"macs", "params"}`` of the model's float architecture.
        artifacts: one row per exported artifact: ``format``, ``artifact`` (its file), ``size_bytes``, ``sha256``,
            ``self_check_passed``, ``miou``, ``per_class_iou``, ``gate_passed``, ``macs``, ``params``.
        gate: the gate report of each artifact.
        details: what the step measured (sparsity, widths, losses, ...).
    """

    index: int
    kind: str
    dir: Path
    model_path: Path | None
    weights_path: Path | None
    seconds: float
    cost: Mapping[str, int]
    artifacts: tuple[Mapping[str, Any], ...]
    gate: tuple[GateReport, ...] = field(repr=False)
    details: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return all(report.passed for report in self.gate)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "dir": str(self.dir),
            "model_path": _str(self.model_path),
            "weights_path": _str(self.weights_path),
            "seconds": round(self.seconds, 1),
            "passed": self.passed,
            "cost": dict(self.cost),
            "artifacts": [dict(a) for a in self.artifacts],
            "gate": str(self.dir / "gate.json"),
            "gate_reasons": [reason for report in self.gate for reason in report.reasons],
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class RecipeResult:
    """A finished recipe run (see the module docstring for the folder).

    Attributes:
        recipe: the recipe as run.
        out_dir: the output folder.
        teacher: the teacher's float TFLite row (``artifact``, ``miou``, ``per_class_iou``,
            ``size_bytes``, ``macs``, ``params``, ``images``).
        steps: one :class:`StepResult` per step.
        status: ``passed`` or ``failed`` (a floor broken with ``enforce_gate=False``).
        message: the first broken floor, when failed.
        model: the final Keras model (QAT-wrapped after a ``qat`` step).
    """

    recipe: Recipe
    out_dir: Path
    teacher: Mapping[str, Any]
    steps: tuple[StepResult, ...]
    status: str
    message: str = ""
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def final_artifacts(self) -> tuple[Mapping[str, Any], ...]:
        """The artifacts of the last step (the export's, when the recipe ends with one)."""
        return self.steps[-1].artifacts if self.steps else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.name,
            "status": self.status,
            "message": self.message,
            "out_dir": str(self.out_dir),
            "teacher": dict(self.teacher),
            "steps": [s.to_dict() for s in self.steps],
        }


# === Front door ===


def run_recipe(
    model_or_run_dir: str | os.PathLike | Any,
    recipe: str | os.PathLike | Mapping[str, Any] | Recipe,
    out_dir: str | os.PathLike,
    cfg: Config | None = None,
    progress: bool = True,
    enforce_gate: bool = True,
) -> RecipeResult:
    """Run ``recipe`` on a teacher and write every step's model, artifact and gate report to ``out_dir``.

    Args:
        model_or_run_dir: a training run folder (``model.h5`` + ``config.yaml``), a ``model.h5``
            (its folder's ``config.yaml`` is the default config) or a tf_keras model (``cfg`` needed).
        recipe: a :class:`~roverlite.compress.recipe.Recipe`, a recipe YAML path or plain data.
        out_dir: a new or empty output folder (created).
        cfg: the run config: data (splits, classes, normalisation), augmentation and training
            settings for fine-tuning. Default: the run folder's ``config.yaml``.
        progress: tqdm bars for data loading and training.
        enforce_gate: raise :class:`~roverlite.compress.gate.GateError` at the first step whose
            artifact breaks a floor (``False``: record it, finish every step, return ``status="failed"``;
            for benchmarks and ablations). With ``gate.enforce: final_step`` only the last step's
            floors count, for the error and for ``status``.

    Returns:
        The :class:`RecipeResult` (also in ``out_dir/recipe_result.json``).

    Raises:
        ConfigError: a bad recipe, a rare class or student name that does not exist, checked
            before any data is read.
        FileNotFoundError: no model file, or no config beside it and no ``cfg``.
        ValueError: an output folder that already holds a recipe run, a model that does not
            match the config, or a step's own refusal (e.g. structured pruning of a non-U-Net).
        GateError: a step's artifact broke a floor (with ``enforce_gate``); the step folder and
            ``recipe_result.json`` are written first.
    """
    recipe = load_recipe(recipe)
    out_dir = Path(out_dir)
    model_file, cfg = _resolve_source(model_or_run_dir, cfg)
    _preflight(recipe, cfg, out_dir)

    seed_everything(cfg.train.seed)
    model = _load_model(model_or_run_dir, model_file, cfg)
    run = _Run(recipe, cfg, out_dir, progress)
    count = len(recipe.steps)
    try:
        state = run.start(model, model_file)
        for index, step in enumerate(recipe.steps, 1):
            state = run.step(index, step, state)
            if enforce_gate and recipe.gate.enforces(index, count):
                raise_if_failed(run.results[-1].gate, run.results[-1].dir / "gate.json")
    except BaseException as err:
        run.write("failed" if isinstance(err, GateError) else "error", str(err))
        raise
    reasons = [
        reason
        for index, r in enumerate(run.results, 1)
        if recipe.gate.enforces(index, count)
        for g in r.gate
        for reason in g.reasons
    ]
    status, message = ("failed", reasons[0]) if reasons else ("passed", "")
    run.write(status, message)
    logger.info("recipe %s %s: %s", recipe.name, status, out_dir / RESULT_FILE)
    return RecipeResult(recipe, out_dir, run.teacher, tuple(run.results), status, message, state.model)


# === One run ===


@dataclass(frozen=True)
class _State:
    """The model between steps and where it came from."""

    model: Any
    path: Path | None  # HDF5 of exactly this model; None for a QAT model held in memory
    model_cfg: ModelConfig  # rebuilds the float architecture with create_model
    cost: Mapping[str, int]
    source: Mapping[str, Any]  # provenance written into sidecars
    weights_path: Path | None = None


class _Run:
    """Data, teacher reference and results of one recipe run; writes the output folder."""

    def __init__(self, recipe: Recipe, cfg: Config, out_dir: Path, progress: bool) -> None:
        self.recipe, self.cfg, self.out, self.progress = recipe, cfg, out_dir, progress
        self.train = load_split(cfg.data, "train", progress=progress)
        self.val = load_split(cap_images(cfg.data, recipe.gate.max_images), "val", progress=progress)
        self.teacher: dict[str, Any] = {}
        self.results: list[StepResult] = []
        self._fine_tune = None
        ensure_writable_dir(out_dir)
        recipe.to_yaml(out_dir / "recipe.yaml")
        cfg.to_yaml(out_dir / "config.yaml")

    @property
    def fine_tune(self) -> Any:
        if self._fine_tune is None:
            self._fine_tune = FineTune(self.cfg, self.train.images, self.train.masks, self.progress)
        return self._fine_tune

    def start(self, model: Any, model_file: Path | None) -> _State:
        """Export and score the teacher: the reference every gate compares with."""
        folder = self.out / "0_teacher"
        if model_file is None:  # an in-memory teacher gets a file, so sidecars can name its hash
            model_file = save_model_file(model, folder / "model.h5")
        state = _State(model, model_file, self.cfg.model, _cost(model), _file_source(model_file))
        exported = export_model(model_file, ExportSettings(
            ["tflite"], folder, self.cfg.data, check_images=self.val.images[:32],
            check_masks=self.val.masks[:32], name=f"{self.recipe.name}-0-teacher",
            recipe=self._provenance(0, "teacher", state), cost=state.cost,
        ))[0]
        if not exported.passed:
            logger.warning("teacher float TFLite failed its self-check: %s", exported.check.get("failures"))
        evaluation = evaluate_artifact(exported.path, self.val.images, self.val.masks)
        write_document(folder / "eval.json", EVAL, evaluation)
        self.teacher = {
            "artifact": str(exported.path), "format": exported.format, "size_bytes": exported.size_bytes,
            "miou": evaluation["miou"], "per_class_iou": evaluation["per_class_iou"], "images": evaluation["images"],
            **state.cost, "model_path": str(model_file), "sha256": state.source["sha256"],
        }
        logger.info(
            "teacher %s: float TFLite mIoU %.4f on %d val images", model.name, evaluation["miou"] or 0.0, len(self.val)
        )
        return state

    def step(self, index: int, step: Step, state: _State) -> _State:
        """Run, save, export and gate one step; returns the state after it."""
        name = f"{index}_{step.kind}"
        folder = self.out / name
        started = time.perf_counter()
        logger.info("step %d/%d: %s", index, len(self.recipe.steps), step.kind)
        ctx = StepContext(index=index, out_dir=self.out, fine_tune=lambda: self.fine_tune)
        model, details = step.run(state.model, ctx)
        if step.produces_model:
            state = self._save(step, model, state, folder, details)
        settings = step.export_settings(quantized=state.weights_path is not None)
        exported = self._export(state, settings, folder, index, step.kind)
        reports = tuple(self._gate(result, state, settings, name) for result in exported)
        write_gate(folder / "gate.json", name, reports)
        self.results.append(
            StepResult(
                index=index, kind=step.kind, dir=folder,
                model_path=state.path if step.produces_model else None,
                weights_path=state.weights_path if step.produces_model and step.quantizes else None,
                seconds=time.perf_counter() - started, cost=state.cost,
                artifacts=tuple(_artifact_row(r, g, state.cost) for r, g in zip(exported, reports)),
                gate=reports, details=details,
            )
        )
        self.write("running")
        return state

    def write(self, status: str, message: str = "") -> Path:
        return write_document(
            self.out / RESULT_FILE, RECIPE_RESULT,
            {
                "recipe": self.recipe.name, "status": status, "message": message, "out_dir": str(self.out),
                "teacher": self.teacher, "steps": [r.to_dict() for r in self.results],
            },
        )

    # --- helpers ---

    def _save(self, step: Step, model: Any, state: _State, folder: Path, details: Mapping[str, Any]) -> _State:
        """Save the step's model: weights only once QAT-wrapped, else HDF5 with the config that rebuilds it."""
        if step.quantizes:
            weights = _save_weights(model, folder / "model.weights.h5")
            source = {
                "kind": "qat_weights", **_file_source(weights), "architecture": dict(state.source),
                **step.source_details(),
            }
            return _State(model, None, state.model_cfg, state.cost, source, weights)
        model_cfg = step.model_config(state.model_cfg, details)
        path = save_model_file(model, folder / "model.h5")
        self.cfg.replace(model=model_cfg).to_yaml(folder / "config.yaml")
        return _State(model, path, model_cfg, _cost(model), _file_source(path))

    def _export(self, state: _State, settings: ExportStep, folder: Path, index: int, kind: str) -> list[Any]:
        data = self.cfg.data
        available = len(self.val.images)
        count = check_image_count(available, settings.check_images, data.image_size[0] * data.image_size[1] * data.num_classes)
        chosen = choose_check_images(available, count)
        return export_model(state.path if state.path is not None else state.model, ExportSettings(
            settings.formats, folder, data,
            calibration_images=self.train.images, check_images=self.val.images[chosen],
            check_masks=self.val.masks[chosen], name=f"{self.recipe.name}-{index}-{kind}",
            recipe=self._provenance(index, kind, state), int8_io=settings.int8_io,
            representative_count=settings.representative_count, cost=state.cost,
        ))

    def _gate(self, exported: Any, state: _State, settings: ExportStep, step: str) -> GateReport:
        gate = self.recipe.gate
        report = gate_artifact(exported.path, self.val.images, self.val.masks, self.teacher, gate, step)
        if not exported.passed:
            report = report.with_reason(
                f"Export self-check failed at step {step} ({exported.path.name}): "
                + "; ".join(exported.check.get("failures", []))
                + ". Expected the artifact to reproduce its Keras model."
            )
        fmt = get_format(exported.format)
        if gate.qdebug.enabled and fmt.runtime == "litert" and fmt.precision == "int8":
            data = self.cfg.data
            calibration = normalize(self.train.images[: settings.representative_count], data.mean, data.std)
            table = debug_quantization(state.model, calibration, gate.qdebug.images, gate.qdebug.top_k)
            report = report.with_qdebug(table)
        return report

    def _provenance(self, index: int, kind: str, state: _State) -> dict[str, Any]:
        plain = self.recipe.to_dict()
        return {
            "recipe": self.recipe.name,
            "description": self.recipe.description,
            "step": index,
            "step_kind": kind,
            "steps": plain["steps"],
            "gate": plain["gate"],
            "teacher": {
                "path": self.teacher.get("model_path", str(state.path)),
                "sha256": self.teacher.get("sha256", state.source.get("sha256")),
            },
            "source_model": dict(state.source),
        }


# === Checks before any work ===


def _resolve_source(model_or_run_dir: Any, cfg: Config | None) -> tuple[Path | None, Config]:
    if not isinstance(model_or_run_dir, (str, os.PathLike)):
        if cfg is None:
            raise ValueError(
                "Expected cfg with an in-memory model (its data, augmentation and training settings). "
                "Received: cfg=None."
            )
        return None, cfg
    path = Path(model_or_run_dir)
    file = path / "model.h5" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"Model not found. Expected a run folder with model.h5 or a model.h5 file. Received: {str(path)!r}."
            + fold_hint(path)
        )
    if cfg is None:
        config_file = file.parent / "config.yaml"
        if not config_file.is_file():
            raise FileNotFoundError(
                f"No config for {str(file)!r}. Expected config.yaml beside the model (a run folder) or a config "
                "(--config). Received: none."
            )
        cfg = load_config(config_file)
    return file, cfg


def _preflight(recipe: Recipe, cfg: Config, out_dir: Path) -> None:
    recipe.gate.check_classes(cfg.data.classes, cfg.data.hazards)
    for i, step in enumerate(recipe.steps):
        try:
            step.preflight()
        except ValueError as err:
            raise ConfigError(f"steps[{i}].{step.kind}: {err}") from None
    if (out_dir / RESULT_FILE).exists():
        raise ValueError(
            f"Output folder {str(out_dir)!r} already holds a recipe run. Expected an empty or new folder. "
            f"Received: a folder with {RESULT_FILE}."
        )


def _load_model(model_or_run_dir: Any, model_file: Path | None, cfg: Config) -> Any:
    model = model_or_run_dir if model_file is None else load_keras_model(model_file)
    check_model_fits_config(model, cfg.data)
    return model


# === Helpers ===


def _cost(model: Any) -> dict[str, int]:
    cost = count_macs(model)
    return {"macs": int(cost.macs), "params": int(cost.params)}


def _file_source(path: Path) -> dict[str, str]:
    return {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}


def _save_weights(model: Any, path: Path) -> Path:
    """``model.save_weights`` to a temporary HDF5 file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".h5")
    os.close(fd)
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _artifact_row(exported: Any, report: GateReport, cost: Mapping[str, int]) -> dict[str, Any]:
    return {
        "format": exported.format,
        "artifact": str(exported.path),
        "size_bytes": exported.size_bytes,
        "sha256": exported.sha256,
        "self_check_passed": exported.passed,
        "miou": report.artifact_miou,
        "per_class_iou": dict(report.artifact_iou),
        "gate_passed": report.passed,
        **cost,
    }


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
