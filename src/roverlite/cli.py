"""The ``roverlite`` command line: parses arguments, builds a config, calls one library function.

Every error a user can cause (bad config, bad data, unwritable folder) is printed as one line on
stderr with exit code 2; ``--debug`` shows the traceback instead. Nothing here does real work.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

log = logging.getLogger("roverlite")

# roverlite modules are imported inside each command: they pull in numpy (and TensorFlow), and
# `roverlite --help` or a bad argument should answer at once.

# Exit codes: 0 ok, 1 the command ran but found problems (e.g. unreadable files in an audit),
# 2 the command could not run (bad arguments, config or data), 130 interrupted.
EXIT_FINDINGS = 1
EXIT_USAGE = 2


# === Shared option groups ===


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, help="YAML config (default: built-in synthetic terrain)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable; values are YAML)",
    )


def _config_from_args(args: argparse.Namespace, extra: Sequence[str] = ()):
    from roverlite.config import load_config

    return load_config(args.config, overrides=[*extra, *args.overrides])


def _data_overrides(path: str | None) -> list[str]:
    """Turn a DATA argument into config overrides (format from the path: .npz file or folder)."""
    if path is None:
        return []
    fmt = "npz" if str(path).lower().endswith(".npz") else "folder"
    resolved = str(Path(path).expanduser().resolve())
    return [f"data.format={fmt}", f"data.path={json.dumps(resolved)}"]  # JSON string = YAML string


# === Commands ===


def cmd_data_audit(args: argparse.Namespace) -> int:
    from roverlite.data.audit import run_audit

    cfg = None
    if args.config is not None or args.overrides or args.path is None:
        cfg = _config_from_args(args, _data_overrides(args.path))
    report = run_audit(
        path=args.path,
        data_cfg=cfg.data if cfg is not None else None,
        json_path=args.json,
        quarantine_path=args.quarantine,
        min_repeats=args.min_repeats,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(report.summary_text())
    if args.json:
        print(f"\nreport written to {args.json}")
    return EXIT_FINDINGS if report.has_unusable_samples else 0


def _train_overrides(args: argparse.Namespace) -> list[str]:
    out = _data_overrides(args.data)
    for flag, key in (("model", "model.name"), ("epochs", "train.epochs"), ("max_images", "data.max_images"),
                      ("strategy", "train.strategy"), ("batch_size", "train.batch_size")):
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out


def _default_run_dir(cfg) -> Path:
    return Path("runs") / cfg.task / f"{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_train(args: argparse.Namespace) -> int:
    from roverlite.training import train_run as train

    if args.resume and args.out is None:
        raise ValueError("--resume needs --out DIR naming the run to continue. Received: no --out.")
    if args.resume and args.config is None:
        args.config = args.out / ("fold0" if args.all_folds else "") / "config.yaml"
    cfg = _config_from_args(args, _train_overrides(args))
    out = args.out or _default_run_dir(cfg)
    if args.all_folds:
        from roverlite.training import train_folds_run as train_folds

        cv = train_folds(cfg, out, resume=args.resume, progress=not args.quiet)
        _print_iou_table(cv.summary)
        print(
            f"\npooled out-of-fold mIoU {cv.summary['miou']:.4f} over {cv.summary['folds']} folds (per fold "
            f"{cv.summary['fold_miou_mean']:.4f} +- {cv.summary['fold_miou_std']:.4f}); folder: {cv.run_dir}"
        )
        return 0
    result = train(cfg, out, resume=args.resume, progress=not args.quiet)
    _print_iou_table(result.summary)
    print(f"\nbest val mIoU {result.best_miou:.4f} at epoch {result.best_epoch}; run folder: {result.run_dir}")
    return 0


def _print_iou_table(result: dict) -> None:
    rows = result.get("per_class_iou", {})
    width = max([len(k) for k in rows] + [5])
    for name, iou in rows.items():
        print(f"  {name:<{width}}  {'  n/a' if iou is None else f'{iou:.4f}'}")
    miou = result.get("miou")
    print(f"  {'mIoU':<{width}}  {'  n/a' if miou is None else f'{miou:.4f}'}")
    for name, rates in (result.get("hazards") or {}).items():
        miss, false = (("n/a" if v is None else f"{v:.4f}") for v in (rates["miss_rate"], rates["false_rate"]))
        print(f"  hazard {name}: miss rate {miss} (predicted as {' or '.join(rates['traversable'])}), "
              f"false-hazard rate {false}")


def _print_worst_images(rows: list[dict], count: int = 5) -> None:
    print(f"\nworst {min(count, len(rows))} of {len(rows)} images by mIoU:")
    for row in rows[:count]:
        classes = ", ".join(f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in row["per_class_iou"].items())
        fold = f" (fold {row['fold']})" if "fold" in row else ""
        miou = "n/a" if row["miou"] is None else f"{row['miou']:.4f}"
        print(f"  {row['id']}{fold}: mIoU {miou}; {classes}")


ARTIFACT_SUFFIXES = (".tflite", ".onnx")


def _run_config(args: argparse.Namespace, model: Path, extra: Sequence[str] = ()):
    """The config for a model: --config, else the run folder's config.yaml (model file or folder)."""
    if args.config is None:
        folder = model if model.is_dir() else model.parent
        if (folder / "config.yaml").is_file():
            args.config = folder / "config.yaml"
    if args.config is None:
        raise ValueError(
            "A Keras model needs --config (or a run folder holding config.yaml) for its classes and "
            f"normalisation. Received: {str(model)!r} without --config."
        )
    return _config_from_args(args, extra)


# Data settings an artifact's sidecar defines besides its preprocessing (core.preprocessing.DATA_CONFIG_KEYS):
# what its outputs mean.
SIDECAR_CLASS_KEYS = ("classes", "colors", "ignore_index", "eval_classes")


def _artifact_data_config(artifact: Path, data: str | None, overrides: Sequence[str] = ()):
    """A DataConfig for evaluating ``artifact`` on ``data``: classes and input come from its sidecar.

    ``--set data.KEY=VALUE`` overrides of how the data is read still apply (e.g. a split seed or
    an image cap); one that would change what the sidecar defines (its classes and preprocessing) is
    refused, since the artifact runs with its sidecar's preprocessing whatever the config says.
    """
    from roverlite.config import Config, apply_overrides
    from roverlite.core.preprocessing import DATA_CONFIG_KEYS
    from roverlite.deploy.sidecar import read_sidecar, sidecar_path

    if data is None:
        raise ValueError(f"eval of an artifact needs --data DIR_OR_NPZ. Received: {str(artifact)!r} without --data.")
    meta = read_sidecar(artifact)
    if data == "synthetic":
        fmt, path = "synthetic", None
    else:
        fmt = "npz" if str(data).lower().endswith(".npz") else "folder"
        path = str(Path(data).expanduser().resolve())
    raw = {"data": {
        "format": fmt,
        "path": path,
        "classes": list(meta.classes),
        "colors": [list(c) for c in meta.class_colors],
        "ignore_index": meta.ignore_index,
        "eval_classes": [meta.classes[i] for i in meta.eval_class_ids],
        **meta.preprocessing.data_config_fields(),
    }}
    defined = Config.from_dict(raw).data
    wanted = Config.from_dict(apply_overrides(raw, overrides)).data
    keys = (*SIDECAR_CLASS_KEYS, *DATA_CONFIG_KEYS)
    conflicts = [key for key in keys if getattr(wanted, key) != getattr(defined, key)]
    if conflicts:
        key = conflicts[0]
        raise ValueError(
            f"--set data.{key} conflicts with the sidecar {str(sidecar_path(artifact))!r}, which defines the "
            f"preprocessing and classes of {artifact.name!r}. Expected no override of data.{', data.'.join(conflicts)} "
            f"(or the sidecar's value, {_plain(getattr(defined, key))}). Received: {_plain(getattr(wanted, key))}."
        )
    return wanted


def _plain(value):
    """A config value as it is written in YAML (tuples as lists)."""
    from roverlite.config import to_plain

    return to_plain(value)


def cmd_eval(args: argparse.Namespace) -> int:
    from roverlite.core.documents import EVAL
    from roverlite.io import write_document

    model = Path(args.model)
    if model.suffix.lower() in ARTIFACT_SUFFIXES:
        from roverlite.export.dataset import evaluate_artifact_on_split

        if args.per_image:
            raise ValueError(
                "--per-image scores Keras models (model.h5, run or cross-validation folders). Expected one of "
                f"those. Received: the artifact {str(model)!r}."
            )

        data_cfg = _artifact_data_config(model, args.data, args.overrides)
        result = evaluate_artifact_on_split(model, data_cfg, split=args.split, threads=args.threads,
                                            progress=not args.quiet)
    else:
        from roverlite.train.crossval import evaluate_folds, is_crossval_dir
        from roverlite.train.evaluate import evaluate_model

        if is_crossval_dir(model):
            cfg = _run_config(args, model / "fold0", _data_overrides(args.data))
            result = evaluate_folds(model, cfg, split=args.split, per_image=args.per_image)
        else:
            cfg = _run_config(args, model, _data_overrides(args.data))
            result = evaluate_model(model, cfg, split=args.split, per_image=args.per_image)
    _print_iou_table(result)
    if "ood" in result:  # artifacts: how the on-device OOD monitor saw the split
        from roverlite.deploy.evaluate import describe_ood

        print(f"  {describe_ood(result['ood'])}")
    if args.per_image:
        _print_worst_images(result.get("per_image", []))
    if args.json:
        write_document(args.json, EVAL, result)
        print(f"\nresults written to {args.json}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from roverlite.export import ExportSettings, export_model

    model = Path(args.model)
    cfg = _run_config(args, model, _data_overrides(args.calibration_data))
    settings = ExportSettings.from_run(
        args.format,
        args.out,
        cfg.data,
        max_check_images=args.check_images,
        progress=not args.quiet,
        representative_count=args.representative_count,
        int8_io=not args.float_io,
        name=args.name,
        recipe={"source": "roverlite export", "model": cfg.model.name},
    )
    results = export_model(model if not model.is_dir() else model / "model.h5", settings)
    width = max(len(r.format) for r in results)
    for r in results:
        status = "ok" if r.passed else "CHECK FAILED"
        print(f"  {r.format:<{width}}  {r.size_bytes:>10,} B  {status:<12}  {r.path}")
        micro = json.loads(Path(r.sidecar_path).read_text()).get("tflite_micro") if r.format == "c_array" else None
        if micro:
            print(f"  {'':<{width}}  TFLite-Micro ops {', '.join(micro['ops'])}; tensor arena "
                  f"{micro['arena_bytes']:,} B (measured {micro['arena_bytes_measured']:,} B + margin)")
    return 0 if all(r.passed for r in results) else EXIT_FINDINGS


def cmd_bundle(args: argparse.Namespace) -> int:
    from roverlite.export.dataset import bundle_from_split

    artifact = Path(args.artifact)
    data_cfg = _artifact_data_config(artifact, args.data, args.overrides)
    out = bundle_from_split(artifact, args.out, data_cfg, split=args.split, max_images=args.images,
                            progress=not args.quiet)
    print(f"bundle written to {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from roverlite.deploy.bench import bench_many, format_bench_table, write_bench_json

    results = bench_many(args.artifacts, runtime=args.runtime, threads=args.threads, warmup=args.warmup,
                         runs=args.runs, min_seconds=args.min_seconds, end_to_end=args.end_to_end,
                         profile=args.profile, testpack=args.with_accuracy, isolate=args.isolate)
    print(format_bench_table(results))
    if args.json:
        write_bench_json(results, args.json, command=" ".join(["roverlite", *sys.argv[1:]]))
        print(f"\nresults written to {args.json}")
    return 0 if all(r.ok for r in results) else EXIT_FINDINGS


def cmd_latency_table(args: argparse.Namespace) -> int:
    from roverlite.compress.latency_table import write_latency_table

    table = write_latency_table(args.model, args.out, granularity=args.granularity, threads=args.thread_counts,
                                input_shape=args.input_shape, num_classes=args.classes, decoder=args.decoder,
                                resolution=args.resolution, runs=args.runs, stem=args.stem)
    for t in table.threads:
        print(f"{t} thread(s): whole model {table.full_ms[t]:.3f} ms; per level at full width "
              + ", ".join(f"{w}: {table.ms(i, w, t):.3f}" for i, w in enumerate(table.widths)))
    print(f"latency table written to {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from roverlite.export.peak import measure_peak
    from roverlite.report.build import report_run_dirs

    paths = report_run_dirs(args.run_dirs, args.out, testpack=args.testpack,
                            peak=None if args.no_peak else measure_peak, threads=args.threads,
                            command=" ".join(["roverlite", *sys.argv[1:]]))
    print(f"report written to {paths.html} (and {paths.markdown.name}, {paths.pareto.name}, {paths.summary.name})")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from roverlite.compress.runner import run_recipe

    model = Path(args.model)
    cfg = _run_config(args, model) if (args.config is not None or args.overrides) else None
    from roverlite.compress.gate import GateError

    try:
        result = run_recipe(model, args.recipe, args.out, cfg=cfg, progress=not args.quiet,
                            enforce_gate=not args.no_gate)
    except GateError as err:  # the recipe ran and found an accuracy problem: a finding, not misuse
        print(f"roverlite: {_one_line(err)}", file=sys.stderr)
        return EXIT_FINDINGS
    for row in result.final_artifacts:
        print(f"  {row.get('artifact')}  mIoU {row.get('miou')}")
    print(f"recipe {result.status}; results in {args.out}")
    return 0 if result.passed else EXIT_FINDINGS


def cmd_pipeline(args: argparse.Namespace) -> int:
    from roverlite.compress.search import LatencyBudgetError, search_spec
    from roverlite.pipeline import format_summary, run_pipeline

    if args.resume and args.out is None:
        raise ValueError("--resume needs --out DIR naming the pipeline run to continue. Received: no --out.")
    search = search_spec(args.latency_budget_ms, args.target, args.latency_table)
    if args.resume and args.config is None and (args.out / "config.yaml").is_file():
        args.config = args.out / "config.yaml"
    if args.teacher is not None and args.config is None:  # the adopted run says what it was trained on
        args.config = args.teacher / "config.yaml"
    cfg = _config_from_args(args)
    out = args.out or Path("runs") / "pipeline" / f"{cfg.task}-{__import__('time').strftime('%Y%m%d-%H%M%S')}"
    try:
        result = run_pipeline(cfg, out, recipe=args.recipe, resume=args.resume, progress=not args.quiet,
                              bench_runs=args.bench_runs, threads=args.threads, search=search, teacher=args.teacher,
                              compressed=args.compressed, gate=not args.no_gate)
    except LatencyBudgetError as err:  # measured, and nothing is fast enough: a finding, not misuse
        print(f"roverlite: {_one_line(err)}", file=sys.stderr)
        return EXIT_FINDINGS
    print()
    if result.student_search is not None:
        print(result.student_search.summary())
    print(format_summary(result.summary))
    print(f"\npipeline finished in {result.seconds:.0f} s; report: {result.report_dir / 'report.html'}")
    if result.deliverable_failed:
        d = result.deliverable
        reasons = " ".join("; ".join(d["gate"]["reasons"]).split()) or "see its gate.json"
        print(f"roverlite: deliverable {Path(d['artifact']).name} FAILED its gate: {reasons} "
              "(--no-gate records this without failing)", file=sys.stderr)
        return EXIT_FINDINGS
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    cfg = _config_from_args(args)
    sys.stdout.write(cfg.to_yaml())
    return 0


# === Parser ===


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roverlite",
        description="Train, compress, export and benchmark segmentation U-Nets for edge devices.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--quiet", "-q", action="store_true", help="warnings and results only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    data = sub.add_parser("data", help="inspect datasets").add_subparsers(dest="data_command", metavar="ACTION")
    data.required = True
    audit = data.add_parser(
        "audit",
        help="class shares, unreadable files, size/id errors, duplicates, repeated-mask outliers",
        description="Audit a dataset. With no PATH and no --config, audits the built-in synthetic "
        "terrain. With a PATH and no --config, assumes the folder layout (images/ + masks/) and "
        "ids 0-254 with 255 as ignore.",
    )
    audit.add_argument("path", nargs="?", help="dataset folder or AN2DL .npz (default: from --config)")
    _add_config_options(audit)
    audit.add_argument("--json", type=Path, help="write the full report as JSON")
    audit.add_argument("--quarantine", type=Path, help="write the quarantine list (JSON) loaders can honour")
    audit.add_argument("--min-repeats", type=int, default=None, help="images sharing one mask that make an outlier group")
    audit.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    audit.set_defaults(func=cmd_data_audit)

    tr = sub.add_parser("train", help="train a model (teacher or student) into a run folder")
    _add_config_options(tr)
    tr.add_argument("--data", help="dataset folder or .npz (overrides data.path)")
    tr.add_argument("--model", help="registered model name (overrides model.name)")
    tr.add_argument("--epochs", type=int, help="overrides train.epochs")
    tr.add_argument("--batch-size", type=int, help="overrides train.batch_size")
    tr.add_argument("--max-images", type=int, help="cap on images per split (overrides data.max_images)")
    tr.add_argument("--strategy", choices=["auto", "none", "mirrored", "multiworker"], help="overrides train.strategy")
    tr.add_argument("--out", type=Path, help="run folder (default: runs/<task>/<model>-<time>)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    tr.add_argument("--all-folds", action="store_true",
                    help="cross-validate: train every fold of data.folds into --out/fold<k> and pool the scores")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval",
        help="per-class IoU of a Keras model, or of a .tflite/.onnx artifact through the device runtime",
        description="Evaluate a model on a split. For a .tflite/.onnx artifact the classes, input size and "
        "normalisation come from its sidecar and it runs through roverlite.deploy, as on the robot.",
    )
    ev.add_argument("model", help="model.h5, a run folder, a cross-validation folder (train --all-folds: each "
                    "fold's model on its own fold, pooled), or an exported .tflite/.onnx artifact")
    _add_config_options(ev)
    ev.add_argument("--data", help="dataset folder, .npz or 'synthetic' (overrides data.path; required for artifacts)")
    ev.add_argument("--split", choices=["val", "train", "all"], default="val", help="'all' ignores splits.json")
    ev.add_argument("--threads", type=int, help="runtime threads for an artifact (default: runtime's choice)")
    ev.add_argument("--json", type=Path, help="write miou, per_class_iou and confusion_matrix as JSON")
    ev.add_argument("--per-image", action="store_true",
                    help="also score each image (JSON 'per_image', worst first) and print the worst five (Keras models)")
    ev.set_defaults(func=cmd_eval)

    ex = sub.add_parser("export", help="export a Keras model to TFLite / ONNX artifacts with self-checks")
    ex.add_argument("model", help="model.h5 or a run folder")
    _add_config_options(ex)
    ex.add_argument("--format", "-f", nargs="+", required=True, metavar="F",
                    help="one or more of: tflite tflite_fp16 tflite_dynamic tflite_int8 onnx onnx_int8 c_array "
                         "(c_array: int8 TFLite checked under TFLite-Micro, as model_data.cc/.h for an MCU)")
    ex.add_argument("--out", type=Path, required=True, help="output folder for <name>_<format>.<ext> + .json")
    ex.add_argument("--calibration-data", help="dataset for calibration and self-check (default: the config's)")
    ex.add_argument("--representative-count", type=int, default=100, help="calibration images for int8 (default 100)")
    ex.add_argument("--check-images", type=int, default=512,
                    help="validation images for the self-check: all up to this many, else a seeded subset (default 512)")
    ex.add_argument("--float-io", action="store_true", help="tflite_int8 with float input/output instead of int8")
    ex.add_argument("--name", help="artifact base name (default: the model's name)")
    ex.set_defaults(func=cmd_export)

    bu = sub.add_parser("bundle", help="pack an artifact, its sidecar, the device runner and a test pack")
    bu.add_argument("artifact", help="an exported .tflite or .onnx (with its sidecar)")
    bu.add_argument("--data", required=True, help="dataset to draw the test pack from")
    bu.add_argument("--split", choices=["val", "train", "all"], default="val")
    bu.add_argument("--images", type=int, default=32, help="test-pack size (default 32)")
    bu.add_argument("--out", type=Path, required=True, help="a folder, or a .tar.gz file")
    bu.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a data setting, e.g. --set data.split_seed=1")
    bu.set_defaults(func=cmd_bundle)

    co = sub.add_parser("compress", help="run a compression recipe (distil, prune, QAT, export) with accuracy gates")
    co.add_argument("model", help="a training run folder or model.h5")
    _add_config_options(co)
    co.add_argument("--recipe", type=Path, required=True, help="recipe YAML (see configs/recipes/)")
    co.add_argument("--out", type=Path, required=True, help="output folder")
    co.add_argument("--no-gate", action="store_true", help="record gate failures instead of stopping at the first")
    co.set_defaults(func=cmd_compress)

    be = sub.add_parser("bench", help="latency (p50/p90/p99), init time, RSS and on-device IoU of artifacts")
    be.add_argument("artifacts", nargs="+", help=".tflite / .onnx artifacts (with sidecars)")
    be.add_argument("--runtime", choices=["all", "auto", "litert", "onnxruntime"], default="all")
    be.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    be.add_argument("--warmup", type=int, default=10, help="warm-up runs (default 10)")
    be.add_argument("--min-seconds", type=float, help="keep timing until this many seconds have passed")
    be.add_argument("--threads", type=int, help="runtime threads (default: all cores this process may use)")
    be.add_argument("--end-to-end", action="store_true", help="also time pre- and postprocessing")
    be.add_argument("--profile", action="store_true", help="per-op profile (TFLite op mix, ONNX Runtime profiler)")
    be.add_argument("--with-accuracy", metavar="TESTPACK", help="per-class IoU of the timed artifact on a test pack .npz")
    be.add_argument("--isolate", action="store_true",
                    help="benchmark each artifact in a process of its own, so peak memory is the artifact's")
    be.add_argument("--json", type=Path, help="write the results as JSON")
    be.set_defaults(func=cmd_bench)

    lt = sub.add_parser("latency-table", help="time every U-Net level at candidate widths in int8 (for structured: table)")
    lt.add_argument("model", help="a training run folder, a model.h5, or a registered model name (untrained)")
    lt.add_argument("--out", type=Path, required=True, help="the table's JSON file")
    lt.add_argument("--granularity", type=int, default=8, help="candidate widths are its multiples (default 8)")
    lt.add_argument("--threads", dest="thread_counts", type=int, nargs="+", default=[1, 2],
                    help="LiteRT thread counts (default 1 2)")
    lt.add_argument("--decoder", choices=["nearest", "shuffle"],
                    help="measure with this decoder swapped in (as structured: decoder)")
    lt.add_argument("--resolution", type=float, default=1.0, help="0.5: measure at half resolution")
    lt.add_argument("--stem", choices=["pool", "shuffle"], default="pool",
                    help="with --resolution 0.5: the half-resolution stem (as structured: stem)")
    lt.add_argument("--input-shape", type=int, nargs=3, default=[128, 128, 1], metavar=("H", "W", "C"),
                    help="for a registered name (default 128 128 1)")
    lt.add_argument("--classes", type=int, default=4, help="for a registered name (default 4)")
    lt.add_argument("--runs", type=int, default=100, help="timed runs per model and thread count (default 100)")
    lt.set_defaults(func=cmd_latency_table)

    rp = sub.add_parser("report", help="comparison table, Pareto plot and overlays of every variant in run folders")
    rp.add_argument("run_dirs", nargs="+", type=Path, help="folders holding artifacts, bench and eval JSON")
    rp.add_argument("--out", type=Path, required=True, help="report folder")
    rp.add_argument("--testpack", type=Path, help="images for the prediction overlays (default: first found)")
    rp.add_argument("--threads", type=int, help="threads for overlays and the peak measurement")
    rp.add_argument("--no-peak", action="store_true", help="skip measuring this machine's peak GMAC/s")
    rp.set_defaults(func=cmd_report)

    pl = sub.add_parser(
        "pipeline",
        help="the main job: audit, train, compress, export, check, bench and report in one run folder",
        description="Run every stage into one run folder. With no --config it runs on the built-in "
        "synthetic terrain with small settings (a demo); --config configs/mars.yaml runs the real thing.",
    )
    _add_config_options(pl)
    pl.add_argument("--recipe", type=Path,
                    help="compression recipe YAML (default: prune the teacher to 0.3, distil, fine-tune, QAT, int8)")
    pl.add_argument("--out", type=Path, help="run folder (default: runs/pipeline/<task>-<time>)")
    pl.add_argument("--resume", action="store_true", help="skip the stages --out already finished")
    pl.add_argument("--teacher", type=Path, metavar="RUN_DIR",
                    help="use this finished `roverlite train` run of the same config instead of training a teacher")
    pl.add_argument("--compressed", type=Path, metavar="DIR",
                    help="use this finished `roverlite compress` folder (made from that teacher) as the compress stage")
    pl.add_argument("--no-gate", action="store_true",
                    help="record the deliverable's gate verdict without failing (default: exit 1 when it fails)")
    pl.add_argument("--bench-runs", type=int, default=50, help="timed runs per artifact and runtime (default 50)")
    pl.add_argument("--threads", type=int, help="runtime threads for benchmarks (default: the runtime's choice)")
    pl.add_argument("--latency-budget-ms", type=float, metavar="MS",
                    help="distil the largest student (unet_s, unet_xs, unet_xxs, unet_nano) whose int8 p50 is <= MS; "
                         "needs --target or --latency-table; none fast enough = exit 1 before training")
    pl.add_argument("--target", help="where to time the students for the budget: 'this' machine")
    pl.add_argument("--latency-table", type=Path, metavar="JSON",
                    help="latencies measured on the device: `roverlite bench --json` output or {\"unet_xs\": 4.1, ...}")
    pl.set_defaults(func=cmd_pipeline)

    config = sub.add_parser("config", help="show configs").add_subparsers(dest="config_command", metavar="ACTION")
    config.required = True
    show = config.add_parser("show", help="print the resolved config (after --set overrides) as YAML")
    _add_config_options(show)
    show.set_defaults(func=cmd_config_show)
    _accept_global_flags_anywhere(parser)
    return parser


def _accept_global_flags_anywhere(parser: argparse.ArgumentParser) -> None:
    """Let ``--debug`` and ``--quiet`` follow the subcommand too (``roverlite eval ... --debug``).

    Each subcommand gets its own copy of the flags with a suppressed default, so a flag given
    after the subcommand sets the same attribute and one given before it is not reset.
    """
    for action in parser._actions:  # noqa: SLF001 - argparse offers no public walk over subparsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in dict.fromkeys(action.choices.values()):
                if not any(a.dest == "debug" for a in sub._actions):  # noqa: SLF001
                    sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                     help="show full tracebacks on errors")
                    sub.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                                     help="warnings and results only")
                _accept_global_flags_anywhere(sub)


def _check_threads(args: argparse.Namespace) -> None:
    threads = getattr(args, "threads", None)
    if threads is not None:
        from roverlite.deploy.runtime import check_threads

        check_threads(threads)


def _configure_logging(quiet: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname).1s %(name)s: %(message)s", stream=sys.stderr)
    # TensorFlow's own loggers are chatty at INFO; keep them to warnings unless debugging.
    for name in ("absl", "tensorflow", "h5py"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.quiet, args.debug)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        _check_threads(args)
        return func(args)
    except KeyboardInterrupt:
        print("roverlite: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as err:
        if args.debug:
            raise
        print(f"roverlite: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # noqa: BLE001 - anything unforeseen is still one line (--debug: traceback)
        if args.debug:
            raise
        print(f"roverlite: error: unexpected {type(err).__name__}: {_one_line(err)} (--debug shows the traceback)",
              file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
