"""C sources of the ``c_array`` export: the model as a C array, its op resolver, a test image.

* ``model_data.cc`` / ``model_data.h`` (:func:`model_data_sources`): ``alignas(16) const unsigned
  char g_model_data[]``, ``g_model_data_len`` and the model's I/O, normalisation and class constants,
* ``model_ops.h`` (:func:`model_ops_header`): a ``tflite::MicroMutableOpResolver<N>`` registering
  exactly the model's ops (:func:`resolver_method` names each call), and the arena size,
* ``test_image.h`` (:func:`test_image_header`, or :func:`make_test_image` for any image and a
  ``c_array`` artifact): one quantized input and the class pixel counts TFLite-Micro produced for it.

:func:`parse_c_array` reads the bytes back from generated source (the export's round-trip check).

Example:
    >>> resolver_method("CONV_2D")
    'AddConv2D'
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.core.preprocessing import Preprocessing
from roverlite.deploy.segmenter import Segmenter
from roverlite.export.micro_probe import check_inputs, probe_micro, probe_outputs

__all__ = [
    "make_test_image",
    "model_data_sources",
    "model_ops_header",
    "parse_c_array",
    "resolver_method",
    "test_image_header",
]

_C_ARRAY_COLUMNS = 12
# MicroMutableOpResolver method names that are not the op name in CamelCase
# (tensorflow/lite/micro/micro_mutable_op_resolver.h).
_RESOLVER_METHOD_EXCEPTIONS = {
    "PADV2": "AddPadV2",
    "CUMSUM": "AddCumSum",
    "BATCH_MATMUL": "AddBatchMatMul",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
}


def resolver_method(op_name: str) -> str:
    """The ``tflite::MicroMutableOpResolver`` method registering builtin ``op_name`` (``CONV_2D`` -> ``AddConv2D``)."""
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", op_name or ""):
        raise ValueError(f"Expected a TFLite builtin op name such as 'CONV_2D'. Received: {op_name!r}.")
    if op_name in _RESOLVER_METHOD_EXCEPTIONS:
        return _RESOLVER_METHOD_EXCEPTIONS[op_name]
    # Tokens starting with a digit keep their case ("2D"); others are capitalised ("V2", "Nd").
    return "Add" + "".join(t if t[:1].isdigit() else t.capitalize() for t in op_name.split("_") if t)


def model_data_sources(
    content: bytes,
    provenance: str,
    input_spec: Mapping[str, Any],
    output_spec: Mapping[str, Any],
    classes: Sequence[str],
    preprocessing: Preprocessing,
) -> tuple[str, str]:
    """``(model_data.h, model_data.cc)``: the model as ``alignas(16) const unsigned char g_model_data[]``.

    ``model_data.h`` also carries the input/output shape and quantization, the normalisation (the
    sidecar's :class:`~roverlite.core.preprocessing.Preprocessing`) and the class names, so firmware
    can quantize camera pixels without reading the sidecar.
    """
    height, width, channels = (int(v) for v in input_spec["shape"][1:4])
    num_classes = int(output_spec["shape"][3])
    mean, std = preprocessing.mean, preprocessing.std
    header = f"""\
// {provenance}
// The model flatbuffer for TFLite-Micro and the constants needed to feed it. Do not edit.
#ifndef ROVERLITE_MODEL_DATA_H_
#define ROVERLITE_MODEL_DATA_H_

#include <cstdint>

// TFLite-Micro reads the flatbuffer in place: keep it 16-byte aligned (model_data.cc does).
extern const unsigned char g_model_data[];
extern const unsigned int g_model_data_len;

namespace roverlite {{

// Input: int8 [1, {height}, {width}, {channels}] NHWC. A camera pixel p (0..255) becomes
//   q = round(((p * kPixelScale - kInputMean[c]) / kInputStd[c]) / kInputScale) + kInputZeroPoint,
// clamped to -128..127 (the same arithmetic as roverlite.deploy.Segmenter).
constexpr int kInputHeight = {height};
constexpr int kInputWidth = {width};
constexpr int kInputChannels = {channels};
constexpr float kInputScale = {_c_float(input_spec["scale"])};
constexpr int kInputZeroPoint = {int(input_spec["zero_point"])};
constexpr float kPixelScale = {_c_float(preprocessing.pixel_scale)};
constexpr float kInputMean[] = {{{", ".join(_c_float(v) for v in mean)}}};
constexpr float kInputStd[] = {{{", ".join(_c_float(v) for v in std)}}};

// Output: int8 [1, {height}, {width}, {num_classes}] logits; the class of a pixel is the argmax over
// its {num_classes} values (dequantizing first would not change it: the scale is positive).
constexpr int kNumClasses = {num_classes};
constexpr float kOutputScale = {_c_float(output_spec["scale"])};
constexpr int kOutputZeroPoint = {int(output_spec["zero_point"])};
constexpr const char* kClassNames[kNumClasses] = {{{", ".join(_c_string(c) for c in classes)}}};

}}  // namespace roverlite

#endif  // ROVERLITE_MODEL_DATA_H_
"""
    source = (
        f"// {provenance}\n// Do not edit: regenerate with `roverlite export --format c_array`.\n"
        '#include "model_data.h"\n\n'
        f"alignas(16) const unsigned char g_model_data[] = {{\n{_c_bytes(content)}}};\n"
        f"const unsigned int g_model_data_len = {len(content)};\n"
    )
    return header, source


def model_ops_header(
    ops: Sequence[str], arena_bytes: int, measured_bytes: int, margin: float, provenance: str, micro_version: str
) -> str:
    """``model_ops.h``: ``MicroMutableOpResolver<N>`` with exactly ``ops``, and the arena size."""
    if not ops:
        raise ValueError("Expected at least one op for the resolver. Received: none.")
    registrations = "\n".join(
        f"  if (resolver.{resolver_method(op)}() != kTfLiteOk) return kTfLiteError;  // {op}" for op in ops
    )
    return f"""\
// {provenance}
// The op resolver and tensor arena this model needs under TFLite-Micro. Do not edit.
#ifndef ROVERLITE_MODEL_OPS_H_
#define ROVERLITE_MODEL_OPS_H_

#include <cstddef>

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

namespace roverlite {{

// The builtin ops of the model, in order of first use: {", ".join(ops)}.
constexpr unsigned int kModelOpCount = {len(ops)};
using ModelOpResolver = tflite::MicroMutableOpResolver<kModelOpCount>;

// Smallest arena the model allocated in under TFLite-Micro {micro_version} (reference kernels,
// 64-bit host), measured by roverlite: {measured_bytes} bytes. kTensorArenaSize adds {margin:.0%} and rounds up to
// 1 KiB: a 32-bit MCU needs a little less for TFLite-Micro's own structs, while optimised kernels
// (CMSIS-NN, ESP-NN) may request scratch buffers the reference kernels do not. Check
// interpreter.arena_used_bytes() on the target (main.cc prints it) and shrink to fit.
constexpr size_t kTensorArenaMeasuredBytes = {measured_bytes};
constexpr size_t kTensorArenaSize = {arena_bytes};

// Registers exactly the ops above. Returns kTfLiteError if any registration fails.
inline TfLiteStatus RegisterModelOps(ModelOpResolver& resolver) {{
{registrations}
  return kTfLiteOk;
}}

}}  // namespace roverlite

#endif  // ROVERLITE_MODEL_OPS_H_
"""


def test_image_header(pixels: np.ndarray, expected_counts: Sequence[int], image_id: str, provenance: str) -> str:
    """``test_image.h``: one quantized int8 model input and the class pixel counts expected for it."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.int8 or pixels.ndim != 3:
        raise ValueError(
            f"Expected a quantized int8 image (H, W, C). Received: dtype={pixels.dtype}, shape={pixels.shape}."
        )
    counts = ", ".join(str(int(c)) for c in expected_counts)
    return f"""\
// {provenance}
// A test image already resized, normalised and quantized to the model's int8 input, with the
// per-class pixel counts TFLite-Micro produced for it on the host. Do not edit.
#ifndef ROVERLITE_TEST_IMAGE_H_
#define ROVERLITE_TEST_IMAGE_H_

#include <cstdint>

namespace roverlite {{

constexpr const char* kTestImageId = {_c_string(image_id)};
constexpr int kTestImageBytes = {pixels.size};
alignas(16) inline constexpr int8_t kTestImage[kTestImageBytes] = {{
{_c_bytes(pixels.tobytes(), signed=True)}}};
// Pixels per class (argmax of the int8 logits) computed by TFLite-Micro on the host.
constexpr int kExpectedClassCounts[] = {{{counts}}};

}}  // namespace roverlite

#endif  // ROVERLITE_TEST_IMAGE_H_
"""


def make_test_image(artifact: str | os.PathLike, image: np.ndarray, image_id: str = "image") -> str:
    """``test_image.h`` for one uint8 image (any size) and a ``c_array`` artifact with its sidecar.

    The image is preprocessed and quantized as ``roverlite.deploy`` does on a device, run under
    TFLite-Micro here, and its class pixel counts are stored for the MCU to compare against.

    Raises:
        ValueError: the artifact is refused by its sidecar, or the image is not an image.
    """
    segmenter = Segmenter(artifact)
    inputs, ids = check_inputs(segmenter, np.asarray(image)[None], [image_id])
    content = Path(artifact).read_bytes()
    probe = probe_micro(content, inputs=inputs, measure=False)
    counts = np.bincount(probe_outputs(probe)[0].argmax(-1).ravel(), minlength=segmenter.sidecar.num_classes)
    provenance = f"Generated by roverlite.export.micro.make_test_image for {Path(artifact).name}."
    return test_image_header(inputs[0], counts.tolist(), ids[0], provenance)


def parse_c_array(text: str, symbol: str = "g_model_data") -> bytes:
    """The bytes of the C array ``symbol`` in generated source ``text`` (checks the ``_len`` constant).

    Raises:
        ValueError: no such array, or its length constant disagrees with its contents.
    """
    body = re.search(rf"\b{re.escape(symbol)}\s*\[[^\]]*\]\s*=\s*\{{(.*?)\}};", text, flags=re.DOTALL)
    if body is None:
        raise ValueError(f"Expected a C array named {symbol!r}. Received: source without it.")
    values = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-fA-F]{2})", body.group(1)))
    length = re.search(rf"\b{re.escape(symbol)}_len\s*=\s*(\d+)\s*;", text)
    if length is not None and int(length.group(1)) != len(values):
        raise ValueError(
            f"C array {symbol!r} does not match its length constant. Expected {length.group(1)} bytes. "
            f"Received: {len(values)}."
        )
    return values


def _c_bytes(data: bytes, signed: bool = False) -> str:
    if signed:
        items = [str(v) for v in np.frombuffer(data, dtype=np.int8)]
    else:
        items = [f"0x{v:02x}" for v in data]
    rows = (items[i : i + _C_ARRAY_COLUMNS] for i in range(0, len(items), _C_ARRAY_COLUMNS))
    return "".join("    " + ", ".join(row) + ",\n" for row in rows)


def _c_float(value: Any) -> str:
    text = f"{float(np.float32(value)):.9g}"  # float32 round-trips in 9 significant digits
    return (text if any(c in text for c in ".e") else text + ".0") + "f"


def _c_string(value: str) -> str:
    return json.dumps(str(value))  # a JSON string of printable ASCII is a valid C string literal
