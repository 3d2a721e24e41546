"""This machine's arithmetic peak: the ceiling an artifact's GMAC/s is compared with.

The numbers (:class:`PeakResult`) and the timings that need only numpy and a runtime live here;
building the conv models to time needs TensorFlow, so the whole measurement is
:func:`roverlite.export.peak.measure_peak` (workstation only). The report reads a
:class:`PeakResult`, never measures one.

* **fp32 BLAS** (:func:`blas_gmacs`): an ``n x n x n`` float32 matrix product in numpy. It runs in
  a child process with ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set,
  because a BLAS library fixes its thread count when it loads and this process must not change its
  own environment.
* **LiteRT** (:func:`litert_gmacs`): a ``.tflite`` run on ai-edge-litert with XNNPACK exactly as
  artifacts are (same runner, same model call), best of several runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.deploy.runtime import load_runner

__all__ = ["PeakResult", "blas_gmacs", "litert_gmacs"]

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


def blas_gmacs(n: int, repeats: int, threads: int) -> float:
    """GMAC/s of the best of ``repeats`` float32 ``n x n x n`` matmuls in a child process on ``threads`` threads.

    Raises:
        RuntimeError: the child failed.
    """
    env = {**os.environ, **{name: str(threads) for name in _BLAS_THREAD_VARIABLES}}
    proc = subprocess.run(
        [sys.executable, "-c", _BLAS_CODE, str(n), str(repeats)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"matmul child exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    best = json.loads(proc.stdout.strip().splitlines()[-1])["best_s"]
    return n**3 / best / 1e9


def litert_gmacs(content: bytes, macs: int, repeats: int, threads: int, name: str) -> float:
    """GMAC/s of the best of ``repeats`` runs of the ``.tflite`` ``content`` (``macs`` per run) on LiteRT."""
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
