"""The export formats' facts: name, file suffix, runtime, precision. No converters here.

Everything that reads artifacts (the report, the device bench, the gate) needs to know what a
format *is*; only :mod:`roverlite.export.formats` needs to know how to *make* one (it adds a
converter to each row of this table). Keeping the facts here lets the report and the device
import them without TensorFlow or the exporters.

The ``c_array`` row is an int8 ``.tflite`` that TFLite-Micro can run; its ``runtime`` stays
``litert``: the ``.tflite`` is what LiteRT reads for the self-check (and on a Pi), and the device's
sidecar schema knows ``litert`` and ``onnxruntime`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from roverlite.core.errors import did_you_mean

__all__ = ["FLOAT_PRECISIONS", "FORMAT_SPECS", "PRECISIONS", "RUNTIMES", "FormatSpec", "get_spec", "list_formats"]

PRECISIONS = ("float32", "float16", "dynamic", "int8")
RUNTIMES = ("litert", "onnxruntime")
# Formats judged on logits (numerically close to Keras) rather than on IoU.
FLOAT_PRECISIONS = ("float32", "float16")


@dataclass(frozen=True)
class FormatSpec:
    """What one export format is.

    Attributes:
        name: the key users type (``tflite_int8``).
        suffix: appended to the model name to form the file name (``_tflite_int8.tflite``): the
            format's name is in every file name, so artifacts of one model never share a stem and
            each has its own ``<stem>.json`` sidecar.
        needs_calibration: whether the converter needs normalised calibration images.
        runtime: the device runtime that reads the artifact (``litert`` or ``onnxruntime``).
        precision: ``float32``, ``float16``, ``dynamic`` (int8 weights, float activations) or
            ``int8``; picks the self-check.
        description: one line for help texts.
    """

    name: str
    suffix: str
    needs_calibration: bool
    runtime: str
    precision: str
    description: str

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"Expected runtime in {RUNTIMES}. Received: runtime={self.runtime!r}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"Expected precision in {PRECISIONS}. Received: precision={self.precision!r}.")
        if self.precision == "int8" and not self.needs_calibration:
            raise ValueError(f"Format {self.name!r}: full int8 needs calibration images to set activation ranges.")

    @property
    def is_float(self) -> bool:
        """Whether the self-check compares logits (float formats) rather than IoU."""
        return self.precision in FLOAT_PRECISIONS


FORMAT_SPECS: Mapping[str, FormatSpec] = MappingProxyType(
    {
        f.name: f
        for f in (
            FormatSpec("tflite", "_tflite.tflite", False, "litert", "float32", "TFLite float32, builtin ops only"),
            FormatSpec(
                "tflite_fp16", "_tflite_fp16.tflite", False, "litert", "float16",
                "TFLite with float16 weights (half the size; Jetson/GPU delegates run it in fp16)",
            ),
            FormatSpec(
                "tflite_dynamic", "_tflite_dynamic.tflite", False, "litert", "dynamic",
                "TFLite dynamic range: int8 weights, float activations, no calibration",
            ),
            FormatSpec(
                "tflite_int8", "_tflite_int8.tflite", True, "litert", "int8",
                "TFLite full integer: int8 weights and activations, int8 (or float) I/O",
            ),
            FormatSpec(
                "c_array", "_c_array.tflite", True, "litert", "int8",
                "TFLite-Micro: full int8 checked under TFLite-Micro, plus model_data.cc/.h and model_ops.h",
            ),
            FormatSpec("onnx", "_onnx.onnx", False, "onnxruntime", "float32", "ONNX opset 17 float32 via tf2onnx"),
            FormatSpec(
                "onnx_int8", "_onnx_int8.onnx", True, "onnxruntime", "int8",
                "ONNX static int8 (QDQ, per-channel 7-bit weights), float I/O",
            ),
        )
    }
)


def list_formats() -> list[str]:
    """Format names in table order."""
    return list(FORMAT_SPECS)


def get_spec(name: str) -> FormatSpec:
    """The table row for ``name``.

    Raises:
        ValueError: unknown name, with the closest known one suggested.
    """
    spec = FORMAT_SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(
            f"Unknown export format. Expected one of {list_formats()}. Received: {name!r}."
            + did_you_mean(str(name), list_formats())
        )
    return spec
