"""Which layers an int8 conversion hurts most: TFLite's QuantizationDebugger, summarised per layer.

``tf.lite.experimental.QuantizationDebugger`` converts the model with calibration only, inserts a
``NumericVerify`` op after every quantized op (comparing its dequantized output with the float op
fed the same input) and runs a few images through it. :func:`debug_quantization` turns its
per-layer statistics into a short table ranked by ``rmse / scale``, the error in units of the
layer's quantization step: pure rounding noise is about ``1 / sqrt(12) = 0.29``; layers far above
1 lose accuracy to clipped ranges or accumulated error, and are the first to try keeping in float
or to give QAT.

The debugger calibrates a float model itself, so it describes post-training int8 quantization
(and the same calibration images as the export give the same scales). A QAT model carries learnt
ranges instead and has nothing to calibrate; it is skipped with the reason recorded.

Cheap by design: a few images (``QDebugConfig.images``), statistics only, no extra files. The
table goes into the step's ``gate.json`` beside the accuracy comparison.

Example:
    >>> table = debug_quantization(model, normalised_calibration, images=8, top_k=5)  # doctest: +SKIP
    >>> print(format_table(table))                                                   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from roverlite._tf import tf
from roverlite.compress.qat import is_quantize_wrapped
from roverlite.config import ConfigError
from roverlite.export.source import batch_one_function

__all__ = ["QDebugConfig", "debug_quantization", "format_table"]

logger = logging.getLogger(__name__)

# "model/enc0_1_act/Relu;model/enc0_1_conv/Conv2D" -> the Keras layer names fused into one op.
_LAYER_IN_TENSOR = re.compile(r"^[^/]+/([^/]+)/")


@dataclass(frozen=True)
class QDebugConfig:
    """Settings of the per-layer quantization table of int8 TFLite artifacts.

    Attributes:
        enabled: compute the table for int8 TFLite artifacts of float (non-QAT) models.
        images: calibration images run through the debug model.
        top_k: layers listed, worst first.
    """

    enabled: bool = True
    images: int = 8
    top_k: int = 5

    def __post_init__(self) -> None:
        for key in ("images", "top_k"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"Expected gate.qdebug.{key} to be an integer >= 1. Received: {key}={value!r}.")


def debug_quantization(model: Any, calibration: np.ndarray, images: int = 8, top_k: int = 5) -> dict[str, Any]:
    """Per-layer int8 quantization error of ``model``, worst layers first.

    Args:
        model: a float tf_keras model (a QAT model is skipped, see the module docstring).
        calibration: normalised float32 ``(N, H, W, C)`` images; all of them calibrate the
            ranges (as the export does), the first ``images`` are run through the debug model.
        images: images run through the debug model.
        top_k: rows kept.

    Returns:
        ``{"images", "layers", "ranked_by", "top": [row, ...]}`` with rows ``{"layer", "op",
        "scale", "zero_point", "rmse", "rmse_over_scale", "max_abs_error", "mean_error"}``;
        or ``{"skipped": reason}`` for a QAT model; or ``{"error": message}`` when the debugger
        fails (it is a diagnostic: it never stops a recipe).
    """
    if is_quantize_wrapped(model):
        return {"skipped": "QAT model: its ranges are learnt, the debugger has nothing to calibrate"}
    calibration = np.asarray(calibration, dtype=np.float32)
    try:
        rows = _layer_rows(model, calibration, max(1, min(images, len(calibration))))
    except (ValueError, RuntimeError) as err:
        logger.warning("quantization debugger failed: %s", str(err).splitlines()[0][:200])
        return {"error": str(err).splitlines()[0][:500]}
    rows.sort(key=lambda r: -_sort_value(r["rmse_over_scale"]))
    table = {
        "images": min(images, len(calibration)),
        "layers": len(rows),
        "ranked_by": "rmse_over_scale",
        "top": rows[:top_k],
    }
    logger.info("int8 quantization error, worst layers:\n%s", format_table(table))
    return table


def format_table(table: dict[str, Any]) -> str:
    """The table as aligned text, one layer per line (or the skip / error reason)."""
    if "top" not in table:
        return str(table.get("skipped") or table.get("error"))
    lines = [f"{'layer':<40} {'op':<16} {'rmse/scale':>10} {'rmse':>10} {'scale':>10}"]
    for row in table["top"]:
        lines.append(
            f"{row['layer'][:40]:<40} {row['op'][:16]:<16} {row['rmse_over_scale']:>10.3f} "
            f"{row['rmse']:>10.4g} {row['scale']:>10.4g}"
        )
    return "\n".join(lines)


# === Helpers ===


def _layer_rows(model: Any, calibration: np.ndarray, images: int) -> list[dict[str, Any]]:
    with warnings.catch_warnings():
        # The debugger runs tf.lite.Interpreter internally, which warns that it is deprecated.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=_calibrating_converter(model, calibration),
            debug_dataset=lambda: ([image[None]] for image in calibration[:images]),
        )
        debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    return [_row(raw) for raw in csv.DictReader(io.StringIO(buffer.getvalue()))]


def _calibrating_converter(model: Any, calibration: np.ndarray) -> Any:
    function = batch_one_function(model)
    # A bare Module holding the variables saves much faster than the Keras model (see export.tflite).
    holder = tf.Module()
    holder.model_variables = list(model.variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], holder)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = lambda: ([image[None]] for image in calibration)
    return converter


def _row(raw: dict[str, str]) -> dict[str, Any]:
    scale = _number(raw.get("scale"))
    rmse = math.sqrt(max(_number(raw.get("mean_squared_error")), 0.0))
    return {
        "layer": _layer_name(raw.get("tensor_name", "")),
        "op": raw.get("op_name", ""),
        "scale": scale,
        "zero_point": int(_number(raw.get("zero_point"))),
        "rmse": rmse,
        "rmse_over_scale": rmse / scale if scale > 0 else float("nan"),
        "max_abs_error": _number(raw.get("max_abs_error")),
        "mean_error": _number(raw.get("mean_error")),
    }


def _layer_name(tensor_name: str) -> str:
    names = [m.group(1) for part in tensor_name.split(";") if (m := _LAYER_IN_TENSOR.match(part))]
    return "+".join(dict.fromkeys(names)) or tensor_name


def _number(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _sort_value(value: float) -> float:
    return value if math.isfinite(value) else -1.0
