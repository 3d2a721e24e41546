"""Benchmark rows: :class:`BenchResult` (measured or failed), runtime comparisons, and their JSON.

A bench JSON (:func:`write_bench_json`, read back by :func:`read_bench_json`) is
``{"schema_version", "command", "host", "results", "comparisons"}``: one row per (artifact,
runtime) with every :class:`BenchResult` field and the host fields at top level, so a row read
alone says where it ran, and the p50 of each model/precision measured on several runtimes side by
side (:func:`compare_runtimes`). Standard library only.

Example:
    >>> write_bench_json(results, "bench.json")                               # doctest: +SKIP
    >>> [r.p50_ms for r in read_bench_json("bench.json")]                      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from roverlite.deploy.hostinfo import host_info, peak_rss_mb
from roverlite.deploy.latency import LatencyStats
from roverlite.io import atomic_write_json

__all__ = [
    "BENCH_SCHEMA_VERSION",
    "BenchResult",
    "bench_report",
    "compare_runtimes",
    "failed_result",
    "read_bench_json",
    "utc_timestamp",
    "write_bench_json",
]

BENCH_SCHEMA_VERSION = 1
STATUSES = ("ok", "failed")
_ERROR_CHARS = 500
# host_info() fields repeated in every JSON row (so one row read alone says where it ran).
_HOST_KEYS = ("cpu", "simd", "os", "arch", "python", "numpy", "usable_cpus", "load_avg")


# === Result ===


@dataclass(frozen=True)
class BenchResult:
    """One artifact on one runtime: a measured row, or a failed row carrying the error.

    Attributes:
        artifact: the file benchmarked.
        runtime: ``litert`` or ``onnxruntime`` (or what was asked for, on a failed row).
        status: ``ok`` or ``failed``.
        error: why a failed row failed (one line).
        name, format: model name and export format, from the sidecar.
        backend: the module or providers that ran it; runtime_version: its package version.
        threads: the thread count passed to the runtime.
        latency_ms: model-call latency of the timed runs.
        warmup_runs: untimed runs after the first inference; duration_s: wall time of the timed runs.
        init_ms, first_inference_ms: start-up costs (see :mod:`roverlite.deploy.bench`).
        end_to_end_ms: ``Segmenter.predict`` latency on a uint8 image, when asked for.
        peak_rss_mb, rss_mb, model_rss_mb: process peak, current, and growth while loading, MiB,
            read after the timed runs (before the end-to-end, accuracy and profile passes).
        isolated: measured in a process of its own (numpy and the runtime only), so
            ``peak_rss_mb`` is this artifact's footprint; otherwise the process's high-water mark,
            which includes whatever else it loaded (TensorFlow, earlier artifacts).
        input_shape, input_dtype: the model input as the runtime sees it.
        size_bytes, sha256, macs: of the artifact (MACs from its sidecar, when recorded).
        accuracy: ``{"miou", "per_class_iou", "pixel_accuracy", "images", "testpack"}`` of the timed runner.
        profile: see :mod:`roverlite.deploy.profile`.
        host: CPU, OS, architecture, Python, numpy, load average when the run started.
        timestamp: UTC ISO time the benchmark started.
    """

    artifact: str
    runtime: str
    status: str = "ok"
    error: str | None = None
    name: str | None = None
    format: str | None = None
    backend: str | None = None
    runtime_version: str | None = None
    threads: int | None = None
    latency_ms: LatencyStats | None = None
    warmup_runs: int | None = None
    duration_s: float | None = None
    init_ms: float | None = None
    first_inference_ms: float | None = None
    end_to_end_ms: LatencyStats | None = None
    peak_rss_mb: float | None = None
    rss_mb: float | None = None
    model_rss_mb: float | None = None
    isolated: bool = False
    input_shape: tuple[int, ...] | None = None
    input_dtype: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    macs: int | None = None
    accuracy: Mapping[str, Any] | None = None
    profile: Mapping[str, Any] | None = None
    host: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    timestamp: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Expected status in {STATUSES}. Received: status={self.status!r}.")
        if self.status == "ok" and self.latency_ms is None:
            raise ValueError(f"Expected latency_ms on a measured row. Received: none for {self.artifact!r}.")
        if self.status == "failed" and not self.error:
            raise ValueError(f"Expected an error message on a failed row. Received: none for {self.artifact!r}.")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def p50_ms(self) -> float | None:
        return None if self.latency_ms is None else self.latency_ms.p50

    @property
    def gmac_per_s(self) -> float | None:
        """Achieved arithmetic rate at the p50 latency: MACs / p50, in GMAC/s."""
        if not self.macs or self.latency_ms is None or self.latency_ms.p50 <= 0:
            return None
        return self.macs / (self.latency_ms.p50 / 1000.0) / 1e9

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row: every field (``None`` where not measured), host fields at top level."""
        row: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, LatencyStats):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            row[f.name] = value
        host = row.pop("host")
        row["gmac_per_s"] = None if self.gmac_per_s is None else round(self.gmac_per_s, 3)
        for key in _HOST_KEYS:
            row[key] = host.get(key)
        return row

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> BenchResult:
        """Rebuild a result from :meth:`to_dict` output (unknown keys are ignored).

        Raises:
            ValueError: not a bench row (missing ``artifact``/``runtime``, bad latencies).
        """
        if not isinstance(row, Mapping) or "artifact" not in row or "runtime" not in row:
            raise ValueError(f"Expected a bench row with 'artifact' and 'runtime'. Received: {str(row)[:200]}.")
        names = {f.name for f in dataclasses.fields(cls)} - {"host"}
        values: dict[str, Any] = {k: row[k] for k in names if k in row}
        try:
            for key in ("latency_ms", "end_to_end_ms"):
                if values.get(key) is not None:
                    values[key] = LatencyStats.from_dict(values[key])
        except (KeyError, TypeError) as err:
            raise ValueError(f"Expected latency fields p50..max and runs in a bench row. Received: {err}.") from None
        if values.get("input_shape") is not None:
            values["input_shape"] = tuple(values["input_shape"])
        values["host"] = {k: row[k] for k in _HOST_KEYS if row.get(k) is not None}
        return cls(**values)


def failed_result(artifact: str | os.PathLike, runtime: str, error: BaseException | str) -> BenchResult:
    """A failed row: the artifact, the runtime asked for, and the error as one line."""
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    message = " ".join(str(message).split())[:_ERROR_CHARS] or "unknown error"
    return BenchResult(
        artifact=str(artifact), runtime=runtime, status="failed", error=message, host=host_info(),
        timestamp=utc_timestamp(), peak_rss_mb=peak_rss_mb(),
    )


def utc_timestamp() -> str:
    """Now, as a UTC ISO time to the second (a row's ``timestamp``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# === Comparison ===


def _variant_key(result: BenchResult) -> tuple[str, str]:
    """(model, precision): the exports of one model at one precision, whatever the runtime."""
    if result.format:
        _, _, precision = result.format.partition("_")
        return (result.name or Path(result.artifact).stem, precision or "float32")
    return (Path(result.artifact).stem, "?")


def compare_runtimes(results: Sequence[BenchResult]) -> list[dict[str, Any]]:
    """Side-by-side p50 of each model/precision measured on more than one runtime.

    Returns:
        ``[{"model", "precision", "p50_ms": {runtime: ms}, "artifacts": {runtime: path},
        "faster": runtime, "speedup": slowest p50 / fastest p50}]``.
    """
    groups: dict[tuple[str, str], dict[str, BenchResult]] = {}
    for result in results:
        if result.ok:
            best = groups.setdefault(_variant_key(result), {})
            if result.runtime not in best or result.latency_ms.p50 < best[result.runtime].latency_ms.p50:
                best[result.runtime] = result
    rows = []
    for (model, precision), by_runtime in groups.items():
        if len(by_runtime) < 2:
            continue
        p50 = {rt: r.latency_ms.p50 for rt, r in sorted(by_runtime.items())}
        faster = min(p50, key=p50.get)
        rows.append({
            "model": model,
            "precision": precision,
            "p50_ms": {rt: round(v, 4) for rt, v in p50.items()},
            "artifacts": {rt: r.artifact for rt, r in sorted(by_runtime.items())},
            "faster": faster,
            "speedup": round(max(p50.values()) / p50[faster], 3) if p50[faster] > 0 else None,
        })
    return rows


# === JSON ===


def bench_report(results: Sequence[BenchResult], command: str | None = None) -> dict[str, Any]:
    """The JSON document: ``{"schema_version", "command", "host", "results", "comparisons"}``."""
    return {
        "schema_version": BENCH_SCHEMA_VERSION,
        "command": command,
        "host": host_info(),
        "results": [r.to_dict() for r in results],
        "comparisons": compare_runtimes(results),
    }


def write_bench_json(results: Sequence[BenchResult], path: str | os.PathLike, command: str | None = None) -> Path:
    """Write :func:`bench_report` to ``path`` atomically."""
    return atomic_write_json(path, bench_report(results, command))


def read_bench_json(path: str | os.PathLike) -> list[BenchResult]:
    """The rows of a bench JSON written by :func:`write_bench_json`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or no ``results`` list of bench rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Bench results not found. Expected a JSON file. Received: {str(path)!r}.")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"Cannot read bench results {str(path)!r}. Expected JSON. Received: {err}.") from None
    rows = document.get("results") if isinstance(document, dict) else None
    if not isinstance(rows, list):
        raise ValueError(  # noqa: TRY004
            f"Expected a 'results' list in bench results {str(path)!r}. Received: {type(rows).__name__}."
        )
    return [BenchResult.from_dict(row) for row in rows]
