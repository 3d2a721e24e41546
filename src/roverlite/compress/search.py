"""Latency-budget student search: the largest student whose int8 latency meets a budget.

The ladder (:data:`roverlite.train.models.STUDENT_LADDER`, largest first) is timed either here
(:func:`measure_ladder`: every student built untrained at the run's input size, exported as int8
TFLite by :func:`roverlite.export.export_model` and benchmarked by
:func:`roverlite.deploy.bench.bench_many` at batch 1 after warm-up, the timed runs interleaved)
or read from a latency table measured on the target device (:func:`read_latency_table`).
:func:`choose_student` applies the rule: the first student, largest first, whose p50 is at most
the budget (equal counts as meeting it). When none does it raises :class:`LatencyBudgetError`
naming the closest student, and the pipeline stops before training anything.

Example:
    >>> spec = SearchSpec(budget_ms=5.0, table="rover_bench.json")   # `roverlite bench --json` output
    >>> search_student(spec, cfg.data).student                         # doctest: +SKIP
    'unet_xs'
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.config import DataConfig, did_you_mean
from roverlite.deploy.bench import BenchResult, bench_many, write_bench_json
from roverlite.export import ExportSettings, export_model
from roverlite.export.verify import Tolerances
from roverlite.train.macs import count_macs
from roverlite.train.models import STUDENT_LADDER, create_model, list_models

__all__ = [
    "TARGETS",
    "LatencyBudgetError",
    "SearchResult",
    "SearchSpec",
    "choose_student",
    "export_untrained",
    "measure_ladder",
    "read_latency_table",
    "search_spec",
    "search_student",
]

logger = logging.getLogger(__name__)

TARGETS = ("this",)  # where the ladder can be measured; a device farm would add names here
SEARCH_FORMAT = "tflite_int8"
CALIBRATION_IMAGES = 8


class LatencyBudgetError(ValueError):
    """No student of the ladder meets the budget; ``result`` holds the latencies and the closest."""

    def __init__(self, message: str, result: SearchResult) -> None:
        super().__init__(message)
        self.result = result


# === Settings and result ===


@dataclass(frozen=True)
class SearchSpec:
    """A latency budget and where the ladder's latencies come from: ``target`` or ``table``, not both."""

    budget_ms: float
    target: str | None = None
    table: str | None = None

    def __post_init__(self) -> None:
        _check_budget(self.budget_ms)
        if self.target is not None and self.table is not None:
            raise ValueError(
                "Expected either a target to measure on or a latency table, not both (--target and "
                f"--latency-table are mutually exclusive). Received: target={self.target!r}, table={self.table!r}."
            )
        if self.target is None and self.table is None:
            raise ValueError(
                "A latency budget needs latencies. Expected --target this (measure here) or --latency-table "
                "FILE (measured on the device). Received: neither."
            )
        if self.target is not None and self.target not in TARGETS:
            raise ValueError(
                f"Unknown target. Expected one of {list(TARGETS)}. Received: {self.target!r}."
                + did_you_mean(self.target, TARGETS)
            )
        if self.table is not None:
            object.__setattr__(self, "table", str(self.table))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_budget(budget: Any) -> None:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < math.inf:
        raise ValueError(f"Expected a latency budget in ms that is > 0 and finite. Received: {budget!r}.")


def search_spec(budget_ms: float | None, target: str | None = None, table: str | os.PathLike | None = None
                ) -> SearchSpec | None:
    """The :class:`SearchSpec` of the pipeline's options, or ``None`` when no budget is asked for.

    Raises:
        ValueError: a target or table without a budget, or any :class:`SearchSpec` error.
    """
    if budget_ms is None:
        if target is not None or table is not None:
            given = "--latency-table" if table is not None else "--target"
            raise ValueError(f"{given} only serves a latency budget. Expected --latency-budget-ms MS with it. "
                             "Received: no budget.")
        return None
    return SearchSpec(float(budget_ms), target, None if table is None else str(table))


@dataclass(frozen=True)
class SearchResult:
    """The measured ladder and the choice (``student`` is ``None`` when nothing meets the budget).

    Attributes:
        budget_ms: the budget; latencies_ms: int8 p50 per ladder student found, largest first.
        ladder: the students considered, largest first (missing ones were not in the table).
        student: the chosen student; closest: the fastest one (the one to name when none fits).
        source: ``"this"`` (measured here) or the latency table's path; threads: when measured here.
        key: what the result depends on, compared by ``--resume`` before reusing it.
    """

    budget_ms: float
    latencies_ms: Mapping[str, float]
    ladder: tuple[str, ...]
    student: str | None
    closest: str
    source: str
    threads: int | None = None
    key: Mapping[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: the choice (or the closest miss) and every latency against the budget."""
        where = f"measured on this machine at {self.threads} threads" if self.source == "this" else f"from {self.source}"
        times = ", ".join(f"{name} {ms:.3g} ms" for name, ms in self.latencies_ms.items())
        if self.student is None:
            closest = self.latencies_ms[self.closest]
            return (f"No student meets the {self.budget_ms:g} ms int8 latency budget: the closest is {self.closest} "
                    f"at {closest:.3g} ms ({times}; {where}). Expected a p50 <= {self.budget_ms:g} ms; raise the "
                    "budget or add a smaller student to the ladder.")
        return (f"Student search chose {self.student}, the largest student whose int8 p50 meets the "
                f"{self.budget_ms:g} ms budget ({times}; {where}).")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "latencies_ms": dict(self.latencies_ms), "ladder": list(self.ladder),
                "key": dict(self.key)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SearchResult:
        return cls(**{**raw, "ladder": tuple(raw["ladder"])})


# === Selection ===


def choose_student(
    latencies_ms: Mapping[str, float],
    budget_ms: float,
    ladder: Sequence[str] = STUDENT_LADDER,
    source: str = "table",
    threads: int | None = None,
) -> SearchResult:
    """The largest student of ``ladder`` (largest first) whose p50 is at most ``budget_ms``.

    Raises:
        LatencyBudgetError: no student meets the budget (the message names the closest).
        ValueError: a bad budget, or no latency for any ladder student.
    """
    _check_budget(budget_ms)
    found = {name: float(latencies_ms[name]) for name in ladder if name in latencies_ms}
    if not found:
        raise ValueError(f"Expected an int8 latency for at least one student of {list(ladder)}. "
                         f"Received: latencies for {sorted(latencies_ms)}.")
    missing = [name for name in ladder if name not in found]
    if missing:
        logger.warning("student search: no latency for %s in %s; searching %s", missing, source, list(found))
    student = next((name for name, ms in found.items() if ms <= budget_ms), None)
    result = SearchResult(budget_ms=float(budget_ms), latencies_ms=found, ladder=tuple(ladder), student=student,
                          closest=min(found, key=found.get), source=source, threads=threads)
    if student is None:
        raise LatencyBudgetError(result.summary(), result)
    return result


# === Latency tables ===


def read_latency_table(path: str | os.PathLike) -> dict[str, float]:
    """Model name -> int8 p50 ms from a ``roverlite bench --json`` file or a ``{"unet_xs": 4.1}`` mapping.

    Bench rows are matched to a model by their sidecar name, else by the artifact's file name
    (``unet_xs_tflite_int8.tflite``); failed and float rows are skipped. With several int8 rows
    for one model a ``tflite_int8`` row wins, else the fastest.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or neither format, or a latency that is not a positive number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Latency table not found. Expected a JSON file. Received: {str(path)!r}.")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"Cannot read latency table {str(path)!r}. Expected JSON. Received: {err}.") from None
    if isinstance(document, dict) and "results" in document:
        return _bench_table(document["results"], path)
    if isinstance(document, dict) and document and all(_is_number(v) for v in document.values()):
        return {name: _latency(ms, f"{path.name}: {name}") for name, ms in _known(document, path).items()}
    raise ValueError(
        f"Unknown latency table {str(path)!r}. Expected the JSON of `roverlite bench --json` ({{\"results\": [...]}}) "
        f"or a mapping of model name to p50 ms such as {{\"unet_xs\": 4.1}}. Received: {str(document)[:120]}."
    )


def _known(table: Mapping[str, Any], path: Path) -> Mapping[str, Any]:
    models = list_models()
    for name in table:
        if name not in models:
            raise ValueError(f"Unknown model {name!r} in latency table {str(path)!r}. Expected registered names "
                             f"such as {list(STUDENT_LADDER)}. Received: {name!r}." + did_you_mean(name, models))
    return table


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _latency(value: Any, where: str) -> float:
    if not _is_number(value) or not 0 < value < math.inf:
        raise ValueError(f"Expected a p50 latency in ms > 0 for {where}. Received: {value!r}.")
    return float(value)


def _bench_table(rows: Any, path: Path) -> dict[str, float]:
    if not isinstance(rows, list):
        raise ValueError(  # noqa: TRY004 - the CLI shows ValueErrors as one-line usage errors
            f"Expected a 'results' list in {str(path)!r}. Received: {type(rows).__name__}.")
    best: dict[str, tuple[bool, float]] = {}
    for raw in rows:
        row = BenchResult.from_dict(raw)
        model = _row_model(row)
        if not row.ok or model is None or "int8" not in (row.format or "int8"):
            continue
        rank = (row.format != SEARCH_FORMAT, _latency(row.p50_ms, f"{path.name}: {row.artifact}"))
        best[model] = min(best.get(model, rank), rank)
    if not best:
        raise ValueError(f"Expected measured int8 rows of registered models in {str(path)!r}. Received: "
                         f"{len(rows)} rows, none usable (names {sorted({str(r.get('name')) for r in rows})[:8]}).")
    return {model: ms for model, (_, ms) in best.items()}


def _row_model(row: Any) -> str | None:
    models = set(list_models())
    if row.name in models:
        return row.name
    stem = Path(row.artifact).stem
    if row.format and stem.endswith(f"_{row.format}"):
        stem = stem[: -len(row.format) - 1]
    return stem if stem in models else None


# === Measuring here ===


def export_untrained(
    plan: Sequence[tuple[str, Sequence[str]]],
    out_dir: str | os.PathLike,
    data_cfg: DataConfig,
    calibration_count: int = CALIBRATION_IMAGES,
    source: str = "roverlite.compress.search",
    tolerances: Any = None,
) -> list[dict[str, Any]]:
    """Export untrained presets for timing: ``plan`` is ``[(model name, [formats])]``.

    Latency does not depend on the weights' values, so the models keep their initial weights and
    calibrate on seeded noise. Returns one dict per artifact: ``model``, ``format``, ``artifact``,
    ``params``, ``macs``, ``size_bytes``, ``self_check_passed``.
    """
    shape = (*data_cfg.image_size, data_cfg.channels)
    calibration = np.random.default_rng(0).integers(0, 256, (calibration_count, *shape), dtype=np.uint8)
    exported = []
    for name, formats in plan:
        model = create_model(name, input_shape=shape, num_classes=data_cfg.num_classes)
        cost = count_macs(model)
        started = time.perf_counter()
        results = export_model(model, ExportSettings(
            formats, out_dir, data_cfg, calibration_images=calibration, name=name,
            recipe={"source": source, "trained": False}, representative_count=calibration_count,
            tolerances=tolerances, cost={"macs": int(cost.macs), "params": int(cost.params)}))
        logger.info("exported %s (%s) in %.1f s", name, ", ".join(formats), time.perf_counter() - started)
        exported += [{"model": name, "format": r.format, "artifact": str(r.path), "params": int(cost.params),
                      "macs": int(cost.macs), "size_bytes": r.size_bytes, "self_check_passed": r.passed}
                     for r in results]
    return exported


def measure_ladder(
    data_cfg: DataConfig,
    ladder: Sequence[str] = STUDENT_LADDER,
    threads: int | None = None,
    runs: int = 60,
    warmup: int = 10,
    rounds: int = 3,
) -> tuple[dict[str, float], list[Any]]:
    """Int8 TFLite p50 of every ``ladder`` student on this machine: ``({name: p50 ms}, bench rows)``.

    Raises:
        ValueError: a student that could not be benchmarked (its error in the message).
    """
    # Untrained int8 models miss any accuracy check; only their speed matters here.
    loose = Tolerances(min_argmax_agreement=0.0, max_miou_drop=1.0, max_class_iou_drop=1.0)
    with tempfile.TemporaryDirectory(prefix="student_search_") as tmp:
        exported = export_untrained([(name, [SEARCH_FORMAT]) for name in ladder], tmp, data_cfg, tolerances=loose)
        results = bench_many([e["artifact"] for e in exported], threads=threads, runs=runs, warmup=warmup,
                             rounds=rounds)
    failed = [f"{e['model']}: {r.error}" for e, r in zip(exported, results) if not r.ok]
    if failed:
        raise ValueError(f"Expected every student to benchmark. Received: failures {failed}.")
    return {e["model"]: float(r.p50_ms) for e, r in zip(exported, results)}, results


# === Front door ===


def search_key(spec: SearchSpec, threads: int | None, ladder: Sequence[str] = STUDENT_LADDER) -> dict[str, Any]:
    """What a search result depends on (``--resume`` reuses a result only for an equal key)."""
    table_sha = hashlib.sha256(Path(spec.table).read_bytes()).hexdigest() if spec.table is not None else None
    return {**spec.to_dict(), "table_sha256": table_sha, "threads": threads if spec.target else None,
            "ladder": list(ladder)}


def search_student(
    spec: SearchSpec,
    data_cfg: DataConfig,
    threads: int | None = None,
    ladder: Sequence[str] = STUDENT_LADDER,
    bench_json: str | os.PathLike | None = None,
    runs: int = 60,
) -> SearchResult:
    """Measure (``spec.target``) or read (``spec.table``) the ladder's latencies and choose a student.

    Args:
        spec: the budget and the latency source.
        data_cfg: input size, channels and classes the students are built for (``target`` only).
        threads: runtime threads when measuring here (``None``: every usable core).
        ladder: students, largest first.
        bench_json: where to write the bench rows measured here (usable as a latency table).
        runs: timed runs per student when measuring here.

    Raises:
        LatencyBudgetError: no student meets the budget.
        ValueError, FileNotFoundError: a bad table, or a student that could not be measured.
    """
    key = search_key(spec, threads, ladder)
    if spec.table is not None:
        latencies, source = read_latency_table(spec.table), spec.table
    else:
        logger.info("student search: timing %s in int8 at %s on this machine", list(ladder), data_cfg.image_size)
        latencies, rows = measure_ladder(data_cfg, ladder, threads=threads, runs=runs)
        threads = rows[0].threads
        source = "this"
        if bench_json is not None:
            write_bench_json(rows, bench_json, command="roverlite pipeline --target this (student search)")
    try:
        result = choose_student(latencies, spec.budget_ms, ladder, source=source, threads=threads)
    except LatencyBudgetError as err:
        raise LatencyBudgetError(str(err), _with_key(err.result, key)) from None
    logger.info("%s", result.summary())
    return _with_key(result, key)


def _with_key(result: SearchResult, key: Mapping[str, Any]) -> SearchResult:
    return replace(result, key=dict(key))
