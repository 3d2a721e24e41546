"""TFLite converters: float32, float16, dynamic range and full int8, builtin ops only.

Every converter runs ``tf.lite.TFLiteConverter.from_concrete_functions`` on the model traced with a
``[1, H, W, C]`` signature, with ``TFLITE_BUILTINS`` (``TFLITE_BUILTINS_INT8`` for full int8) and
never ``SELECT_TF_OPS``: a
Flex op needs the TensorFlow Flex delegate, which LiteRT on a robot and TFLite-Micro lack. After
conversion the op list is read back and any Flex or custom op refuses the artifact; a full-int8
model must also compute in integers throughout, with float tensors only at a QUANTIZE input edge
and a DEQUANTIZE output edge when float I/O was asked for.

Example:
    >>> content = convert_int8(model, calibration=normalised_images, int8_io=True)  # doctest: +SKIP
    >>> sorted({op.name for op in tflite_ops(content)})
    ['CONCATENATION', 'CONV_2D', 'MAX_POOL_2D', 'TRANSPOSE_CONV']
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from roverlite.deploy.runtime import tflite_interpreter_class
from roverlite.export.source import (
    batch_one_function,
    check_calibration,
    check_exportable,
)

__all__ = [
    "TFLiteOp",
    "check_builtin_ops",
    "convert_dynamic",
    "convert_float16",
    "convert_float32",
    "convert_int8",
    "convert_tflite",
    "float_ops",
    "tflite_ops",
]

logger = logging.getLogger(__name__)

TFLITE_PRECISIONS = ("float32", "float16", "dynamic", "int8")
# Builtin op names are upper snake case (CONV_2D); Flex and custom ops are not (FlexConv2D, MyOp).
_BUILTIN_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_FLOAT_TYPES = (np.float32, np.float16, np.float64)


@dataclass(frozen=True)
class TFLiteOp:
    """One operator of a TFLite graph, with the dtypes it reads and writes."""

    name: str
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


# === Converters (the format table's entries) ===


def convert_float32(model: Any, calibration: Any = None, int8_io: bool = True) -> bytes:
    """Float32 TFLite (``calibration`` and ``int8_io`` unused: the table's common signature)."""
    return convert_tflite(model, "float32")


def convert_float16(model: Any, calibration: Any = None, int8_io: bool = True) -> bytes:
    """Float16 weights, float32 I/O; CPUs dequantize the weights once at load."""
    return convert_tflite(model, "float16")


def convert_dynamic(model: Any, calibration: Any = None, int8_io: bool = True) -> bytes:
    """Dynamic range: int8 weights, activations quantized on the fly by hybrid kernels."""
    return convert_tflite(model, "dynamic")


def convert_int8(model: Any, calibration: Any = None, int8_io: bool = True) -> bytes:
    """Full integer int8 from normalised ``calibration`` images; int8 I/O unless ``int8_io=False``."""
    return convert_tflite(model, "int8", calibration=calibration, int8_io=int8_io)


def convert_tflite(model: Any, precision: str, calibration: Any = None, int8_io: bool = True) -> bytes:
    """Convert a tf_keras model to TFLite bytes.

    Args:
        model: a tf_keras model with one ``(batch, H, W, C)`` input (converted at batch 1).
        precision: ``float32``, ``float16``, ``dynamic`` or ``int8``.
        calibration: normalised float32 ``(N, H, W, C)`` images; required for ``int8`` (QAT
            models included), where every one of them is fed to the representative dataset.
        int8_io: for ``int8``: int8 input and output tensors (``False`` = float32 I/O with
            QUANTIZE / DEQUANTIZE at the edges).

    Raises:
        ValueError: unknown precision, missing / empty / wrong-shape calibration (before any
            conversion), or a converted model with Flex, custom or (for int8) float ops.
    """
    if precision not in TFLITE_PRECISIONS:
        raise ValueError(f"Expected precision in {TFLITE_PRECISIONS}. Received: precision={precision!r}.")
    hwc = check_exportable(model)
    if precision == "int8":
        calibration = check_calibration(calibration, hwc)
    from roverlite._tf import tf

    converter = _converter(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if precision == "int8":
        # Needed for QAT models too: TF 2.21's converter does not detect TFMOT's FakeQuant ops
        # ("a representative_dataset must be specified"); their learnt ranges are still kept.
        converter.representative_dataset = lambda: _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    content = converter.convert()
    check_builtin_ops(content)
    if precision == "int8":
        _check_integer(content, float_io=not int8_io)
    return content


def _converter(model: Any) -> Any:
    """A TFLite converter for ``model`` at batch 1."""
    from roverlite._tf import tf

    function = batch_one_function(model)
    # The converter saves its trackable argument as a SavedModel first. Given the tf_keras model it
    # re-traces every layer's call functions (6-9 s per conversion of the tiny test U-Net here);
    # a bare Module holding only the variables saves in well under a second (2.2 s in all).
    holder = tf.Module()
    holder.model_variables = list(model.variables)
    return tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], holder)


def _representative(calibration: np.ndarray) -> Iterator[list[np.ndarray]]:
    for image in calibration:
        yield [image[None].astype(np.float32)]


# === Reading a converted model back ===


def tflite_ops(content: bytes) -> list[TFLiteOp]:
    """The operators of a TFLite model in execution order, read with the device interpreter."""
    interpreter_class, _ = tflite_interpreter_class()
    interpreter = interpreter_class(model_content=content)
    # _get_ops_details is private but is the only op listing both LiteRT and tf.lite expose.
    return [
        TFLiteOp(
            name=str(op["op_name"]),
            input_types=tuple(np.dtype(t).name for t in op.get("operand_types", ())),
            output_types=tuple(np.dtype(t).name for t in op.get("result_types", ())),
            inputs=tuple(int(i) for i in op["inputs"]),
            outputs=tuple(int(i) for i in op["outputs"]),
        )
        for op in interpreter._get_ops_details()
    ]


def check_builtin_ops(content: bytes) -> None:
    """Refuse a model with Flex (SELECT_TF_OPS) or custom ops.

    Raises:
        ValueError: listing the offending ops.
    """
    bad = sorted({op.name for op in tflite_ops(content) if not _BUILTIN_NAME.fullmatch(op.name)})
    if bad:
        raise ValueError(
            f"Converted model needs non-builtin ops. Expected TFLite builtin ops only (no Flex/custom). "
            f"Received: {bad}."
        )


def float_ops(content: bytes, float_io: bool) -> list[str]:
    """Ops of a full-int8 model that read or write float tensors where integers are expected.

    With ``float_io`` the QUANTIZE that takes the float model input and the DEQUANTIZE that
    produces the float model output are allowed; nothing else may touch a float tensor.
    """
    ops = tflite_ops(content)
    bad = []
    for index, op in enumerate(ops):
        floats = [t for t in (*op.input_types, *op.output_types) if np.dtype(t).type in _FLOAT_TYPES]
        if not floats:
            continue
        edge = float_io and (
            (op.name == "QUANTIZE" and index == 0) or (op.name == "DEQUANTIZE" and index == len(ops) - 1)
        )
        if not edge:
            bad.append(f"{op.name}#{index}({','.join(op.input_types)}->{','.join(op.output_types)})")
    return bad


def _check_integer(content: bytes, float_io: bool) -> None:
    bad = float_ops(content, float_io)
    if bad:
        raise ValueError(
            "Full-int8 model computes in float. Expected integer ops only"
            + (" (QUANTIZE/DEQUANTIZE allowed at the float I/O edges)" if float_io else "")
            + f". Received: {bad[:8]}."
        )
