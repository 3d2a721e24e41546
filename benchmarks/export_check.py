"""Does the int8 export self-check tell a real drop from sampling noise? One teacher, three exports.

    python benchmarks/export_check.py --teacher runs/teacher_ai4mars

Exports the teacher's ``model.h5`` to ``tflite_int8`` three ways, each self-checked by
``roverlite.export`` as users run it:

1. ``default``: calibrated on train images, checked on the default check set (the whole validation
   split up to 512 images, else a seeded subset) with the bootstrap interval;
2. ``first_32``: the same artifact settings, checked on the first 32 validation images only (what
   the check used before: a rare class there is a handful of images);
3. ``blank_calibration``: calibrated on all-black images, a deliberately broken quantization.

and scores the default artifact on the whole validation split as the truth the check estimates.
Writes ``benchmarks/results/export_check_<dataset>.json`` with each check's drops, intervals,
verdict, the full-split drop, the host and the command. Exit code 1 unless the default check
passes and the broken one fails.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from teacher import dataset_name

from roverlite.config import load_config
from roverlite.deploy.hostinfo import host_info
from roverlite.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"
_CHECK_KEYS = ("passed", "failures", "inconclusive", "images", "miou_delta", "miou_drop_interval",
               "per_class_iou_delta", "class_iou_drop_interval", "class_images", "class_pixels", "confidence")


def _summary(result) -> dict:
    return {"artifact": str(result.path), "size_bytes": result.size_bytes,
            **{k: result.check.get(k) for k in _CHECK_KEYS}}


def _epochs(run: Path) -> dict | None:
    """The teacher run's last logged epoch and its validation mIoU (``metrics.jsonl``), if any."""
    import json

    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
    if not lines:
        return None
    last = json.loads(lines[-1])
    return {"epochs_trained": last.get("epoch"), "val_miou": last.get("val_miou")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="a finished `roverlite train` run folder")
    parser.add_argument("--out", type=Path, help="export folder (default: runs/bench/export_check_<dataset>)")
    parser.add_argument("--tag", help="results file export_check_<dataset>_<tag>.json (e.g. for a partly trained teacher)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")

    from roverlite.data.loader import cap_images, load_split
    from roverlite.deploy.evaluate import evaluate_artifact
    from roverlite.deploy.segmenter import Segmenter
    from roverlite.export import ExportSettings, export_model
    from roverlite.export.source import load_source_model
    from roverlite.export.verify import choose_check_images
    from roverlite.train.evaluate import evaluate_arrays

    cfg = load_config(args.teacher / "config.yaml")
    name = dataset_name(cfg.data.path)
    out = args.out or Path("runs") / "bench" / f"export_check_{name}"
    model = args.teacher / "model.h5"
    started = time.perf_counter()
    [default] = export_model(model, ExportSettings.from_run(["tflite_int8"], out / "default", cfg.data, name="teacher"))
    train = load_split(cap_images(cfg.data, 100), "train")  # what ExportSettings.from_run calibrates on
    head = load_split(cap_images(cfg.data, 32), "val")
    [first] = export_model(model, ExportSettings(["tflite_int8"], out / "first_32", cfg.data,
                                                 calibration_images=train.images, check_images=head.images,
                                                 check_masks=head.masks, name="teacher"))
    val = load_split(cfg.data, "val")
    chosen = choose_check_images(len(val.ids), default.check["images"])  # the default check's images
    [broken] = export_model(model, ExportSettings(["tflite_int8"], out / "blank_calibration", cfg.data,
                                                  calibration_images=np.zeros_like(train.images),
                                                  check_images=val.images[chosen], check_masks=val.masks[chosen],
                                                  name="teacher"))
    keras = evaluate_arrays(load_source_model(model), val.images, val.masks, cfg.data)
    int8 = evaluate_artifact(Segmenter(default.path), val.images, val.masks)
    record = {
        "dataset": name,
        "teacher": str(args.teacher),
        "teacher_epochs": _epochs(args.teacher),
        "checks": {"default": _summary(default), "first_32": _summary(first), "blank_calibration": _summary(broken)},
        "full_split": {"images": len(val.ids), "keras_miou": keras["miou"], "int8_miou": int8["miou"],
                       "miou_drop": keras["miou"] - int8["miou"],
                       "class_iou_drop": {c: keras["per_class_iou"][c] - int8["per_class_iou"][c]
                                          for c in cfg.data.classes}},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "host": host_info(),
        "command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/export_check.py", *sys.argv[1:]]),
    }
    path = atomic_write_json(RESULTS / f"export_check_{name}{'_' + args.tag if args.tag else ''}.json", record)
    print(f"default check: {'passed' if default.passed else 'FAILED'}; first 32: "
          f"{'passed' if first.passed else 'FAILED'}; blank calibration: {'passed' if broken.passed else 'FAILED'}")
    print(f"written {path}")
    return 0 if default.passed and not broken.passed else 1


if __name__ == "__main__":
    sys.exit(main())
