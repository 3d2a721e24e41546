"""Benchmark exported artifacts on this machine: latency percentiles, start-up, memory, accuracy.

What one benchmark measures, in order, on one loaded model:

1. **init**: from the file path to a runner ready to invoke. With a sidecar (the normal case) this
   is building a :class:`~roverlite.deploy.Segmenter`: read the file, check its sha256 against the
   sidecar, load it into the runtime and allocate tensors, which is what a robot pays at start-up.
   Without a sidecar: read, load, allocate.
2. **first inference**: the first ``invoke`` alone (XNNPACK packs weights, ONNX Runtime picks
   kernels on it).
3. **warm-up** runs, not recorded.
4. **timed runs**: at least ``runs`` and, with ``min_seconds``, until that much time has passed.
   Each is one model call (set input, invoke, copy the output), the input already normalised and
   quantized, so pre/post-processing is not in it; the garbage collector is paused meanwhile.
   Reported as p50/p90/p99/mean/std/min/max in ms.
5. optional **end-to-end** runs: ``Segmenter.predict`` on a uint8 image (resize, normalise,
   quantize, invoke, dequantize, argmax, resize back).
6. optional **accuracy** on a test pack, scored with the *same* loaded runner that was timed (the
   MLPerf rule: the numbers describe one artifact in one state).
7. optional **profile**, a separate pass (see :mod:`roverlite.deploy.profile`).

Thread count: ``threads=None`` means every core this process may use, passed explicitly to the
runtime, so every row of a comparison runs with the same count (LiteRT's own default is 1 thread,
ONNX Runtime's is all physical cores). Memory: ``peak_rss_mb`` is the process's high-water mark
(it includes anything benchmarked earlier in the same process), ``model_rss_mb`` the growth of the
resident set while the model was loaded.

numpy and the runtime only; runs on a robot, inside a bundle (``python bench.py``) and as
``python -m roverlite.deploy.bench ARTIFACT... [--runs N] [--threads T] [--json OUT]``.

Example:
    >>> results = bench_many(["exports/unet_xs_tflite_int8.tflite", "exports/unet_xs_onnx_int8.onnx"],
    ...                      runs=200, testpack="testpack.npz")              # doctest: +SKIP
    >>> print(format_bench_table(results))                                    # doctest: +SKIP
    >>> write_bench_json(results, "bench.json")                               # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import gc
import itertools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.deploy.hostinfo import (
    current_rss_mb,
    host_info,
    peak_rss_mb,
    runtime_version,
    usable_cpus,
)
from roverlite.deploy.sidecar import SUFFIX_RUNTIME, sidecar_path

__all__ = [
    "BENCH_SCHEMA_VERSION",
    "BenchResult",
    "LatencyStats",
    "bench_artifact",
    "bench_many",
    "bench_report",
    "compare_runtimes",
    "failed_result",
    "format_bench_table",
    "latency_stats",
    "main",
    "percentile",
    "read_bench_json",
    "write_bench_json",
]

logger = logging.getLogger(__name__)

BENCH_SCHEMA_VERSION = 1
RUNTIMES = tuple(dict.fromkeys(SUFFIX_RUNTIME.values()))  # ("litert", "onnxruntime")
# bench_artifact: one runtime, or "auto" = the one the file suffix names.
ARTIFACT_RUNTIME_CHOICES = ("auto", *RUNTIMES)
# bench_many: "all" = every runtime present that can read each file.
MANY_RUNTIME_CHOICES = ("all", "auto", *RUNTIMES)
STATUSES = ("ok", "failed")
# Safety stop for min_seconds on a very fast model.
MAX_TIMED_RUNS = 100_000
_PROFILE_RUNS = 30
_ERROR_CHARS = 500
_IMAGE_SEED = 0
# host_info() fields repeated in every JSON row (so one row read alone says where it ran).
_HOST_KEYS = ("cpu", "simd", "os", "arch", "python", "numpy", "usable_cpus", "load_avg")


# === Statistics ===


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
        init_ms, first_inference_ms: start-up costs (see the module docstring).
        end_to_end_ms: ``Segmenter.predict`` latency on a uint8 image, when asked for.
        peak_rss_mb, rss_mb, model_rss_mb: process peak, current, and growth while loading, MiB.
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
        timestamp=_now(), peak_rss_mb=peak_rss_mb(),
    )


# === Benchmarking ===


@dataclass(frozen=True)
class _Settings:
    threads: int
    warmup: int
    runs: int
    min_seconds: float | None
    end_to_end: bool
    profile: bool
    testpack: Path | None
    providers: tuple[str, ...] | None
    image: np.ndarray | None


def bench_artifact(
    path: str | os.PathLike,
    runtime: str = "auto",
    threads: int | None = None,
    warmup: int = 10,
    runs: int = 100,
    min_seconds: float | None = None,
    end_to_end: bool = False,
    profile: bool = False,
    testpack: str | os.PathLike | None = None,
    providers: Sequence[str] | None = None,
    image: np.ndarray | None = None,
) -> BenchResult:
    """Benchmark one artifact on one runtime (see the module docstring for what is measured).

    Args:
        path: a ``.tflite`` or ``.onnx`` file, normally with its sidecar beside it.
        runtime: ``auto`` (from the suffix), ``litert`` or ``onnxruntime``.
        threads: CPU threads for the runtime (``None`` = every core this process may use).
        warmup: untimed runs after the first inference.
        runs: timed runs (at least this many).
        min_seconds: keep timing until this many seconds have passed, too.
        end_to_end: also time ``Segmenter.predict`` on a uint8 image (needs the sidecar).
        profile: add a per-op profile (a separate pass; see :mod:`roverlite.deploy.profile`).
        testpack: a test pack ``.npz``; its per-class IoU, scored by the timed runner, goes into
            ``accuracy`` (needs the sidecar).
        providers: ONNX Runtime providers in priority order (default: TensorRT, CUDA, CPU as available).
        image: the uint8 image ``(H, W[, C])`` whose preprocessed form is the timed input and
            which end-to-end runs predict (default: seeded noise at the model's size).

    Returns:
        A measured :class:`BenchResult`.

    Raises:
        ValueError: bad arguments, a runtime that cannot read the file, a damaged model or one
            refused by its sidecar.
        FileNotFoundError: no such artifact, or no sidecar where one is needed.
        ImportError: the runtime is not installed.
    """
    settings = _settings(threads, warmup, runs, min_seconds, end_to_end, profile, testpack, providers, image)
    runtime = _check_choice(runtime, ARTIFACT_RUNTIME_CHOICES, "runtime")
    path = Path(path)
    resolved, problem = _runtime_for(path, runtime)
    if problem:
        raise ValueError(problem)
    session = _Session(path, resolved, settings)
    session.start()
    session.time(settings.runs, settings.min_seconds)
    return session.finish()


def bench_many(
    paths: Sequence[str | os.PathLike],
    runtime: str = "all",
    threads: int | None = None,
    warmup: int = 10,
    runs: int = 100,
    min_seconds: float | None = None,
    end_to_end: bool = False,
    profile: bool = False,
    testpack: str | os.PathLike | None = None,
    providers: Sequence[str] | None = None,
    rounds: int = 1,
    image: np.ndarray | None = None,
) -> list[BenchResult]:
    """Benchmark every artifact on every runtime present for it, with the same settings.

    A ``.tflite`` runs on LiteRT and an ``.onnx`` on ONNX Runtime; give both exports of one model
    to compare the runtimes side by side (:func:`compare_runtimes`, :func:`format_bench_table`).
    An artifact that cannot be benchmarked (missing, damaged, refused by its sidecar, runtime not
    installed, or not readable by the runtime asked for) becomes a failed row with the error;
    the others still run.

    Args:
        paths: artifact files; results keep this order.
        runtime: ``all`` (= ``auto``: each file on the runtime of its suffix), ``litert`` or
            ``onnxruntime`` (files of the other kind become failed rows).
        rounds: with more than 1, every model is loaded first and the timed runs are split into
            ``rounds`` interleaved rounds (model A, B, C, A, B, C, ...), so slow drifts in machine
            load hit every model alike; ``runs`` and ``min_seconds`` are totals over the rounds.
        threads, warmup, runs, min_seconds, end_to_end, profile, testpack, providers, image:
            as in :func:`bench_artifact`.

    Returns:
        One :class:`BenchResult` per (artifact, runtime).

    Raises:
        ValueError: bad arguments (before anything runs).
        FileNotFoundError: ``testpack`` does not exist.
    """
    settings = _settings(threads, warmup, runs, min_seconds, end_to_end, profile, testpack, providers, image)
    runtime = _check_choice(runtime, MANY_RUNTIME_CHOICES, "runtime")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"Expected rounds to be a positive integer. Received: rounds={rounds!r}.")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("Expected at least one artifact to benchmark. Received: none.")
    jobs = [(Path(p), *_runtime_for(Path(p), "auto" if runtime == "all" else runtime)) for p in paths]
    results: list[BenchResult | None] = [None] * len(jobs)

    def fail(index: int, err: BaseException | str) -> None:
        path, resolved, _ = jobs[index]
        logger.warning("benchmark of %s on %s failed: %s", path, resolved, err)
        results[index] = failed_result(path, resolved, err)

    per_round = math.ceil(settings.runs / rounds)
    seconds = None if settings.min_seconds is None else settings.min_seconds / rounds
    # One round: one model in memory at a time. Several: all loaded, their timed runs interleaved.
    batches = [[index] for index in range(len(jobs))] if rounds == 1 else [list(range(len(jobs)))]
    for batch in batches:
        sessions: dict[int, _Session] = {}
        for index in batch:
            path, resolved, problem = jobs[index]
            if problem:
                fail(index, problem)
                continue
            try:
                session = _Session(path, resolved, settings)
                session.start()
            except Exception as err:  # noqa: BLE001 - any failure of one artifact becomes its row
                fail(index, err)
                continue
            sessions[index] = session
        for _ in range(rounds):
            for index, session in list(sessions.items()):
                try:
                    session.time(per_round, seconds)
                except Exception as err:  # noqa: BLE001
                    fail(index, err)
                    del sessions[index]
        for index, session in sessions.items():
            try:
                results[index] = session.finish()
            except Exception as err:  # noqa: BLE001
                fail(index, err)
    return [r for r in results if r is not None]


class _Session:
    """One loaded model and its measurements; the steps of a benchmark, callable in rounds."""

    def __init__(self, path: Path, runtime: str, settings: _Settings) -> None:
        from roverlite.deploy.runtime import load_runner
        from roverlite.deploy.segmenter import Segmenter

        self.path, self.runtime, self.settings = path, runtime, settings
        self.host = host_info()
        self.timestamp = _now()
        has_sidecar = sidecar_path(path).is_file()
        needs = [what for what, wanted in (("end_to_end", settings.end_to_end), ("testpack", settings.testpack))
                 if wanted]
        if needs and not has_sidecar and path.is_file():
            raise FileNotFoundError(
                f"Sidecar not found for {str(path)!r}. Expected {str(sidecar_path(path))!r} for {' and '.join(needs)}. "
                "Received: no such file."
            )
        rss_before = current_rss_mb()
        start = time.perf_counter()
        if has_sidecar:
            self.segmenter: Any = Segmenter(path, threads=settings.threads, providers=settings.providers)
            self.runner = self.segmenter.runner
            self.sidecar: Any = self.segmenter.sidecar
        else:
            logger.info("%s has no sidecar: timing the bare model only", path)
            self.segmenter, self.sidecar = None, None
            self.runner = load_runner(path, threads=settings.threads, providers=settings.providers)
        self.init_ms = 1000.0 * (time.perf_counter() - start)
        rss_after = current_rss_mb()
        self.model_rss_mb = None if rss_before is None or rss_after is None else round(rss_after - rss_before, 2)
        if self.runner.runtime != runtime:
            raise ValueError(f"Expected runtime {runtime!r} for {str(path)!r}. Received: {self.runner.runtime!r}.")
        self.image, self.sample = self._inputs(settings.image)
        self.samples: list[float] = []
        self.first_ms: float | None = None
        self.seconds = 0.0

    def _inputs(self, image: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray]:
        """The uint8 image (with a sidecar) and the timed model input in the input's dtype."""
        info = self.runner.input
        if self.segmenter is not None:
            if image is None:
                h, w = self.segmenter.input_size
                rng = np.random.default_rng(_IMAGE_SEED)
                image = rng.integers(0, 256, (h, w, self.segmenter.channels), dtype=np.uint8)
            x = self.segmenter.preprocess(image)
        else:
            if any(d < 1 for d in info.shape):
                raise ValueError(
                    f"Cannot build an input for {str(self.path)!r} without its sidecar. Expected fixed input "
                    f"dimensions. Received: shape={list(info.shape)}."
                )
            x = np.random.default_rng(_IMAGE_SEED).standard_normal(info.shape).astype(np.float32)
        if info.quantized:
            x = info.quantize(x)
        elif x.dtype != np.dtype(info.dtype):
            x = x.astype(info.dtype)
        return image, np.ascontiguousarray(x)

    def _invoke(self) -> None:
        # Runner._invoke: set input, invoke, copy output; no validation, quantize or dequantize.
        self.runner._invoke(self.sample)

    def start(self) -> None:
        """First inference, then the warm-up runs."""
        start = time.perf_counter()
        self._invoke()
        self.first_ms = 1000.0 * (time.perf_counter() - start)
        for _ in range(self.settings.warmup):
            self._invoke()

    def time(self, runs: int, min_seconds: float | None) -> None:
        """Add at least ``runs`` timed runs (and until ``min_seconds`` have passed)."""
        invoke, clock, samples = self._invoke, time.perf_counter_ns, self.samples
        done, gc_was_enabled = 0, gc.isenabled()
        gc.disable()  # a collection inside a timed call would be charged to the model
        began = clock()
        limit = None if min_seconds is None else began + int(min_seconds * 1e9)
        try:
            while (done < runs or (limit is not None and clock() < limit)) and len(samples) < MAX_TIMED_RUNS:
                start = clock()
                invoke()
                samples.append((clock() - start) / 1e6)
                done += 1
        finally:
            if gc_was_enabled:
                gc.enable()
        self.seconds += (clock() - began) / 1e9

    def finish(self) -> BenchResult:
        """Statistics, then the optional end-to-end, accuracy and profile passes."""
        latency = latency_stats(self.samples)
        end_to_end = self._end_to_end() if self.settings.end_to_end else None
        accuracy = self._accuracy() if self.settings.testpack is not None else None
        profile = self._profile(latency.p50) if self.settings.profile else None
        s = self.sidecar
        cost = (s.cost or {}) if s is not None else {}
        macs = cost.get("macs")
        if profile and not macs:
            macs = profile.get("estimated_macs") or None
        rss = current_rss_mb()
        peak = peak_rss_mb()
        # ru_maxrss is updated lazily by the kernel: never report a peak below the current size.
        peak = rss if peak is None else (peak if rss is None else max(peak, rss))
        return BenchResult(
            artifact=str(self.path),
            runtime=self.runtime,
            name=s.name if s is not None else self.path.stem,
            format=s.format if s is not None else None,
            backend=self.runner.backend,
            runtime_version=runtime_version(self.runner.backend),
            threads=self.settings.threads,
            latency_ms=latency,
            warmup_runs=self.settings.warmup,
            duration_s=round(self.seconds, 4),
            init_ms=round(self.init_ms, 4),
            first_inference_ms=None if self.first_ms is None else round(self.first_ms, 4),
            end_to_end_ms=end_to_end,
            peak_rss_mb=peak,
            rss_mb=rss,
            model_rss_mb=self.model_rss_mb,
            input_shape=tuple(int(d) for d in self.runner.input.shape),
            input_dtype=self.runner.input.dtype,
            size_bytes=s.size_bytes if s is not None else self.path.stat().st_size,
            sha256=s.sha256 if s is not None else None,
            macs=int(macs) if isinstance(macs, (int, float)) and macs else None,
            accuracy=accuracy,
            profile=profile,
            host=self.host,
            timestamp=self.timestamp,
        )

    def _end_to_end(self) -> LatencyStats:
        predict, image = self.segmenter.predict, self.image
        for _ in range(min(self.settings.warmup, 3)):
            predict(image)
        times = []
        for _ in range(self.settings.runs):
            start = time.perf_counter()
            predict(image)
            times.append(1000.0 * (time.perf_counter() - start))
        return latency_stats(times)

    def _accuracy(self) -> dict[str, Any]:
        from roverlite.deploy.evaluate import evaluate_artifact, load_testpack

        pack = load_testpack(self.settings.testpack)
        result = evaluate_artifact(self.segmenter, pack.images, pack.masks)  # the timed runner
        return {
            "miou": result["miou"],
            "per_class_iou": result["per_class_iou"],
            "pixel_accuracy": result.get("pixel_accuracy"),
            "images": result["images"],
            "ms_per_image": round(result["ms_per_image"], 4),
            "testpack": str(self.settings.testpack),
        }

    def _profile(self, p50_ms: float) -> dict[str, Any]:
        from roverlite.deploy.profile import profile_onnx, profile_tflite

        content = self.path.read_bytes()
        runs = min(self.settings.runs, _PROFILE_RUNS)
        if self.runtime == "litert":
            return profile_tflite(content, self.sample, self.settings.threads, runs, delegated_p50_ms=p50_ms)
        providers = self._providers()
        return profile_onnx(content, self.sample, self.runner.input.name, self.settings.threads, runs, providers)

    def _providers(self) -> list[str]:
        backend = self.runner.backend  # onnxruntime:Provider1,Provider2
        return backend.split(":", 1)[1].split(",") if ":" in backend else ["CPUExecutionProvider"]


def _settings(
    threads: Any, warmup: Any, runs: Any, min_seconds: Any, end_to_end: Any, profile: Any, testpack: Any,
    providers: Any, image: Any,
) -> _Settings:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"Expected threads to be a positive integer or None. Received: threads={threads!r}.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"Expected warmup to be an integer >= 0. Received: warmup={warmup!r}.")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"Expected runs to be an integer >= 1. Received: runs={runs!r}.")
    if min_seconds is not None and (
        isinstance(min_seconds, bool) or not isinstance(min_seconds, (int, float)) or not 0 < min_seconds < math.inf
    ):
        raise ValueError(f"Expected min_seconds > 0 or None. Received: min_seconds={min_seconds!r}.")
    for name, value in (("end_to_end", end_to_end), ("profile", profile)):
        if not isinstance(value, bool):
            raise ValueError(f"Expected {name} to be True or False. Received: {name}={value!r}.")  # noqa: TRY004
    if testpack is not None and not Path(testpack).is_file():
        raise FileNotFoundError(f"Test pack not found. Expected an .npz file. Received: {str(testpack)!r}.")
    if image is not None:
        image = np.asarray(image)
        if image.ndim not in (2, 3):
            raise ValueError(f"Expected an image of shape (H, W) or (H, W, C). Received: shape={image.shape}.")
    return _Settings(
        threads=usable_cpus() if threads is None else threads,
        warmup=warmup,
        runs=runs,
        min_seconds=None if min_seconds is None else float(min_seconds),
        end_to_end=end_to_end,
        profile=profile,
        testpack=None if testpack is None else Path(testpack),
        providers=None if providers is None else tuple(providers),
        image=image,
    )


def _check_choice(value: Any, choices: Sequence[str], name: str) -> str:
    if isinstance(value, str) and value in choices:
        return value
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f' Did you mean "{close[0]}"?' if close else ""
    raise ValueError(f"Unknown {name}. Expected one of {list(choices)}. Received: {value!r}.{hint}")


def _runtime_for(path: Path, runtime: str) -> tuple[str, str | None]:
    """``(runtime, problem)``: the runtime that runs ``path``, and why it cannot (``None`` if it can)."""
    native = SUFFIX_RUNTIME.get(path.suffix.lower())
    if native is None:
        return (runtime if runtime in RUNTIMES else "unknown"), (
            f"Unknown model file type. Expected a .tflite or .onnx file. Received: {str(path)!r}."
        )
    if runtime in ("auto", "all") or runtime == native:
        return native, None
    wanted = [suffix for suffix, r in SUFFIX_RUNTIME.items() if r == runtime]
    return runtime, (
        f"Runtime {runtime!r} cannot run {str(path)!r}. Expected a {' or '.join(wanted)} file for {runtime}. "
        f"Received: {path.suffix!r} (a {native} model)."
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# === Comparison and output ===


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


def format_bench_table(results: Sequence[BenchResult]) -> str:
    """A fixed-width table: one line per result, failed rows with their error, then comparisons."""
    results = list(results)
    header = (
        f"{'artifact':<34} {'runtime':<11} {'thr':>3} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} "
        f"{'mean±std ms':>15} {'init ms':>9} {'1st ms':>8} {'peak MiB':>8} {'mIoU':>6}"
    )
    lines = []
    host = next((r.host for r in results if r.host), {})
    if host:
        lines.append(f"host: {host.get('cpu')} | {host.get('usable_cpus')} usable cores | {host.get('arch')} | "
                     f"load {host.get('load_avg')}")
    lines += [header, "-" * len(header)]
    for r in results:
        name = Path(r.artifact).name
        name = name if len(name) <= 34 else "…" + name[-33:]
        if not r.ok:
            lines.append(f"{name:<34} {r.runtime:<11} FAILED: {r.error}")
            continue
        lat = r.latency_ms
        miou = r.accuracy.get("miou") if r.accuracy else None
        lines.append(
            f"{name:<34} {r.runtime:<11} {r.threads or 0:>3} {lat.p50:>9.3f} {lat.p90:>9.3f} {lat.p99:>9.3f} "
            f"{f'{lat.mean:.3f}±{lat.std:.3f}':>15} {_num(r.init_ms, 9, 1)} {_num(r.first_inference_ms, 8, 2)} "
            f"{_num(r.peak_rss_mb, 8, 1)} {_num(miou, 6, 4)}"
        )
        if r.end_to_end_ms is not None:
            lines.append(f"{'':<34} {'  end-to-end':<11} {'':>3} {r.end_to_end_ms.p50:>9.3f} "
                         f"{r.end_to_end_ms.p90:>9.3f} {r.end_to_end_ms.p99:>9.3f}")
    for row in compare_runtimes(results):
        timings = ", ".join(f"{rt} {ms:.3f} ms" for rt, ms in row["p50_ms"].items())
        lines.append(f"{row['model']} ({row['precision']}): {timings} -> {row['faster']} faster "
                     f"({row['speedup']:.2f}x)")
    return "\n".join(lines)


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


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
    from roverlite.io import atomic_write_json

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


# === Command line ===


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m roverlite.deploy.bench",
        description="Benchmark .tflite / .onnx artifacts: latency percentiles, start-up, memory, accuracy.",
    )
    parser.add_argument("artifacts", nargs="+", type=Path, help=".tflite / .onnx files (with their sidecars)")
    parser.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs after the first (default 10)")
    parser.add_argument("--min-seconds", type=float, default=None, help="keep timing at least this long")
    parser.add_argument("--threads", type=int, default=None, help="runtime threads (default: all usable cores)")
    parser.add_argument("--runtime", default="all", choices=MANY_RUNTIME_CHOICES, help="default: each file's own")
    parser.add_argument("--providers", default=None, help="comma-separated ONNX Runtime providers, in priority order")
    parser.add_argument("--rounds", type=int, default=1, help="interleave the timed runs of all artifacts in rounds")
    parser.add_argument("--with-accuracy", type=Path, default=None, metavar="TESTPACK",
                        help="score the timed runner on this test pack .npz")
    parser.add_argument("--end-to-end", action="store_true", help="also time Segmenter.predict on a uint8 image")
    parser.add_argument("--profile", action="store_true", help="per-op profile (a separate pass)")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark command line; 0 = all measured, 1 = a failed row, 2 = bad arguments."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    try:
        results = bench_many(
            args.artifacts, runtime=args.runtime, threads=args.threads, warmup=args.warmup, runs=args.runs,
            min_seconds=args.min_seconds, end_to_end=args.end_to_end, profile=args.profile,
            testpack=args.with_accuracy, providers=args.providers.split(",") if args.providers else None,
            rounds=args.rounds,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_bench_table(results))
    if args.json:
        command = " ".join(["python -m roverlite.deploy.bench", *(argv if argv is not None else sys.argv[1:])])
        write_bench_json(results, args.json, command=command)
        print(f"results written to {args.json}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
