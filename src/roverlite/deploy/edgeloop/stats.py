"""Latency percentiles and frame rate for the loop's periodic log line and its final summary."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["LatencyStats", "RateMeter"]

# Percentiles over at most this many recent samples: a week-long run must not grow without bound.
MAX_SAMPLES = 100_000
PERCENTILES = (50, 90, 99)


class LatencyStats:
    """Milliseconds per stage (``preprocess``, ``model``, ...), with p50/p90/p99 on demand.

    Each stage keeps its recent samples in a float32 ring buffer allocated and written whole at the
    stage's first sample, so memory is flat from the first frame (a deque of Python floats grew by
    ~19 MiB over 100,000 frames). Written, not just allocated: ``np.zeros`` of 400 kB gets fresh
    zero pages from the kernel that become resident only when first written, so a zeroed ring
    still grew the resident set by 24 bytes per frame (six stages) for its first 100,000 frames,
    which a soak's RSS slope reads as a leak (measured: 0.023 MiB per 1,000 frames).
    """

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        if max_samples < 1:
            raise ValueError(f"Expected max_samples >= 1. Received: {max_samples}.")
        self._rings: dict[str, np.ndarray] = {}
        self._totals: dict[str, list[float]] = {}  # stage -> [count, sum, max]
        self._max_samples = max_samples

    def add(self, stage: str, milliseconds: float) -> None:
        if stage not in self._rings:
            self._rings[stage] = np.full(self._max_samples, np.nan, np.float32)  # every page resident now
            self._totals[stage] = [0, 0.0, 0.0]
        totals = self._totals[stage]
        self._rings[stage][int(totals[0]) % self._max_samples] = milliseconds
        totals[0] += 1
        totals[1] += milliseconds
        totals[2] = max(totals[2], milliseconds)

    def count(self, stage: str) -> int:
        return int(self._totals.get(stage, [0])[0])

    def stage(self, stage: str) -> dict[str, Any]:
        """``{count, mean, max, p50, p90, p99}`` in ms (percentiles over the recent samples)."""
        count = self.count(stage)
        if not count:
            return {"count": 0}
        values = self._rings[stage][: min(count, self._max_samples)].astype(np.float64)
        _, total, largest = self._totals[stage]
        out: dict[str, Any] = {"count": count, "mean": round(total / count, 3), "max": round(largest, 3)}
        for q, value in zip(PERCENTILES, np.percentile(values, PERCENTILES)):
            out[f"p{q}"] = round(float(value), 3)
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        return {stage: self.stage(stage) for stage in self._rings}


class RateMeter:
    """Frames per second: over the whole run, and over the window since :meth:`window` was last called.

    The clock starts at :meth:`start` (before the first frame is read) and stops at the last
    :meth:`tick` (after a frame is fully handled), so FPS covers capture, inference and outputs.
    """

    def __init__(self) -> None:
        self.frames = 0
        self._start = self._last = self._window_start = 0.0
        self._window_frames = 0

    def start(self, now: float | None = None) -> None:
        self._start = self._last = self._window_start = time.perf_counter() if now is None else now

    def tick(self, now: float | None = None) -> None:
        self._last = time.perf_counter() if now is None else now
        self.frames += 1
        self._window_frames += 1

    def elapsed(self) -> float:
        return self._last - self._start

    def overall(self) -> float:
        return self.frames / self.elapsed() if self.frames and self.elapsed() > 0 else 0.0

    def window(self, now: float | None = None) -> float:
        """FPS since the previous call; starts a new window."""
        now = time.perf_counter() if now is None else now
        fps = self._window_frames / (now - self._window_start) if now > self._window_start else 0.0
        self._window_start, self._window_frames = now, 0
        return fps
