"""One ``Runner`` interface over LiteRT (``.tflite``) and ONNX Runtime (``.onnx``).

Runtimes are imported inside the functions that need them, so a robot needs only the one its
artifact uses. For ``.tflite`` the interpreter comes from ``ai_edge_litert`` (the maintained
successor), else ``tflite_runtime`` (its last release needs NumPy 1), else TensorFlow's
``tf.lite`` (workstations). ``.onnx`` runs on ONNX Runtime with every available provider in the
order TensorRT, CUDA, CPU unless the caller names providers.

A file is checked before any runtime sees it: a ``.tflite`` must carry the ``TFL3`` flatbuffer
identifier and a root table inside the file, an ``.onnx`` must parse as protobuf wire format with
a graph, and every error the runtime raises while loading is turned into a ``ValueError`` naming
the file. A damaged model therefore fails with a message, not a crash deep inside a C++ kernel.

Example:
    >>> runner = load_runner("unet_xs_tflite_int8.tflite", threads=2)  # doctest: +SKIP
    >>> logits = runner.run(normalized_batch)                   # float32 (N, H, W, K)
"""

from __future__ import annotations

import importlib
import logging
import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PROVIDER_ORDER",
    "TFLITE_BACKENDS",
    "OnnxRunner",
    "Runner",
    "TFLiteRunner",
    "TensorInfo",
    "check_onnx_bytes",
    "tflite_interpreter_class",
    "check_threads",
    "check_tflite_bytes",
    "default_providers",
    "load_runner",
]

logger = logging.getLogger(__name__)

# Tried in this order; the first that imports wins.
TFLITE_BACKENDS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite.python.interpreter")
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_CPU_PROVIDER = "CPUExecutionProvider"
_ONNX_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8", "tensor(uint8)": "uint8"}


# === Tensor description ===


@dataclass(frozen=True)
class TensorInfo:
    """An input or output tensor as the runtime sees it.

    Attributes:
        name: tensor name in the model.
        shape: dimensions (``-1`` where the model leaves one open).
        dtype: numpy dtype name (``float32``, ``int8``, ...).
        scale, zero_point: affine quantization (``real = scale * (q - zero_point)``), or ``None``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Float values to this tensor's integer dtype (round to nearest, saturate)."""
        info = np.iinfo(self.dtype)
        q = np.round(values / np.float32(self.scale)) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        return ((values.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)).astype(np.float32)


# === Runner interface ===


class Runner(ABC):
    """Runs a batch-1 segmentation model; the common face of every runtime.

    Attributes:
        path: the model file (for messages).
        runtime: ``litert`` or ``onnxruntime``.
        backend: the module or provider list that actually runs it.
        input, output: :class:`TensorInfo` of the single input and output.
    """

    path: Path
    runtime: str
    backend: str
    input: TensorInfo
    output: TensorInfo

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run ``batch`` (N, H, W, C) one sample at a time and return float32 outputs (N, ...).

        Float input is quantized with the input's parameters when the model takes integers; input
        already in the model's integer dtype is passed through. Integer outputs are dequantized.

        Raises:
            ValueError: wrong shape or dtype, or NaN/Inf in float input.
        """
        batch = self._check_batch(batch)
        outputs = [self._invoke(batch[i : i + 1]) for i in range(batch.shape[0])]
        raw = np.concatenate(outputs, axis=0)
        return self.output.dequantize(raw) if self.output.quantized else raw.astype(np.float32, copy=False)

    @abstractmethod
    def _invoke(self, sample: np.ndarray) -> np.ndarray:
        """Run one (1, H, W, C) sample already in the input's dtype; return the raw output."""

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        expected = tuple(self.input.shape[1:])
        if batch.ndim != 4 or any(e > 0 and e != g for e, g in zip(expected, batch.shape[1:])):
            raise ValueError(
                f"Wrong input for {str(self.path)!r}. Expected a batch of shape (N, {', '.join(map(str, expected))}). "
                f"Received: shape={batch.shape}."
            )
        if batch.dtype.kind == "f":
            if not np.isfinite(batch).all():
                raise ValueError(f"Wrong input for {str(self.path)!r}. Expected finite values. Received: NaN or Inf.")
            batch = batch.astype(np.float32, copy=False)
            if self.input.quantized:
                return self.input.quantize(batch)
            if self.input.dtype != "float32":
                return batch.astype(self.input.dtype)
            return batch
        if batch.dtype == np.dtype(self.input.dtype):
            return batch
        raise ValueError(
            f"Wrong input dtype for {str(self.path)!r}. Expected float32 (normalised) or {self.input.dtype}. "
            f"Received: {batch.dtype}."
        )


def check_threads(threads: Any) -> int:
    """Refuse a thread count that is not an integer from 1 to the cores this process may use.

    More threads than cores only oversubscribe them: 1,000 threads made ONNX Runtime ~1,000x
    slower (issue 23), and a runtime spawns each one up front.

    Raises:
        ValueError: naming the limit and the value.
    """
    # hostinfo imports importlib.metadata and platform: importing the runtime (every Segmenter) does not
    from roverlite.deploy.hostinfo import usable_cpus

    cores = usable_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= cores:
        raise ValueError(
            f"Expected threads to be an integer from 1 to {cores} (the CPU cores this process may use), or None. "
            f"Received: threads={threads!r}."
        )
    return threads


def load_runner(
    path: str | os.PathLike,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    content: bytes | None = None,
) -> Runner:
    """Open a ``.tflite`` or ``.onnx`` model with the matching runtime.

    Args:
        path: the model file; its suffix picks the runtime.
        threads: CPU threads (``None`` = the runtime's default).
        providers: ONNX Runtime execution providers, in priority order (``None`` = those of
            TensorRT, CUDA and CPU that are available, in that order). Ignored for ``.tflite``.
        content: the file's bytes when the caller has already read (and verified) them.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown suffix, damaged or unsupported model (naming the file), bad ``threads``.
        ImportError: no runtime for the format is installed.
    """
    path = Path(path)
    if threads is not None:
        check_threads(threads)
    suffix = path.suffix.lower()
    if suffix not in (".tflite", ".onnx"):
        raise ValueError(f"Unknown model file type. Expected a .tflite or .onnx file. Received: {str(path)!r}.")
    if content is None:
        if not path.is_file():
            raise FileNotFoundError(f"Model file not found. Expected a .tflite or .onnx file. Received: {str(path)!r}.")
        content = path.read_bytes()
    if suffix == ".tflite":
        check_tflite_bytes(content, path)
        return TFLiteRunner(path, content, threads)
    check_onnx_bytes(content, path)
    return OnnxRunner(path, content, threads, providers)


# === LiteRT ===


class TFLiteRunner(Runner):
    """A ``.tflite`` model on the first TFLite interpreter that imports (see ``TFLITE_BACKENDS``)."""

    runtime = "litert"

    def __init__(self, path: Path, content: bytes, threads: int | None = None) -> None:
        self.path = path
        interpreter_class, self.backend = tflite_interpreter_class()
        try:
            self._interpreter = interpreter_class(model_content=content, num_threads=threads)
            self._interpreter.allocate_tensors()
        except Exception as err:  # noqa: BLE001 - the runtimes raise ValueError or RuntimeError with C++ text
            raise ValueError(
                f"Cannot load {str(path)!r} with {self.backend}. Expected a valid TFLite model with "
                f"builtin ops. Received: {type(err).__name__}: {str(err).strip()[:300]}."
            ) from None
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"Unsupported model {str(path)!r}. Expected one input and one output. "
                f"Received: {len(inputs)} inputs, {len(outputs)} outputs."
            )
        self.input, self.output = _tflite_info(inputs[0]), _tflite_info(outputs[0])
        self._input_index, self._output_index = inputs[0]["index"], outputs[0]["index"]

    def _invoke(self, sample: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._input_index, np.ascontiguousarray(sample))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output_index).copy()


def tflite_interpreter_class() -> tuple[Any, str]:
    """The first TFLite ``Interpreter`` class that imports (``TFLITE_BACKENDS`` order) and its module name."""
    reasons = []
    for module_name in TFLITE_BACKENDS:
        try:
            return importlib.import_module(module_name).Interpreter, module_name
        except Exception as err:  # noqa: BLE001 - tflite_runtime under NumPy 2 fails with more than ImportError
            reasons.append(f"{module_name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            logger.debug("TFLite backend %s unavailable: %s", module_name, err)
    raise ImportError(
        "No TFLite runtime found. Expected ai-edge-litert (pip install ai-edge-litert). "
        f"Received: {'; '.join(reasons)}."
    )


def _tflite_info(details: dict[str, Any]) -> TensorInfo:
    scale, zero_point = details.get("quantization", (0.0, 0))
    quantized = float(scale) > 0.0
    return TensorInfo(
        name=str(details["name"]),
        shape=tuple(int(s) for s in details["shape"]),
        dtype=np.dtype(details["dtype"]).name,
        scale=float(scale) if quantized else None,
        zero_point=int(zero_point) if quantized else None,
    )


def check_tflite_bytes(content: bytes, path: str | os.PathLike) -> None:
    """Refuse bytes that are not a TFLite flatbuffer before a runtime parses them.

    Checks the ``TFL3`` file identifier and that the root table and its vtable lie inside the
    file. (LiteRT also verifies the whole flatbuffer; older ``tflite_runtime`` builds did not.)

    Raises:
        ValueError: naming the file and what is wrong.
    """
    size = len(content)
    problem = None
    if size < 16:
        problem = f"{size} bytes, too short for a flatbuffer"
    elif content[4:8] != b"TFL3":
        problem = f"file identifier {content[4:8]!r} instead of b'TFL3'"
    else:
        root = struct.unpack_from("<I", content, 0)[0]
        if not 8 <= root <= size - 4:
            problem = f"root table offset {root} outside the file of {size} bytes"
        else:
            vtable = root - struct.unpack_from("<i", content, root)[0]
            if not 0 <= vtable <= size - 4:
                problem = f"root vtable at {vtable} outside the file of {size} bytes"
            else:
                vtable_size, table_size = struct.unpack_from("<HH", content, vtable)
                if vtable + vtable_size > size or root + table_size > size or vtable_size < 4:
                    problem = f"root table extends past the end of the file ({size} bytes): truncated"
    if problem:
        raise ValueError(f"Not a valid TFLite model: {str(path)!r}. Expected a TFLite flatbuffer. Received: {problem}.")


# === ONNX Runtime ===


class OnnxRunner(Runner):
    """An ``.onnx`` model on ONNX Runtime."""

    runtime = "onnxruntime"

    def __init__(
        self, path: Path, content: bytes, threads: int | None = None, providers: Sequence[str] | None = None
    ) -> None:
        import onnxruntime as ort

        self.path = path
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        chosen = list(providers) if providers is not None else default_providers()
        try:
            self._session = ort.InferenceSession(content, sess_options=options, providers=chosen)
        except Exception as err:  # noqa: BLE001 - ORT raises its own types (InvalidProtobuf, Fail, ...)
            raise ValueError(
                f"Cannot load {str(path)!r} with ONNX Runtime (providers {chosen}). Expected a valid ONNX "
                f"model. Received: {type(err).__name__}: {str(err).strip()[:300]}."
            ) from None
        self.backend = "onnxruntime:" + ",".join(self._session.get_providers())
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"Unsupported model {str(path)!r}. Expected one input and one output. "
                f"Received: {len(inputs)} inputs, {len(outputs)} outputs."
            )
        self.input, self.output = _onnx_info(inputs[0], path), _onnx_info(outputs[0], path)

    def _invoke(self, sample: np.ndarray) -> np.ndarray:
        return self._session.run([self.output.name], {self.input.name: sample})[0]


def default_providers() -> list[str]:
    """The available ones of TensorRT, CUDA and CPU, in that order (CPU always last).

    Other installed providers are left out on purpose: the pip wheel lists
    ``AzureExecutionProvider`` (remote inference) and vendor providers need options; pass
    ``providers`` explicitly to use them.
    """
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    return [p for p in PROVIDER_ORDER if p in available] + [_CPU_PROVIDER]


def _onnx_info(arg: Any, path: Path) -> TensorInfo:
    dtype = _ONNX_DTYPES.get(arg.type)
    if dtype is None:
        raise ValueError(
            f"Unsupported model {str(path)!r}. Expected float32, float16, int8 or uint8 tensors. "
            f"Received: {arg.name!r} of type {arg.type}."
        )
    # Symbolic dimensions (strings or None) stay open as -1.
    shape = tuple(int(d) if isinstance(d, int) else -1 for d in arg.shape)
    return TensorInfo(name=arg.name, shape=shape, dtype=dtype)


def check_onnx_bytes(content: bytes, path: str | os.PathLike) -> None:
    """Refuse bytes whose top-level protobuf does not parse or has no graph.

    Walks the ``ModelProto`` wire format (varint tags, length-delimited fields that must end inside
    the file): a truncated or overwritten file fails here with a message, and the device needs no
    ``onnx`` package for it.

    Raises:
        ValueError: naming the file and what is wrong.
    """
    fields = _protobuf_fields(content)
    if isinstance(fields, str):
        problem = fields
    elif 7 not in fields:  # ModelProto.graph
        problem = "no graph (field 7) in the protobuf"
    else:
        problem = None
    if problem:
        raise ValueError(f"Not a valid ONNX model: {str(path)!r}. Expected an ONNX ModelProto. Received: {problem}.")


def _protobuf_fields(content: bytes) -> set[int] | str:
    """Top-level field numbers of a protobuf message, or a description of why it does not parse."""
    fields: set[int] = set()
    pos, size = 0, len(content)
    if size == 0:
        return "an empty file"
    while pos < size:
        tag, pos = _varint(content, pos)
        if tag is None:
            return f"a malformed field tag at byte {pos}"
        number, wire = tag >> 3, tag & 7
        if number == 0:
            return f"field number 0 at byte {pos}"
        if wire == 0:
            value, pos = _varint(content, pos)
            if value is None:
                return f"a truncated varint at byte {pos}"
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            length, pos = _varint(content, pos)
            if length is None:
                return f"a truncated length at byte {pos}"
            pos += length
        else:
            return f"unsupported wire type {wire} at byte {pos}"
        if pos > size:
            return f"field {number} runs past the end of the file ({size} bytes): truncated"
        fields.add(number)
    return fields


def _varint(content: bytes, pos: int) -> tuple[int | None, int]:
    value, shift = 0, 0
    while pos < len(content) and shift < 64:
        byte = content[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None, pos
