"""TFLite-Micro: the ``c_array`` export, an int8 ``.tflite`` proven to run under TFLite-Micro, as C sources.

The format-table converter (:func:`convert_c_array`) is the full-int8 TFLite converter (batch 1,
builtin ops, int8 I/O) followed by a run under TFLite-Micro's own interpreter (the ``tflite-micro``
package): a model using an op TFLite-Micro does not implement (``TILE``, ``TOPK_V2``, ...) is
refused with a ``ValueError`` naming every such op. :func:`export_c_array` then

* measures the smallest tensor arena the model allocates in (binary search over ``arena_size``),
* runs the check images under TFLite-Micro and under LiteRT's reference kernels and compares the
  int8 outputs (the two share the reference kernels, so they agree bit for bit),
* writes ``<artifact stem>/`` beside the artifact: ``model_data.cc`` / ``model_data.h``
  (``alignas(16) const unsigned char g_model_data[]``, ``g_model_data_len`` and the model's I/O
  constants), ``model_ops.h`` (a ``tflite::MicroMutableOpResolver<N>`` registering exactly the
  model's ops, and the arena size) and ``test_image.h`` (the first check image, quantized, with the
  class pixel counts TFLite-Micro produced for it on the host),
* adds a ``tflite_micro`` section (ops, arena bytes, C files, the comparison) to the sidecar.

TFLite-Micro's C++ runtime prints to the process's stdout/stderr and a failed allocation is
reported only there, so every TFLite-Micro run happens in a child Python process whose output is
captured and parsed: nothing leaks onto the user's terminal, and a crash inside the C++ kernels
cannot take the exporter down with it.

The sidecar keeps ``runtime="litert"``: the ``.tflite`` file is what LiteRT reads for the export's
self-check and on a Pi, and the device-side sidecar schema knows ``litert`` and ``onnxruntime``
only. TFLite-Micro facts live in the sidecar's ``tflite_micro`` section, which the reader ignores.

Example:
    >>> result = export_c_array(model, "exports", cfg.data, calibration_images=train_images,
    ...                         check_images=val_images, check_masks=val_masks)  # doctest: +SKIP
    >>> result.arena_bytes, result.ops                                           # doctest: +SKIP
    (297984, ('CONV_2D', 'MAX_POOL_2D', 'CONCATENATION', 'RESIZE_NEAREST_NEIGHBOR'))
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from roverlite.config import DataConfig
from roverlite.export.tflite import convert_int8, tflite_ops

if TYPE_CHECKING:
    from roverlite.export.verify import Tolerances

__all__ = [
    "ARENA_ALIGNMENT",
    "DEFAULT_ARENA_MARGIN",
    "MicroExportResult",
    "MicroProbe",
    "check_micro_ops",
    "convert_c_array",
    "export_c_array",
    "export_with_c_array",
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

logger = logging.getLogger(__name__)

C_ARRAY_FORMAT = "c_array"
# TFLite-Micro aligns tensors to 16 bytes; the arena search works in those steps.
ARENA_ALIGNMENT = 16
# Headroom over the arena measured here: a 32-bit MCU needs less for TFLite-Micro's own structs,
# but optimised kernels (CMSIS-NN, ESP-NN) may ask for scratch buffers the reference ones do not.
DEFAULT_ARENA_MARGIN = 0.10
_ARENA_ROUNDING = 1024
_ARENA_SEARCH_START = 16 * 1024
MAX_ARENA_BYTES = 64 * 1024 * 1024
_PROBE_TIMEOUT_S = 600
_PROBE_COMMAND = "import sys; from roverlite.export.micro import _probe_main; sys.exit(_probe_main(sys.argv[1]))"
# Set in the probe's child process: where TFLite-Micro's output goes (read back after a crash).
_LOG_FILE: Path | None = None
_C_ARRAY_COLUMNS = 12
_SENTINEL_OP = "roverlite_resolution_sentinel"
_MISSING_OP = re.compile(r"Didn't find op for (?:builtin|custom) opcode '([^']+)'")
_NODE_FAILED = re.compile(r"Node (\S+) \(number (\d+)f?\) failed to (prepare|invoke)")
# MicroMutableOpResolver method names that are not the op name in CamelCase
# (tensorflow/lite/micro/micro_mutable_op_resolver.h).
_RESOLVER_METHOD_EXCEPTIONS = {
    "PADV2": "AddPadV2",
    "CUMSUM": "AddCumSum",
    "BATCH_MATMUL": "AddBatchMatMul",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
}


# === Results ===


@dataclass(frozen=True)
class MicroProbe:
    """What a run under TFLite-Micro found.

    Attributes:
        missing_ops: builtin ops the TFLite-Micro op resolver lacks (empty when the model loads).
        arena_bytes: the smallest arena (multiple of 16 bytes) the model allocated in, or None
            when it was not measured or the model does not load.
        outputs: raw output tensors ``(N, ...)`` for the probed inputs, or None.
        input, output: TFLite-Micro's view of the I/O tensors (dtype, shape, scale, zero point).
        version: the ``tflite-micro`` package version.
    """

    missing_ops: tuple[str, ...]
    arena_bytes: int | None
    outputs: np.ndarray | None
    input: Mapping[str, Any]
    output: Mapping[str, Any]
    version: str


@dataclass(frozen=True)
class MicroExportResult:
    """A ``c_array`` export: the ``.tflite`` (with its LiteRT self-check) plus the C sources.

    Attributes:
        format, path, sidecar_path, size_bytes, sha256, check, passed: as in
            :class:`roverlite.export.ExportResult`; ``passed`` also requires TFLite-Micro to agree
            with LiteRT's reference kernels on every check image.
        c_dir: the folder holding ``model_data.cc``, ``model_data.h``, ``model_ops.h`` and (with
            check images) ``test_image.h``.
        c_files: file name -> path of each written C file.
        ops: builtin ops in order of first use (the resolver's registrations).
        arena_bytes: the arena constant written to ``model_ops.h`` (measured + margin, rounded).
        arena_bytes_measured: the smallest arena the model allocated in, on this host.
        micro_check: the TFLite-Micro vs LiteRT comparison (also in the sidecar).
    """

    format: str
    path: Path
    sidecar_path: Path
    size_bytes: int
    sha256: str
    check: Mapping[str, Any]
    passed: bool
    c_dir: Path
    c_files: Mapping[str, Path]
    ops: tuple[str, ...]
    arena_bytes: int
    arena_bytes_measured: int
    micro_check: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("path", "sidecar_path", "c_dir"):
            out[key] = str(out[key])
        out["c_files"] = {k: str(v) for k, v in self.c_files.items()}
        return out


# === The format-table converter ===


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


def model_ops(content: bytes) -> tuple[str, ...]:
    """The distinct builtin ops of a TFLite model, in order of first use."""
    seen: dict[str, None] = {}
    for op in tflite_ops(content):
        seen.setdefault(op.name, None)
    return tuple(seen)


def check_micro_ops(content: bytes) -> tuple[str, ...]:
    """Load the model under TFLite-Micro; return its ops, or refuse it naming every missing op.

    Raises:
        ValueError: ops TFLite-Micro does not implement, or a model it cannot prepare.
    """
    probe = probe_micro(content, measure=False)
    if probe.missing_ops:
        raise ValueError(
            f"Model uses ops TFLite-Micro {probe.version} does not implement. Expected only ops its op "
            "resolver registers (U-Net decoders: nearest UpSampling2D or Conv2DTranspose, not tf.tile). "
            f"Received: {list(probe.missing_ops)}."
        )
    return model_ops(content)


def measure_arena(content: bytes) -> int:
    """The smallest tensor arena, in bytes (a multiple of 16), the model allocates in under TFLite-Micro.

    Measured on this host: TFLite-Micro's bookkeeping structs hold pointers, so a 32-bit MCU
    needs a little less; optimised kernels may need scratch space the reference kernels do not.

    Raises:
        ValueError: missing ops, or no arena up to :data:`MAX_ARENA_BYTES` suffices.
    """
    probe = probe_micro(content, measure=True)
    if probe.missing_ops:
        raise ValueError(
            f"Model cannot load under TFLite-Micro. Expected supported ops. Received: missing {list(probe.missing_ops)}."
        )
    return _measured(probe)


def recommended_arena(measured: int, margin: float = DEFAULT_ARENA_MARGIN) -> int:
    """``measured`` plus ``margin`` (a fraction), rounded up to whole KiB."""
    if isinstance(measured, bool) or not isinstance(measured, int) or measured < 1:
        raise ValueError(f"Expected a measured arena size in bytes >= 1. Received: {measured!r}.")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 10:
        raise ValueError(f"Expected an arena margin fraction in [0, 10]. Received: {margin!r}.")
    return math.ceil(measured * (1.0 + margin) / _ARENA_ROUNDING) * _ARENA_ROUNDING


# === Running under TFLite-Micro (in a child process) and under LiteRT's reference kernels ===


def probe_micro(
    content: bytes,
    inputs: np.ndarray | None = None,
    measure: bool = True,
    arena_bytes: int | None = None,
) -> MicroProbe:
    """Run ``content`` under TFLite-Micro in a child process.

    Args:
        content: TFLite flatbuffer bytes.
        inputs: optional ``(N, ...)`` batch in the model's input dtype, run one sample at a time.
        measure: binary-search the smallest arena (the inputs then run in exactly that arena).
        arena_bytes: arena for running the inputs when not measuring (default: the search bound).

    Raises:
        ValueError: the model loads with no op missing but TFLite-Micro still cannot prepare or run
            it (the TFLite-Micro log is quoted), or no arena up to 64 MiB suffices.
        ImportError: the ``tflite-micro`` package is not installed.
    """
    try:
        version = metadata.version("tflite-micro")
    except metadata.PackageNotFoundError:
        raise ImportError(
            "TFLite-Micro checks need the tflite-micro package. Expected it installed "
            "(pip install 'roverlite[train]'). Received: not installed."
        ) from None
    with tempfile.TemporaryDirectory(prefix="roverlite-micro-") as tmp:
        work = Path(tmp)
        (work / "model.tflite").write_bytes(content)
        if inputs is not None:
            np.save(work / "inputs.npy", np.ascontiguousarray(inputs), allow_pickle=False)
        request = {"measure": bool(measure), "arena_bytes": arena_bytes, "max_arena_bytes": MAX_ARENA_BYTES}
        (work / "request.json").write_text(json.dumps(request))
        package_root = str(Path(__file__).resolve().parents[2])
        paths = (package_root, os.environ.get("PYTHONPATH"))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        done = subprocess.run(
            [sys.executable, "-c", _PROBE_COMMAND, str(work)],
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_S,
            env=env,
            check=False,
        )
        result_file = work / "result.json"
        if done.returncode != 0 or not result_file.is_file():
            log = (work / "tflm.log").read_text(errors="replace") if (work / "tflm.log").is_file() else ""
            raise ValueError(
                "TFLite-Micro crashed or failed while loading the model. Expected a clean run in the child "
                f"process. Received: exit code {done.returncode}; {_tail(log + done.stderr + done.stdout)}"
            )
        result = json.loads(result_file.read_text())
        outputs = np.load(work / "outputs.npy", allow_pickle=False) if (work / "outputs.npy").is_file() else None
    if result.get("error"):
        raise ValueError(result["error"])
    return MicroProbe(
        missing_ops=tuple(result["missing_ops"]),
        arena_bytes=result.get("arena_bytes"),
        outputs=outputs,
        input=result.get("input") or {},
        output=result.get("output") or {},
        version=version,
    )


def _measured(probe: MicroProbe) -> int:
    if probe.missing_ops or probe.arena_bytes is None:
        raise ValueError(f"Expected a model TFLite-Micro can load. Received: missing ops {list(probe.missing_ops)}.")
    return probe.arena_bytes


def _outputs(probe: MicroProbe) -> np.ndarray:
    if probe.outputs is None:
        raise ValueError(f"Expected TFLite-Micro outputs. Received: none (missing ops {list(probe.missing_ops)}).")
    return probe.outputs


def run_reference(content: bytes, inputs: np.ndarray) -> np.ndarray:
    """Raw outputs of LiteRT's reference kernels (``BUILTIN_REF``, no XNNPACK) for an ``(N, ...)`` batch."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    for sample in inputs:
        interpreter.set_tensor(input_index, np.ascontiguousarray(sample[None]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_index)[0].copy())
    return np.stack(outputs)


def _probe_main(work_dir: str) -> int:
    """Child-process side of :func:`probe_micro`: reads ``request.json``, writes ``result.json``."""
    global _LOG_FILE  # this child process exists only to run this function
    work = Path(work_dir)
    _LOG_FILE = work / "tflm.log"
    request = json.loads((work / "request.json").read_text())
    content = (work / "model.tflite").read_bytes()
    limit = int(request["max_arena_bytes"])
    result: dict[str, Any] = {"missing_ops": [], "arena_bytes": None, "error": None}
    missing, ok, log = _missing_ops(content, limit)
    result["missing_ops"] = missing
    if not missing:
        if not ok:
            result["error"] = _load_error(log, limit)
        else:
            arena = _smallest_arena(content, limit) if request["measure"] else int(request["arena_bytes"] or limit)
            result["arena_bytes"] = arena if request["measure"] else None
            inputs_file = work / "inputs.npy"
            if inputs_file.is_file():
                try:
                    outputs, details = _run(content, np.load(inputs_file, allow_pickle=False), arena)
                except RuntimeError as err:
                    result["error"] = (
                        f"TFLite-Micro failed to run the model. Expected invoke() to succeed. Received: {err}"
                    )
                else:
                    np.save(work / "outputs.npy", outputs, allow_pickle=False)
                    result.update(details)
    (work / "result.json").write_text(json.dumps(result))
    return 0


def _allocates(content: bytes, arena: int) -> tuple[bool, str]:
    """Whether TFLite-Micro loads and allocates ``content`` in ``arena`` bytes, and its log."""
    from tflite_micro.python.tflite_micro import runtime

    with _captured_output() as log_path:
        try:
            runtime.Interpreter.from_bytes(content, arena_size=arena)
            ok = True
        except RuntimeError:
            ok = False
    return ok, Path(log_path).read_text(errors="replace")


def _missing_ops(content: bytes, arena: int) -> tuple[list[str], bool, str]:
    """Every builtin op TFLite-Micro lacks, found one at a time.

    TFLite-Micro resolves every node's op before it prepares any, and stops at the first op it
    cannot resolve. To name them all, each missing op's code is rewritten to ADD in a copy of the
    model and the load retried, so resolution moves on to the next missing op. The copy also gets a
    last node with an unknown custom op (the sentinel), so resolution of a copy always fails before
    TFLite-Micro would prepare the rewritten nodes (preparing ADD on TILE's tensors aborts).
    """
    missing: list[str] = []
    ok, log = _allocates(content, arena)
    for _ in range(256):  # at most one round per distinct op code
        found = _MISSING_OP.search(log)
        if ok or found is None or found.group(1) in missing or found.group(1) == _SENTINEL_OP:
            break
        missing.append(found.group(1))
        content = _replace_op_code(content, found.group(1))
        ok, log = _allocates(content, arena)
    return missing, ok if not missing else False, log


def _replace_op_code(content: bytes, op_name: str) -> bytes:
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    codes = model.operatorCodes or []
    for code in codes:
        if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) == op_name:
            code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    custom = [c.customCode.decode() if isinstance(c.customCode, bytes) else c.customCode for c in codes]
    if _SENTINEL_OP not in custom:
        sentinel = schema.OperatorCodeT()
        sentinel.builtinCode = sentinel.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        sentinel.customCode = _SENTINEL_OP
        sentinel.version = 1
        codes.append(sentinel)
        model.operatorCodes = codes
        subgraph = model.subgraphs[-1]
        node = schema.OperatorT()
        node.opcodeIndex = len(codes) - 1
        node.inputs = [int(subgraph.inputs[0])]
        node.outputs = [int(subgraph.outputs[0])]
        subgraph.operators = [*subgraph.operators, node]
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _smallest_arena(content: bytes, limit: int) -> int:
    step = ARENA_ALIGNMENT
    low, high = 0, _ARENA_SEARCH_START  # low always fails (or is 0), high always succeeds
    while not _allocates(content, high)[0]:
        low, high = high, high * 2
        if high > limit:
            return limit  # unreachable in practice: the caller proved `limit` allocates
    while high - low > step:
        middle = (low + high) // 2 // step * step
        if middle <= low:
            break
        if _allocates(content, middle)[0]:
            high = middle
        else:
            low = middle
    return high


def _run(content: bytes, inputs: np.ndarray, arena: int) -> tuple[np.ndarray, dict[str, Any]]:
    from tflite_micro.python.tflite_micro import runtime

    with _captured_output():
        interpreter = runtime.Interpreter.from_bytes(content, arena_size=arena)
        outputs = []
        for sample in inputs:
            interpreter.set_input(np.ascontiguousarray(sample[None]), 0)
            interpreter.invoke()
            outputs.append(np.array(interpreter.get_output(0))[0])
        details = {
            "input": _details(interpreter.get_input_details(0)),
            "output": _details(interpreter.get_output_details(0)),
        }
    return np.stack(outputs), details


def _details(raw: Mapping[str, Any]) -> dict[str, Any]:
    quant = raw.get("quantization_parameters") or {}
    scales, zero_points = list(quant.get("scales", [])), list(quant.get("zero_points", []))
    return {
        "dtype": np.dtype(raw["dtype"]).name,
        "shape": [int(s) for s in raw["shape"]],
        "scale": float(scales[0]) if scales else None,
        "zero_point": int(zero_points[0]) if zero_points else None,
    }


def _load_error(log: str, limit: int) -> str:
    failed = _NODE_FAILED.search(log)
    if failed:
        return (
            f"TFLite-Micro cannot {failed.group(3)} op {failed.group(1)} (node {failed.group(2)}). Expected every "
            f"op to accept its tensor types and parameters. Received: {_tail(log)}"
        )
    return (
        f"TFLite-Micro cannot allocate the model in {limit} bytes. Expected a model whose tensors fit a "
        f"microcontroller. Received: {_tail(log)}"
    )


class _captured_output:  # lower case: used like a function, `with _captured_output() as log:`
    """Send file descriptors 1 and 2 (where TFLite-Micro's C++ prints) to a log file.

    The file is :data:`_LOG_FILE` when the probe set it (the parent reads it after a crash), else a
    temporary file.
    """

    def __enter__(self) -> str:
        sys.stdout.flush()
        sys.stderr.flush()
        if _LOG_FILE is not None:
            self.path = str(_LOG_FILE)
            handle = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        else:
            handle, self.path = tempfile.mkstemp(prefix="tflm-log-")
        self.saved = (os.dup(1), os.dup(2))
        os.dup2(handle, 1)
        os.dup2(handle, 2)
        os.close(handle)
        return self.path

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        os.close(self.saved[0])
        os.close(self.saved[1])


def _tail(text: str, lines: int = 6) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[:800] or "(no output)"


# === C sources ===


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
    normalization: Mapping[str, Any],
) -> tuple[str, str]:
    """``(model_data.h, model_data.cc)``: the model as ``alignas(16) const unsigned char g_model_data[]``.

    ``model_data.h`` also carries the input/output shape and quantization, the normalisation and
    the class names, so firmware can quantize camera pixels without reading the sidecar.
    """
    height, width, channels = (int(v) for v in input_spec["shape"][1:4])
    num_classes = int(output_spec["shape"][3])
    mean = [float(v) for v in normalization["mean"]]
    std = [float(v) for v in normalization["std"]]
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
constexpr float kPixelScale = {_c_float(normalization["pixel_scale"])};
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


# === The export ===


def export_c_array(
    model_or_path: Any,
    out_dir: str | os.PathLike,
    data_cfg: DataConfig,
    calibration_images: np.ndarray | None = None,
    check_images: np.ndarray | None = None,
    check_masks: np.ndarray | None = None,
    name: str | None = None,
    recipe: Mapping[str, Any] | None = None,
    representative_count: int = 100,
    tolerances: Tolerances | None = None,
    arena_margin: float = DEFAULT_ARENA_MARGIN,
) -> MicroExportResult:
    """Export ``model_or_path`` as format ``c_array`` and write its C sources.

    Arguments as in :func:`roverlite.export.export_model` (``int8_io`` is always True here), plus
    ``arena_margin``, the fraction added to the measured arena for ``kTensorArenaSize``.

    Raises:
        ValueError: as :func:`roverlite.export.export_model`, plus ops TFLite-Micro lacks.
    """
    from roverlite.export import export_model

    (result,) = export_model(
        model_or_path,
        [C_ARRAY_FORMAT],
        out_dir,
        data_cfg,
        calibration_images=calibration_images,
        check_images=check_images,
        check_masks=check_masks,
        name=name,
        recipe=recipe,
        int8_io=True,
        representative_count=representative_count,
        tolerances=tolerances,
    )
    images = check_images if check_images is not None else calibration_images
    return finish_c_array(result, images, arena_margin=arena_margin)


def finish_c_array(
    result: Any,
    check_images: np.ndarray | None,
    arena_margin: float = DEFAULT_ARENA_MARGIN,
    check_ids: Sequence[str] | None = None,
) -> MicroExportResult:
    """Turn an exported ``c_array`` ``.tflite`` into C sources, after checking it under TFLite-Micro.

    Args:
        result: the :class:`~roverlite.export.ExportResult` of format ``c_array``.
        check_images: uint8 images (any size) run under both TFLite-Micro and LiteRT's reference
            kernels; the first becomes ``test_image.h``. ``None`` checks seeded noise and writes no
            test image.
        arena_margin: fraction added to the measured arena.
        check_ids: names of the check images (for ``test_image.h``).

    Raises:
        ValueError: a result of another format, ops TFLite-Micro lacks, or an arena over 64 MiB.
    """
    from roverlite.deploy.segmenter import Segmenter
    from roverlite.deploy.sidecar import sidecar_path
    from roverlite.io import atomic_write_json, atomic_write_text, sha256_file

    if getattr(result, "format", None) != C_ARRAY_FORMAT:
        raise ValueError(
            f"Expected an export result of format {C_ARRAY_FORMAT!r}. Received: {getattr(result, 'format', result)!r}."
        )
    path = Path(result.path)
    segmenter = Segmenter(path)
    content = path.read_bytes()
    ops = check_micro_ops(content)
    inputs, ids = _quantized_inputs(segmenter, check_images, check_ids)
    probe = probe_micro(content, inputs=inputs, measure=True)
    arena_measured, outputs = _measured(probe), _outputs(probe)
    reference = run_reference(content, inputs)
    micro_check = _compare(
        outputs, reference, len(inputs), "check_images" if check_images is not None else "noise"
    )
    arena = recommended_arena(arena_measured, arena_margin)

    provenance = (
        f"Generated by roverlite.export.micro from {path.name} (sha256 {result.sha256[:16]}..., {len(content)} bytes)."
    )
    s = segmenter.sidecar
    io_in, io_out = dict(probe.input), dict(probe.output)
    header, source = model_data_sources(
        content,
        provenance,
        io_in,
        io_out,
        s.classes,
        {"pixel_scale": s.pixel_scale, "mean": s.mean, "std": s.std},
    )
    texts = {
        "model_data.h": header,
        "model_data.cc": source,
        "model_ops.h": model_ops_header(ops, arena, arena_measured, arena_margin, provenance, probe.version),
    }
    if check_images is not None:
        counts = np.bincount(outputs[0].argmax(-1).ravel(), minlength=s.num_classes)
        texts["test_image.h"] = test_image_header(inputs[0], counts.tolist(), ids[0], provenance)
        micro_check["test_image"] = {"id": ids[0], "class_counts": dict(zip(s.classes, counts.tolist()))}
    c_dir = path.with_suffix("")
    files = {file: atomic_write_text(c_dir / file, text) for file, text in texts.items()}
    round_trip = parse_c_array(files["model_data.cc"].read_text()) == content
    micro_check["c_array_round_trip"] = round_trip
    micro_check["passed"] = bool(micro_check["passed"] and round_trip)

    sidecar_file = sidecar_path(path)
    sidecar = json.loads(sidecar_file.read_text())
    sidecar["tflite_micro"] = {
        "version": probe.version,
        "ops": list(ops),
        "resolver": f"tflite::MicroMutableOpResolver<{len(ops)}>",
        "arena_bytes": arena,
        "arena_bytes_measured": arena_measured,
        "arena_margin": arena_margin,
        "arena_measured_on": "host (64-bit), TFLite-Micro Python runtime, reference kernels",
        "c_dir": c_dir.name,
        "c_files": {file: sha256_file(p) for file, p in files.items()},
        "check": micro_check,
    }
    atomic_write_json(sidecar_file, sidecar)
    passed = bool(result.passed and micro_check["passed"])
    log = logger.info if micro_check["passed"] else logger.warning
    log(
        "c_array: %s, arena %d B (measured %d B), ops %s, TFLite-Micro vs LiteRT reference: %s",
        c_dir,
        arena,
        arena_measured,
        ",".join(ops),
        "agree" if micro_check["passed"] else "DIFFER",
    )
    return MicroExportResult(
        format=result.format,
        path=path,
        sidecar_path=sidecar_file,
        size_bytes=result.size_bytes,
        sha256=result.sha256,
        check=result.check,
        passed=passed,
        c_dir=c_dir,
        c_files=files,
        ops=ops,
        arena_bytes=arena,
        arena_bytes_measured=arena_measured,
        micro_check=micro_check,
    )


def make_test_image(artifact: str | os.PathLike, image: np.ndarray, image_id: str = "image") -> str:
    """``test_image.h`` for one uint8 image (any size) and a ``c_array`` artifact with its sidecar.

    The image is preprocessed and quantized as ``roverlite.deploy`` does on a device, run under
    TFLite-Micro here, and its class pixel counts are stored for the MCU to compare against.

    Raises:
        ValueError: the artifact is refused by its sidecar, or the image is not an image.
    """
    from roverlite.deploy.segmenter import Segmenter

    segmenter = Segmenter(artifact)
    inputs, ids = _quantized_inputs(segmenter, np.asarray(image)[None], [image_id])
    content = Path(artifact).read_bytes()
    probe = probe_micro(content, inputs=inputs, measure=False)
    counts = np.bincount(_outputs(probe)[0].argmax(-1).ravel(), minlength=segmenter.sidecar.num_classes)
    provenance = f"Generated by roverlite.export.micro.make_test_image for {Path(artifact).name}."
    return test_image_header(inputs[0], counts.tolist(), ids[0], provenance)


def _quantized_inputs(
    segmenter: Any, images: np.ndarray | None, ids: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Check images preprocessed and quantized exactly as ``roverlite.deploy`` feeds the model."""
    runner = segmenter.runner
    if images is None:
        shape = tuple(runner.input.shape[1:])
        info = np.iinfo(runner.input.dtype)
        noise = np.random.default_rng(0).integers(info.min, info.max + 1, (4, *shape), dtype=runner.input.dtype)
        return noise, [f"noise{k}" for k in range(len(noise))]
    batch = np.concatenate([segmenter.preprocess(image) for image in images])
    quantized = runner.input.quantize(batch) if runner.input.quantized else batch
    names = [str(i) for i in ids] if ids is not None else [f"check{k}" for k in range(len(batch))]
    return quantized, names


def _compare(micro: np.ndarray, reference: np.ndarray, count: int, source: str) -> dict[str, Any]:
    difference = np.abs(micro.astype(np.int32) - reference.astype(np.int32))
    agreement = float((micro.argmax(-1) == reference.argmax(-1)).mean())
    return {
        "images": count,
        "inputs": source,
        "reference": "LiteRT BUILTIN_REF",
        "bit_exact": bool(not difference.any()),
        "max_abs_diff": int(difference.max()),
        "mask_agreement": agreement,
        # Both run LiteRT's reference int8 kernels: any disagreement is a porting bug, not noise.
        "passed": agreement == 1.0,
    }


# === Workstation front door (what `roverlite export --format ... c_array` calls) ===


def export_with_c_array(
    model_path: str | os.PathLike,
    formats: Sequence[str] | str,
    out_dir: str | os.PathLike,
    data_cfg: DataConfig,
    calibration_split: str = "train",
    check_split: str = "val",
    max_check_images: int | None = 32,
    representative_count: int = 100,
    int8_io: bool = True,
    name: str | None = None,
    recipe: Mapping[str, Any] | None = None,
    progress: bool = False,
    arena_margin: float = DEFAULT_ARENA_MARGIN,
) -> list[Any]:
    """:func:`roverlite.export.dataset.export_from_config`, plus the C sources for ``c_array``.

    Same arguments and the same ``list`` of results, in the order given; the ``c_array`` entry is
    a :class:`MicroExportResult` (it has ``format``, ``path``, ``size_bytes`` and ``passed`` like
    every other). Without ``c_array`` in ``formats`` this is exactly ``export_from_config``.

    Raises:
        ValueError: as ``export_from_config``; ``c_array`` with ``int8_io=False``; ops TFLite-Micro lacks.
    """
    from roverlite.export.dataset import export_from_config

    names = [formats] if isinstance(formats, str) else list(formats)
    if C_ARRAY_FORMAT in names and int8_io is not True:
        raise ValueError(
            "Format 'c_array' needs int8 input and output. Expected no --float-io with c_array. "
            f"Received: int8_io={int8_io!r}."
        )
    results = export_from_config(
        model_path,
        names,
        out_dir,
        data_cfg,
        calibration_split=calibration_split,
        check_split=check_split,
        max_check_images=max_check_images,
        representative_count=representative_count,
        int8_io=int8_io,
        name=name,
        recipe=recipe,
        progress=progress,
    )
    if C_ARRAY_FORMAT not in names:
        return results
    from roverlite.data.loader import load_split

    capped = (
        data_cfg
        if max_check_images is None
        else dataclasses.replace(
            data_cfg,
            max_images=max_check_images if data_cfg.max_images is None else min(max_check_images, data_cfg.max_images),
        )
    )
    check = load_split(capped, check_split, progress=progress)
    return [
        finish_c_array(r, check.images, arena_margin=arena_margin, check_ids=check.ids)
        if r.format == C_ARRAY_FORMAT
        else r
        for r in results
    ]
