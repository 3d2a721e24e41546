"""Where a small U-Net's CPU time goes: the teacher against its pruned and re-architected students.

    python benchmarks/architecture_moves.py                 # 1 and 2 threads, 128x128x1 -> 4 classes

Builds untrained models (latency does not depend on the weights) at the demo's input size:
the teacher ``unet_s``; the teacher pruned to half its filters (``unet_xs``: a quarter of the
MACs); each with the nearest decoder (``roverlite.compress.decoder``); the teacher at half
resolution (``roverlite.compress.resolution``). Exports each as float and int8 TFLite with
``roverlite.export`` and times them with ``roverlite.deploy.bench`` in interleaved rounds, one
process, at each thread count. Writes ``benchmarks/results/architecture_moves.json`` with p50
per model, format and thread count, MACs, the ratios to the teacher's float and int8 p50, the
host and the command.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

from roverlite.config import DataConfig
from roverlite.deploy.hostinfo import host_info
from roverlite.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 128
# name -> (registry model, build_unet overrides)
MODELS = {
    "teacher unet_s": ("unet_s", {}),
    "unet_s pruned to 0.5 (unet_xs)": ("unet_xs", {}),
    "unet_xs, decoder: nearest": ("unet_xs", {"decoder": "nearest"}),
    "unet_s, decoder: nearest": ("unet_s", {"decoder": "nearest"}),
    "unet_s, resolution: 0.5": ("unet_s", {"stem_stride": 2, "stem": "pool"}),
}


def export_all(out: Path) -> dict[str, dict[str, Path]]:
    from roverlite._tf import keras
    from roverlite.export import ExportSettings, export_model
    from roverlite.train.models import create_model

    data = DataConfig(image_size=(SIZE, SIZE))
    calibration = np.random.default_rng(0).integers(0, 256, (16, SIZE, SIZE, 1), dtype=np.uint8)
    paths = {}
    for index, (label, (name, overrides)) in enumerate(MODELS.items()):
        keras.utils.set_random_seed(0)
        model = create_model(name, input_shape=(SIZE, SIZE, 1), num_classes=4, **overrides)
        results = export_model(model, ExportSettings(["tflite", "tflite_int8"], out, data,
                                                     calibration_images=calibration, name=f"m{index}"))
        paths[label] = {r.format: r.path for r in results}
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    from roverlite.deploy.bench import bench_many

    with tempfile.TemporaryDirectory(prefix="roverlite-moves-") as tmp:
        paths = export_all(Path(tmp))
        jobs = [(label, fmt, path) for label, by_format in paths.items() for fmt, path in by_format.items()]
        rows = []
        for threads in args.threads:
            results = bench_many([p for _, _, p in jobs], threads=threads, warmup=20, runs=args.runs,
                                 rounds=args.rounds)
            for (label, fmt, _), result in zip(jobs, results):
                rows.append({"model": label, "format": fmt, "threads": threads, "p50_ms": result.p50_ms,
                             "p90_ms": None if result.latency_ms is None else result.latency_ms.p90,
                             "macs": result.macs, "status": result.status, "error": result.error})
    for threads in args.threads:
        mine = [r for r in rows if r["threads"] == threads]
        teacher = {r["format"]: r["p50_ms"] for r in mine if r["model"] == "teacher unet_s"}
        for row in mine:
            if row["p50_ms"]:
                row["vs_teacher_float"] = round(row["p50_ms"] / teacher["tflite"], 4)
                row["vs_teacher_int8"] = round(row["p50_ms"] / teacher["tflite_int8"], 4)
    record = {"input": [1, SIZE, SIZE, 1], "classes": 4, "trained": False, "rows": rows, "host": host_info(),
              "command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/architecture_moves.py", *sys.argv[1:]])}
    path = atomic_write_json(RESULTS / "architecture_moves.json", record)
    for row in rows:
        print(f"{row['model']:<34} {row['format']:<12} {row['threads']} thr  p50 {row['p50_ms']:.3f} ms  "
              f"x{row.get('vs_teacher_float', float('nan')):.3f} of teacher float")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
