"""Which part of latency-aware structured pruning buys what: uniform ratio vs granularity rounding vs table search.

    python benchmarks/ablation_structured.py                      # untrained unet_s, 128x128x1, latency only
    python benchmarks/ablation_structured.py --teacher runs/mars-teacher --epochs 4   # + mIoU after a fine-tune

Variants of one model at (approximately) equal MACs:

* ``uniform``: every level keeps ``--keep`` of its filters (odd counts such as 5 or 77);
* ``uniform + granularity``: the same, rounded to multiples of ``--granularity`` (TAO-style);
* ``search @ equal MACs``: the latency-table search (``roverlite.compress.channel_search``) run
  until its MACs are at most the uniform variant's;
* ``search @ equal latency``: the search run to the rounded variant's predicted latency;
* ``unpruned``: the reference.

Each is converted to full-int8 TFLite and timed interleaved (LiteRT, batch 1, warm-up) at every
``--threads``; the rows give MACs, params, int8 p50, the table's prediction, GMAC/s and the
share of this machine's int8 conv peak (``measure_peak``). With ``--teacher RUN`` each variant is
also fine-tuned from the teacher for ``--epochs`` (a ``structured`` recipe step with its exact
per-level keep ratios, then int8 export) and scored on the validation split (mIoU, rare class).
Writes ``benchmarks/results/ablation_structured.json`` (and the latency table beside it).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _model(args: argparse.Namespace) -> Any:
    from roverlite._tf import keras
    from roverlite.train.models import create_model

    if args.teacher:
        from roverlite.train.modelfile import load_model_file

        return load_model_file(Path(args.teacher) / "model.h5")
    keras.utils.set_random_seed(0)
    overrides = {"decoder": "nearest"} if args.decoder == "nearest" else {}
    return create_model(args.model, input_shape=(args.size, args.size, args.channels), num_classes=args.classes,
                        **overrides)


def _macs(model: Any, widths: tuple[int, ...], full: tuple[int, ...]) -> int:
    from roverlite._tf import keras
    from roverlite.compress.structured import thinned_config
    from roverlite.train.macs import count_macs

    return int(count_macs(keras.Model.from_config(thinned_config(model, [w / f for w, f in zip(widths, full)]))).macs)


def _search_equal_macs(model, table, scores, granularity, threads, macs_goal) -> tuple[tuple[int, ...], bool]:
    from roverlite.compress.channel_search import greedy_moves

    widths = table.widths
    for _, widths in greedy_moves(table, scores, granularity, threads):
        if _macs(model, widths, table.widths) <= macs_goal:
            return widths, True
    return widths, False


def _variants(model, table, args) -> dict[str, tuple[int, ...]]:
    from roverlite.compress.channel_search import search_channels
    from roverlite.compress.structured import kept_count, level_scores

    full = table.widths
    uniform = tuple(kept_count(w, args.keep, 1) for w in full)
    rounded = tuple(kept_count(w, args.keep, args.granularity) for w in full)
    scores = level_scores(model)
    goal = _macs(model, uniform, full)
    equal_macs, matched = _search_equal_macs(model, table, scores, args.granularity, args.threads[0], goal)
    if not matched:
        logging.warning("the search ran out of useful moves above the uniform MACs; its last widths are used")
    args.equal_macs_matched = matched
    target = table.predict(rounded, args.threads[0])
    equal_latency = search_channels(table, scores, target_latency_ms=target, granularity=args.granularity,
                                    threads=args.threads[0]).widths_after
    return {"unpruned": full, f"uniform {args.keep}": uniform, f"uniform {args.keep} + granularity {args.granularity}":
            rounded, "search @ equal MACs": equal_macs, "search @ equal latency": equal_latency}


def _time(model, variants, table, threads, runs) -> list[dict[str, Any]]:
    from roverlite._tf import keras
    from roverlite.compress.latency_table import time_tflite
    from roverlite.compress.structured import thinned_config
    from roverlite.export.tflite import convert_tflite
    from roverlite.train.macs import count_macs

    shape = tuple(int(s) for s in model.input_shape[1:])
    calibration = np.random.default_rng(0).normal(size=(4, *shape)).astype(np.float32)
    rows, contents = [], []
    for label, widths in variants.items():
        thin = keras.Model.from_config(thinned_config(model, [w / f for w, f in zip(widths, table.widths)]))
        cost = count_macs(thin)
        contents.append(convert_tflite(thin, "int8", calibration=calibration))
        rows.append({"variant": label, "widths": list(widths), "macs": int(cost.macs), "params": int(cost.params),
                     "size_bytes": len(contents[-1])})
    for t in threads:
        for row, ms in zip(rows, time_tflite(contents, t, warmup=20, runs=runs, rounds=6)):
            row[f"p50_ms_{t}t"] = round(ms, 4)
            try:
                row[f"predicted_ms_{t}t"] = round(table.predict(row["widths"], t), 4)
            except ValueError:  # widths off the table's grid (the unrounded uniform variant)
                row[f"predicted_ms_{t}t"] = None
    return rows


def _peak(rows, threads) -> dict[str, Any]:
    from roverlite.export.peak import measure_peak

    peaks = {}
    for t in threads:
        peak = measure_peak(threads=t).int8_litert_gmacs
        peaks[str(t)] = peak
        for row in rows:
            gmacs = row["macs"] / (row[f"p50_ms_{t}t"] / 1e3) / 1e9
            row[f"gmacs_{t}t"] = round(gmacs, 2)
            row[f"peak_share_{t}t"] = None if not peak else round(gmacs / peak, 4)
    return peaks


def _accuracy(rows, table, args) -> None:
    from roverlite.compress.recipe import Recipe
    from roverlite.compress.runner import run_recipe

    for row in rows:
        if row["variant"] == "unpruned":
            continue
        keep = [w / f for w, f in zip(row["widths"], table.widths)]
        recipe = Recipe.from_dict({
            "name": "ablation", "steps": [{"structured": {"keep_ratio": keep, "epochs": args.epochs}},
                                          {"export": {"formats": ["tflite_int8"]}}],
            "gate": {"max_miou_drop": 1.0, "max_rare_class_drop": 1.0, "rare_classes": [args.rare_class]}})
        with tempfile.TemporaryDirectory(prefix="ablation-") as tmp:
            result = run_recipe(args.teacher, recipe, Path(tmp) / "out", progress=False, enforce_gate=False)
        artifact = result.final_artifacts[0]
        row["miou"] = artifact["miou"]
        row[f"iou_{args.rare_class}"] = (artifact.get("per_class_iou") or {}).get(args.rare_class)
        row["teacher_miou"] = result.teacher.get("miou")
        row[f"teacher_iou_{args.rare_class}"] = (result.teacher.get("per_class_iou") or {}).get(args.rare_class)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet_s", help="registered model (untrained; ignored with --teacher)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--decoder", choices=["nearest"], help="build the untrained model with the nearest decoder")
    parser.add_argument("--keep", type=float, default=0.3, help="uniform keep ratio (default 0.3)")
    parser.add_argument("--granularity", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=300, help="timed runs per variant and thread count")
    parser.add_argument("--table", type=Path, help="reuse this latency table instead of measuring one")
    parser.add_argument("--teacher", help="a trained run folder: also fine-tune and score every variant")
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs with --teacher")
    parser.add_argument("--rare-class", default="big_rock")
    parser.add_argument("--out", type=Path, default=RESULTS / "ablation_structured.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    from roverlite.compress.latency_table import load_latency_table, measure_latency_table
    from roverlite.deploy.hostinfo import host_info

    started = time.perf_counter()
    model = _model(args)
    if args.table:
        table = load_latency_table(args.table)
    else:
        table = measure_latency_table(model, args.granularity, args.threads, runs=args.runs)
        table.save(args.out.with_name(args.out.stem + "_table.json"))
    variants = _variants(model, table, args)
    rows = _time(model, variants, table, args.threads, args.runs)
    peaks = _peak(rows, args.threads)
    if args.teacher:
        _accuracy(rows, table, args)
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/ablation_structured.py", *sys.argv[1:]])
    record = {"model": args.teacher or args.model, "trained": bool(args.teacher), "decoder": args.decoder,
              "input": list(table.input_shape), "classes": table.num_classes, "keep": args.keep,
              "granularity": args.granularity, "search_equal_macs_matched": args.equal_macs_matched,
              "table_full_ms": {str(t): table.full_ms[t] for t in table.threads},
              "int8_peak_gmacs": peaks, "rows": rows, "host": host_info(),
              "seconds": round(time.perf_counter() - started, 1), "command": command}
    path = atomic_write_json(args.out, record)
    for row in rows:
        times = "  ".join(f"{t}t {row[f'p50_ms_{t}t']:.3f} ms (pred {row[f'predicted_ms_{t}t'] or float('nan'):.3f}, "
                          f"{100 * (row[f'peak_share_{t}t'] or 0):.1f} % peak)" for t in args.threads)
        print(f"{row['variant']:<34} {str(row['widths']):<24} {row['macs'] / 1e6:7.1f} MMAC  {times}")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
