"""Where an artifact's time goes: per-op breakdowns for LiteRT and ONNX Runtime.

Each profile is a separate pass after the timed runs (profiling slows a model down, so it never
touches the reported latency) on a fresh session built from the same bytes and thread count.

* **ONNX Runtime**: its own profiler (``SessionOptions.enable_profiling``). The trace's
  ``*_kernel_time`` events are summed per op type (Conv, ConvTranspose, MaxPool, ...).
* **LiteRT**: the Python interpreter of ai-edge-litert 2.3 has no per-op profiler (the C++
  ``benchmark_model --enable_op_profiling`` has one; XNNPACK runs its whole partition as one
  ``DELEGATE`` node anyway). So the profile reports what can be measured from Python: the op
  types, the nodes the XNNPACK delegate took (each ``DELEGATE`` node's partition, found by walking
  the graph back from its outputs to its inputs), the multiply-accumulates of each op type
  *estimated from tensor shapes* (which ops dominate the arithmetic, not measured time), and the
  latency of the same model on the builtin kernels with the default delegate switched off.

numpy and the runtime only.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.deploy.runtime import tflite_interpreter_class

__all__ = ["delegated_nodes", "op_macs", "profile_onnx", "profile_tflite"]

logger = logging.getLogger(__name__)

DELEGATE_OP = "DELEGATE"


# === LiteRT ===


def profile_tflite(
    content: bytes, sample: np.ndarray, threads: int, runs: int, delegated_p50_ms: float | None = None
) -> dict[str, Any]:
    """Op breakdown and delegate coverage of a ``.tflite`` model.

    Args:
        content: the model bytes (already checked by the caller).
        sample: one input ``(1, H, W, C)`` in the model's input dtype.
        threads: the thread count of the timed runs.
        runs: timed runs on the builtin kernels (without the default XNNPACK delegate).
        delegated_p50_ms: p50 of the timed runs with the delegate, for the speed-up.

    Returns:
        ``{"kind", "nodes", "delegated_nodes", "delegate_partitions", "ops": [{"op", "nodes",
        "delegated", "macs", "mac_share"}], "estimated_macs", "no_delegate_p50_ms",
        "delegate_speedup", "notes"}``; ``ops`` sorted by MACs, then node count.
    """
    interpreter_class, backend = tflite_interpreter_class()
    notes = ["per-op times are not exposed by the LiteRT Python API; mac_share is estimated from tensor shapes"]
    delegated = _new_interpreter(interpreter_class, content, threads, delegates=True)
    ops = delegated._get_ops_details()
    originals = [op for op in ops if op["op_name"] != DELEGATE_OP]
    partitions = [op for op in ops if op["op_name"] == DELEGATE_OP]
    taken = delegated_nodes(ops)
    shape = _tensor_shapes(delegated)

    by_type: dict[str, dict[str, Any]] = {}
    for op in originals:
        row = by_type.setdefault(op["op_name"], {"op": op["op_name"], "nodes": 0, "delegated": 0, "macs": 0})
        row["nodes"] += 1
        row["delegated"] += int(op["index"] in taken)
        row["macs"] += op_macs(op["op_name"], [shape(t) for t in op["inputs"]], [shape(t) for t in op["outputs"]])
    total_macs = sum(row["macs"] for row in by_type.values())
    for row in by_type.values():
        row["mac_share"] = round(row["macs"] / total_macs, 4) if total_macs else 0.0
    rows = sorted(by_type.values(), key=lambda r: (-r["macs"], -r["nodes"], r["op"]))

    no_delegate_p50 = None
    try:
        plain = _new_interpreter(interpreter_class, content, threads, delegates=False)
    except (TypeError, ValueError) as err:  # an old interpreter without experimental_op_resolver_type
        notes.append(f"builtin-kernel timing unavailable with {backend}: {err}")
    else:
        no_delegate_p50 = _median_ms(_invoker(plain, sample), runs)
    return {
        "kind": "litert",
        "backend": backend,
        "nodes": len(originals),
        "delegated_nodes": len(taken),
        "delegate_partitions": len(partitions),
        "ops": rows,
        "estimated_macs": int(total_macs),
        "no_delegate_p50_ms": no_delegate_p50,
        "delegate_speedup": (
            round(no_delegate_p50 / delegated_p50_ms, 3) if no_delegate_p50 and delegated_p50_ms else None
        ),
        "notes": notes,
    }


def delegated_nodes(ops: Sequence[dict[str, Any]]) -> set[int]:
    """Indices of the original nodes that the ``DELEGATE`` nodes in ``ops`` replaced.

    A delegate node lists its partition's external inputs and outputs; its members are the nodes
    reached walking back from those outputs through producers until the inputs.
    """
    producer = {}
    for op in ops:
        if op["op_name"] != DELEGATE_OP:
            for tensor in op["outputs"]:
                producer[int(tensor)] = op
    taken: set[int] = set()
    for op in ops:
        if op["op_name"] != DELEGATE_OP:
            continue
        stop = {int(t) for t in op["inputs"]}
        stack = [int(t) for t in op["outputs"]]
        seen: set[int] = set()
        while stack:
            tensor = stack.pop()
            if tensor in stop or tensor in seen or tensor not in producer:
                continue
            seen.add(tensor)
            node = producer[tensor]
            taken.add(int(node["index"]))
            stack.extend(int(t) for t in node["inputs"] if int(t) >= 0)
    return taken


def op_macs(op_name: str, inputs: Sequence[tuple[int, ...] | None], outputs: Sequence[tuple[int, ...] | None]) -> int:
    """Multiply-accumulates of one TFLite op from its tensor shapes (0 for ops without MACs).

    Same convention as :mod:`roverlite.train.macs`: convolutions and fully connected layers only.
    """
    try:
        out = outputs[0]
        if op_name == "CONV_2D":  # filter (O, kh, kw, I)
            _, kh, kw, c_in = inputs[1]
            return math.prod(out) * kh * kw * c_in
        if op_name == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, C * multiplier)
            _, kh, kw, _ = inputs[1]
            return math.prod(out) * kh * kw
        if op_name == "TRANSPOSE_CONV":  # inputs: output_shape, filter (O, kh, kw, I), input
            c_out, kh, kw, c_in = inputs[1]
            return math.prod(inputs[2][:-1]) * c_in * c_out * kh * kw
        if op_name == "FULLY_CONNECTED":  # filter (O, I)
            units, depth = inputs[1]
            return math.prod(inputs[0]) // depth * units * depth
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return 0
    return 0


def _new_interpreter(interpreter_class: Any, content: bytes, threads: int, delegates: bool) -> Any:
    kwargs: dict[str, Any] = {"model_content": content, "num_threads": threads}
    if not delegates:
        module = importlib.import_module(interpreter_class.__module__)
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = interpreter_class(**kwargs)
    interpreter.allocate_tensors()
    return interpreter


def _tensor_shapes(interpreter: Any) -> Callable[[int], tuple[int, ...] | None]:
    def shape(index: int) -> tuple[int, ...] | None:
        if int(index) < 0:
            return None
        try:
            return tuple(int(d) for d in interpreter._get_tensor_details(int(index), 0)["shape"])
        except (ValueError, KeyError, TypeError):
            return None

    return shape


def _invoker(interpreter: Any, sample: np.ndarray) -> Callable[[], None]:
    index = interpreter.get_input_details()[0]["index"]
    sample = np.ascontiguousarray(sample)

    def invoke() -> None:
        interpreter.set_tensor(index, sample)
        interpreter.invoke()

    return invoke


def _median_ms(invoke: Callable[[], None], runs: int) -> float:
    invoke()  # first run allocates and packs weights
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        invoke()
        times.append(1000.0 * (time.perf_counter() - start))
    return round(float(np.median(times)), 4)


# === ONNX Runtime ===


def profile_onnx(
    content: bytes, sample: np.ndarray, input_name: str, threads: int, runs: int, providers: Sequence[str]
) -> dict[str, Any]:
    """Per-op-type time of an ``.onnx`` model from ONNX Runtime's profiler.

    Returns:
        ``{"kind", "providers", "runs", "profiled_run_ms", "ops": [{"op", "nodes", "ms_per_run",
        "share"}], "notes"}``; ``ops`` sorted by time; ``ms_per_run`` is the median over runs of
        the op type's summed kernel time. Node counts include the layout nodes ONNX Runtime
        inserts (``ReorderInput`` / ``ReorderOutput``).
    """
    import onnxruntime as ort

    folder = Path(tempfile.mkdtemp(prefix="roverlite-ort-profile-"))
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(folder / "profile")
        session = ort.InferenceSession(content, sess_options=options, providers=list(providers))
        feed = {input_name: np.ascontiguousarray(sample)}
        session.run(None, feed)  # warm-up, left out of the aggregate below
        runs = max(1, runs)
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    model_runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"]
    )[-runs:]  # the first model_run is the warm-up
    kernels = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    # Sum each op type within each run, then take the median over runs: on a busy machine a few
    # descheduled runs would otherwise dominate a plain sum.
    per_run: list[dict[str, float]] = []
    nodes: dict[str, int] = {}
    for run in model_runs:
        begin, stop = run["ts"], run["ts"] + run.get("dur", 0)
        totals: dict[str, float] = {}
        for event in kernels:
            if begin <= event["ts"] <= stop:
                op = str(event.get("args", {}).get("op_name", "?"))
                totals[op] = totals.get(op, 0.0) + float(event.get("dur", 0))
                if len(per_run) == 0:
                    nodes[op] = nodes.get(op, 0) + 1
        per_run.append(totals)
    medians = {op: float(np.median([run.get(op, 0.0) for run in per_run])) for op in nodes}
    total = sum(medians.values())
    rows = [
        {
            "op": op,
            "nodes": nodes[op],
            "ms_per_run": round(us / 1000.0, 4),
            "share": round(us / total, 4) if total else 0.0,
        }
        for op, us in sorted(medians.items(), key=lambda item: (-item[1], item[0]))
    ]
    run_ms = [float(e.get("dur", 0)) / 1000.0 for e in model_runs]
    return {
        "kind": "onnxruntime",
        "providers": list(providers),
        "runs": runs,
        "profiled_run_ms": round(float(np.median(run_ms)), 4) if run_ms else None,
        "ops": rows,
        "notes": ["profiler on: its overhead makes profiled_run_ms larger than the timed p50"],
    }
