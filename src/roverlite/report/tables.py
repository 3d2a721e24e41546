"""Variant rows of a compression report, the runtime recommendation, and markdown tables.

A :class:`VariantRow` is one model variant (teacher float, pruned, PTQ int8, QAT int8, distilled
student, ...): its accuracy, cost, size and measured latency on each runtime. Rows are plain
frozen data that round-trip through JSON, so the pipeline can build them from whatever it ran
and the ``report`` command can rebuild them from run folders (:mod:`roverlite.report.collect`).

Example:
    >>> row = VariantRow(name="unet_xs_int8", kind="PTQ int8", miou=0.61, macs=189_000_000,
    ...                  latency={"litert": {"p50_ms": 2.0, "p90_ms": 2.4}})
    >>> round(row.gmac_per_s("litert"), 1)
    94.5
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KINDS",
    "RuntimeChoice",
    "RuntimeLatency",
    "VariantRow",
    "find_teacher",
    "format_bytes",
    "format_signed",
    "looks_numeric",
    "markdown_table",
    "pareto_front",
    "recommend_runtime",
]

# Suggested kinds (any non-empty text is accepted); "teacher ..." rows are the Δ reference.
KINDS = ("teacher float", "teacher int8", "pruned", "PTQ int8", "QAT int8", "distilled student", "student int8")


# === Rows ===


@dataclass(frozen=True)
class RuntimeLatency:
    """Measured latency (and memory) of a variant on one runtime.

    Attributes:
        runtime: ``litert``, ``onnxruntime``, ...
        p50_ms, p90_ms: median and 90th percentile model latency.
        artifact: the file that ran (a ``.tflite`` on LiteRT, an ``.onnx`` on ONNX Runtime).
        threads: the runtime's thread count.
        cpu: the CPU it was measured on.
        peak_rss_mb: the benchmark process's peak resident memory, MiB.
        model_rss_mb: resident growth while the model loaded, MiB.
        isolated: the benchmark ran in a process of its own (numpy and the runtime only), so
            ``peak_rss_mb`` is this artifact's footprint; ``False``: the process's high-water mark,
            shared with whatever else it loaded; ``None``: not recorded.
    """

    runtime: str
    p50_ms: float
    p90_ms: float | None = None
    artifact: str | None = None
    threads: int | None = None
    cpu: str | None = None
    peak_rss_mb: float | None = None
    model_rss_mb: float | None = None
    isolated: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.runtime, str) or not self.runtime:
            raise ValueError(f"Expected a runtime name. Received: runtime={self.runtime!r}.")
        if not _positive(self.p50_ms):
            raise ValueError(f"Expected p50_ms > 0 for {self.runtime}. Received: p50_ms={self.p50_ms!r}.")
        if self.p90_ms is not None and (not _positive(self.p90_ms) or self.p90_ms < self.p50_ms):
            raise ValueError(f"Expected p90_ms >= p50_ms for {self.runtime}. Received: p90_ms={self.p90_ms!r}.")
        if self.peak_rss_mb is not None and not (_finite(self.peak_rss_mb) and self.peak_rss_mb >= 0):
            raise ValueError(f"Expected peak_rss_mb >= 0 for {self.runtime}. Received: peak_rss_mb={self.peak_rss_mb!r}.")
        if self.model_rss_mb is not None and not _finite(self.model_rss_mb):
            raise ValueError(f"Expected a finite model_rss_mb for {self.runtime}. Received: {self.model_rss_mb!r}.")
        if self.isolated is not None and not isinstance(self.isolated, bool):
            raise ValueError(f"Expected isolated as true/false for {self.runtime}. Received: {self.isolated!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class VariantRow:
    """One variant of the report.

    Attributes:
        name: unique label (``unet_xs_int8``).
        kind: what it is, e.g. one of :data:`KINDS`; a kind starting with ``teacher`` marks the
            reference for Δ mIoU.
        artifact: the primary artifact (whose accuracy is shown), if any.
        format: its export format (``tflite_int8``); precision: ``float32``, ``int8``, ...
            (chooses the matching machine peak).
        miou, per_class_iou: accuracy (class name -> IoU, ``None`` for absent classes).
        accuracy_source: where the accuracy was measured (``testpack on device, 32 images``).
        macs, params, size_bytes: cost and file size.
        latency: measured latency per runtime; a ``{runtime: {"p50_ms", "p90_ms", ...}}`` mapping
            is accepted and converted.
        gate: the recipe's acceptance gate result, e.g. ``{"passed": False, "reasons": [...]}``.
        notes: free text shown under the tables.
        label: the human name shown in the report (``student int8``); ``None``: derived from the
            artifact's sidecar (:mod:`roverlite.report.labels`), else ``name``.
        hazards: per declared hazard, ``{"miss_rate", "false_rate", "traversable", ...}`` measured
            with the accuracy (:func:`roverlite.core.metrics.hazard_summary`).
        confusion_matrix: the ``(K, K)`` counts behind the accuracy (rows truth, columns
            prediction, in ``per_class_iou``'s class order), for the report's heat map.
    """

    name: str
    kind: str
    artifact: str | None = None
    format: str | None = None
    precision: str | None = None
    miou: float | None = None
    per_class_iou: Mapping[str, float | None] = dataclasses.field(default_factory=dict)
    accuracy_source: str | None = None
    macs: int | None = None
    params: int | None = None
    size_bytes: int | None = None
    latency: tuple[RuntimeLatency, ...] = ()
    gate: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = ()
    label: str | None = None
    hazards: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    confusion_matrix: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        for key in ("name", "kind"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"Expected a non-empty {key} for a variant. Received: {key}={value!r}.")
        if self.label is not None and (not isinstance(self.label, str) or not self.label.strip()):
            raise ValueError(f"Expected a non-empty label (or none) for {self.name!r}. Received: label={self.label!r}.")
        if self.miou is not None and not _fraction(self.miou):
            raise ValueError(f"Expected miou in [0, 1] for {self.name!r}. Received: miou={self.miou!r}.")
        if not isinstance(self.per_class_iou, Mapping):
            raise ValueError(  # noqa: TRY004
                f"Expected per_class_iou as class -> IoU for {self.name!r}. Received: {self.per_class_iou!r}."
            )
        bad = {k: v for k, v in self.per_class_iou.items() if v is not None and not _fraction(v)}
        if bad:
            raise ValueError(f"Expected per-class IoU in [0, 1] (or None) for {self.name!r}. Received: {bad}.")
        for key in ("macs", "params", "size_bytes"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"Expected {key} as an integer >= 0 for {self.name!r}. Received: {key}={value!r}.")
        latency = _latencies(self.latency)
        runtimes = [entry.runtime for entry in latency]
        if len(set(runtimes)) != len(runtimes):
            raise ValueError(f"Expected one latency per runtime for {self.name!r}. Received: {runtimes}.")
        object.__setattr__(self, "latency", latency)
        object.__setattr__(self, "per_class_iou", dict(self.per_class_iou))
        object.__setattr__(self, "notes", tuple(self.notes))
        if not isinstance(self.hazards, Mapping) or not all(isinstance(v, Mapping) for v in self.hazards.values()):
            raise ValueError(f"Expected hazards as name -> rates for {self.name!r}. Received: {self.hazards!r}.")
        object.__setattr__(self, "hazards", {str(k): dict(v) for k, v in self.hazards.items()})
        if self.confusion_matrix is not None:
            cm = self.confusion_matrix
            square = isinstance(cm, (list, tuple)) and all(isinstance(r, (list, tuple)) and len(r) == len(cm) for r in cm)
            if not square or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for r in cm for v in r):
                raise ValueError(
                    f"Expected confusion_matrix as a square list of counts for {self.name!r}. Received: {cm!r}."[:300]
                )
            object.__setattr__(self, "confusion_matrix", tuple(tuple(r) for r in cm))

    # === Derived ===

    def latency_on(self, runtime: str) -> RuntimeLatency | None:
        return next((entry for entry in self.latency if entry.runtime == runtime), None)

    def gmac_per_s(self, runtime: str) -> float | None:
        """Achieved GMAC/s on ``runtime``: MACs / p50."""
        entry = self.latency_on(runtime)
        if entry is None or not self.macs:
            return None
        return self.macs / (entry.p50_ms / 1000.0) / 1e9

    @property
    def is_teacher(self) -> bool:
        return self.kind.strip().lower().startswith("teacher")

    @property
    def display_name(self) -> str:
        """What the report calls the row: its ``label``, else its ``name``."""
        return self.label or self.name

    # === JSON ===

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["latency"] = [entry.to_dict() for entry in self.latency]
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> VariantRow:
        """Rebuild a row from :meth:`to_dict` output (unknown keys are refused).

        Raises:
            ValueError: unknown or invalid fields.
        """
        if not isinstance(value, Mapping):
            raise ValueError(f"Expected a variant row as a JSON object. Received: {type(value).__name__}.")  # noqa: TRY004
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"Unknown variant row fields. Expected some of {sorted(known)}. Received: {unknown}.")
        return cls(**dict(value))


def _latencies(value: Any) -> tuple[RuntimeLatency, ...]:
    if isinstance(value, Mapping):
        items = [{"runtime": runtime, **dict(entry)} for runtime, entry in value.items()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"Expected latency as a list or a runtime -> stats mapping. Received: {value!r}.")  # noqa: TRY004
    out = []
    for item in items:
        if isinstance(item, RuntimeLatency):
            out.append(item)
        elif isinstance(item, Mapping):
            fields = {f.name for f in dataclasses.fields(RuntimeLatency)}
            out.append(RuntimeLatency(**{k: v for k, v in item.items() if k in fields}))
        else:
            raise ValueError(f"Expected a latency entry with runtime and p50_ms. Received: {item!r}.")  # noqa: TRY004
    return tuple(out)


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


# === Decisions ===


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime recommended for a variant: the one with the lowest measured p50."""

    runtime: str
    p50_ms: float
    others: Mapping[str, float]

    @property
    def speedup(self) -> float | None:
        """Slowest other runtime's p50 over the chosen one's (``None`` with a single runtime)."""
        return max(self.others.values()) / self.p50_ms if self.others else None

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "p50_ms": self.p50_ms, "others": dict(self.others), "speedup": self.speedup}


def recommend_runtime(rows: Iterable[VariantRow]) -> dict[str, RuntimeChoice]:
    """For each variant with a measured latency, the runtime with the lowest p50.

    The choice is never slower than any other runtime measured for that variant; a tie keeps the
    runtime listed first. Variants without latency are left out.
    """
    choices = {}
    for row in rows:
        if not row.latency:
            continue
        best = min(row.latency, key=lambda entry: entry.p50_ms)
        others = {entry.runtime: entry.p50_ms for entry in row.latency if entry is not best}
        choices[row.name] = RuntimeChoice(runtime=best.runtime, p50_ms=best.p50_ms, others=others)
    return choices


def find_teacher(rows: Sequence[VariantRow], teacher: str | None = None) -> VariantRow | None:
    """The Δ reference: the row named ``teacher``, else the first ``teacher ...`` row with an mIoU,
    preferring one with an artifact (measured like the other variants) and a float one.

    Raises:
        ValueError: ``teacher`` names no row.
    """
    if teacher is not None:
        for row in rows:
            if row.name == teacher:
                return row
        raise ValueError(f"Unknown teacher variant. Expected one of {[r.name for r in rows]}. Received: {teacher!r}.")
    candidates = [row for row in rows if row.is_teacher and row.miou is not None]
    if not candidates:
        return None
    return min(candidates, key=lambda row: (row.artifact is None, "int8" in row.kind.lower(), candidates.index(row)))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower-or-equal x (latency) and higher-or-equal
    y (accuracy), strictly better in one. Sorted by x."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


# === Markdown ===


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column (``l``/``r``), default numbers right.

    Pipes inside cells are escaped; ``None`` shows as ``–``.
    """
    cells = [[_cell(v) for v in row] for row in rows]
    if align is None:
        align = "".join("r" if _numeric_column([row[i] for row in cells]) else "l" for i in range(len(headers)))
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return str(value).replace("|", "\\|").replace("\n", " ")


# A number with an optional unit, or "p50 / p90" pairs: right-aligned.
_NUMERIC = re.compile(r"[+−-]?[\d,]*\.?\d+ ?(%|KiB|MiB|x)?( / ([\d,]*\.?\d+|–))?")


def looks_numeric(text: str) -> bool:
    """Whether a table cell holds a number (with an optional unit), for right alignment."""
    return bool(_NUMERIC.fullmatch(text.strip()))


def _numeric_column(cells: Sequence[str]) -> bool:
    filled = [c for c in cells if c != "–"]
    return bool(filled) and all(looks_numeric(c) for c in filled)


def format_bytes(size: int | None) -> str | None:
    """``1,948 KiB`` style sizes (KiB below 10 MiB, else MiB)."""
    if size is None:
        return None
    if size < 10 * 1024 * 1024:
        return f"{size / 1024:,.0f} KiB"
    return f"{size / (1024 * 1024):,.1f} MiB"


def format_signed(value: float | None, digits: int = 4) -> str | None:
    """``+0.0123`` / ``−0.0456`` (a true minus sign) for differences; ``None`` stays ``None``."""
    if value is None:
        return None
    return f"+{value:.{digits}f}" if value >= 0 else f"−{abs(value):.{digits}f}"
