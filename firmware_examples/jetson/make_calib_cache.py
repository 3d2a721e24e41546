#!/usr/bin/env python3
"""Prepare TensorRT int8 calibration from a bundle's test pack: input files, a data loader, the cache.

trtexec cannot calibrate from data: ``--calib=FILE`` only reads a cache that a calibrator wrote,
and without one ``--int8`` uses placeholder scales (timing only). This script

1. preprocesses the bundle's test-pack images exactly as ``roverlite.deploy`` does (resize,
   normalise; the model's float32 NHWC input) and writes each as a raw ``.bin`` file, the format
   trtexec's ``--loadInputs=NAME:FILE`` reads (benchmarks on real data, ``--dumpOutput`` checks);
2. writes ``data_loader.py``, a Polygraphy data loader over those files;
3. with ``--polygraphy``, runs Polygraphy's entropy calibrator (IInt8EntropyCalibrator2) to write
   ``calib.cache``; otherwise prints the command. Polygraphy ships with TensorRT's Python
   packages (``pip install polygraphy`` on a Jetson with JetPack's ``python3-libnvinfer``).

The cache is tied to the TensorRT version that wrote it: make it on the Jetson that builds the
engine. TensorRT 10 deprecates this implicit-quantization path (it still works) in favour of
explicitly quantized (Q/DQ) ONNX models. The Jetson Nano (Maxwell) has no int8 path at all.

Usage:
    python3 make_calib_cache.py --bundle ~/bundles/unet_s_onnx --out ~/calib --polygraphy
    ./build_engine.sh --bundle ~/bundles/unet_s_onnx --precision int8 --calib ~/calib/calib.cache
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("make_calib_cache")

_DATA_LOADER = '''\
"""Polygraphy data loader over the calibration inputs in this folder (written by make_calib_cache.py)."""

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load_data():
    manifest = json.loads((HERE / "manifest.json").read_text())
    shape, dtype = tuple(manifest["shape"]), np.dtype(manifest["dtype"])
    for name in manifest["files"]:
        yield {manifest["input_name"]: np.fromfile(HERE / name, dtype=dtype).reshape(shape)}
'''


def write_inputs(bundle: Path, out: Path, count: int | None = None) -> dict[str, Any]:
    """Write the test pack's model inputs as raw float32 files, ``manifest.json`` and ``data_loader.py``.

    Returns:
        The manifest: ``input_name``, ``shape``, ``dtype``, ``files`` (relative to ``out``), ``onnx``.

    Raises:
        FileNotFoundError: not a bundle folder.
        ValueError: the bundle's artifact is not ONNX, or ``count`` < 1.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from trt_command import bundle_onnx

    onnx, input_name = bundle_onnx(bundle)
    sys.path.insert(0, str(bundle.resolve()))  # the bundle's own roverlite.deploy
    import numpy as np

    from roverlite.deploy import Segmenter, load_testpack

    manifest = json.loads((bundle / "bundle.json").read_text())
    pack = load_testpack(bundle / manifest["testpack"])
    if count is not None and count < 1:
        raise ValueError(f"Expected --count >= 1. Received: {count}.")
    segmenter = Segmenter(onnx, providers=["CPUExecutionProvider"])  # preprocessing only; no GPU needed
    (out / "inputs").mkdir(parents=True, exist_ok=True)
    files = []
    for k, (image, image_id) in enumerate(zip(pack.images[:count], pack.ids[:count])):
        x = np.ascontiguousarray(segmenter.preprocess(image), dtype=np.float32)
        name = f"inputs/{k:04d}_{re.sub(r'[^A-Za-z0-9._-]', '_', image_id)}.bin"
        x.tofile(out / name)
        files.append(name)
    written = {
        "input_name": input_name,
        "shape": [int(s) for s in x.shape],
        "dtype": "float32",
        "layout": "NHWC",
        "files": files,
        "onnx": str(onnx.resolve()),
        "normalization": {"mean": list(segmenter.sidecar.mean), "std": list(segmenter.sidecar.std)},
    }
    (out / "manifest.json").write_text(json.dumps(written, indent=2) + "\n")
    (out / "data_loader.py").write_text(_DATA_LOADER)
    return written


def polygraphy_command(manifest: dict[str, Any], out: Path, polygraphy: str = "polygraphy") -> list[str]:
    """The Polygraphy command that calibrates on the written inputs and saves ``out/calib.cache``."""
    return [
        polygraphy,
        "convert",
        manifest["onnx"],
        "--int8",
        "--data-loader-script",
        str(out / "data_loader.py"),
        "--calibration-cache",
        str(out / "calib.cache"),
        "-o",
        str(out / "calibration.engine"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="TensorRT int8 calibration inputs (and cache) from a bundle's test pack."
    )
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder of an onnx artifact")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--count", type=int, help="use the first N test-pack images (default: all)")
    parser.add_argument("--polygraphy", action="store_true", help="run Polygraphy now to write calib.cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")

    manifest = write_inputs(args.bundle, args.out, args.count)
    log.info(
        "wrote %d inputs %s float32 NHWC for tensor %r to %s",
        len(manifest["files"]),
        manifest["shape"],
        manifest["input_name"],
        args.out / "inputs",
    )
    command = polygraphy_command(manifest, args.out)
    first = args.out / manifest["files"][0]
    bundle_arg = shlex.quote(str(args.bundle))
    print(f"benchmark on real data:  ./build_engine.sh --bundle {bundle_arg} --load-inputs {shlex.quote(str(first))}")
    if not args.polygraphy:
        print("make the int8 calibration cache:  " + shlex.join(command))
        return 0
    if shutil.which("polygraphy") is None:
        raise FileNotFoundError(
            "polygraphy not found. Expected it on PATH (pip install polygraphy; needs TensorRT's Python bindings). "
            "Received: none; the input files and data_loader.py are written, run the command above later."
        )
    subprocess.run(command, check=True)
    print(
        f"int8 engine:  ./build_engine.sh --bundle {shlex.quote(str(args.bundle))} --precision int8 "
        f"--calib {shlex.quote(str(args.out / 'calib.cache'))}"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
