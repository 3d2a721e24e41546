"""One student against issue 21's targets: accuracy, size and latency of the exported artifacts, one run.

    python benchmarks/one_student.py --teacher runs/teacher_ai4mars --student runs/mars-fast/step4_export/student.tflite

The teacher's ``model.h5`` is exported here as float TFLite (the reference) and as post-training int8
TFLite (``roverlite export``'s defaults: calibrated on train images, self-checked on val), then the
three artifacts (teacher float, teacher int8, the student's int8 ``.tflite``) are

* timed on LiteRT at 1 and at 2 threads, the timed runs interleaved in rounds so that load from other
  processes hits every artifact alike (``roverlite.deploy.bench.bench_many``);
* scored on the whole validation split of the teacher's config with ``roverlite.deploy`` (the same
  files that were timed);
* set against the machine's int8 conv peak (``roverlite.export.peak.measure_peak``): the student's
  MACs / p50 as a share of the peak GMAC/s at the same thread count.

Writes ``benchmarks/results/one_student_<dataset>[_<tag>].json``: per artifact its mIoU, per-class
IoU, hazard rates, size, MACs and p50/p90 per thread count; the ratios; every target with its value,
limit and verdict; the host and the command. Exit code 0 whether or not the targets are met (they are
recorded, with by how much).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from teacher import dataset_name

from roverlite.config import load_config
from roverlite.deploy.hostinfo import host_info
from roverlite.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"
RARE = "big_rock"
# issue 21: the student against the float teacher of configs/mars.yaml, same run, same machine.
TARGETS = {
    "miou_ratio": (">=", 0.97),
    "rare_iou_ratio": (">=", 0.90),
    "size_ratio": ("<=", 1 / 30),
    "p50_vs_teacher_float": ("<=", 1 / 15),
    "p50_vs_teacher_int8": ("<=", 1 / 4),
    "int8_peak_share": (">=", 0.25),
}


def _export_teacher(teacher: Path, out: Path, data_cfg) -> dict[str, Path]:
    from roverlite.export import ExportSettings, export_model

    settings = ExportSettings.from_run(["tflite", "tflite_int8"], out, data_cfg, name="teacher")
    results = export_model(teacher / "model.h5", settings)
    for result in results:
        if not result.passed:
            logging.warning("teacher %s self-check did not pass: %s", result.format, result.check)
    return {r.format: Path(r.path) for r in results}


def _time(paths: dict[str, Path], threads: tuple[int, ...], runs: int, rounds: int) -> dict[str, dict[int, Any]]:
    from roverlite.deploy.bench import bench_many

    timing: dict[str, dict[int, Any]] = {name: {} for name in paths}
    for count in threads:
        rows = bench_many(list(paths.values()), runtime="litert", threads=count, warmup=20, runs=runs, rounds=rounds)
        for name, row in zip(paths, rows):
            if row.status != "ok":
                raise RuntimeError(f"{name} could not be benchmarked: {row.error}")
            timing[name][count] = row
    return timing


def _score(paths: dict[str, Path], data_cfg) -> dict[str, dict]:
    from roverlite.data.loader import load_split
    from roverlite.deploy.evaluate import evaluate_artifact

    val = load_split(data_cfg, "val")
    return {name: evaluate_artifact(path, val.images, val.masks) for name, path in paths.items()}


def _verdicts(values: dict[str, float]) -> dict[str, dict]:
    out = {}
    for key, (op, limit) in TARGETS.items():
        value = values.get(key)
        met = None if value is None else (value >= limit if op == ">=" else value <= limit)
        out[key] = {"value": value, "target": f"{op} {limit:.4g}", "met": met}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher's `roverlite train` run folder")
    parser.add_argument("--student", type=Path, required=True, help="the student's int8 .tflite (sidecar beside it)")
    parser.add_argument("--recipe", help="the recipe that made the student (recorded)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=400, help="timed runs per artifact and thread count")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds")
    parser.add_argument("--out", type=Path, help="export folder (default: runs/bench/one_student_<dataset>)")
    parser.add_argument("--tag", help="results file one_student_<dataset>_<tag>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")

    from roverlite.export.peak import measure_peak

    cfg = load_config(args.teacher / "config.yaml")
    name = dataset_name(cfg.data.path)
    started = time.perf_counter()
    paths = _export_teacher(args.teacher, args.out or Path("runs") / "bench" / f"one_student_{name}", cfg.data)
    paths = {"teacher float": paths["tflite"], "teacher int8": paths["tflite_int8"], "student int8": args.student}
    timing = _time(paths, tuple(args.threads), args.runs, args.rounds)
    scores = _score(paths, cfg.data)
    peaks = {t: measure_peak(threads=t).int8_litert_gmacs for t in args.threads}

    artifacts = {}
    for label, path in paths.items():
        any_row = next(iter(timing[label].values()))
        artifacts[label] = {
            "artifact": str(path), "size_bytes": any_row.size_bytes, "macs": any_row.macs,
            "miou": scores[label]["miou"], "per_class_iou": scores[label]["per_class_iou"],
            "hazards": scores[label].get("hazards"), "images": scores[label]["images"],
            "p50_ms": {t: row.latency_ms.p50 for t, row in timing[label].items()},
            "p90_ms": {t: row.latency_ms.p90 for t, row in timing[label].items()},
        }
    teacher, t_int8, student = artifacts["teacher float"], artifacts["teacher int8"], artifacts["student int8"]
    per_threads = {}
    for t in args.threads:
        share = None
        if student["macs"] and peaks[t]:
            share = student["macs"] / (student["p50_ms"][t] * 1e-3) / 1e9 / peaks[t]
        values = {
            "miou_ratio": student["miou"] / teacher["miou"],
            "rare_iou_ratio": student["per_class_iou"][RARE] / teacher["per_class_iou"][RARE],
            "size_ratio": student["size_bytes"] / teacher["size_bytes"],
            "p50_vs_teacher_float": student["p50_ms"][t] / teacher["p50_ms"][t],
            "p50_vs_teacher_int8": student["p50_ms"][t] / t_int8["p50_ms"][t],
            "int8_peak_share": share,
        }
        per_threads[t] = {"int8_peak_gmacs": peaks[t], "targets": _verdicts(values)}
    record = {
        "dataset": name, "teacher": str(args.teacher), "student": str(args.student), "recipe": args.recipe,
        "artifacts": artifacts, "by_threads": per_threads,
        "all_met": all(v["met"] for p in per_threads.values() for v in p["targets"].values()),
        "wall_seconds": round(time.perf_counter() - started, 1), "host": host_info(),
        "command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/one_student.py", *sys.argv[1:]]),
    }
    path = atomic_write_json(RESULTS / f"one_student_{name}{'_' + args.tag if args.tag else ''}.json", record)
    for t, block in per_threads.items():
        print(f"{t} thread(s): " + "; ".join(f"{k} {v['value']:.3f} ({v['target']}: {'met' if v['met'] else 'MISSED'})"
                                               for k, v in block["targets"].items() if v["value"] is not None))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
