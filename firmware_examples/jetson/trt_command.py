#!/usr/bin/env python3
"""The ``trtexec`` command line that builds (and benchmarks) a TensorRT engine from a bundle's ONNX.

``build_engine.sh`` runs what this prints; keeping the command in a Python function makes it
testable without a GPU. trtexec flags used (TensorRT 8.x and 10.x):

* ``--onnx=FILE --saveEngine=FILE``: build from the ONNX, keep the serialized engine.
* ``--fp16``: let TensorRT pick fp16 kernels (Jetson Nano: its best mode; Maxwell has no int8).
* ``--int8 --calib=CACHE``: int8 with scales from a calibration cache (``make_calib_cache.py``
  explains how to make one; trtexec itself cannot calibrate from data: without a cache it uses
  placeholder scales, fine for timing, meaningless for accuracy). ``--fp16`` is added too, so
  layers without an int8 kernel fall back to fp16 rather than fp32.
* ``--loadInputs=NAME:FILE``: benchmark on a real test-pack image (raw float32 NHWC) instead of
  random data.
* ``--timingCacheFile=FILE``: reuse kernel timings across builds.

The engine is built for this GPU and this TensorRT version only: build it on the Jetson itself.

Usage:
    python3 trt_command.py --bundle ~/bundles/unet_s_onnx --precision fp16 --out unet_s_fp16.engine
"""

# ruff: noqa: UP006, UP007, UP035, UP045 - typing generics on purpose: Python 3.6 (see below)

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

# Python 3.6 compatible on purpose (no postponed annotations, no 3.8+ shlex helpers): JetPack 4.6 on the
# Jetson Nano ships Python 3.6, and this script is how build_engine.sh makes fp16 engines there.
PathLike = Union[str, Path]

__all__ = ["PRECISIONS", "bundle_onnx", "trtexec_command"]

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_TRTEXEC = "trtexec"


def bundle_onnx(bundle: PathLike) -> Tuple[Path, str]:
    """``(onnx path, input tensor name)`` of a bundle whose artifact is an ``.onnx``.

    The input name is read with onnxruntime (the bundle's own runtime) when installed, else it is
    ``image``, the name roverlite gives every exported model's input.

    Raises:
        FileNotFoundError: no ``bundle.json``.
        ValueError: the bundle's artifact is not an ONNX model.
    """
    bundle = Path(bundle)
    manifest_file = bundle / "bundle.json"
    if not manifest_file.is_file():
        raise FileNotFoundError(f"Not a bundle folder: {str(bundle)!r}. Expected bundle.json inside. Received: none.")
    artifact = bundle / json.loads(manifest_file.read_text())["artifact"]
    if artifact.suffix.lower() != ".onnx":
        raise ValueError(
            "TensorRT engines are built from ONNX. Expected a bundle of an onnx artifact "
            f"(roverlite export --format onnx, then roverlite bundle). Received: {artifact.name!r}."
        )
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
    except ImportError:
        name = "image"
    return artifact, name


def trtexec_command(
    onnx: PathLike,
    engine: PathLike,
    precision: str = "fp16",
    calib: Optional[PathLike] = None,
    input_name: Optional[str] = None,
    load_inputs: Optional[PathLike] = None,
    timing_cache: Optional[PathLike] = None,
    perf_only: bool = False,
    trtexec: str = DEFAULT_TRTEXEC,
    extra: Sequence[str] = (),
) -> List[str]:
    """The trtexec argument list (first item: the executable).

    Args:
        onnx, engine: the model and where to save the engine.
        precision: ``fp32``, ``fp16`` or ``int8``.
        calib: int8 calibration cache; required for ``int8`` unless ``perf_only``.
        input_name, load_inputs: benchmark on this raw float32 input file for tensor ``input_name``.
        timing_cache: kernel timing cache file.
        perf_only: allow ``int8`` without a cache (placeholder scales: timing only).
        trtexec: the executable.
        extra: more trtexec flags, appended as given.

    Raises:
        ValueError: unknown precision, int8 without a cache (and not ``perf_only``), a cache for a
            non-int8 build, or ``load_inputs`` without ``input_name``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Expected --precision in {list(PRECISIONS)}. Received: {precision!r}.")
    if precision == "int8" and calib is None and not perf_only:
        raise ValueError(
            "int8 without a calibration cache gets placeholder scales: the engine's outputs are meaningless. "
            "Expected --calib CACHE (see make_calib_cache.py) or --perf-only for a timing-only build. Received: no --calib."
        )
    if calib is not None and precision != "int8":
        raise ValueError(f"Expected --calib only with --precision int8. Received: --calib with {precision}.")
    if load_inputs is not None and not input_name:
        raise ValueError("Expected the input tensor name with --load-inputs. Received: none.")
    command = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}"]
    if precision in ("fp16", "int8"):
        command.append("--fp16")
    if precision == "int8":
        command.append("--int8")
        if calib is not None:
            command.append(f"--calib={calib}")
    if load_inputs is not None:
        command.append(f"--loadInputs={input_name}:{load_inputs}")
    if timing_cache is not None:
        command.append(f"--timingCacheFile={timing_cache}")
    command.extend(extra)
    return command


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Print the trtexec command for a bundle's ONNX.")
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder of an onnx artifact")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16")
    parser.add_argument("--calib", type=Path, help="int8 calibration cache")
    parser.add_argument(
        "--out", type=Path, help="engine file (default: <artifact stem>_<precision>.engine in the bundle)"
    )
    parser.add_argument("--load-inputs", type=Path, help="raw float32 input file (make_calib_cache.py writes them)")
    parser.add_argument("--timing-cache", type=Path, help="trtexec timing cache file")
    parser.add_argument("--perf-only", action="store_true", help="allow int8 without --calib (timing only)")
    parser.add_argument("--trtexec", default=DEFAULT_TRTEXEC, help="trtexec executable")
    parser.add_argument("--print0", action="store_true", help="NUL-separated arguments (for build_engine.sh)")
    parser.add_argument("extra", nargs="*", help="more trtexec flags (after --)")
    args = parser.parse_args(argv)
    onnx, name = bundle_onnx(args.bundle)
    engine = args.out or onnx.with_name(f"{onnx.stem}_{args.precision}.engine")
    command = trtexec_command(
        onnx,
        engine,
        args.precision,
        calib=args.calib,
        input_name=name,
        load_inputs=args.load_inputs,
        timing_cache=args.timing_cache,
        perf_only=args.perf_only,
        trtexec=args.trtexec,
        extra=args.extra,
    )
    if args.print0:
        sys.stdout.write("".join(part + "\0" for part in command))
    else:
        print(" ".join(shlex.quote(part) for part in command))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
