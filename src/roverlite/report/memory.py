"""The report's memory columns, headed by what the number is.

A bench row's ``peak_rss_mb`` means two different things. Benchmarked in a process of its own
(``isolated``: numpy and the runtime only, as on the robot), it is the artifact's whole footprint,
and ``model_rss_mb`` the resident growth while the model loaded. Benchmarked inside a process that
had loaded other things (TensorFlow, earlier artifacts), it is that process's high-water mark,
shared by every row measured there. The headers say which:

* ``peak RSS MiB (own process)`` and ``model MiB (load)``: rows measured in isolation;
* ``process peak MiB (shared)``: rows measured in a shared process.

A report mixing both shows both columns, each row filling the one that applies.

Example:
    >>> entry = RuntimeLatency("litert", 1.0, peak_rss_mb=61.9, model_rss_mb=2.3, isolated=True)
    >>> memory_headers([entry])
    ['peak RSS MiB (own process)', 'model MiB (load)']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from roverlite.report.tables import RuntimeLatency

__all__ = ["ISOLATED_HEADER", "MODEL_HEADER", "SHARED_HEADER", "memory_cells", "memory_headers", "memory_note",
           "memory_summary"]

ISOLATED_HEADER = "peak RSS MiB (own process)"
MODEL_HEADER = "model MiB (load)"
SHARED_HEADER = "process peak MiB (shared)"


def memory_headers(entries: Sequence[RuntimeLatency | None]) -> list[str]:
    """The memory headers for the table whose rows show ``entries`` (each row's shown runtime)."""
    measured = [e for e in entries if e is not None and e.peak_rss_mb is not None]
    headers = []
    if any(e.isolated for e in measured):
        headers += [ISOLATED_HEADER, MODEL_HEADER]
    if any(not e.isolated for e in measured):
        headers.append(SHARED_HEADER)
    return headers


def memory_cells(entry: RuntimeLatency | None, headers: Sequence[str]) -> list[str | None]:
    """One cell per memory header for a row shown on ``entry`` (``None``: not measured that way)."""
    values = {}
    if entry is not None and entry.peak_rss_mb is not None:
        if entry.isolated:
            values[ISOLATED_HEADER] = _mib(entry.peak_rss_mb)
            values[MODEL_HEADER] = _mib(entry.model_rss_mb)
        else:
            values[SHARED_HEADER] = _mib(entry.peak_rss_mb)
    return [values.get(header) for header in headers]


def memory_note(headers: Sequence[str]) -> str | None:
    """One sentence saying what the memory columns measure (``None`` without memory columns)."""
    parts = []
    if ISOLATED_HEADER in headers:
        parts.append(f"'{ISOLATED_HEADER}' is the peak resident memory of a process that benchmarked only that "
                     f"artifact (numpy and the runtime, as deployed); '{MODEL_HEADER}' its growth while the model "
                     "loaded")
    if SHARED_HEADER in headers:
        parts.append(f"'{SHARED_HEADER}' is the high-water mark of a process that benchmarked several artifacts "
                     "(and may have imported TensorFlow): it is not one artifact's footprint")
    return ("Memory, on the runtime column's runtime: " + "; ".join(parts) + ".") if parts else None


def memory_summary(entry: RuntimeLatency | None) -> dict[str, Any]:
    """``summary.json`` memory fields of a row shown on ``entry``."""
    if entry is None:
        return {"peak_rss_mb": None, "model_rss_mb": None, "memory_isolated": None}
    return {"peak_rss_mb": entry.peak_rss_mb, "model_rss_mb": entry.model_rss_mb, "memory_isolated": entry.isolated}


def _mib(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f}"
