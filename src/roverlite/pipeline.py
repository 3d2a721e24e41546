"""``roverlite pipeline``: the whole job in one run folder, stage by stage, resumable.

Stages, each a call into the library the single commands use:

1. ``audit``    data audit of the config's dataset          -> ``DIR/audit/audit.json``
2. ``teacher``  teacher training (or ``teacher=RUN_DIR``: adopt one) -> ``DIR/teacher/``
3. ``compress`` the compression recipe (distil, prune, QAT…) -> ``DIR/compress/``
4. ``export``   teacher TFLite/ONNX artifacts + self-checks  -> ``DIR/exports/``
5. ``testpack`` validation images + masks for device checks  -> ``DIR/testpack.npz``
6. ``bench``    latency and on-device IoU of every artifact  -> ``DIR/bench/bench.json``
7. ``report``   comparison table, Pareto plot, overlays      -> ``DIR/report/``

``DIR/pipeline.json`` records each finished stage; ``--resume`` skips those. With no config the
pipeline runs on the built-in synthetic terrain with small settings (a demo, not an accuracy
claim); ``--config configs/mars.yaml`` runs the real thing.

With a latency budget (:class:`~roverlite.compress.search.SearchSpec`) a student search runs
before every stage: the largest student of the ladder whose int8 p50 meets the budget replaces
the recipe's distill student (-> ``DIR/student_search.json``, also kept in ``pipeline.json`` and
reused by ``--resume`` while the budget and table are unchanged). When none meets it the pipeline
stops with :class:`~roverlite.compress.search.LatencyBudgetError` before training anything.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from roverlite.config import Config, load_config, to_plain
from roverlite.core.documents import RECIPE_RESULT, REPORT_SUMMARY, TRAIN_SUMMARY, read_document
from roverlite.data.audit import run_audit
from roverlite.data.loader import cap_images, load_split
from roverlite.deploy.bench import bench_many, format_bench_table, write_bench_json
from roverlite.deploy.evaluate import save_testpack
from roverlite.export import ExportSettings, export_model
from roverlite.export.peak import measure_peak
from roverlite.io import atomic_write_json, ensure_writable_dir, sha256_file
from roverlite.report.build import report_run_dirs
from roverlite.train.fit import _differing_keys
from roverlite.training import train_run as train

log = logging.getLogger(__name__)

STAGES = ("audit", "teacher", "compress", "export", "testpack", "bench", "report")
STATE_FILE = "pipeline.json"
SEARCH_FILE = "student_search.json"
SEARCH_BENCH_FILE = "student_search_bench.json"


def default_recipe(student: str | None = None, rare_classes: Sequence[str] = ("big_rock",)) -> dict[str, Any]:
    """The recipe used when none is given: prune the teacher, fine-tune, QAT, int8 (the deliverable).

    Without ``student`` (the default): the teacher itself, thinned by structured pruning to half
    of its filters at every level (widths stay multiples of 8) and with its transposed-conv
    up-sampling swapped for 1x1 conv + nearest up-sampling (``decoder: nearest``; int8
    TRANSPOSE_CONV is the slowest op on XNNPACK), so the student starts from the teacher's best
    filters; fine-tuned 12 epochs on the labels with a dice-weighted loss that keeps the rare
    class alive; QAT; int8 TFLite. The gate (at most 3 points of mIoU and a fifth of each rare
    class lost against the teacher's float TFLite, same images) judges the final int8 artifact,
    the deliverable. Measured on the built-in demo's teacher (float TFLite 0.790 mIoU, same
    val images): the swap cost nothing (0.797 float after the fine-tune), and that architecture
    runs in 5.2 ms int8 against the teacher's 8.6 ms int8 and 18.0 ms float (LiteRT, 1 thread,
    2-core Xeon, ``benchmarks/results/architecture_moves.json``); distilling first did not pay at this budget (10 distillation + 6 labels epochs:
    0.778; 16 labels epochs: 0.815, both without the swap), and half resolution lost 7.5 points
    (``resolution: 0.5``). ``configs/recipes/mars_student_int8.yaml`` distils, where 4,200 real
    images and 25 epochs made it pay.

    With ``student`` (a latency budget chose one of the ladder's presets) the first step distils
    the teacher into that untrained preset instead (at T = 1), then the same fine-tune, QAT and
    export. ``rare_classes`` are the gate's rare classes (:func:`rare_classes_of` gives a config's).
    """
    labels = {"cross_entropy": 1.0, "dice": 2.0}
    first: dict[str, Any] = {"structured": {"keep_ratio": 0.5, "decoder": "nearest", "epochs": 12,
                                            "learning_rate": 2e-3, "loss": labels}}
    description = ("teacher pruned to half its filters, nearest-upsampling decoder, fine-tuned on the labels "
                   "(dice-weighted), QAT, int8")
    steps: list[dict[str, Any]] = [first]
    if student is not None:
        description = f"{student} distilled from the teacher at T = 1, fine-tuned on the labels, QAT, int8"
        steps = [{"distill": {"student": student, "epochs": 12, "temperature": 1.0, "alpha": 0.5}},
                 {"structured": {"keep_ratio": 1.0, "epochs": 4, "loss": labels}}]  # every filter kept: labels only
    return {
        "name": "student-int8",
        "description": description,
        "steps": [*steps, {"qat": {"epochs": 2, "loss": labels}}, {"export": {"formats": ["tflite_int8"]}}],
        "gate": {"max_miou_drop": 0.03, "max_rare_class_drop": 0.2, "rare_classes": list(rare_classes),
                 "enforce": "final_step"},
    }


def rare_classes_of(cfg: Config) -> tuple[str, ...]:
    """The classes a config treats as rare: those it copy-pastes or oversamples, else ``big_rock``
    when it has one (the built-in terrain), else none."""
    augment = cfg.augment
    named = (*augment.copy_paste.classes, *augment.oversample.classes)
    if named:
        return tuple(dict.fromkeys(named))
    return ("big_rock",) if "big_rock" in cfg.data.classes else ()


DEFAULT_RECIPE: Mapping[str, Any] = default_recipe()

TEACHER_FORMATS = ("tflite", "tflite_int8", "onnx")


@dataclass(frozen=True)
class PipelineResult:
    """Where everything went, and the report's per-variant summary."""

    run_dir: Path
    report_dir: Path
    summary: list[dict[str, Any]]
    seconds: float
    student_search: Any = None  # the SearchResult when a latency budget chose the student
    deliverable: Mapping[str, Any] | None = None  # see deliverable_of

    @property
    def deliverable_failed(self) -> bool:
        """The recipe's final artifact broke its gate and the gate was enforced."""
        d = self.deliverable
        return bool(d and d.get("enforced") and d.get("gate") and not d["gate"].get("passed"))


# === Stage bookkeeping ===


def _read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    if not path.is_file():
        return {"stages": {}}
    return json.loads(path.read_text())


def _mark_done(run_dir: Path, state: dict[str, Any], stage: str, seconds: float, **info: Any) -> None:
    state["stages"][stage] = {**info, "status": "done", "seconds": round(seconds, 1)}
    atomic_write_json(run_dir / STATE_FILE, state)


def _check_resume(run_dir: Path, cfg: Config, resume: bool) -> dict[str, Any]:
    state = _read_state(run_dir)
    if not state["stages"]:
        return state
    if not resume:
        raise ValueError(
            f"Run folder {str(run_dir)!r} already holds a pipeline run. Expected a new folder; pass "
            "--resume to continue it or choose another --out."
        )
    saved = load_config(run_dir / "config.yaml")
    if saved != cfg:
        raise ValueError(
            f"Cannot resume {str(run_dir)!r} with a different config. Expected the config saved in "
            f"{str(run_dir / 'config.yaml')!r}. Received: a config that differs from it."
        )
    return state


# === Student search ===


def recipe_for_student(recipe: Any, student: str, rare_classes: Sequence[str] = ("big_rock",)) -> Any:
    """``recipe`` (default: :func:`default_recipe`) with its distill step's student set to ``student``.

    Raises:
        ValueError: the recipe has no single distill step, or that step overrides the preset
            (the search timed the presets as registered).
    """
    # roverlite.compress imports TensorFlow: importing the pipeline does not
    from roverlite.compress.recipe import load_recipe

    if recipe is None:
        return load_recipe(default_recipe(student, rare_classes))
    recipe = load_recipe(recipe)
    index = _distill_index(recipe)
    steps = list(recipe.steps)
    steps[index] = dataclasses.replace(steps[index], student=student)
    return dataclasses.replace(recipe, steps=tuple(steps))


def _distill_index(recipe: Any) -> int:
    found = [i for i, step in enumerate(recipe.steps) if step.kind == "distill"]
    if len(found) != 1:
        raise ValueError(f"A latency budget picks the student of the recipe's distill step. Expected exactly one "
                         f"distill step. Received: {len(found)} in recipe {recipe.name!r}.")
    overrides = recipe.steps[found[0]].student_overrides
    if overrides:
        raise ValueError("A latency budget times the registered student presets. Expected a distill step without "
                         f"student_overrides. Received: {dict(overrides)} in recipe {recipe.name!r}.")
    return found[0]


def resolve_student_search(cfg: Config, run_dir: Path, state: dict[str, Any], spec: Any, threads: int | None,
                           resume: bool) -> Any:
    """The search result: reused from ``state`` on resume with an equal key, else searched and saved.

    Raises:
        LatencyBudgetError: no student meets the budget (the result is saved first).
        ValueError: on resume, a choice that differs from the student the compress stage used.
    """
    # roverlite.compress imports TensorFlow: importing the pipeline does not
    from roverlite.compress.search import (
        LatencyBudgetError,
        SearchResult,
        search_key,
        search_student,
    )

    saved = state.get("student_search")
    if resume and saved and saved.get("key") == search_key(spec, threads):
        result = SearchResult.from_dict(saved)
        log.info("student search: reusing the earlier result (same budget and latencies)")
    else:
        bench_json = run_dir / SEARCH_BENCH_FILE if spec.target else None
        try:
            result = search_student(spec, cfg.data, threads=threads, bench_json=bench_json)
        except LatencyBudgetError as err:
            _save_search(run_dir, state, err.result)
            raise
        _check_compress_student(state, result.student)
        _save_search(run_dir, state, result)
    if result.student is None:
        raise LatencyBudgetError(result.summary(), result)
    return result


def _save_search(run_dir: Path, state: dict[str, Any], result: Any) -> None:
    state["student_search"] = result.to_dict()
    atomic_write_json(run_dir / SEARCH_FILE, result.to_dict())
    atomic_write_json(run_dir / STATE_FILE, state)


def _check_compress_student(state: dict[str, Any], student: str | None) -> None:
    done = state["stages"].get("compress", {})
    used = done.get("student")
    if done.get("status") == "done" and used is not None and used != student:
        raise ValueError(f"The compress stage of this run distilled {used!r}. Expected the search to choose it again "
                         f"on resume. Received: {student!r}; use the earlier budget and table or a new --out.")


# === Stages ===


def _stage_audit(cfg: Config, run_dir: Path, progress: bool) -> dict[str, Any]:
    report = run_audit(path=None, data_cfg=cfg.data, json_path=run_dir / "audit" / "audit.json",
                       quarantine_path=run_dir / "audit" / "quarantine.json", progress=progress)
    if report.has_unusable_samples:
        raise ValueError(
            f"The data audit found unusable files (see {str(run_dir / 'audit' / 'audit.json')!r}). Expected a clean "
            "dataset; set data.quarantine to the audit's quarantine.json to skip them."
        )
    return {"class_shares": report.to_dict().get("class_shares")}


def _stage_teacher(cfg: Config, run_dir: Path, progress: bool, resume: bool, adopt: Path | None) -> dict[str, Any]:
    teacher = run_dir / "teacher"
    if adopt is not None:
        return _adopt_teacher(cfg, Path(adopt), teacher)
    result = train(cfg, teacher, resume=resume and (teacher / "config.yaml").is_file(), progress=progress)
    return {"best_miou": result.best_miou, "epochs": result.epochs_run}


def _adopt_teacher(cfg: Config, source: Path, teacher: Path) -> dict[str, Any]:
    """Copy a finished ``roverlite train`` run into the pipeline as its teacher (checkpoints left out).

    The run must have been trained with this config's data, model and training settings (only
    ``train.epochs`` and ``train.patience`` may differ), so the report describes what it says.
    """
    missing = [n for n in ("config.yaml", "model.h5", "summary.json") if not (source / n).is_file()]
    if missing:
        raise FileNotFoundError(f"Cannot adopt {str(source)!r} as the teacher. Expected a finished training run "
                                f"(config.yaml, model.h5, summary.json). Received: missing {', '.join(missing)}.")
    allowed = {"train.epochs", "train.patience"}
    diff = [k for k in _differing_keys(to_plain(load_config(source / "config.yaml")), to_plain(cfg)) if k not in allowed]
    if diff:
        raise ValueError(f"Cannot adopt {str(source)!r} as the teacher: it was trained with other settings. Expected "
                         f"the pipeline config to match its config.yaml. Received differences in: {', '.join(diff)}.")
    if teacher.exists():
        shutil.rmtree(teacher)
    shutil.copytree(source, teacher, ignore=shutil.ignore_patterns("checkpoints", ".worker-*"))
    summary = read_document(teacher / "summary.json", expect=TRAIN_SUMMARY)
    log.info("teacher adopted from %s (val mIoU %.4f)", source, float("nan") if summary.miou is None else summary.miou)
    return {"adopted_from": str(source.resolve()), "model_sha256": sha256_file(teacher / "model.h5"),
            "best_miou": summary.miou, "epochs": summary.epochs_run}


def _stage_compress(cfg: Config, run_dir: Path, recipe: Any, progress: bool, adopt: Path | None) -> dict[str, Any]:
    # roverlite.compress imports TensorFlow: importing the pipeline does not
    from roverlite.compress.recipe import load_recipe
    from roverlite.compress.runner import run_recipe

    out = run_dir / "compress"
    if out.exists():  # a half-finished recipe from an interrupted run: redo the stage whole
        shutil.rmtree(out)
    if adopt is not None:
        return _adopt_compressed(Path(adopt), run_dir / "teacher" / "model.h5", out)
    result = run_recipe(run_dir / "teacher", recipe, out, cfg=cfg, progress=progress, enforce_gate=False)
    students = [step.student for step in load_recipe(recipe).steps if step.kind == "distill"]
    return {"recipe_status": result.status, "recipe_message": result.message,
            "student": students[-1] if students else None}


def _adopt_compressed(source: Path, teacher_model: Path, out: Path) -> dict[str, Any]:
    """Copy a finished ``roverlite compress`` folder into the pipeline as its compress stage.

    The folder must have been compressed from this pipeline's teacher: the sha256 of the model its
    ``recipe_result.json`` names must equal the teacher's ``model.h5``.
    """
    # roverlite.compress imports TensorFlow: importing the pipeline does not
    from roverlite.compress.recipe import load_recipe

    result_file = source / "recipe_result.json"
    if not result_file.is_file() or not (source / "recipe.yaml").is_file():
        raise FileNotFoundError(f"Cannot adopt {str(source)!r} as the compress stage. Expected a finished "
                                f"`roverlite compress` folder (recipe.yaml, recipe_result.json). Received: none there.")
    result = read_document(result_file, expect=RECIPE_RESULT)
    used, ours = result.teacher.get("sha256"), sha256_file(teacher_model)
    if used != ours:
        raise ValueError(f"Cannot adopt {str(source)!r}: it was compressed from another teacher. Expected teacher "
                         f"model.h5 sha256 {ours}. Received: {used}.")
    shutil.copytree(source, out)
    students = [step.student for step in load_recipe(out / "recipe.yaml").steps if step.kind == "distill"]
    log.info("compress stage adopted from %s (recipe %s, %s)", source, result.recipe, result.status)
    return {"adopted_from": str(source.resolve()), "recipe_status": result.status,
            "recipe_message": result.message, "student": students[-1] if students else None}


def _stage_export(cfg: Config, run_dir: Path, progress: bool) -> dict[str, Any]:
    model = run_dir / "teacher" / "model.h5"
    recipe = {"source": "roverlite pipeline", "model": cfg.model.name, "role": "teacher",
              "source_model": {"path": str(model), "sha256": sha256_file(model)}}
    settings = ExportSettings.from_run(TEACHER_FORMATS, run_dir / "exports", cfg.data, progress=progress, recipe=recipe)
    results = export_model(model, settings)
    failed = [r.format for r in results if not r.passed]
    return {"artifacts": [str(r.path) for r in results], "failed_checks": failed}


def _stage_testpack(cfg: Config, run_dir: Path, progress: bool, count: int | None) -> dict[str, Any]:
    val = load_split(cap_images(cfg.data, count), "val", progress=progress)
    save_testpack(run_dir / "testpack.npz", val.images, val.masks, val.ids)
    return {"images": len(val.ids)}


def _recipe_step_dirs(run_dir: Path) -> list[Path]:
    """The compress stage's step folders, less the teacher step (its float TFLite is the gate's
    reference and the same model as ``exports/``: benching and reporting it again would list the
    teacher twice)."""
    steps = sorted(p for p in (run_dir / "compress").glob("*_*") if p.is_dir())
    return [p for p in steps if p.name.partition("_")[2] != "teacher"]


def _artifacts(run_dir: Path) -> list[Path]:
    found = []
    for folder in [run_dir / "exports", *_recipe_step_dirs(run_dir)]:
        found += sorted(folder.glob("*.tflite")) + sorted(folder.glob("*.onnx"))
    return found


def _stage_bench(run_dir: Path, runs: int, threads: int | None) -> dict[str, Any]:
    artifacts = _artifacts(run_dir)
    # Each artifact in a process of its own: its peak memory is its own, not TensorFlow's.
    results = bench_many(artifacts, runtime="all", threads=threads, warmup=5, runs=runs,
                         testpack=run_dir / "testpack.npz", isolate=True)
    write_bench_json(results, run_dir / "bench" / "bench.json", command="roverlite pipeline")
    log.info("benchmarks:\n%s", format_bench_table(results))
    return {"artifacts": len(artifacts)}


def deliverable_of(run_dir: Path, enforced: bool) -> dict[str, Any] | None:
    """The recipe's final artifact (its last step's first export) and that artifact's gate.

    Returns ``{"artifact", "label", "step", "gate": {"passed", "reasons"}, "enforced"}``, or
    ``None`` when the compress stage left no artifact.
    """
    result_file = run_dir / "compress" / "recipe_result.json"
    if not result_file.is_file():
        return None
    steps = read_document(result_file, expect=RECIPE_RESULT).steps
    if not steps or not steps[-1].artifacts:
        return None
    last, row = steps[-1], steps[-1].artifacts[0]
    # Paths inside this run (an adopted compress folder records where it was made).
    artifact = run_dir / "compress" / Path(str(last.dir)).name / Path(str(row["artifact"])).name
    passed = bool(row.get("gate_passed"))
    return {"artifact": str(artifact), "label": None, "step": Path(str(last.dir)).name,
            "gate": {"passed": passed, "reasons": [] if passed else list(last.gate_reasons)},
            "enforced": enforced}


def _stage_report(run_dir: Path, threads: int | None, notes: list[str], gate: bool) -> dict[str, Any]:
    # Every row's accuracy is the bench's: the timed artifact on the whole test pack (the validation
    # split), so rows compare on the same images. The Keras teacher (teacher/summary.json) is not
    # listed: its float TFLite export is the reference row.
    folders = [run_dir / "exports", *_recipe_step_dirs(run_dir), run_dir / "bench"]
    paths = report_run_dirs([f for f in folders if f.exists()], run_dir / "report",
                            testpack=run_dir / "testpack.npz", peak=measure_peak, threads=threads,
                            title="roverlite pipeline report",
                            command="roverlite pipeline", notes=notes, deliverable=deliverable_of(run_dir, gate))
    return {"report": str(paths.html)}


# === Front door ===


def run_pipeline(
    cfg: Config,
    run_dir: str | Path,
    recipe: Any = None,
    resume: bool = False,
    progress: bool = True,
    bench_runs: int = 50,
    threads: int | None = None,
    testpack_images: int | None = None,
    search: Any = None,
    teacher: str | Path | None = None,
    compressed: str | Path | None = None,
    gate: bool = True,
) -> PipelineResult:
    """Run every stage into ``run_dir`` (``resume`` skips the stages ``pipeline.json`` marks done).

    Args:
        cfg: the run config (data, augmentation, teacher model and training).
        run_dir: a new folder, or with ``resume`` one from an earlier run of the same config.
        recipe: compression recipe (path, mapping or Recipe); default :data:`DEFAULT_RECIPE`.
        bench_runs: timed runs per artifact and runtime.
        threads: runtime threads for benchmarks (default: the runtime's own choice).
        testpack_images: validation images packed for on-device accuracy and overlays (default:
            the whole validation split, so every reported accuracy is over the same images).
        search: a :class:`~roverlite.compress.search.SearchSpec`: choose the distill student by
            latency budget before any stage (see the module docstring).
        teacher: a finished ``roverlite train`` run of this config to use instead of training one
            (copied into ``run_dir/teacher``; refused when its settings differ).
        compressed: a finished ``roverlite compress`` folder made from that teacher, used as the
            compress stage instead of running ``recipe`` (refused with ``recipe`` or ``search``,
            or when it was compressed from another teacher).
        gate: enforce the recipe's gate on the deliverable (the recipe's final artifact): every
            stage still runs and the report is written, and :attr:`PipelineResult.deliverable_failed`
            tells the caller (the CLI exits 1). ``False`` records the verdict only.

    Raises:
        LatencyBudgetError: no student meets ``search``'s budget (before any stage ran).
    """
    if compressed is not None and (recipe is not None or search is not None):
        given = "a recipe" if recipe is not None else "a latency budget"
        raise ValueError(f"An adopted compress folder already fixes the recipe. Expected no recipe and no latency "
                         f"budget with it. Received: {given} as well as {str(compressed)!r}.")
    started = time.perf_counter()
    run_dir = ensure_writable_dir(run_dir)
    state = _check_resume(run_dir, cfg, resume)
    cfg.to_yaml(run_dir / "config.yaml")
    found, notes = None, []
    if search is not None:
        if recipe is not None:
            # roverlite.compress imports TensorFlow: importing the pipeline does not
            from roverlite.compress.recipe import load_recipe

            recipe = load_recipe(recipe)
            _distill_index(recipe)  # a recipe the search cannot apply to fails before measuring
        found = resolve_student_search(cfg, run_dir, state, search, threads, resume)
        recipe = recipe_for_student(recipe, found.student, rare_classes_of(cfg))
        notes.append(found.summary())
    recipe = default_recipe(rare_classes=rare_classes_of(cfg)) if recipe is None else recipe
    stages: dict[str, Callable[[], dict[str, Any]]] = {
        "audit": lambda: _stage_audit(cfg, run_dir, progress),
        "teacher": lambda: _stage_teacher(cfg, run_dir, progress, resume, teacher),
        "compress": lambda: _stage_compress(cfg, run_dir, recipe, progress, compressed),
        "export": lambda: _stage_export(cfg, run_dir, progress),
        "testpack": lambda: _stage_testpack(cfg, run_dir, progress, testpack_images),
        "bench": lambda: _stage_bench(run_dir, bench_runs, threads),
        "report": lambda: _stage_report(run_dir, threads, notes, gate),
    }
    for index, name in enumerate(STAGES, 1):
        if state["stages"].get(name, {}).get("status") == "done":
            log.info("[%d/%d] %s: done earlier, skipped", index, len(STAGES), name)
            continue
        log.info("[%d/%d] %s ...", index, len(STAGES), name)
        t0 = time.perf_counter()
        info = stages[name]()
        _mark_done(run_dir, state, name, time.perf_counter() - t0, **info)
        log.info("[%d/%d] %s finished in %.1f s", index, len(STAGES), name, time.perf_counter() - t0)
    summary = [dict(v) for v in read_document(run_dir / "report" / "summary.json", expect=REPORT_SUMMARY).variants]
    return PipelineResult(run_dir, run_dir / "report", summary, time.perf_counter() - started, found,
                          deliverable_of(run_dir, gate))


def format_summary(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the report's variants for the terminal."""
    header = f"{'variant':<34} {'mIoU':>7} {'Δ mIoU':>8} {'size':>10} {'MMAC':>9} {'p50 ms':>8}"
    lines = [header, "-" * len(header)]
    for row in rows:
        def num(key: str, fmt: str) -> str:
            value = row.get(key)
            return format(value, fmt) if isinstance(value, (int, float)) else "-"

        macs = row.get("macs")
        lines.append(
            f"{str(row.get('name'))[:34]:<34} {num('miou', '.4f'):>7} {num('delta_miou', '+.4f'):>8} "
            f"{num('size_bytes', ',d'):>10} {(format(macs / 1e6, '.1f') if isinstance(macs, (int, float)) else '-'):>9} "
            f"{num('p50_ms', '.2f'):>8}"
        )
    return "\n".join(lines)
