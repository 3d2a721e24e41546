"""The compression benchmark (``benchmarks/compress.py``): its variant recipes and its target arithmetic."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from roverlite.compress.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # compress.py imports its sibling teacher.py
    try:
        spec = importlib.util.spec_from_file_location("compress_benchmark", ROOT / "benchmarks" / "compress.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


@pytest.fixture(scope="module")
def recipes(bench):
    # A student recipe at T = 4 whose student has overrides (the ablations must change only what they name).
    student = load_recipe(ROOT / "configs" / "recipes" / "student_int8.yaml")
    steps = tuple(dataclasses.replace(s, student_overrides={"convs_per_block": 2}) if s.kind == "distill" else s
                  for s in student.steps)
    student = dataclasses.replace(student, steps=steps)
    assert [s.temperature for s in student.steps if s.kind == "distill"] == [4.0]
    ptq = load_recipe(ROOT / "configs" / "recipes" / "teacher_ptq.yaml")
    return student, bench.variant_recipes(student, ptq, 1.0)


def test_distillation_ablations_change_only_the_distill_step(recipes):
    student, variants = recipes
    assert variants["student_int8"] == student
    ablations = (("student_scratch", {"alpha": 0.0}), ("student_cwkd", {"class_weighted_kd": True}),
                 ("student_t1", {"temperature": 1.0}))
    for name, changed in ablations:
        recipe = variants[name]
        assert recipe.name != student.name and recipe.gate == student.gate
        for mine, theirs in zip(recipe.steps, student.steps):
            if theirs.kind != "distill":
                assert mine == theirs
                continue
            for key, value in changed.items():
                assert getattr(mine, key) == value and getattr(theirs, key) != value
            assert mine.student == theirs.student and mine.epochs == theirs.epochs


def test_the_nano_variant_is_the_temperature_one_recipe_with_only_the_student_swapped(recipes):
    _, variants = recipes
    nano, t1 = variants["student_nano"], variants["student_t1"]
    assert nano.name.endswith("-nano") and nano.gate == t1.gate
    for mine, theirs in zip(nano.steps, t1.steps):
        if theirs.kind == "distill":
            assert (mine.student, dict(mine.student_overrides)) == ("unet_nano", {})
            assert theirs.student_overrides  # the recipe overrides its student; nano must not inherit that
            mine = dataclasses.replace(mine, student=theirs.student, student_overrides=theirs.student_overrides)
        assert mine == theirs


def test_teacher_ptq_keeps_its_floors_but_takes_the_student_recipes_rare_classes(bench):
    student = load_recipe(ROOT / "configs" / "recipes" / "cropweed_student_int8.yaml")
    ptq = load_recipe(ROOT / "configs" / "recipes" / "teacher_ptq.yaml")
    got = bench.variant_recipes(student, ptq, 1.0)["teacher_ptq"]
    assert got.gate.rare_classes == ("crop", "weed") and ptq.gate.rare_classes == ("big_rock",)
    assert dataclasses.replace(got.gate, rare_classes=ptq.gate.rare_classes) == ptq.gate
    assert got.steps == ptq.steps


def test_epochs_scale_shrinks_every_training_step_but_keeps_at_least_one(bench, recipes):
    student, _ = recipes
    trained = [i for i, s in enumerate(student.steps) if getattr(s, "epochs", 0) > 1]
    assert trained  # distill 8 epochs, QAT 2
    scaled = bench.scale_epochs(student, 0.01)
    assert [scaled.steps[i].epochs for i in trained] == [1] * len(trained)
    assert bench.scale_epochs(student, 2.0).steps[trained[0]].epochs == 2 * student.steps[trained[0]].epochs


def test_targets_compare_variants_and_leave_missing_ones_unjudged(bench):
    def row(miou, rare, size=100, macs=10):
        return {"miou": miou, "per_class_iou": {"rock": rare}, "size_bytes": size, "macs": macs}

    teacher = row(0.80, 0.40, size=4000, macs=200)
    variants = {"student_int8": row(0.78, 0.38), "student_scratch": row(0.75, 0.30), "student_cwkd": row(0.70, 0.35)}
    targets = {t["target"].split(" (")[0]: t for t in bench.check_targets(teacher, variants, "rock")}
    assert targets["student_int8 mIoU / teacher mIoU"]["value"] == pytest.approx(0.975)
    assert targets["student_int8 mIoU / teacher mIoU"]["met"] is True
    assert targets["student_int8 rock IoU / teacher rock IoU"]["met"] is True  # 0.95
    assert targets["teacher float TFLite bytes / student_int8 bytes"]["value"] == pytest.approx(40.0)
    assert targets["student_int8 mIoU - student_scratch mIoU"]["met"] is True
    cwkd = targets["student_cwkd mIoU - student_scratch mIoU"]
    assert cwkd["value"] == pytest.approx(-0.05) and cwkd["met"] is False
    assert targets["teacher_qat mIoU drop"]["value"] is None and targets["teacher_qat mIoU drop"]["met"] is None


def test_merge_keeps_rows_measured_on_the_same_teacher_model(bench, tmp_path):
    path = tmp_path / "compress_x.json"
    rows = [{"name": "student_scratch", "miou": 0.5, "command": "python benchmarks/compress.py", "recipe_spec": {"x": 1}}]
    path.write_text(json.dumps({"teacher_run": "runs/t", "teacher_sha256": "a" * 64, "variants": rows}))
    assert bench.previous_variants(path, Path("runs/t"), "a" * 64) == {"student_scratch": rows[0]}
    assert bench.previous_variants(tmp_path / "absent.json", Path("runs/t"), "a" * 64) == {}


def test_merged_rows_keep_the_recipe_they_were_measured_with(bench, tmp_path):
    # A file from before recipes were kept per row: its recipe table names the old student.
    old = {"name": "mars-student-int8-t1", "steps": [{"distill": {"student": "unet_xxs"}}]}
    path = tmp_path / "compress_x.json"
    path.write_text(json.dumps({"teacher_run": "runs/t", "teacher_sha256": "a" * 64, "recipes": {"student_t1": old},
                                "variants": [{"name": "student_t1", "miou": 0.57}]}))
    merged = bench.previous_variants(path, Path("runs/t"), "a" * 64)
    assert merged["student_t1"]["recipe_spec"] == old
    new_row = {"name": "student_int8", "miou": 0.6, "per_class_iou": {"rock": 0.3}, "recipe_spec": {"name": "new"}}
    teacher = {"artifact": "t.tflite", "miou": 0.7, "per_class_iou": {"rock": 0.4}, "size_bytes": 1, "macs": 1, "params": 1}
    args = SimpleNamespace(teacher=Path("runs/t"), max_images=None, epochs_scale=1.0)
    record = bench.build_record(args, "x", teacher, "a" * 64, {**merged, "student_int8": new_row}, "rock", tmp_path, 0.0)
    assert record["recipes"] == {"student_t1": old, "student_int8": {"name": "new"}}


def test_merge_refuses_a_teacher_retrained_into_the_same_folder(bench, tmp_path):
    path = tmp_path / "compress_x.json"
    path.write_text(json.dumps({"teacher_run": "runs/t", "teacher_sha256": "a" * 64, "variants": []}))
    with pytest.raises(SystemExit, match="sha256 " + "a" * 64):
        bench.previous_variants(path, Path("runs/t"), "b" * 64)
    path.write_text(json.dumps({"teacher_run": "runs/t", "variants": []}))  # written before hashes were kept
    with pytest.raises(SystemExit, match="not recorded"):
        bench.previous_variants(path, Path("runs/t"), "b" * 64)


def test_structured_fine_tuning_epochs_are_set_by_the_caller(bench, recipes):
    student, _ = recipes
    ptq = load_recipe(ROOT / "configs" / "recipes" / "teacher_ptq.yaml")
    for epochs in (2, 6):
        structured = bench.variant_recipes(student, ptq, 1.0, structured_epochs=epochs)["structured"]
        assert [(s.kind, getattr(s, "epochs", None)) for s in structured.steps][0] == ("structured", epochs)


def test_an_ablation_of_two_different_students_is_left_unjudged(bench):
    def row(miou, student, overrides=None):
        spec = {"steps": [{"distill": {"student": student, "student_overrides": overrides or {}}}]}
        return {"miou": miou, "per_class_iou": {"rock": 0.3}, "size_bytes": 10, "macs": 1, "recipe_spec": spec}

    teacher = {"miou": 0.8, "per_class_iou": {"rock": 0.4}, "size_bytes": 4000, "macs": 200}
    variants = {"student_int8": row(0.60, "unet_nano"), "student_scratch": row(0.59, "unet_nano"),
                "student_t1": row(0.57, "unet_xxs", {"convs_per_block": 2})}  # merged from a run on another recipe
    targets = {t["target"].split(" (")[0]: t for t in bench.check_targets(teacher, variants, "rock")}
    assert targets["student_int8 mIoU - student_scratch mIoU"]["value"] == pytest.approx(0.01)
    assert targets["student_t1 mIoU - student_scratch mIoU"]["value"] is None
    assert targets["student_t1 mIoU - student_scratch mIoU"]["met"] is None


def test_a_pruned_student_gets_a_labels_only_and_a_from_scratch_ablation(bench):
    student = load_recipe(ROOT / "configs" / "recipes" / "mars_student_int8.yaml")
    first = student.steps[0]
    assert first.kind == "structured" and first.alpha > 0 and bench.pruning_step(student) == first
    ptq = load_recipe(ROOT / "configs" / "recipes" / "teacher_ptq.yaml")
    thin = ("unet_s", {"base_width": 5, "width_multipliers": [1.0, 2.0, 3.8, 7.6, 15.4]})
    variants = bench.variant_recipes(student, ptq, 1.0, pruned_student=thin)
    assert not {"student_cwkd", "student_t1", "student_nano"} & set(variants)  # distill ablations do not apply
    nokd, scratch = variants["student_nokd"], variants["student_scratch"]
    assert nokd.steps[0] == dataclasses.replace(first, alpha=0.0) and nokd.steps[1:] == student.steps[1:]
    step = scratch.steps[0]
    assert (step.kind, step.student, step.student_overrides) == ("distill", *thin)
    assert (step.alpha, step.epochs) == (0.0, first.epochs) and scratch.steps[1:] == student.steps[1:]
    assert "student_scratch" not in bench.variant_recipes(student, ptq, 1.0)  # architecture unknown: no scratch row
    assert bench.pruning_step(load_recipe(ROOT / "configs" / "recipes" / "student_int8.yaml")) is None


def test_the_scratch_architecture_of_a_pruned_student_is_the_pruned_model(bench, tmp_path):
    from roverlite.compress.steps import StructuredStep
    from roverlite.compress.structured import structured_prune
    from roverlite.config import load_config
    from roverlite.train.modelfile import save_model_file
    from roverlite.train.models import create_model

    model = create_model("unet_tiny", input_shape=(32, 32, 1), num_classes=4)
    save_model_file(model, tmp_path / "model.h5")
    cfg = load_config(None, overrides=["model.name=unet_tiny"])
    step = StructuredStep(keep_ratio=0.5, epochs=1, alpha=0.5)
    name, overrides = bench.pruned_architecture(tmp_path, cfg, step)
    thin, _ = structured_prune(model, 0.5)
    rebuilt = create_model(name, input_shape=(32, 32, 1), num_classes=4, **overrides)
    assert [layer.output_shape for layer in rebuilt.layers] == [layer.output_shape for layer in thin.layers]
    assert rebuilt.count_params() == thin.count_params() < model.count_params()


def test_an_ablation_is_judged_when_both_rows_have_the_same_architecture_cost(bench):
    teacher = {"miou": 0.8, "per_class_iou": {"rock": 0.4}, "size_bytes": 4000, "macs": 200, "params": 50}

    def row(miou, params, spec):
        return {"miou": miou, "per_class_iou": {"rock": 0.3}, "size_bytes": 10, "macs": 20, "params": params,
                "recipe_spec": spec}

    pruned = {"steps": [{"structured": {"keep_ratio": 0.3, "alpha": 0.5}}]}
    scratch = {"steps": [{"distill": {"student": "unet_s", "alpha": 0.0}}]}
    variants = {"student_int8": row(0.70, 5, pruned), "student_scratch": row(0.60, 5, scratch),
                "student_nokd": row(0.72, 5, pruned), "student_t1": row(0.5, 6, scratch)}
    targets = {t["target"].split(" (")[0]: t for t in bench.check_targets(teacher, variants, "rock")}
    assert targets["student_int8 mIoU - student_scratch mIoU"]["value"] == pytest.approx(0.10)
    nokd = targets["student_int8 mIoU - student_nokd mIoU"]
    assert nokd["value"] == pytest.approx(-0.02) and nokd["met"] is False
    assert targets["student_t1 mIoU - student_scratch mIoU"]["value"] is None  # 6 vs 5 parameters
