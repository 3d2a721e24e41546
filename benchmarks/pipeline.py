"""Run ``roverlite pipeline`` on a real config and record its report summary with the host.

    python benchmarks/pipeline.py --config configs/mars.yaml
    python benchmarks/pipeline.py --config configs/mars.yaml --teacher runs/bench/teacher_ai4mars   # reuse a teacher
    roverlite compress runs/bench/teacher_ai4mars --recipe configs/recipes/mars_nano_int8.yaml --out runs/bench/mars_nano
    python benchmarks/pipeline.py --teacher runs/bench/teacher_ai4mars --compressed runs/bench/mars_nano   # and a student

Writes ``benchmarks/results/pipeline_<dataset>.json``: the pipeline's ``report/summary.json`` (one
row per variant with mIoU, per-class IoU, size, MACs and p50 latency per runtime, every accuracy
measured on the benchmarked artifact over the whole validation split), each stage's seconds, the
host CPU, the benchmark thread count, the wall time, this process's peak RSS, the command that
reproduces it, and issue 6's ``targets`` checked on those rows (student int8 p50 at most 1/15 of the
float teacher's on LiteRT; the recommended runtime never the slower one); exit code 1 when one is
missed. ``--teacher`` adopts a finished ``roverlite train`` run of the same config instead of
training again (on two CPU cores the Mars teacher alone takes about 1.5-2 hours); ``--compressed``
adopts a finished ``roverlite compress`` folder made from that teacher (e.g. one variant folder of
``benchmarks/compress.py``) instead of distilling again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shlex
import sys
import time
from pathlib import Path

from teacher import dataset_name

from roverlite.config import load_config
from roverlite.deploy.hostinfo import host_info
from roverlite.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"
STUDENT_LATENCY_RATIO = 1 / 15  # issue 6: student int8 TFLite p50 <= teacher float TFLite p50 / 15


def check_targets(variants: list[dict]) -> list[dict]:
    """Issue 6's targets on the report's rows, both from this one run (same threads, same load).

    * the fastest int8 row of the compress stage (every row not of kind ``teacher ...``: with the
      student recipes that is the student) by LiteRT p50, over the float teacher's LiteRT p50
      (``None`` when either was not timed);
    * every row timed on several runtimes: the recommended runtime's p50 is the smallest.
    """
    def litert_p50(row: dict) -> float | None:
        return ((row.get("latency_ms") or {}).get("litert") or {}).get("p50")

    teacher = next((r for r in variants if r.get("kind") == "teacher float" and litert_p50(r)), None)
    students = [r for r in variants if not str(r.get("kind", "")).startswith("teacher")
                and r.get("precision") == "int8" and litert_p50(r)]
    fastest = min(students, key=litert_p50, default=None)
    ratio = None if teacher is None or fastest is None else litert_p50(fastest) / litert_p50(teacher)
    slower = []
    for row in variants:
        timed = {rt: v["p50"] for rt, v in (row.get("latency_ms") or {}).items() if v and v.get("p50")}
        chosen = row.get("recommended_runtime")
        if len(timed) > 1 and chosen in timed and timed[chosen] > min(timed.values()):
            slower.append(row["name"])
    return [
        {"target": "student int8 p50 / teacher float p50 (LiteRT)", "value": ratio,
         "student": None if fastest is None else fastest["name"], "limit": f"<= {STUDENT_LATENCY_RATIO:.4f}",
         "met": None if ratio is None else ratio <= STUDENT_LATENCY_RATIO},
        {"target": "rows whose recommended runtime is slower than another runtime", "value": len(slower),
         "rows": slower, "limit": "<= 0", "met": not slower},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="run config (default: the built-in synthetic demo)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--recipe", type=Path, help="compression recipe (default: the pipeline's)")
    parser.add_argument("--teacher", type=Path, help="a finished training run of this config to adopt")
    parser.add_argument("--compressed", type=Path,
                        help="a finished `roverlite compress` folder made from that teacher to adopt as the compress stage")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="benchmark threads (default: all cores)")
    parser.add_argument("--bench-runs", type=int, default=50)
    parser.add_argument("--out", type=Path, help="run folder (default: runs/bench/pipeline_<dataset>)")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")

    from roverlite.pipeline import run_pipeline

    if args.config is None and args.teacher is not None:  # the adopted run says what it was trained on
        args.config = args.teacher / "config.yaml"
    cfg = load_config(args.config, overrides=args.overrides)  # None: the synthetic demo
    name = dataset_name(cfg.data.path)
    out = args.out or Path("runs") / "bench" / f"pipeline_{name}"
    started = time.perf_counter()
    result = run_pipeline(cfg, out, recipe=args.recipe, resume=args.resume, bench_runs=args.bench_runs,
                          threads=args.threads, teacher=args.teacher, compressed=args.compressed)
    report = json.loads((result.report_dir / "summary.json").read_text())
    stages = json.loads((out / "pipeline.json").read_text())["stages"]
    record = {
        "dataset": name,
        "config": str(args.config),
        **report,
        "targets": check_targets(report["variants"]),
        "stage_seconds": {k: v.get("seconds") for k, v in stages.items()},
        "teacher_adopted_from": stages.get("teacher", {}).get("adopted_from"),
        "compress_adopted_from": stages.get("compress", {}).get("adopted_from"),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": args.threads,
        "load_average": os.getloadavg(),
        "host": host_info(),  # CPU model and SIMD flags: sessions here land on different CPUs
        "run_dir": str(out),
        "command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/pipeline.py", *sys.argv[1:]]),
    }
    path = atomic_write_json(RESULTS / f"pipeline_{name}.json", record)
    for row in record["targets"]:
        status = "not measured" if row["met"] is None else "met" if row["met"] else "NOT met"
        print(f"{row['target']}: {row['value']} ({row['limit']}) -> {status}")
    print(f"written {path}")
    return 0 if all(r["met"] is not False for r in record["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
