"""The export formats: one table keyed by name, never positional flags or indices.

Each entry says how an artifact is named (``<model name><suffix>``), which converter makes it,
whether it needs calibration images, which device runtime reads it and how its self-check judges
it (``precision``: float32 / float16 formats are compared logit by logit with the Keras model,
quantized ones by their per-class IoU).

The ``c_array`` row is an int8 ``.tflite`` that TFLite-Micro can run (its converter refuses ops
TFLite-Micro lacks); :mod:`roverlite.export.micro` writes it out as C sources. Its ``runtime`` stays
``litert``: the ``.tflite`` is what LiteRT reads for the self-check (and on a Pi), and the device's
sidecar schema knows ``litert`` and ``onnxruntime`` only; the TFLite-Micro facts (ops, arena) go
into the sidecar's ``tflite_micro`` section.

Importing this module does not import TensorFlow: converters import it when they run, so the
CLI can list formats instantly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from roverlite.config import did_you_mean
from roverlite.export import micro as micro_export
from roverlite.export import onnx as onnx_export
from roverlite.export import tflite as tflite_export

__all__ = ["FORMATS", "PRECISIONS", "RUNTIMES", "ExportFormat", "get_format", "list_formats"]

PRECISIONS = ("float32", "float16", "dynamic", "int8")
RUNTIMES = ("litert", "onnxruntime")
# Formats judged on logits (numerically close to Keras) rather than on IoU.
FLOAT_PRECISIONS = ("float32", "float16")

# convert(Keras model, calibration float32 (N, H, W, C) or None, int8_io) -> artifact bytes
Converter = Callable[[Any, Any, bool], bytes]


@dataclass(frozen=True)
class ExportFormat:
    """One row of the format table.

    Attributes:
        name: the key users type (``tflite_int8``).
        suffix: appended to the model name to form the file name (``_tflite_int8.tflite``): the format's name is in every file name, so
            artifacts of one model never share a stem and each has its own ``<stem>.json`` sidecar.
        convert: ``convert(model, calibration, int8_io) -> bytes``.
        needs_calibration: whether ``convert`` needs normalised calibration images.
        runtime: the device runtime that reads the artifact (``litert`` or ``onnxruntime``).
        precision: ``float32``, ``float16``, ``dynamic`` (int8 weights, float activations) or
            ``int8``; picks the self-check.
        description: one line for help texts.
    """

    name: str
    suffix: str
    convert: Converter
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


FORMATS: Mapping[str, ExportFormat] = MappingProxyType(
    {
        f.name: f
        for f in (
            ExportFormat(
                "tflite", "_tflite.tflite", tflite_export.convert_float32, False, "litert", "float32",
                "TFLite float32, builtin ops only",
            ),
            ExportFormat(
                "tflite_fp16", "_tflite_fp16.tflite", tflite_export.convert_float16, False, "litert", "float16",
                "TFLite with float16 weights (half the size; Jetson/GPU delegates run it in fp16)",
            ),
            ExportFormat(
                "tflite_dynamic", "_tflite_dynamic.tflite", tflite_export.convert_dynamic, False, "litert", "dynamic",
                "TFLite dynamic range: int8 weights, float activations, no calibration",
            ),
            ExportFormat(
                "tflite_int8", "_tflite_int8.tflite", tflite_export.convert_int8, True, "litert", "int8",
                "TFLite full integer: int8 weights and activations, int8 (or float) I/O",
            ),
            ExportFormat(
                "c_array", "_c_array.tflite", micro_export.convert_c_array, True, "litert", "int8",
                "TFLite-Micro: full int8 checked under TFLite-Micro, plus model_data.cc/.h and model_ops.h",
            ),
            ExportFormat(
                "onnx", "_onnx.onnx", onnx_export.convert_float32, False, "onnxruntime", "float32",
                "ONNX opset 17 float32 via tf2onnx",
            ),
            ExportFormat(
                "onnx_int8", "_onnx_int8.onnx", onnx_export.convert_int8, True, "onnxruntime", "int8",
                "ONNX static int8 (QDQ, per-channel 7-bit weights), float I/O",
            ),
        )
    }
)


def list_formats() -> list[str]:
    """Format names in table order."""
    return list(FORMATS)


def get_format(name: str) -> ExportFormat:
    """The table row for ``name``.

    Raises:
        ValueError: unknown name, with the closest known one suggested.
    """
    fmt = FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise ValueError(
            f"Unknown export format. Expected one of {list_formats()}. Received: {name!r}."
            + did_you_mean(str(name), list_formats())
        )
    return fmt
