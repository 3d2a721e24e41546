"""Run-folder documents: every JSON a command leaves in a run folder, named by kind and versioned.

Each document carries ``{"kind": ..., "schema_version": ...}`` (:func:`stamp`; the writers go
through :func:`roverlite.io.write_document`), and :func:`read_document` dispatches on ``kind`` to
a small frozen reader per kind holding the fields ``report`` and ``pipeline`` use (``data`` keeps
the whole document for the rest):

=================  ======================================  ==========================================
kind               written by                              file
=================  ======================================  ==========================================
``train_summary``  ``roverlite train`` (``train.fit``)     ``summary.json``
``eval``           ``roverlite eval --json``, the runner   ``eval.json`` (``0_teacher/eval.json``)
``recipe_result``  ``roverlite compress`` (runner)         ``recipe_result.json`` (steps nested)
``gate``           ``compress.gate.write_gate``            ``<step>/gate.json``
``gate_verdict``   hand-written or external tools          ``{"gate", "sha256"|"artifact"|"variant"}``
``variant``        hand-written or external tools          ``{"variant": VariantRow}``
``bench``          ``roverlite bench --json``              ``bench.json`` (``schema_version`` only)
``report_summary`` ``roverlite report``                    ``report/summary.json``
=================  ======================================  ==========================================

A compress step's result has no file of its own: it is an entry of ``recipe_result``'s ``steps``
(its ``kind`` key is the step kind), read as a :class:`StepResultEntry`.

Documents written before the stamp (no ``kind``) are recognised by their keys in one place,
:func:`_legacy_kind`, or taken as the kind the caller expects of that file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BENCH", "EVAL", "GATE", "GATE_VERDICT", "RECIPE_RESULT", "REPORT_SUMMARY", "TRAIN_SUMMARY", "VARIANT",
    "VERSIONS", "BenchDocument", "Document", "EvalResult", "GateResult", "GateVerdict", "RecipeResultDocument",
    "ReportSummary", "StepResultEntry", "TrainSummary", "UnknownDocumentError", "VariantDocument",
    "parse_document", "read_document", "stamp",
]

logger = logging.getLogger(__name__)

TRAIN_SUMMARY = "train_summary"
EVAL = "eval"
RECIPE_RESULT = "recipe_result"
GATE = "gate"
GATE_VERDICT = "gate_verdict"
VARIANT = "variant"
BENCH = "bench"
REPORT_SUMMARY = "report_summary"

# The schema version this code writes and the newest it reads, per kind.
VERSIONS: Mapping[str, int] = {
    TRAIN_SUMMARY: 1, EVAL: 1, RECIPE_RESULT: 1, GATE: 1, GATE_VERDICT: 1, VARIANT: 1, BENCH: 1, REPORT_SUMMARY: 1,
}
MAX_BYTES = 64 * 1024 * 1024


class UnknownDocumentError(ValueError):
    """Not a run document this code knows: unreadable, not a JSON object, or of an unknown kind."""


# === Readers ===


@dataclass(frozen=True)
class TrainSummary:
    """``summary.json`` of a training run: the best model's validation numbers and cost."""

    model: str | None = None
    miou: float | None = None
    per_class_iou: Mapping[str, Any] = field(default_factory=dict)
    epochs_run: int | None = None
    macs: int | None = None
    params: int | None = None
    model_path: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class EvalResult:
    """An accuracy result (``evaluate_artifact`` / ``evaluate_model``), optionally with a ``gate`` verdict."""

    miou: float | None = None
    per_class_iou: Mapping[str, Any] = field(default_factory=dict)
    images: int | None = None
    sha256: str | None = None
    artifact: str | None = None
    gate: Mapping[str, Any] | None = None
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class StepResultEntry:
    """One entry of ``recipe_result.json``'s ``steps`` (``compress.runner.StepResult.to_dict``)."""

    index: int | None = None
    kind: str | None = None
    dir: str | None = None
    passed: bool | None = None
    artifacts: tuple[Mapping[str, Any], ...] = ()
    gate_reasons: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RecipeResultDocument:
    """``recipe_result.json``: the recipe's status, its teacher row and one entry per finished step."""

    recipe: str | None = None
    status: str | None = None
    message: str = ""
    teacher: Mapping[str, Any] = field(default_factory=dict)
    steps: tuple[StepResultEntry, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class GateResult:
    """A step's ``gate.json``: its pass/fail and one ``GateReport.to_dict`` per artifact."""

    step: str | None = None
    passed: bool | None = None
    artifacts: tuple[Mapping[str, Any], ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class GateVerdict:
    """A bare verdict ``{"passed", "reasons"}`` on the artifact or variant it names."""

    gate: Mapping[str, Any] = field(default_factory=dict)
    sha256: str | None = None
    artifact: str | None = None
    variant: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class VariantDocument:
    """An explicit report row (``report.tables.VariantRow`` form, validated by the report)."""

    variant: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class BenchDocument:
    """``roverlite bench --json``: raw result rows (``deploy.bench.BenchResult.from_dict`` parses them)."""

    results: tuple[Any, ...] = ()
    command: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ReportSummary:
    """``report/summary.json``: the reference row's name and one entry per variant."""

    variants: tuple[Mapping[str, Any], ...] = ()
    teacher: str | None = None
    deliverable: Mapping[str, Any] | None = None
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)


Document = (TrainSummary | EvalResult | RecipeResultDocument | GateResult | GateVerdict | VariantDocument
            | BenchDocument | ReportSummary)


# === Front door ===


def stamp(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with ``kind`` and this code's ``schema_version`` first (what every writer saves).

    Raises:
        ValueError: an unknown kind, or a body that already has a ``kind`` key.
    """
    _check_kind(kind, "stamp")
    if "kind" in body:
        raise ValueError(f"Expected a document body without a 'kind' key. Received: kind={body['kind']!r}.")
    rest = {k: v for k, v in body.items() if k != "schema_version"}
    return {"kind": kind, "schema_version": VERSIONS[kind], **rest}


def read_document(path: str | os.PathLike, expect: str | None = None) -> Document:
    """The typed reader of the run document at ``path``, chosen by its ``kind``.

    Args:
        path: a JSON file.
        expect: the kind the caller needs; an older document without a stamp is read as this kind
            when its keys name no other.

    Raises:
        FileNotFoundError: no such file.
        UnknownDocumentError: not readable JSON, not an object, or a kind this code does not know.
        ValueError: a newer ``schema_version`` than this code reads, another kind than ``expect``,
            or a field of the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Run document not found. Expected a JSON file. Received: {str(path)!r}.")
    return parse_document(_load(path), str(path), expect)


def parse_document(data: Any, source: str = "<document>", expect: str | None = None) -> Document:
    """:func:`read_document` of already loaded JSON (``source`` names it in errors)."""
    if not isinstance(data, Mapping):
        raise UnknownDocumentError(f"Expected a JSON object in {source}. Received: {type(data).__name__}.")
    kind = data.get("kind")
    if kind is None:
        kind = _legacy_kind(data) or expect
        if kind is None:
            raise UnknownDocumentError(
                f"Expected a run document in {source} (a 'kind' of {sorted(VERSIONS)}). Received: no 'kind' "
                "and none of the older documents' keys."
            )
        logger.debug("%s has no 'kind' stamp; read as %s (written before documents were stamped)", source, kind)
    _check_kind(kind, source)
    if expect is not None and kind != expect:
        raise ValueError(f"Expected a {expect} document in {source}. Received: kind={kind!r}.")
    _check_version(kind, data.get("schema_version"), source)
    return _PARSERS[kind](_Fields(data, kind, source))


# === Legacy documents (no 'kind') ===


def _legacy_kind(data: Mapping[str, Any]) -> str | None:
    """The kind of a document written before the stamp, by the keys each writer used (first match)."""
    if data.get("task") == "semantic_segmentation" and isinstance(data.get("artifact"), Mapping):
        return None  # an artifact's sidecar (read by deploy.sidecar)
    accuracy = "miou" in data and "per_class_iou" in data
    rules: tuple[tuple[str, Callable[[], bool]], ...] = (
        (BENCH, lambda: isinstance(data.get("results"), list)),
        (RECIPE_RESULT, lambda: isinstance(data.get("steps"), list) and "recipe" in data and "status" in data),
        (GATE, lambda: "step" in data and isinstance(data.get("artifacts"), list)),
        (VARIANT, lambda: isinstance(data.get("variant"), Mapping)),
        (TRAIN_SUMMARY, lambda: accuracy and "model" in data and "model_path" in data),
        (EVAL, lambda: accuracy),
        (GATE_VERDICT, lambda: isinstance(data.get("gate"), Mapping)),
        (REPORT_SUMMARY, lambda: isinstance(data.get("variants"), list) and "schema_version" in data),
    )
    return next((kind for kind, matches in rules if matches()), None)


# === Parsing ===


class _Fields:
    """Typed look-ups in one document, failing with the kind, key and file."""

    def __init__(self, data: Mapping[str, Any], kind: str, source: str) -> None:
        self.data, self.kind, self.source = data, kind, source

    def get(self, key: str, types: type | tuple[type, ...], default: Any = None) -> Any:
        value = self.data.get(key, default)
        if value is None or value is default:
            return value
        wrong = isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
        if wrong or not isinstance(value, types):
            names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise ValueError(
                f"Expected {key!r} to be {names} in the {self.kind} document {self.source}. "
                f"Received: {value!r:.80}."
            )
        return value

    def number(self, key: str) -> float | None:
        return self.get(key, (int, float))

    def mappings(self, key: str) -> tuple[Mapping[str, Any], ...]:
        return tuple(item for item in self.get(key, list, []) if isinstance(item, Mapping))


def _train_summary(f: _Fields) -> TrainSummary:
    return TrainSummary(
        model=f.get("model", str), miou=f.number("miou"), per_class_iou=f.get("per_class_iou", Mapping, {}),
        epochs_run=f.get("epochs_run", int), macs=f.get("macs", int), params=f.get("params", int),
        model_path=f.get("model_path", str), data=f.data,
    )


def _eval(f: _Fields) -> EvalResult:
    return EvalResult(
        miou=f.number("miou"), per_class_iou=f.get("per_class_iou", Mapping, {}), images=f.get("images", int),
        sha256=f.get("sha256", str), artifact=_text(f.data.get("artifact")), gate=f.get("gate", Mapping),
        data=f.data,
    )


def _step_entry(f: _Fields) -> StepResultEntry:
    return StepResultEntry(
        index=f.get("index", int), kind=f.get("kind", str), dir=f.get("dir", str), passed=f.get("passed", bool),
        artifacts=f.mappings("artifacts"), gate_reasons=tuple(str(r) for r in f.get("gate_reasons", list, [])),
        data=f.data,
    )


def _recipe_result(f: _Fields) -> RecipeResultDocument:
    steps = tuple(_step_entry(_Fields(s, "step_result", f.source)) for s in f.mappings("steps"))
    return RecipeResultDocument(
        recipe=f.get("recipe", str), status=f.get("status", str), message=f.get("message", str, "") or "",
        teacher=f.get("teacher", Mapping, {}) or {}, steps=steps, data=f.data,
    )


def _gate(f: _Fields) -> GateResult:
    return GateResult(step=f.get("step", str), passed=f.get("passed", bool), artifacts=f.mappings("artifacts"),
                      data=f.data)


def _gate_verdict(f: _Fields) -> GateVerdict:
    return GateVerdict(gate=f.get("gate", Mapping, {}) or {}, sha256=f.get("sha256", str),
                       artifact=_text(f.data.get("artifact")), variant=_text(f.data.get("variant")), data=f.data)


def _variant(f: _Fields) -> VariantDocument:
    return VariantDocument(variant=f.get("variant", Mapping, {}) or {}, data=f.data)


def _bench(f: _Fields) -> BenchDocument:
    return BenchDocument(results=tuple(f.get("results", list, [])), command=f.get("command", str), data=f.data)


def _report_summary(f: _Fields) -> ReportSummary:
    return ReportSummary(variants=f.mappings("variants"), teacher=f.get("teacher", str),
                         deliverable=f.get("deliverable", Mapping), data=f.data)


_PARSERS: dict[str, Callable[[_Fields], Any]] = {
    TRAIN_SUMMARY: _train_summary, EVAL: _eval, RECIPE_RESULT: _recipe_result, GATE: _gate,
    GATE_VERDICT: _gate_verdict, VARIANT: _variant, BENCH: _bench, REPORT_SUMMARY: _report_summary,
}


# === Helpers ===


def _load(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise UnknownDocumentError(
                f"Expected a run document under {MAX_BYTES} bytes. Received: {path.stat().st_size} bytes in {str(path)!r}."
            )
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnknownDocumentError(f"Cannot read {str(path)!r}. Expected JSON. Received: {err}.") from None


def _check_kind(kind: Any, source: str) -> None:
    if kind not in VERSIONS:
        raise UnknownDocumentError(
            f"Unknown document kind in {source}. Expected one of {sorted(VERSIONS)}. Received: kind={kind!r}."
        )


def _check_version(kind: str, version: Any, source: str) -> None:
    if version is None:
        return
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"Expected schema_version to be a positive integer in {source}. Received: {version!r:.40}.")
    if version > VERSIONS[kind]:
        raise ValueError(
            f"The {kind} document {source} is newer than this reader. Expected schema_version <= "
            f"{VERSIONS[kind]}. Received: schema_version={version}."
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
