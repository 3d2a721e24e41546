"""TFLite-Micro: the ``c_array`` export, an int8 ``.tflite`` proven to run under TFLite-Micro, as C sources.

The format-table converter (:func:`convert_c_array`) is the full-int8 TFLite converter (batch 1,
builtin ops, int8 I/O) followed by a run under TFLite-Micro's own interpreter (the ``tflite-micro``
package): a model using an op TFLite-Micro does not implement (``TILE``, ``TOPK_V2``, ...) is
refused with a ``ValueError`` naming every such op. The format's ``finish`` step
(:func:`roverlite.export.micro_finish.finish_c_array`, run by :func:`roverlite.export.export_model`) then

* measures the smallest tensor arena the model allocates in (binary search over ``arena_size``),
* runs the check images under TFLite-Micro and under LiteRT's reference kernels and compares the
  int8 outputs (the two share the reference kernels, so they agree bit for bit),
* writes ``<artifact stem>/`` beside the artifact: ``model_data.cc`` / ``model_data.h``
  (``alignas(16) const unsigned char g_model_data[]``, ``g_model_data_len`` and the model's I/O
  constants), ``model_ops.h`` (a ``tflite::MicroMutableOpResolver<N>`` registering exactly the
  model's ops, and the arena size) and ``test_image.h`` (the first check image, quantized, with the
  class pixel counts TFLite-Micro produced for it on the host),
* adds a ``tflite_micro`` section (ops, arena bytes, C files, the comparison) to the sidecar.

The runs under TFLite-Micro and the checks live in :mod:`roverlite.export.micro_probe` (with
:mod:`roverlite.export.micro_interpreter`, the child-process side), the C source text in
:mod:`roverlite.export.c_array`, the converter in :mod:`roverlite.export.micro_converter`, the
finishing step in :mod:`roverlite.export.micro_finish`; their public names are re-exported here.
There is no separate entry point: ``export_model(model, ExportSettings("c_array", ...))`` (or
``ExportSettings.from_run``) is how a C array is exported.

The sidecar keeps ``runtime="litert"``: the ``.tflite`` file is what LiteRT reads for the export's
self-check and on a Pi, and the device-side sidecar schema knows ``litert`` and ``onnxruntime``
only. TFLite-Micro facts live in the sidecar's ``tflite_micro`` section, which the reader ignores.

Example:
    >>> (result,) = export_model(model, ExportSettings("c_array", "exports", cfg.data,
    ...     calibration_images=train_images, check_images=val_images, check_masks=val_masks))  # doctest: +SKIP
    >>> result.arena_bytes, result.ops                                           # doctest: +SKIP
    (297984, ('CONV_2D', 'MAX_POOL_2D', 'CONCATENATION', 'RESIZE_NEAREST_NEIGHBOR'))
"""

from __future__ import annotations

from roverlite.export.c_array import (  # re-exported
    make_test_image,
    model_data_sources,
    model_ops_header,
    parse_c_array,
    resolver_method,
    test_image_header,
)
from roverlite.export.micro_converter import convert_c_array  # re-exported: the format table's converter
from roverlite.export.micro_finish import C_ARRAY_FORMAT, MicroExportResult, finish_c_array  # re-exported
from roverlite.export.micro_probe import (  # re-exported
    ARENA_ALIGNMENT,
    DEFAULT_ARENA_MARGIN,
    MicroProbe,
    check_micro_ops,
    measure_arena,
    model_ops,
    probe_micro,
    recommended_arena,
    run_reference,
)

__all__ = [
    "ARENA_ALIGNMENT",
    "C_ARRAY_FORMAT",
    "DEFAULT_ARENA_MARGIN",
    "MicroExportResult",
    "MicroProbe",
    "check_micro_ops",
    "convert_c_array",
    "finish_c_array",
    "make_test_image",
    "measure_arena",
    "model_data_sources",
    "model_ops",
    "model_ops_header",
    "parse_c_array",
    "probe_micro",
    "recommended_arena",
    "resolver_method",
    "run_reference",
    "test_image_header",
]

