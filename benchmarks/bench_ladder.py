"""Latency ladder: the teacher in float32 against every student in int8, measured in one run.

    python benchmarks/bench_ladder.py                       # 2 threads, 200 runs in 4 rounds
    python benchmarks/bench_ladder.py --threads 1 --runs 400

Exports the teacher (``--teacher``, default ``unet_teacher``; ``unet_s`` is the teacher of
configs/mars.yaml) in float32 and, for context, int8, and the student ladder ``unet_s``, ``unet_xs``,
``unet_xxs``, ``unet_nano`` plus ``unet_micro`` (int8) as TFLite at 128x128x1 -> 4 classes, batch 1.
The models are untrained: latency does not depend on the weights' values (int8 self-checks of
untrained models are expected to fail and are only recorded). Every artifact is benchmarked in
the same process with the same thread count, the timed runs interleaved in rounds so that load
from other processes hits every model alike; only the ratios are meant to travel to other
machines (NOTES: absolute times drift between runs and machines).

Writes ``benchmarks/results/bench_ladder.json``: per model its params, MACs, size and latency
statistics, the student-int8 / teacher-float p50 ratios against the target (issue 6: a student in
int8 at no more than 1/15 of the teacher's float p50), the machine's measured peak, host info
with the load average before and after, and the command that reproduces it.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = (128, 128)
TEACHER = "unet_teacher"
TARGET_RATIO = 1 / 15
CALIBRATION_IMAGES = 8


def export_ladder(out_dir: Path, teacher: str = TEACHER) -> list[dict]:
    """Export the teacher (float32 + int8) and students (int8); one dict per artifact."""
    from roverlite.compress.search import export_untrained
    from roverlite.config import DataConfig
    from roverlite.train.models import STUDENT_LADDER

    data_cfg = DataConfig(image_size=SIZE, mean=(0.5,), std=(0.25,))
    students = [name for name in (*STUDENT_LADDER, "unet_micro") if name != teacher]  # the MCU model too, for context
    plan = [(teacher, ["tflite", "tflite_int8"])] + [(name, ["tflite_int8"]) for name in students]
    return export_untrained(plan, out_dir, data_cfg, calibration_count=CALIBRATION_IMAGES,
                            source="benchmarks/bench_ladder.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=TEACHER, help=f"the float reference model (default {TEACHER})")
    parser.add_argument("--threads", type=int, default=2, help="runtime threads for every model (default 2)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model, over all rounds (default 200)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs per model (default 20)")
    parser.add_argument("--no-peak", action="store_true", help="skip measuring the machine's peak GMAC/s")
    parser.add_argument("--keep", type=Path, default=None, help="export into this folder and keep the artifacts")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_ladder.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")

    from roverlite.deploy.bench import bench_many, format_bench_table
    from roverlite.deploy.hostinfo import host_info
    from roverlite.io import atomic_write_json

    host_before = host_info()
    with tempfile.TemporaryDirectory(prefix="bench_ladder_") as tmp:
        folder = args.keep or Path(tmp)
        exported = export_ladder(folder, args.teacher)
        paths = [e["artifact"] for e in exported]
        results = bench_many(paths, threads=args.threads, runs=args.runs, warmup=args.warmup, rounds=args.rounds)
    print(format_bench_table(results))
    host_after = host_info()
    peak = None
    if not args.no_peak:
        from roverlite.export.peak import measure_peak

        peak = measure_peak(threads=args.threads)

    models = []
    for entry, result in zip(exported, results):
        row = {**entry, "status": result.status, "error": result.error}
        if result.ok:
            row.update(
                latency_ms=result.latency_ms.to_dict(), init_ms=result.init_ms,
                first_inference_ms=result.first_inference_ms, gmac_per_s=round(entry["macs"] / result.p50_ms / 1e6, 2),
                runtime_version=result.runtime_version, backend=result.backend,
            )
            if peak is not None:
                best, label = peak.peak_for("int8" if entry["format"].endswith("int8") else "float32")
                row["peak_gmac_per_s"], row["peak"] = best, label
                row["peak_fraction"] = round(row["gmac_per_s"] / best, 4) if best else None
        models.append(row)

    teacher = next((m for m in models if m["model"] == args.teacher and m["format"] == "tflite" and m["status"] == "ok"), None)
    ratios = []
    for m in models:
        if teacher is None or m["status"] != "ok" or m["format"] != "tflite_int8":
            continue
        ratio = m["latency_ms"]["p50"] / teacher["latency_ms"]["p50"]
        ratios.append({
            "model": m["model"], "int8_p50_ms": round(m["latency_ms"]["p50"], 4),
            "teacher_float_p50_ms": round(teacher["latency_ms"]["p50"], 4),
            "ratio": round(ratio, 4), "speedup": round(1 / ratio, 2), "mac_ratio": round(m["macs"] / teacher["macs"], 4),
            "target_met": ratio <= TARGET_RATIO,
        })
    document = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
        "settings": {"teacher": args.teacher, "threads": args.threads, "runs": args.runs, "rounds": args.rounds, "warmup": args.warmup,
                     "input": [1, *SIZE, 1], "classes": 4, "trained": False},
        "target": {"ratio_max": round(TARGET_RATIO, 6), "rule": "student int8 p50 <= teacher float p50 / 15"},
        "ratios": ratios,
        "students_meeting_target": [r["model"] for r in ratios if r["target_met"] and r["model"] != args.teacher],
        "models": models,
        "peak": None if peak is None else peak.to_dict(),
        "host": {**host_after, "load_avg_before": host_before["load_avg"], "load_avg_after": host_after["load_avg"]},
        "note": "2 shared cores; other processes ran meanwhile (see load_avg). Ratios from one interleaved run.",
    }
    atomic_write_json(args.out, document)
    for r in ratios:
        print(f"{r['model']:<14} int8 {r['int8_p50_ms']:8.3f} ms  teacher float {r['teacher_float_p50_ms']:8.3f} ms  "
              f"ratio {r['ratio']:.4f} ({r['speedup']:.1f}x)  {'meets' if r['target_met'] else 'misses'} 1/15")
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
