"""Train the teacher of a config and record whether it meets its accuracy target.

    python benchmarks/teacher.py --config configs/mars.yaml
    python benchmarks/teacher.py --config configs/cropweed.yaml
    python benchmarks/teacher.py --config configs/cropweed.yaml --set train.class_weighting=none \
        --tag no_class_weights --out runs/teacher_cwfid_no_class_weights

Writes ``benchmarks/results/teacher_<dataset>.json`` with the validation ``miou``,
``per_class_iou``, ``confusion_matrix``, ``train_seconds``, ``images_per_second``, ``params``,
``macs``, the targets and whether they were met, the host, and the command that reproduces it.
With ``--tag T`` the file is ``teacher_<dataset>_<T>.json`` instead, so an ablation run does not
overwrite the configured teacher's result.
Targets (issue 3): AI4Mars mIoU >= 0.72 and big-rock IoU >= 0.35; CWFID mean(crop, weed) >= 0.60.

A config with ``data.folds`` (configs/cropweed.yaml: 4) is judged by cross-validation: every fold
is trained into ``<out>/fold<k>``, the targets are checked on the pooled (out-of-fold) confusion
matrix, and ``per_fold`` lists each fold's own scores and whether it alone met the targets.
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
import time
from pathlib import Path

from roverlite.config import load_config
from roverlite.deploy.hostinfo import host_info
from roverlite.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"

# dataset -> list of (description, function of per-class IoU + mIoU -> value, minimum)
TARGETS = {
    "ai4mars": [
        ("miou", lambda r: r["miou"], 0.72),
        ("big_rock_iou", lambda r: r["per_class_iou"]["big_rock"], 0.35),
    ],
    "cwfid": [
        ("mean_crop_weed_iou", lambda r: (r["per_class_iou"]["crop"] + r["per_class_iou"]["weed"]) / 2, 0.60),
    ],
}


def dataset_name(data_path: str | None) -> str:
    return Path(data_path or "synthetic").name.split("-")[0].lower()


def results_path(name: str, tag: str | None = None) -> Path:
    """``RESULTS/teacher_<name>.json``, or ``teacher_<name>_<tag>.json`` for a tagged (ablation) run."""
    if tag is None:
        return RESULTS / f"teacher_{name}.json"
    if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", tag):
        raise ValueError(f"Expected a tag of lower-case letters, digits and underscores. Received: tag={tag!r}.")
    return RESULTS / f"teacher_{name}_{tag}.json"


def check_targets(name: str, result: dict) -> list[dict]:
    rows = []
    for what, value_of, minimum in TARGETS.get(name, []):
        try:
            value = value_of(result)
        except (KeyError, TypeError):
            value = None
        rows.append({"target": what, "minimum": minimum, "value": value, "met": value is not None and value >= minimum})
    return rows


def fold_fields(name: str, summary: dict) -> dict:
    """``best_epoch``/``epochs_run`` of one run, or the cross-validation's per-fold record."""
    if "per_fold" not in summary:
        return {"best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"]}
    per_fold = [{**fold, "targets": check_targets(name, fold)} for fold in summary["per_fold"]]
    return {
        "folds": summary["folds"],
        "scored_on": "pooled out-of-fold confusion matrix",
        "fold_miou_mean": summary["fold_miou_mean"],
        "fold_miou_std": summary["fold_miou_std"],
        "per_fold": per_fold,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/bench/teacher_<dataset>)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--tag", help="write teacher_<dataset>_<TAG>.json (an ablation) instead of teacher_<dataset>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")

    from roverlite.train.crossval import train_folds
    from roverlite.train.fit import train

    cfg = load_config(args.config, overrides=args.overrides)
    name = dataset_name(cfg.data.path)
    results = results_path(name, args.tag)  # a bad tag fails here, before hours of training
    out = args.out or Path("runs") / "bench" / f"teacher_{name}"
    started = time.perf_counter()
    if cfg.data.folds is None:
        summary = dict(train(cfg, out, resume=args.resume).summary)
    else:
        summary = dict(train_folds(cfg, out, resume=args.resume).summary)
    record = {
        "dataset": name,
        "config": str(args.config),
        "model": cfg.model.name,
        "miou": summary["miou"],
        "per_class_iou": summary["per_class_iou"],
        "confusion_matrix": summary["confusion_matrix"],
        "train_seconds": summary["train_seconds"],
        "images_per_second": summary["images_per_second"],
        "params": summary["params"],
        "macs": summary["macs"],
        **fold_fields(name, summary),
        "targets": check_targets(name, summary),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "host": host_info(),  # CPU model and SIMD flags: sessions here land on different CPUs
        "run_dir": str(out),
        "command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/teacher.py", *sys.argv[1:]]),
    }
    path = atomic_write_json(results, record)
    for row in record["targets"]:
        print(f"{row['target']}: {row['value']} (minimum {row['minimum']}) -> {'met' if row['met'] else 'NOT met'}")
    print(f"written {path}")
    return 0 if all(r["met"] for r in record["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
