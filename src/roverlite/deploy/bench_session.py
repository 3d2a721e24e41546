"""One benchmark in steps: load a model, first inference and warm-up, timed runs (in rounds), results.

A :class:`BenchSession` holds one loaded model and its measurements, so that
:func:`roverlite.deploy.bench.bench_many` can interleave the timed runs of several models;
:func:`bench_settings` checks the settings every session of one benchmark shares. What each step
measures is described in :mod:`roverlite.deploy.bench`. numpy, Pillow and the runtime only (the runner
imports the runtime lazily).
"""

from __future__ import annotations

import gc
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.deploy.bench_result import BenchResult, utc_timestamp
from roverlite.deploy.evaluate import evaluate_artifact, load_testpack
from roverlite.deploy.hostinfo import (
    current_rss_mb,
    host_info,
    peak_rss_mb,
    runtime_version,
    usable_cpus,
)
from roverlite.deploy.latency import LatencyStats, latency_stats
from roverlite.deploy.profile import profile_onnx, profile_tflite
from roverlite.deploy.runtime import load_runner
from roverlite.deploy.segmenter import Segmenter
from roverlite.deploy.sidecar import sidecar_path

__all__ = ["MAX_TIMED_RUNS", "BenchSession", "BenchSettings", "bench_settings"]

logger = logging.getLogger(__name__)

# Safety stop for min_seconds on a very fast model.
MAX_TIMED_RUNS = 100_000
_PROFILE_RUNS = 30
_IMAGE_SEED = 0


@dataclass(frozen=True)
class BenchSettings:
    """What every session of one benchmark shares (built and checked by :func:`bench_settings`)."""

    threads: int
    warmup: int
    runs: int
    min_seconds: float | None
    end_to_end: bool
    profile: bool
    testpack: Path | None
    providers: tuple[str, ...] | None
    image: np.ndarray | None


def bench_settings(
    threads: Any, warmup: Any, runs: Any, min_seconds: Any, end_to_end: Any, profile: Any, testpack: Any,
    providers: Any, image: Any,
) -> BenchSettings:
    """The checked settings of :func:`~roverlite.deploy.bench.bench_artifact` (``threads=None``: all usable cores)."""
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
    return BenchSettings(
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


class BenchSession:
    """One loaded model and its measurements; the steps of a benchmark, callable in rounds."""

    def __init__(self, path: Path, runtime: str, settings: BenchSettings) -> None:
        self.path, self.runtime, self.settings = path, runtime, settings
        self.host = host_info()
        self.timestamp = utc_timestamp()
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
        # Memory as deployed: read before the optional passes (the accuracy pass loads a test pack).
        rss = current_rss_mb()
        peak = peak_rss_mb()
        # ru_maxrss is updated lazily by the kernel: never report a peak below the current size.
        peak = rss if peak is None else (peak if rss is None else max(peak, rss))
        end_to_end = self._end_to_end() if self.settings.end_to_end else None
        accuracy = self._accuracy() if self.settings.testpack is not None else None
        profile = self._profile(latency.p50) if self.settings.profile else None
        s = self.sidecar
        cost = (s.cost or {}) if s is not None else {}
        macs = cost.get("macs")
        if profile and not macs:
            macs = profile.get("estimated_macs") or None
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
        pack = load_testpack(self.settings.testpack)
        result = evaluate_artifact(self.segmenter, pack.images, pack.masks)  # the timed runner
        return {
            "miou": result["miou"],
            "per_class_iou": result["per_class_iou"],
            "pixel_accuracy": result.get("pixel_accuracy"),
            "confusion_matrix": result.get("confusion_matrix"),
            **({"hazards": result["hazards"]} if result.get("hazards") else {}),
            "images": result["images"],
            "ms_per_image": round(result["ms_per_image"], 4),
            "testpack": str(self.settings.testpack),
        }

    def _profile(self, p50_ms: float) -> dict[str, Any]:
        content = self.path.read_bytes()
        runs = min(self.settings.runs, _PROFILE_RUNS)
        if self.runtime == "litert":
            return profile_tflite(content, self.sample, self.settings.threads, runs, delegated_p50_ms=p50_ms)
        providers = self._providers()
        return profile_onnx(content, self.sample, self.runner.input.name, self.settings.threads, runs, providers)

    def _providers(self) -> list[str]:
        backend = self.runner.backend  # onnxruntime:Provider1,Provider2
        return backend.split(":", 1)[1].split(",") if ":" in backend else ["CPUExecutionProvider"]
