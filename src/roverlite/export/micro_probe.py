"""TFLite-Micro checks: which ops a model needs, whether TFLite-Micro runs them, the arena it needs.

:func:`probe_micro` runs a ``.tflite`` under TFLite-Micro's own interpreter (the ``tflite-micro``
package) in a child Python process (:mod:`roverlite.export.micro_interpreter`): nothing the C++
runtime prints leaks onto the user's terminal, and a crash inside its kernels cannot take the
exporter down with it. :func:`check_micro_ops` and :func:`measure_arena` ask it one question each
and raise on a model TFLite-Micro cannot run; :func:`recommended_arena` adds the margin written to
``model_ops.h``. :func:`run_reference` runs the same inputs on LiteRT's reference kernels and
:func:`compare_outputs` compares the two (they share the reference kernels: bit for bit).

Example:
    >>> check_micro_ops(content)                                  # doctest: +SKIP
    ('CONV_2D', 'MAX_POOL_2D', 'CONCATENATION', 'RESIZE_NEAREST_NEIGHBOR')
    >>> recommended_arena(measure_arena(content))                 # doctest: +SKIP
    328704
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.export.micro_interpreter import ARENA_ALIGNMENT, log_tail
from roverlite.export.tflite import tflite_ops

__all__ = [
    "ARENA_ALIGNMENT",
    "DEFAULT_ARENA_MARGIN",
    "MAX_ARENA_BYTES",
    "MicroProbe",
    "check_inputs",
    "check_micro_ops",
    "compare_outputs",
    "measure_arena",
    "measured_arena",
    "model_ops",
    "probe_micro",
    "probe_outputs",
    "recommended_arena",
    "run_reference",
]

# Headroom over the arena measured here: a 32-bit MCU needs less for TFLite-Micro's own structs,
# but optimised kernels (CMSIS-NN, ESP-NN) may ask for scratch buffers the reference ones do not.
DEFAULT_ARENA_MARGIN = 0.10
_ARENA_ROUNDING = 1024
MAX_ARENA_BYTES = 64 * 1024 * 1024
_PROBE_TIMEOUT_S = 600
_PROBE_COMMAND = (
    "import sys; from roverlite.export.micro_interpreter import probe_main; sys.exit(probe_main(sys.argv[1]))"
)


# === Result ===


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


# === Checks ===


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
    return measured_arena(probe)


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
                f"process. Received: exit code {done.returncode}; {log_tail(log + done.stderr + done.stdout)}"
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


def measured_arena(probe: MicroProbe) -> int:
    """The arena ``probe`` measured; refuses a probe of a model TFLite-Micro cannot load."""
    if probe.missing_ops or probe.arena_bytes is None:
        raise ValueError(f"Expected a model TFLite-Micro can load. Received: missing ops {list(probe.missing_ops)}.")
    return probe.arena_bytes


def probe_outputs(probe: MicroProbe) -> np.ndarray:
    """The outputs ``probe`` ran; refuses a probe without them."""
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


def check_inputs(
    segmenter: Any, images: np.ndarray | None, ids: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Check images preprocessed and quantized exactly as ``roverlite.deploy`` feeds the model.

    Returns ``(inputs, names)``; without images, four samples of seeded noise in the input dtype.
    """
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


def compare_outputs(micro: np.ndarray, reference: np.ndarray, count: int, source: str) -> dict[str, Any]:
    """TFLite-Micro vs LiteRT reference outputs: ``passed`` when every pixel's class agrees."""
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
