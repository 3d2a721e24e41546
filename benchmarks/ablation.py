"""Which loss and augmentation helps the rare class: a short, like-for-like teacher ablation.

    python benchmarks/ablation.py --config configs/mars.yaml --model unet_xs --epochs 4

Trains the same model with the same schedule and seed once per arm, each on the full train split,
and scores each on the full validation split:

    plain_ce        unweighted cross-entropy, horizontal flips only
    weighted_dice   class-weighted cross-entropy (the config's weighting) + 0.5 dice
    copy_paste      weighted_dice + copy-paste and oversampling of the rare class (the config's)

The arms are short on purpose (two CPU cores): they rank the choices, they are not the teacher.
Writes ``benchmarks/results/ablation_<dataset>.json`` after every arm (per-arm mIoU, per-class IoU,
seconds, load average) and prints a Markdown table; the JSON records the command that reproduces it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from teacher import dataset_name

from roverlite.config import load_config
from roverlite.deploy.hostinfo import host_info
from roverlite.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"


def arm_overrides(rare: list[str]) -> dict[str, list[str]]:
    """Config overrides per arm; every arm switches off what the next one adds."""
    off = ["augment.copy_paste.enabled=false", "augment.oversample.factor=1"]
    return {
        "plain_ce": ["train.class_weighting=none", "train.loss={cross_entropy: 1.0}", *off],
        "weighted_dice": ["train.loss={cross_entropy: 1.0, dice: 0.5}", *off],
        "copy_paste": [
            "train.loss={cross_entropy: 1.0, dice: 0.5}",
            "augment.copy_paste.enabled=true",
            f"augment.copy_paste.classes=[{', '.join(rare)}]",
        ],
    }


def markdown_table(arms: dict[str, dict], classes: list[str]) -> str:
    lines = ["| arm | mIoU | " + " | ".join(classes) + " | train s |", "|---" * (len(classes) + 3) + "|"]
    for name, row in arms.items():
        ious = " | ".join(f"{row['per_class_iou'][c]:.3f}" for c in classes)
        lines.append(f"| {name} | {row['miou']:.3f} | {ious} | {row['train_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--model", default="unet_xs", help="registered model trained in every arm")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--arms", nargs="+", default=None, help="subset of arms (default: all)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, help="work folder (default: runs/bench/ablation_<dataset>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")

    from roverlite.train.fit import train

    base = load_config(args.config, overrides=args.overrides)
    name = dataset_name(base.data.path)
    rare = list(base.augment.copy_paste.classes or base.augment.oversample.classes)
    if not rare:
        raise ValueError(f"Expected copy_paste or oversample classes in {args.config}. Received: none.")
    arms = arm_overrides(rare)
    unknown = sorted(set(args.arms or []) - set(arms))
    if unknown:
        raise ValueError(f"Expected arms from {sorted(arms)}. Received: {unknown}.")
    out = args.out or Path("runs") / "bench" / f"ablation_{name}"
    common = [f"model.name={args.model}", f"train.epochs={args.epochs}", "train.patience=null", *args.overrides]
    record = {
        "dataset": name, "config": str(args.config), "model": args.model, "epochs": args.epochs,
        "arms": {}, "table": "",
        "host": host_info(),  # CPU model and SIMD flags: sessions here land on different CPUs
        "command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/ablation.py", *sys.argv[1:]]),
    }
    results = record["arms"]
    for arm in args.arms or list(arms):
        cfg = load_config(args.config, overrides=[*common, *arms[arm]])
        started = time.perf_counter()
        summary = dict(train(cfg, out / arm).summary)
        results[arm] = {
            "overrides": arms[arm], "miou": summary["miou"], "per_class_iou": summary["per_class_iou"],
            "train_seconds": summary["train_seconds"], "images_per_second": summary["images_per_second"],
            "best_epoch": summary["best_epoch"], "wall_seconds": round(time.perf_counter() - started, 1),
            "load_average": os.getloadavg(),  # per arm: arms that shared the cores are not comparable in time
        }
        table = record["table"] = markdown_table(results, list(base.data.eval_classes or base.data.classes))
        # Written after every arm, so a stopped run keeps the arms it finished.
        path = atomic_write_json(RESULTS / f"ablation_{name}.json", record)
    print(table)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
