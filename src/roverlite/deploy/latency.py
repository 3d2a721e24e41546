"""Latency statistics of timed runs: percentiles (linear interpolation), mean, std, min, max.

numpy-free and runtime-free; used by :mod:`roverlite.deploy.bench` for every benchmark row.

Example:
    >>> latency_stats([1.0, 2.0, 3.0, 4.0]).p50
    2.5
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LatencyStats", "latency_stats", "percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` with linear interpolation (numpy's default method).

    The sorted values sit at positions ``0 .. n-1``; percentile ``q`` is at ``(n - 1) * q / 100``,
    interpolated linearly between its two neighbours.

    Raises:
        ValueError: no values, or ``q`` outside [0, 100].

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 100.0:
        raise ValueError(f"Expected a percentile in [0, 100]. Received: q={q!r}.")
    ordered = sorted(float(v) for v in values)
    if not ordered:
        raise ValueError("Expected at least one value for a percentile. Received: none.")
    position = (len(ordered) - 1) * float(q) / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timed runs in milliseconds (``std`` is the population standard deviation)."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    runs: int

    def __post_init__(self) -> None:
        values = (self.min, self.p50, self.p90, self.p99, self.max)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in (*values, self.mean, self.std)):
            raise ValueError(f"Expected finite, non-negative latencies. Received: {dataclasses.asdict(self)}.")
        if any(a > b + 1e-9 for a, b in itertools.pairwise(values)):
            raise ValueError(f"Expected min <= p50 <= p90 <= p99 <= max. Received: {dataclasses.asdict(self)}.")
        if isinstance(self.runs, bool) or not isinstance(self.runs, int) or self.runs < 1:
            raise ValueError(f"Expected runs >= 1. Received: runs={self.runs!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> LatencyStats:
        return cls(**{f.name: value[f.name] for f in dataclasses.fields(cls)})


def latency_stats(samples_ms: Sequence[float]) -> LatencyStats:
    """p50/p90/p99 (linear interpolation), mean, population std, min and max of ``samples_ms``.

    Raises:
        ValueError: no samples.
    """
    values = [float(v) for v in samples_ms]
    if not values:
        raise ValueError("Expected at least one timed run. Received: none.")
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return LatencyStats(
        p50=percentile(values, 50), p90=percentile(values, 90), p99=percentile(values, 99),
        mean=mean, std=std, min=min(values), max=max(values), runs=len(values),
    )
