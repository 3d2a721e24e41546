"""TFLite-Micro's interpreter, driven inside the child process that ``probe_micro`` starts.

:func:`probe_main` is the child's entry point (see :func:`roverlite.export.micro_probe.probe_micro`):
it reads ``request.json`` and ``model.tflite`` from a work folder, names every op TFLite-Micro's op
resolver lacks, binary-searches the smallest tensor arena the model allocates in, runs the inputs,
and writes ``result.json`` (and ``outputs.npy``) back.

TFLite-Micro's C++ runtime prints to file descriptors 1 and 2 and reports a failed allocation
only there, so every interpreter call here runs with those descriptors sent to a log file
(``tflm.log`` in the work folder), which is parsed for missing ops and failed nodes and which the
parent reads back after a crash.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ARENA_ALIGNMENT", "log_tail", "probe_main"]

# TFLite-Micro aligns tensors to 16 bytes; the arena search works in those steps.
ARENA_ALIGNMENT = 16
_ARENA_SEARCH_START = 16 * 1024
# Set in the probe's child process: where TFLite-Micro's output goes (read back after a crash).
_LOG_FILE: Path | None = None
_SENTINEL_OP = "roverlite_resolution_sentinel"
_MISSING_OP = re.compile(r"Didn't find op for (?:builtin|custom) opcode '([^']+)'")
_NODE_FAILED = re.compile(r"Node (\S+) \(number (\d+)f?\) failed to (prepare|invoke)")


def probe_main(work_dir: str) -> int:
    """Child-process side of :func:`~roverlite.export.micro_probe.probe_micro`.

    Reads ``request.json`` and ``model.tflite`` in ``work_dir``, writes ``result.json`` there.
    """
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
            f"op to accept its tensor types and parameters. Received: {log_tail(log)}"
        )
    return (
        f"TFLite-Micro cannot allocate the model in {limit} bytes. Expected a model whose tensors fit a "
        f"microcontroller. Received: {log_tail(log)}"
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


def log_tail(text: str, lines: int = 6) -> str:
    """The last non-blank ``lines`` of a TFLite-Micro log on one line, for an error message."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[:800] or "(no output)"
