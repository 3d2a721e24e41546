"""The export formats: one table keyed by name, never positional flags or indices.

Each row is a :class:`roverlite.core.formats.FormatSpec` (how an artifact is named, which device
runtime reads it, how its self-check judges it: ``precision`` float32 / float16 formats are compared
logit by logit with the Keras model, quantized ones by their per-class IoU) plus the converter that
makes it. The facts live in ``roverlite.core`` so that the report and the device can read them
without the exporters; this module adds only the converters.

Each row also owns its finishing step, ``finish(result, settings) -> result``, run by
:func:`roverlite.export.export_model` after the artifact is written and self-checked (nothing for
most formats). The ``c_array`` row is an int8 ``.tflite`` that TFLite-Micro can run (its converter,
:mod:`roverlite.export.micro_converter`, refuses ops TFLite-Micro lacks); its ``finish``
(:mod:`roverlite.export.micro_finish`) checks it under TFLite-Micro and writes it out as C sources. Its ``runtime`` stays ``litert``; the
TFLite-Micro facts (ops, arena) go into the sidecar's ``tflite_micro`` section.

Importing this module does not import TensorFlow: converters import it when they run, so the
CLI can list formats instantly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from roverlite.core.formats import FLOAT_PRECISIONS, FORMAT_SPECS, PRECISIONS, RUNTIMES, FormatSpec, get_spec, list_formats
from roverlite.export import micro_converter, micro_finish
from roverlite.export import onnx as onnx_export
from roverlite.export import tflite as tflite_export

__all__ = [
    "FLOAT_PRECISIONS", "FORMATS", "PRECISIONS", "RUNTIMES", "ExportFormat", "get_format", "list_formats",
]

# convert(Keras model, calibration float32 (N, H, W, C) or None, int8_io) -> artifact bytes
Converter = Callable[[Any, Any, bool], bytes]
# finish(ExportResult, ExportSettings) -> the format's result (the same one when it has nothing to add)
Finisher = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class ExportFormat(FormatSpec):
    """One row of the format table: the format's facts (:class:`FormatSpec`) and its converter.

    Attributes:
        convert: ``convert(model, calibration, int8_io) -> bytes``.
        finish: ``finish(result, settings) -> result``, the format's own step after its self-check.
    """

    convert: Converter
    finish: Finisher


_CONVERTERS: Mapping[str, Converter] = {
    "tflite": tflite_export.convert_float32,
    "tflite_fp16": tflite_export.convert_float16,
    "tflite_dynamic": tflite_export.convert_dynamic,
    "tflite_int8": tflite_export.convert_int8,
    "c_array": micro_converter.convert_c_array,
    "onnx": onnx_export.convert_float32,
    "onnx_int8": onnx_export.convert_int8,
}


def _no_finish(result: Any, settings: Any) -> Any:
    return result


_FINISHERS: Mapping[str, Finisher] = {"c_array": micro_finish.finish_c_array_format}

FORMATS: Mapping[str, ExportFormat] = MappingProxyType(
    {
        name: ExportFormat(
            **{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)},
            convert=_CONVERTERS[name],
            finish=_FINISHERS.get(name, _no_finish),
        )
        for name, spec in FORMAT_SPECS.items()
    }
)


def get_format(name: str) -> ExportFormat:
    """The table row for ``name``.

    Raises:
        ValueError: unknown name, with the closest known one suggested.
    """
    return FORMATS[get_spec(name).name]  # the same keys: get_spec raises for an unknown name
