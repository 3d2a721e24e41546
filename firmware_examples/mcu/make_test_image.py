#!/usr/bin/env python3
"""Write ``test_image.h`` for the MCU example from one image of a bundle's test pack.

``roverlite export --format c_array`` already writes a ``test_image.h`` (the first check image);
use this script to pick another image, e.g. one with big rocks in it. Runs on the workstation
(it needs roverlite with the ``tflite-micro`` package: the expected class counts come from
TFLite-Micro itself).

Usage:
    python firmware_examples/mcu/make_test_image.py --bundle bundles/unet_micro_c_array --index 3 \\
        --out exports/unet_micro_c_array/test_image.h
    python firmware_examples/mcu/make_test_image.py --artifact exports/unet_micro_c_array.tflite \\
        --testpack bundles/unet_micro_c_array/testpack.npz --index 0 --out test_image.h
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("make_test_image")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", type=Path, help="a bundle folder (its artifact and testpack.npz are used)")
    source.add_argument("--artifact", type=Path, help="a c_array .tflite with its sidecar (needs --testpack)")
    parser.add_argument("--testpack", type=Path, help="testpack.npz (with --artifact)")
    parser.add_argument("--index", type=int, default=0, help="which test-pack image (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="where to write test_image.h")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")

    import numpy as np

    from roverlite.export.micro import make_test_image
    from roverlite.io import atomic_write_text

    if args.bundle is not None:
        manifest = json.loads((args.bundle / "bundle.json").read_text())
        artifact, testpack = args.bundle / manifest["artifact"], args.bundle / manifest["testpack"]
    else:
        if args.testpack is None:
            parser.error("--artifact needs --testpack")
        artifact, testpack = args.artifact, args.testpack
    with np.load(testpack, allow_pickle=False) as pack:
        images, ids = pack["images"], [str(i) for i in pack["ids"]]
    if not 0 <= args.index < len(images):
        raise ValueError(f"Expected --index in 0..{len(images) - 1} (the test pack's images). Received: {args.index}.")
    header = make_test_image(artifact, images[args.index], ids[args.index])
    atomic_write_text(args.out, header)
    log.info("wrote %s (test-pack image %d, id %s)", args.out, args.index, ids[args.index])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
