#!/usr/bin/env python3
"""Run a roverlite bundle on this device: score its test pack and time the model.

Copied into every bundle as ``run.py``. Needs numpy, Pillow and the artifact's runtime
(``pip install -r requirements-device.txt``); the bundle carries its own copy of
``roverlite.deploy``, which this script puts first on ``sys.path``.

Usage:
    python run.py [--threads N] [--providers CUDAExecutionProvider,CPUExecutionProvider]
                  [--repeat 50] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score the bundled artifact on its test pack and time it.")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the runtime")
    parser.add_argument("--providers", default=None, help="comma-separated ONNX Runtime providers, in priority order")
    parser.add_argument("--repeat", type=int, default=20, help="timed model runs on the first test image")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))  # the bundled roverlite.deploy, even if another roverlite is installed
    import roverlite.deploy
    from roverlite.deploy import Segmenter, evaluate_artifact, load_testpack

    manifest = json.loads((HERE / "bundle.json").read_text())
    providers = args.providers.split(",") if args.providers else None
    segmenter = Segmenter(HERE / manifest["artifact"], threads=args.threads, providers=providers)
    pack = load_testpack(HERE / manifest["testpack"])
    result = evaluate_artifact(segmenter, pack.images, pack.masks)
    result["latency_ms"] = time_model(segmenter, pack.images[0], max(args.repeat, 1))
    result["deploy_package"] = str(Path(roverlite.deploy.__file__).resolve().parent)

    print(f"{manifest['artifact']} ({result['format']}, {result['backend']}) on {result['images']} test images")
    for name, iou in result["per_class_iou"].items():
        print(f"  {name:<16} {'n/a' if iou is None else f'{iou:.4f}'}")
    miou = result["miou"]
    print(f"  {'mIoU':<16} {'n/a' if miou is None else f'{miou:.4f}'}")
    latency = result["latency_ms"]
    print(f"model {latency['model_median']:.2f} ms median, predict {latency['predict_median']:.2f} ms median "
          f"(incl. resize/normalise/argmax), {latency['runs']} runs")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def time_model(segmenter, image, runs: int) -> dict:
    """Median and 90th-percentile latency of the bare model and of the whole ``predict``."""
    x = segmenter.preprocess(image)
    for _ in range(3):  # warm-up: first runs pay for allocation and kernel selection
        segmenter.runner.run(x)
    model, predict = [], []
    for _ in range(runs):
        start = time.perf_counter()
        segmenter.runner.run(x)
        model.append(1000.0 * (time.perf_counter() - start))
        start = time.perf_counter()
        segmenter.predict(image)
        predict.append(1000.0 * (time.perf_counter() - start))
    return {
        "runs": runs,
        "model_median": statistics.median(model),
        "model_p90": sorted(model)[int(0.9 * (runs - 1))],
        "predict_median": statistics.median(predict),
        "predict_p90": sorted(predict)[int(0.9 * (runs - 1))],
    }


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, ImportError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
