"""ONNX converters: tf2onnx at opset 17 with a batch-1 signature, and static int8 (QDQ).

tf2onnx reads ``TF_USE_LEGACY_KERAS`` when it first imports TensorFlow, so it is imported only
after ``roverlite._tf`` (which sets it) and only inside the functions that convert. BatchNorm
folds into the convolutions during conversion. The int8 variant follows ONNX Runtime's recipe:
``quant_pre_process`` (symbolic shape inference skipped, which would need sympy and adds nothing
for fixed shapes), then ``quantize_static`` with QDQ nodes, int8 activations and per-channel int8
weights, calibrated on the same images as TFLite's int8. Its I/O stays float32 (QDQ keeps the
quantization inside the graph), so ``int8_io`` does not apply to it.

Weights use 7 bits (``reduce_range=True``). Measured on the tiny test U-Net: with full 8-bit
per-channel weights, ONNX Runtime's fused x86 int8 convolution saturates its 16-bit pair sums
(the u8s8 path) and the logits were off by up to 3.5 (88 % argmax agreement), while the same graph
run unfused was within 0.18; with 7-bit weights the fused kernels agree (max error 0.18, 99.6 %).
ARM's signed dot products do not saturate, but an artifact is made once and run on both, and the
self-check runs here, on x86.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.export.source import check_calibration, check_exportable, input_name

__all__ = ["OPSET", "convert_float32", "convert_int8", "keras_to_onnx", "quantize_qdq"]

logger = logging.getLogger(__name__)

OPSET = 17


def convert_float32(model: Any, calibration: Any = None, int8_io: bool = True) -> bytes:
    """Float32 ONNX bytes (``calibration`` and ``int8_io`` unused: the table's common signature)."""
    return keras_to_onnx(model).SerializeToString()


def convert_int8(model: Any, calibration: Any = None, int8_io: bool = True) -> bytes:
    """Static int8 QDQ ONNX bytes calibrated on normalised ``calibration`` images (float I/O).

    Raises:
        ValueError: missing, empty or wrong-shape calibration (checked before converting).
    """
    calibration = check_calibration(calibration, check_exportable(model))
    if int8_io:
        logger.debug("onnx_int8 keeps float32 I/O (QDQ); int8_io applies to TFLite only")
    return quantize_qdq(convert_float32(model), calibration)


def keras_to_onnx(model: Any) -> Any:
    """A checked ``onnx.ModelProto`` of ``model`` with input ``[1, H, W, C]`` float32.

    Raises:
        ValueError: the model does not have one fixed-size image input, still has pruning wrappers,
            or tf2onnx left non-ONNX ops in the graph.
    """
    import onnx
    import tf2onnx

    from roverlite._tf import tf

    height, width, channels = check_exportable(model)
    signature = (tf.TensorSpec((1, height, width, channels), tf.float32, name=input_name(model)),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        # Seen with TFMOT QAT models: their FakeQuantWithMinMaxVars nodes stay TensorFlow ops.
        raise ValueError(
            f"tf2onnx produced an invalid ONNX graph for model {model.name!r}. Expected standard ONNX ops at "
            f"opset {OPSET} (a QAT model exports to tflite_int8, not ONNX). Received: {str(err).splitlines()[0]}"
        ) from None
    return proto


def quantize_qdq(
    float_model: bytes, calibration: np.ndarray, per_channel: bool = True, reduce_range: bool = True
) -> bytes:
    """Quantize float ONNX bytes to int8 QDQ with MinMax ranges from ``calibration``.

    Args:
        float_model: float32 ONNX bytes.
        calibration: normalised float32 ``(N, H, W, C)`` images.
        per_channel: one weight scale per output channel (better accuracy for folded BatchNorm).
        reduce_range: 7-bit weights, avoiding int16 saturation in x86 int8 kernels (see above).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self, input_name: str) -> None:
            self._items = iter([{input_name: image[None].astype(np.float32)} for image in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    input_name = onnx.load_from_string(float_model).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="roverlite-onnx-") as tmp:
        source, prepared, quantized = (Path(tmp) / n for n in ("float.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(float_model)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            _Reader(input_name),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
        )
        content = quantized.read_bytes()
    onnx.checker.check_model(onnx.load_from_string(content))
    return content
