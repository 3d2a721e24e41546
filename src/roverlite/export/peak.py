"""Measuring this machine's peak: fp32 BLAS, and one large conv converted and run on LiteRT.

Three measurements, each the best of several runs at a fixed thread count (the timings are in
:mod:`roverlite.deploy.peak`, which also holds :class:`~roverlite.deploy.peak.PeakResult`):

* **fp32 BLAS**: an ``n x n x n`` float32 matrix product in numpy, in a child process;
* **fp32 and int8 LiteRT**: one large 3x3 ``CONV_2D`` (64x64x128 -> 128 channels by default,
  0.6 GMAC), built with tf_keras and converted with the project's own converter
  (:func:`roverlite.export.tflite.convert_tflite`, full int8 with int8 I/O), run on
  ai-edge-litert with XNNPACK exactly as artifacts are.

Small U-Nets reach a fraction of this (per-op overhead, memory traffic, small channel counts):
the report shows each artifact's MACs / p50 beside the matching peak. This module lives in
``export`` because building the conv needs TensorFlow and the converter; the report only reads
the result.

Example:
    >>> peak = measure_peak(threads=2)          # doctest: +SKIP
    >>> peak.int8_litert_gmacs, peak.fp32_blas_gmacs  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import subprocess

import numpy as np

from roverlite.deploy.hostinfo import cpu_model, usable_cpus
from roverlite.deploy.peak import PeakResult, blas_gmacs, litert_gmacs
from roverlite.export.tflite import convert_tflite

__all__ = ["PeakResult", "measure_peak"]

logger = logging.getLogger(__name__)


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
    threads = usable_cpus() if threads is None else threads
    for name, value in (("threads", threads), ("blas_size", blas_size), ("conv_filters", conv_filters),
                        ("repeats", repeats), *((f"conv_input[{i}]", v) for i, v in enumerate(conv_input))):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected {name} to be a positive integer. Received: {name}={value!r}.")
    errors = []
    fp32_blas = None
    try:
        fp32_blas = blas_gmacs(blas_size, repeats, threads)
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as err:
        errors.append(f"fp32 BLAS: {err}")
    conv = {"input": [1, *conv_input], "filters": conv_filters, "kernel": [3, 3],
            "macs": int(conv_input[0] * conv_input[1] * conv_filters * 9 * conv_input[2])}
    fp32_litert = int8_litert = None
    if litert:
        try:
            fp32_content, int8_content = _conv_models(conv_input, conv_filters)
            fp32_litert = litert_gmacs(fp32_content, conv["macs"], repeats, threads, "float32")
            int8_litert = litert_gmacs(int8_content, conv["macs"], repeats, threads, "int8")
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


def _conv_models(hwc: tuple[int, int, int], filters: int) -> tuple[bytes, bytes]:
    """A single 3x3 conv as float32 and full-int8 TFLite bytes."""
    from roverlite._tf import keras  # imports TensorFlow

    keras.utils.set_random_seed(0)
    image = keras.Input(shape=hwc, batch_size=1, name="image")
    output = keras.layers.Conv2D(filters, 3, padding="same", name="peak_conv")(image)
    model = keras.Model(image, output, name="peak_conv")
    calibration = np.random.default_rng(0).standard_normal((4, *hwc)).astype(np.float32)
    return convert_tflite(model, "float32"), convert_tflite(model, "int8", calibration=calibration)
