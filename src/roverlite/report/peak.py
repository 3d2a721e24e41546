"""This machine's arithmetic peak, measured: the ceiling an artifact's GMAC/s is compared with.

Three measurements, each the best of several runs at a fixed thread count:

* **fp32 BLAS**: an ``n x n x n`` float32 matrix product in numpy. It runs in a child process
  with ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set, because a BLAS
  library fixes its thread count when it loads and this process must not change its own
  environment.
* **fp32 and int8 LiteRT**: one large 3x3 ``CONV_2D`` (64x64x128 -> 128 channels by default,
  0.6 GMAC), built with tf_keras and converted with the project's own converter
  (:func:`roverlite.export.tflite.convert_tflite`, full int8 with int8 I/O), run on
  ai-edge-litert with XNNPACK exactly as artifacts are (same runner, same model call).

Small U-Nets reach a fraction of this (per-op overhead, memory traffic, small channel counts):
the report shows each artifact's MACs / p50 beside the matching peak.

Needs TensorFlow for the conv models (workstation only).

Example:
    >>> peak = measure_peak(threads=2)          # doctest: +SKIP
    >>> peak.int8_litert_gmacs, peak.fp32_blas_gmacs  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PeakResult", "measure_peak"]

logger = logging.getLogger(__name__)

_BLAS_CODE = """
import json, sys, time
import numpy as np
n, repeats = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
best = float("inf")
for _ in range(repeats):
    start = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - start)
print(json.dumps({"best_s": best}))
"""
_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
FLOAT_PRECISIONS = ("float32", "float16", "dynamic")


@dataclass(frozen=True)
class PeakResult:
    """Measured peaks in GMAC/s (``None`` where a measurement failed; the reason is in ``errors``).

    Attributes:
        threads: thread count of every measurement.
        fp32_blas_gmacs: numpy float32 matmul; ``blas_size`` its n.
        fp32_litert_gmacs, int8_litert_gmacs: the big CONV_2D on LiteRT; ``conv`` describes it.
        errors: measurements that failed, with why.
        cpu: the CPU measured.
    """

    threads: int
    fp32_blas_gmacs: float | None = None
    fp32_litert_gmacs: float | None = None
    int8_litert_gmacs: float | None = None
    blas_size: int | None = None
    conv: Mapping[str, Any] | None = None
    repeats: int | None = None
    errors: tuple[str, ...] = ()
    cpu: str | None = None

    def peak_for(self, precision: str | None) -> tuple[float | None, str]:
        """``(GMAC/s, label)`` of the peak matching an artifact's precision.

        int8 artifacts compare with the int8 conv; float ones (float32, float16 weights, dynamic
        range) with the better of the fp32 measurements.
        """
        if precision == "int8":
            return self.int8_litert_gmacs, "int8 LiteRT conv"
        candidates = [(v, label) for v, label in ((self.fp32_litert_gmacs, "fp32 LiteRT conv"),
                                                  (self.fp32_blas_gmacs, "fp32 BLAS matmul")) if v]
        if not candidates:
            return None, "fp32"
        return max(candidates)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["errors"] = list(self.errors)
        return out

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> PeakResult:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in value.items() if k in fields}
        values["errors"] = tuple(values.get("errors", ()))
        return cls(**values)


def measure_peak(
    threads: int | None = None,
    blas_size: int = 1024,
    conv_input: tuple[int, int, int] = (64, 64, 128),
    conv_filters: int = 128,
    repeats: int = 10,
    litert: bool = True,
) -> PeakResult:
    """Measure fp32 (numpy BLAS, LiteRT conv) and int8 (LiteRT conv) GMAC/s on this machine.

    Args:
        threads: threads for every measurement (``None`` = every core this process may use).
        blas_size: n of the ``n x n x n`` matmul (n³ MACs).
        conv_input, conv_filters: the 3x3 conv's ``(H, W, C_in)`` input and output channels
            (``H * W * C_out * 9 * C_in`` MACs).
        repeats: timed runs; the best (fastest) counts.
        litert: also measure the LiteRT convs (needs TensorFlow to build them).

    Raises:
        ValueError: non-positive sizes, threads or repeats.
    """
    from roverlite.deploy.hostinfo import cpu_model, usable_cpus

    threads = usable_cpus() if threads is None else threads
    for name, value in (("threads", threads), ("blas_size", blas_size), ("conv_filters", conv_filters),
                        ("repeats", repeats), *((f"conv_input[{i}]", v) for i, v in enumerate(conv_input))):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected {name} to be a positive integer. Received: {name}={value!r}.")
    errors = []
    fp32_blas = None
    try:
        fp32_blas = _blas_gmacs(blas_size, repeats, threads)
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as err:
        errors.append(f"fp32 BLAS: {err}")
    conv = {"input": [1, *conv_input], "filters": conv_filters, "kernel": [3, 3],
            "macs": int(conv_input[0] * conv_input[1] * conv_filters * 9 * conv_input[2])}
    fp32_litert = int8_litert = None
    if litert:
        try:
            fp32_content, int8_content = _conv_models(conv_input, conv_filters)
            fp32_litert = _litert_gmacs(fp32_content, conv["macs"], repeats, threads, "float32")
            int8_litert = _litert_gmacs(int8_content, conv["macs"], repeats, threads, "int8")
        except (ImportError, OSError, RuntimeError, ValueError) as err:
            errors.append(f"LiteRT conv: {type(err).__name__}: {err}")
    for message in errors:
        logger.warning("peak measurement failed: %s", message)
    return PeakResult(
        threads=threads,
        fp32_blas_gmacs=_round(fp32_blas),
        fp32_litert_gmacs=_round(fp32_litert),
        int8_litert_gmacs=_round(int8_litert),
        blas_size=blas_size,
        conv=conv if litert else None,
        repeats=repeats,
        errors=tuple(errors),
        cpu=cpu_model(),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _blas_gmacs(n: int, repeats: int, threads: int) -> float:
    env = {**os.environ, **{name: str(threads) for name in _BLAS_THREAD_VARIABLES}}
    proc = subprocess.run(
        [sys.executable, "-c", _BLAS_CODE, str(n), str(repeats)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"matmul child exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    best = json.loads(proc.stdout.strip().splitlines()[-1])["best_s"]
    return n**3 / best / 1e9


def _conv_models(hwc: tuple[int, int, int], filters: int) -> tuple[bytes, bytes]:
    """A single 3x3 conv as float32 and full-int8 TFLite bytes."""
    from roverlite._tf import keras
    from roverlite.export.tflite import convert_tflite

    keras.utils.set_random_seed(0)
    image = keras.Input(shape=hwc, batch_size=1, name="image")
    output = keras.layers.Conv2D(filters, 3, padding="same", name="peak_conv")(image)
    model = keras.Model(image, output, name="peak_conv")
    calibration = np.random.default_rng(0).standard_normal((4, *hwc)).astype(np.float32)
    return convert_tflite(model, "float32"), convert_tflite(model, "int8", calibration=calibration)


def _litert_gmacs(content: bytes, macs: int, repeats: int, threads: int, name: str) -> float:
    from roverlite.deploy.runtime import load_runner

    runner = load_runner(Path(f"peak_conv_{name}.tflite"), threads=threads, content=content)
    info = runner.input
    x = np.random.default_rng(0).standard_normal(info.shape).astype(np.float32)
    sample = info.quantize(x) if info.quantized else x
    for _ in range(3):  # first runs pack weights
        runner._invoke(sample)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        runner._invoke(sample)  # the same model call the artifact benchmarks time
        best = min(best, time.perf_counter() - start)
    return macs / best / 1e9
