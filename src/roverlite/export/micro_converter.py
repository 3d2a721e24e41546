"""The ``c_array`` format's converter: full-int8 TFLite that TFLite-Micro can run.

It sits below the format table (:mod:`roverlite.export.formats`) with the other converters; the
C sources and the TFLite-Micro check of a finished export live in :mod:`roverlite.export.micro`,
above :func:`roverlite.export.export_model`.
"""

from __future__ import annotations

from typing import Any

from roverlite.export.micro_probe import check_micro_ops
from roverlite.export.tflite import convert_int8

__all__ = ["convert_c_array"]


def convert_c_array(model: Any, calibration: Any = None, int8_io: bool = True) -> bytes:
    """Full-int8 TFLite (batch 1, int8 I/O) that TFLite-Micro can run.

    Raises:
        ValueError: ``int8_io=False`` (the MCU example feeds int8 pixels and a float input tensor
            would cost 4x the RAM), missing calibration, or ops TFLite-Micro lacks (named).
    """
    if int8_io is not True:
        raise ValueError(
            "Format 'c_array' needs int8 input and output (the MCU feeds quantized pixels; a float "
            f"input tensor costs 4x the arena). Received: int8_io={int8_io!r} (--float-io)."
        )
    content = convert_int8(model, calibration, int8_io=True)
    check_micro_ops(content)
    return content
