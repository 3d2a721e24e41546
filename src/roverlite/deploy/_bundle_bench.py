#!/usr/bin/env python3
"""Benchmark the bundled artifact on this device: latency percentiles, start-up, memory, accuracy.

Copied into every bundle as ``bench.py``. Runs ``roverlite.deploy.bench`` from the bundle's own
copy of ``roverlite.deploy`` on the bundled artifact and, unless ``--no-accuracy``, scores the
timed runner on the bundled test pack. Needs numpy, Pillow and the artifact's runtime.

Usage:
    python bench.py [--runs 100] [--threads N] [--min-seconds S] [--end-to-end] [--profile]
                    [--no-accuracy] [--json bench.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(HERE))  # the bundled roverlite.deploy, even if another roverlite is installed
    from roverlite.deploy import bench

    manifest = json.loads((HERE / "bundle.json").read_text())
    defaults = [str(HERE / manifest["artifact"])]
    if "--no-accuracy" in argv:
        argv.remove("--no-accuracy")
    else:
        defaults += ["--with-accuracy", str(HERE / manifest["testpack"])]
    return bench.main(defaults + argv)


if __name__ == "__main__":
    sys.exit(main())
