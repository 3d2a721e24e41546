"""The accuracy gate: an exported artifact's per-class IoU against the float teacher's, same images.

Every compression step ends with an artifact (a float TFLite model, or int8 after QAT), and the
gate runs that artifact exactly as the rover will, through :mod:`roverlite.deploy` (LiteRT or
ONNX Runtime), on the validation images the teacher was scored on. It compares the two with two
floors:

* **mIoU**: the absolute drop ``teacher mIoU - artifact mIoU`` (over the data's eval classes)
  must stay within ``max_miou_drop``;
* **rare classes**: for each of ``rare_classes`` (big rock on Mars, weeds in crops), the
  *relative* drop ``(teacher IoU - artifact IoU) / teacher IoU`` must stay within
  ``max_rare_class_drop``. Relative, because a rare class with IoU 0.27 that loses 0.05 has lost
  a fifth of what it had, while mIoU barely moves;
* **hazards** (optional): for each hazard the data declares (``data.hazards``, carried by the
  sidecar), the absolute increase of its miss rate (hazard pixels predicted as a traversable
  class, :func:`roverlite.core.metrics.hazard_rates`) over the teacher's must stay within
  ``max_hazard_miss_increase``. mIoU and even the rock's IoU can hold while the rocks the model
  still gets wrong turn into sand: this floor catches a compression that makes the rover blind.

A broken floor raises :class:`GateError` (a ``ValueError``, so the CLI prints one line) naming the
step, the artifact, the class and the numbers; the full comparison is in the step's
``gate.json`` either way.

The comparison itself is plain arithmetic on two ``evaluate_artifact`` results
(:func:`compare_to_teacher`), so it is tested without any model; the optional
quantization-debugger table is computed by :mod:`roverlite.compress.qdebug` and attached by the
caller.

Example:
    >>> teacher = evaluate_artifact("out/teacher/teacher_tflite.tflite", val.images, val.masks)  # doctest: +SKIP
    >>> report = gate_artifact("out/2_qat/s_tflite_int8.tflite", val.images, val.masks, teacher,
    ...                        GateConfig(rare_classes=("big_rock",)), step="2_qat")           # doctest: +SKIP
    >>> raise_if_failed([report])                                                              # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.compress.qdebug import QDebugConfig
from roverlite.config import ConfigError, did_you_mean
from roverlite.core.documents import GATE
from roverlite.deploy.evaluate import evaluate_artifact
from roverlite.io import write_document

__all__ = [
    "GateConfig", "GateError", "GateReport", "compare_to_teacher", "gate_artifact", "raise_if_failed", "write_gate",
]

logger = logging.getLogger(__name__)


class GateError(ValueError):
    """A compressed artifact broke an accuracy floor; ``reports`` holds the failing comparisons."""

    def __init__(self, message: str, reports: Sequence[GateReport] = ()) -> None:
        super().__init__(message)
        self.reports = tuple(reports)


# === Config ===


ENFORCE_MODES = ("every_step", "final_step")


@dataclass(frozen=True)
class GateConfig:
    """The floors every step's artifact must stay above.

    Attributes:
        max_miou_drop: largest allowed absolute mIoU drop versus the teacher (``0.02`` = 2 points);
            ``None`` = not checked.
        max_rare_class_drop: largest allowed relative IoU drop of each rare class (``0.10`` =
            10 % of the teacher's IoU); ``None`` = not checked.
        rare_classes: class names held to ``max_rare_class_drop`` (checked against the data's
            classes when the recipe runs).
        max_images: validation images scored (``None`` = the whole split; teacher and artifacts
            always see the same ones).
        qdebug: per-layer quantization error table for int8 TFLite artifacts.
        max_hazard_miss_increase: largest allowed absolute increase of each declared hazard's
            miss rate versus the teacher's (``0.02`` = 2 more big-rock pixels in 100 called soil
            or sand); ``None`` = not checked. Needs ``data.hazards`` in the run config.
        enforce: which steps the floors stop: ``every_step`` (default: the first artifact that
            breaks one stops the recipe) or ``final_step`` (only the last step's artifacts; every
            earlier step is still scored, and a broken floor there is logged and written to its
            ``gate.json``). For chains whose intermediate model is not meant to be deployed, such
            as a distilled student before its fine-tune on the labels.
    """

    max_miou_drop: float | None = 0.02
    max_rare_class_drop: float | None = 0.10
    rare_classes: tuple[str, ...] = ()
    max_images: int | None = None
    qdebug: QDebugConfig = field(default_factory=QDebugConfig)
    enforce: str = "every_step"
    max_hazard_miss_increase: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rare_classes", tuple(self.rare_classes))
        if self.enforce not in ENFORCE_MODES:
            raise ConfigError(
                f"Expected gate.enforce in {ENFORCE_MODES}. Received: {self.enforce!r}."
                + did_you_mean(str(self.enforce), ENFORCE_MODES)
            )
        for key in ("max_miou_drop", "max_rare_class_drop", "max_hazard_miss_increase"):
            value = getattr(self, key)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if value is not None and not (number and 0 <= value <= 1):
                raise ConfigError(f"Expected gate.{key} in [0, 1] or null. Received: {key}={value!r}.")
        if len(set(self.rare_classes)) != len(self.rare_classes):
            raise ConfigError(f"Expected each gate.rare_classes entry once. Received: {list(self.rare_classes)}.")
        if self.rare_classes and self.max_rare_class_drop is None:
            raise ConfigError(
                "gate.rare_classes needs gate.max_rare_class_drop. Expected a relative drop in [0, 1]. "
                f"Received: rare_classes={list(self.rare_classes)} with max_rare_class_drop=null."
            )
        if self.max_images is not None and (isinstance(self.max_images, bool) or self.max_images < 1):
            raise ConfigError(f"Expected gate.max_images >= 1 or null. Received: {self.max_images!r}.")

    def enforces(self, index: int, count: int) -> bool:
        """Whether a broken floor at step ``index`` (1-based) of ``count`` fails the recipe."""
        return self.enforce == "every_step" or index == count

    def check_classes(self, classes: Sequence[str], hazards: Mapping[str, Sequence[str]] | None = None) -> None:
        """Refuse rare classes that are not in ``classes`` (with the closest name suggested), and a
        hazard floor without declared hazards (``data.hazards``) to apply it to."""
        if self.max_hazard_miss_increase is not None and not hazards:
            raise ConfigError(
                "gate.max_hazard_miss_increase needs hazards declared in the run config. Expected e.g. "
                "data.hazards: {big_rock: [soil, sand]} (or --set 'data.hazards={big_rock: [soil, sand]}'). "
                "Received: no data.hazards."
            )
        for name in self.rare_classes:
            if name not in classes:
                raise ConfigError(
                    f"gate.rare_classes names a class that is not in data.classes {list(classes)}. "
                    f"Received: {name!r}." + did_you_mean(name, classes)
                )


# === Report ===


@dataclass(frozen=True)
class GateReport:
    """One artifact compared with the teacher.

    Attributes:
        step: the step folder name, e.g. ``2_qat``.
        artifact, format: the artifact file and its format.
        images: validation images scored.
        teacher_miou, artifact_miou: mIoU over the eval classes.
        teacher_iou, artifact_iou: per-class IoU (``None`` where a class is absent from both truth
            and prediction).
        deltas: per-class ``artifact - teacher`` (absolute; negative = worse).
        miou_drop: ``teacher_miou - artifact_miou``.
        rare_class_drops: relative drop per rare class (``None`` when the teacher's IoU is 0 or
            unknown: a relative drop is undefined there).
        teacher_hazards, artifact_hazards: each declared hazard's ``{"miss_rate", "false_rate",
            ...}`` (empty when none are declared).
        hazard_miss_increases: per hazard, ``artifact miss rate - teacher miss rate`` (``None``
            when either is undefined).
        artifact_confusion_matrix: the artifact's counts (rows truth), for the report's heat map.
        limits: the floors applied.
        passed: no floor broken.
        reasons: one sentence per broken floor.
        notes: checks that could not be made, and why.
        qdebug: the quantization debugger's per-layer table, when computed.
    """

    step: str
    artifact: str
    format: str
    images: int
    teacher_miou: float | None
    artifact_miou: float | None
    teacher_iou: Mapping[str, float | None]
    artifact_iou: Mapping[str, float | None]
    deltas: Mapping[str, float | None]
    miou_drop: float | None
    rare_class_drops: Mapping[str, float | None]
    limits: Mapping[str, Any]
    passed: bool
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    qdebug: Mapping[str, Any] | None = None
    teacher_hazards: Mapping[str, Any] = field(default_factory=dict)
    artifact_hazards: Mapping[str, Any] = field(default_factory=dict)
    hazard_miss_increases: Mapping[str, float | None] = field(default_factory=dict)
    artifact_confusion_matrix: Sequence[Sequence[int]] | None = None

    def with_qdebug(self, table: Mapping[str, Any] | None) -> GateReport:
        """A copy carrying the quantization debugger's table."""
        return dataclasses.replace(self, qdebug=None if table is None else dict(table))

    def with_reason(self, reason: str) -> GateReport:
        """A failed copy with one more reason (e.g. the export's own self-check failed)."""
        return dataclasses.replace(self, passed=False, reasons=(*self.reasons, reason))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN becomes null)."""
        return _json_safe(
            {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        )


# === Comparing ===


def compare_to_teacher(
    teacher: Mapping[str, Any],
    candidate: Mapping[str, Any],
    cfg: GateConfig,
    step: str,
    artifact: str,
    format_name: str = "",
) -> GateReport:
    """Compare two evaluation results (``evaluate_artifact`` dicts) against the floors of ``cfg``.

    Args:
        teacher: the float teacher's result: ``{"miou", "per_class_iou", "images"}`` and, when the
            data declares hazards, ``hazards`` (``{name: {"miss_rate", "false_rate", ...}}``).
        candidate: the artifact's result on the same images.
        cfg: the floors.
        step: step name used in reasons, e.g. ``2_qat``.
        artifact: artifact file named in reasons.
        format_name: the artifact's format.

    Returns:
        The :class:`GateReport`; ``passed`` is False when a floor is broken (NaN counts as broken).

    Raises:
        ValueError: the two results cover different classes or image counts.
    """
    t_iou, a_iou = dict(teacher["per_class_iou"]), dict(candidate["per_class_iou"])
    if list(t_iou) != list(a_iou):
        raise ValueError(
            f"Expected the artifact to be scored on the teacher's classes {list(t_iou)}. Received: {list(a_iou)}."
        )
    counts = (teacher.get("images"), candidate.get("images"))
    if None not in counts and counts[0] != counts[1]:
        raise ValueError(
            f"Expected the artifact to be scored on the teacher's {teacher['images']} images. "
            f"Received: {candidate['images']}."
        )
    where = f"Accuracy gate failed at step {step} ({Path(artifact).name})"
    reasons, notes = [], []
    miou_drop = _difference(teacher.get("miou"), candidate.get("miou"))
    if cfg.max_miou_drop is not None:
        if miou_drop is None:
            notes.append("mIoU undefined (no eval class present): mIoU floor not checked")
        elif not miou_drop <= cfg.max_miou_drop + 1e-12:
            reasons.append(
                f"{where}: mIoU fell {100 * miou_drop:.2f} points (teacher {teacher['miou']:.4f} -> "
                f"artifact {candidate['miou']:.4f}). Expected a drop <= {100 * cfg.max_miou_drop:.2f} points "
                f"(gate.max_miou_drop={cfg.max_miou_drop})."
            )
    rare = {}
    for name in cfg.rare_classes:
        rare[name] = _relative_drop(t_iou.get(name), a_iou.get(name))
        if rare[name] is None:
            notes.append(f"{name}: teacher IoU is {t_iou.get(name)}, relative drop undefined: not checked")
        elif not rare[name] <= cfg.max_rare_class_drop + 1e-12:
            reasons.append(
                f"{where}: {name} IoU fell {100 * rare[name]:.1f}% relative to the teacher "
                f"(teacher {t_iou[name]:.4f} -> artifact {_fmt(a_iou[name])}). Expected a relative drop <= "
                f"{100 * cfg.max_rare_class_drop:.1f}% (gate.max_rare_class_drop={cfg.max_rare_class_drop})."
            )
    t_haz, a_haz = dict(teacher.get("hazards") or {}), dict(candidate.get("hazards") or {})
    increases = {
        name: _difference((a_haz.get(name) or {}).get("miss_rate"), (t_haz.get(name) or {}).get("miss_rate"))
        for name in t_haz
    }
    if cfg.max_hazard_miss_increase is not None:
        if not t_haz:
            notes.append("no hazards declared in the evaluation results: hazard floor not checked")
        for name, increase in increases.items():
            t_miss, a_miss = t_haz[name].get("miss_rate"), (a_haz.get(name) or {}).get("miss_rate")
            safe = " or ".join(t_haz[name].get("traversable") or ())
            if t_miss is None:
                notes.append(f"{name}: no {name} pixels in the truth, miss rate undefined: hazard floor not checked")
            elif increase is None or not increase <= cfg.max_hazard_miss_increase + 1e-12:
                reasons.append(
                    f"{where}: {name} miss rate (true {name} predicted as {safe}) rose "
                    + (f"{100 * increase:.2f} points" if increase is not None else "to undefined")
                    + f" (teacher {_fmt(t_miss)} -> artifact {_fmt(a_miss)}). Expected an increase <= "
                    f"{100 * cfg.max_hazard_miss_increase:.2f} points "
                    f"(gate.max_hazard_miss_increase={cfg.max_hazard_miss_increase})."
                )
    return GateReport(
        step=step,
        artifact=str(artifact),
        format=format_name,
        images=int(candidate.get("images") or 0),
        teacher_miou=teacher.get("miou"),
        artifact_miou=candidate.get("miou"),
        teacher_iou=t_iou,
        artifact_iou=a_iou,
        deltas={k: _difference(a_iou[k], t_iou[k]) for k in t_iou},
        miou_drop=miou_drop,
        rare_class_drops=rare,
        limits={
            "max_miou_drop": cfg.max_miou_drop,
            "max_rare_class_drop": cfg.max_rare_class_drop,
            "rare_classes": list(cfg.rare_classes),
            "max_hazard_miss_increase": cfg.max_hazard_miss_increase,
        },
        passed=not reasons,
        reasons=tuple(reasons),
        notes=tuple(notes),
        teacher_hazards=t_haz,
        artifact_hazards=a_haz,
        hazard_miss_increases=increases,
        artifact_confusion_matrix=candidate.get("confusion_matrix"),
    )


def gate_artifact(
    artifact: str | os.PathLike,
    images: np.ndarray,
    masks: np.ndarray,
    teacher: Mapping[str, Any],
    cfg: GateConfig,
    step: str,
) -> GateReport:
    """Run ``artifact`` through ``roverlite.deploy`` on ``images`` and compare it with ``teacher``.

    Args:
        artifact: a ``.tflite`` / ``.onnx`` file with its sidecar.
        images, masks: the validation images (uint8) and masks the teacher was scored on.
        teacher: the teacher's ``evaluate_artifact`` result on the same images.
        cfg: the floors.
        step: step name for the reasons.

    Returns:
        The :class:`GateReport` (it does not raise on a broken floor; see :func:`raise_if_failed`).
    """
    result = evaluate_artifact(artifact, images, masks)
    report = compare_to_teacher(teacher, result, cfg, step, str(artifact), result.get("format", ""))
    log = logger.info if report.passed else logger.warning
    log(
        "gate %s %s: mIoU %s -> %s, %s: %s",
        step, Path(artifact).name, _fmt(report.teacher_miou), _fmt(report.artifact_miou),
        ", ".join(f"{k} {_fmt(report.teacher_iou[k])} -> {_fmt(report.artifact_iou[k])}" for k in report.teacher_iou),
        "passed" if report.passed else "FAILED",
    )
    for name, rates in report.artifact_hazards.items():
        log("gate %s %s: %s miss rate %s -> %s", step, Path(artifact).name, name,
            _fmt(report.teacher_hazards.get(name, {}).get("miss_rate")), _fmt(rates.get("miss_rate")))
    return report


def write_gate(path: str | os.PathLike, step: str, reports: Sequence[GateReport]) -> Path:
    """Write a step's ``gate.json``: ``{"kind": "gate", "schema_version", "step", "passed", "artifacts": [report, ...]}``
    (atomically; :func:`roverlite.core.documents.read_document` reads it)."""
    return write_document(
        path, GATE, {"step": step, "passed": all(r.passed for r in reports), "artifacts": [r.to_dict() for r in reports]}
    )


def raise_if_failed(reports: Sequence[GateReport], report_path: str | os.PathLike | None = None) -> None:
    """Raise :class:`GateError` with the first broken floor when any report failed.

    Raises:
        GateError: one line naming the step, artifact, class and numbers (plus how many other
            floors broke and where the full report is).
    """
    failed = [r for r in reports if not r.passed]
    if not failed:
        return
    reasons = [reason for r in failed for reason in r.reasons]
    message = reasons[0]
    if len(reasons) > 1:
        message += f" (and {len(reasons) - 1} more)"
    if report_path is not None:
        message += f" Report: {report_path}"
    raise GateError(message, failed)


# === Helpers ===


def _difference(a: float | None, b: float | None) -> float | None:
    """``a - b``, or None when either is unknown."""
    return None if a is None or b is None else float(a - b)


def _relative_drop(teacher: float | None, artifact: float | None) -> float | None:
    if teacher is None or not teacher > 0:
        return None
    return float((teacher - (artifact if artifact is not None else 0.0)) / teacher)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
