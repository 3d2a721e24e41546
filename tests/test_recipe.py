"""Compression recipes: the YAML schema, order rules checked before any work, and runs end to end."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from compress_helpers import eager
from export_helpers import band_scenes, trained_tiny_model
from PIL import Image

from roverlite.compress.gate import GateError
from roverlite.compress.recipe import Recipe, load_recipe
from roverlite.compress.steps import ExportStep, PruneStep, QatStep, StructuredStep
from roverlite.compress.runner import run_recipe
from roverlite.config import ConfigError, load_config

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "recipes"
LOOSE_GATE = {"max_miou_drop": 1.0, "max_rare_class_drop": 1.0, "rare_classes": ["big_rock"]}


def _recipe(*steps: dict, gate: dict | None = None) -> Recipe:
    return Recipe.from_dict({"name": "r", "steps": list(steps), **({"gate": gate} if gate else {})})


# === Schema ===


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipes_round_trip_through_yaml(path, tmp_path):
    recipe = load_recipe(path)
    saved = recipe.to_yaml(tmp_path / "r.yaml")
    assert load_recipe(tmp_path / "r.yaml") == recipe
    assert Recipe.from_dict(yaml.safe_load(saved)).to_yaml() == saved


def test_every_step_kind_round_trips_with_non_default_values(tmp_path):
    recipe = _recipe(
        {"distill": {"student": "unet_xs", "student_overrides": {"base_width": 6}, "epochs": 3, "alpha": 0.7,
                     "class_weighted_kd": True}},
        {"prune": {"target_sparsity": 0.6, "epochs": 2, "frequency": 5, "skip_layers": ["logits", "dec0_*"]}},
        {"structured": {"keep_ratio": [0.5, 0.5, 0.75], "criterion": "bn", "epochs": 0}},
        {"qat": {"epochs": 1, "preserve_sparsity": True, "learning_rate": 1e-4, "class_weighting": "none",
                 "loss": {"cross_entropy": 1.0, "dice": 2.0}}},
        {"export": {"formats": ["tflite_int8"], "int8_io": False}},
        {"export": {"formats": ["tflite_int8"], "representative_count": 8}},
        gate={"max_miou_drop": 0.01, "rare_classes": ["big_rock"], "qdebug": {"top_k": 3}},
    )
    assert [s.kind for s in recipe.steps] == ["distill", "prune", "structured", "qat", "export", "export"]
    assert recipe.steps[2].keep_ratio == (0.5, 0.5, 0.75) and recipe.steps[4].int8_io is False
    assert recipe.steps[3].class_weighting == "none" and recipe.steps[2].class_weighting is None
    recipe.to_yaml(tmp_path / "r.yaml")
    assert load_recipe(tmp_path / "r.yaml") == recipe


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"name": "r", "steps": [{"prun": {}}]}, 'Unknown step kind at steps\\[0\\].*Did you mean "prune"'),
        ({"name": "r", "steps": [{"prune": {"target_sparsty": 0.5}}]},
         "'steps\\[0\\].prune.target_sparsty'. Did you mean \"target_sparsity\""),
        ({"name": "r", "steps": [{"qat": {}}], "gates": {}}, "Unknown recipe key 'gates'. Did you mean \"gate\""),
        ({"name": "r", "steps": [{"qat": {}}], "gate": {"max_miou_dorp": 1}}, 'Did you mean "max_miou_drop"'),
        ({"name": "r", "steps": [{"qat": {}}], "gate": {"enforce": "final"}},
         "Expected gate.enforce in \\('every_step', 'final_step'\\). Received: 'final'. Did you mean \"final_step\""),
        ({"name": "r", "steps": [{"export": {"formats": ["tflite_int"]}}]},
         'steps\\[0\\].export.*Did you mean "tflite_int8"'),
        ({"name": "r", "steps": [{"prune": {"target_sparsity": 1.5}}]}, "steps\\[0\\].prune: Expected target_sparsity"),
        ({"name": "r", "steps": [{"structured": {"keep_ratio": 0}}]}, "keep_ratio in \\(0, 1\\]"),
        ({"name": "r", "steps": [{"structured": {"criterion": "l2"}}]}, 'Did you mean "l1"'),
        ({"name": "r", "steps": [{"structured": {"alpha": 1.5}}]}, "Expected alpha in \\[0, 1\\]"),
        ({"name": "r", "steps": [{"structured": {"alpha": 0.5, "epochs": 0}}]}, "Expected structured.epochs >= 1 with it"),
        ({"name": "r", "steps": [{"structured": {"alpha": 0.5, "temperature": 0}}]}, "Expected temperature > 0"),
        ({"name": "r", "steps": [{"distill": {"epochs": 2}}]}, "distill.student is required"),
        ({"name": "r", "steps": [{"distill": {"student": "unet_xs", "class_weighted_kd": "yes"}}]},
         "Expected true or false for steps\\[0\\].distill.class_weighted_kd"),
        ({"name": "r", "steps": [{"qat": {"epochs": 0}}]}, "qat.epochs to be an integer >= 1"),
        ({"name": "r", "steps": [{"structured": {"class_weighting": "inverse-sqrt"}}]},
         'Expected structured.class_weighting in .*Received: \'inverse-sqrt\'. Did you mean "inverse_sqrt"'),
        ({"name": "r", "steps": [{"qat": {"loss": {"dise": 1.0}}}]}, 'qat.loss term must be one of .*Did you mean "dice"'),
        ({"name": "r", "steps": [{"prune": {"loss": {"dice": 0}}}]}, "prune.loss.dice weight must be a finite number > 0"),
        ({"name": "r", "steps": [{"structured": {"loss": {}}}]}, "structured.loss needs at least one term"),
        ({"name": "r", "steps": [{"qat": {}, "prune": {}}]}, "one \\{kind: settings\\} entry"),
        ({"name": "r", "steps": []}, "at least one step"),
        ({"name": "a b", "steps": [{"qat": {}}]}, "recipe name"),
    ],
)
def test_bad_recipes_are_refused_with_the_place_and_closest_name(raw, message):
    with pytest.raises(ConfigError, match=message):
        Recipe.from_dict(raw)


@pytest.mark.parametrize(
    "steps, message",
    [
        ([{"export": {}}, {"prune": {}}], "after the export at steps\\[0\\].*nothing after an export except another"),
        ([{"qat": {}}, {"prune": {}}], "after qat at steps\\[0\\].*QAT-wrapped model cannot be pruned or distilled"),
        ([{"qat": {}}, {"structured": {}}], "QAT-wrapped model cannot be pruned"),
        ([{"qat": {}}, {"distill": {"student": "unet_xs"}}], "QAT-wrapped model cannot be pruned or distilled"),
        ([{"qat": {}}, {"qat": {}}], "qat at most once.*the first is steps\\[0\\]"),
        ([{"qat": {}}, {"export": {"formats": ["tflite_int8", "onnx"]}}], "formats \\['onnx'\\].*int8 TFLite only"),
    ],
)
def test_order_rules_give_their_reason(steps, message):
    with pytest.raises(ConfigError, match=message):
        _recipe(*steps)


def test_order_rules_hold_for_recipes_built_in_python():
    with pytest.raises(ConfigError, match="after qat"):
        Recipe("r", (QatStep(), PruneStep()))
    assert Recipe("r", (PruneStep(), StructuredStep(), QatStep(), ExportStep(), ExportStep(("tflite_int8",)))).steps


def test_load_recipe_names_a_missing_or_unparsable_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="Recipe file not found"):
        load_recipe(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("name: r\nsteps: [{qat: {epoch: 1}}]\n")
    with pytest.raises(ConfigError, match="typo.yaml: Unknown config key 'steps\\[0\\].qat.epoch'"):
        load_recipe(tmp_path / "typo.yaml")


# === Running ===


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    """A run folder (model.h5 + config.yaml) of the trained tiny model, on a folder of band scenes."""
    from roverlite.train.modelfile import save_model_file

    root = tmp_path_factory.mktemp("band")
    images, masks = band_scenes(36, seed=5)
    for folder in ("images", "masks"):
        (root / "data" / folder).mkdir(parents=True)
    for k, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image[..., 0]).save(root / "data" / "images" / f"b{k:03d}.png")
        Image.fromarray(mask).save(root / "data" / "masks" / f"b{k:03d}.png")
    cfg = load_config(
        None,
        overrides=[
            "data.format=folder", f"data.path={root / 'data'}", "data.image_size=[32, 32]", "data.mean=[0.5]",
            "data.std=[0.25]", "model.name=unet_tiny", "train.batch_size=16", "train.learning_rate=0.005",
        ],
    )
    run = root / "teacher"
    save_model_file(trained_tiny_model(), run / "model.h5")
    cfg.to_yaml(run / "config.yaml")
    return run


def test_bad_recipe_or_folder_is_refused_before_any_work(teacher_run, tmp_path):
    typo = _recipe({"export": {}}, gate={"rare_classes": ["big_rok"]})
    with pytest.raises(ConfigError, match='Did you mean "big_rock"'):
        run_recipe(teacher_run, typo, tmp_path / "a", progress=False)
    student = _recipe({"distill": {"student": "unet_xz"}}, {"export": {}})
    with pytest.raises(ConfigError, match="steps\\[0\\].distill: Unknown model.*unet_xs"):
        run_recipe(teacher_run, student, tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "recipe_result.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds a recipe run"):
        run_recipe(teacher_run, _recipe({"export": {}}), tmp_path / "c", progress=False)
    with pytest.raises(FileNotFoundError, match="Expected a run folder with model.h5"):
        run_recipe(tmp_path / "none", _recipe({"export": {}}), tmp_path / "d", progress=False)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_distill_qat_export_saves_every_step_with_artifact_sidecar_and_gate(teacher_run, tmp_path):
    from roverlite.deploy.sidecar import read_sidecar
    from roverlite.io import sha256_file

    recipe = _recipe(
        {"distill": {"student": "unet_tiny", "student_overrides": {"base_width": 2}, "epochs": 1}},
        {"qat": {"epochs": 1}},
        {"export": {"formats": ["tflite_int8"], "representative_count": 16}},
        gate=LOOSE_GATE,
    )
    with eager():
        result = run_recipe(teacher_run, recipe, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert result.passed and [s.kind for s in result.steps] == ["distill", "qat", "export"]
    assert load_recipe(out / "recipe.yaml") == recipe
    saved = json.loads((out / "recipe_result.json").read_text())
    assert saved["status"] == "passed" and len(saved["steps"]) == 3
    assert json.loads((out / "0_teacher" / "eval.json").read_text())["miou"] == result.teacher["miou"]

    distilled = result.steps[0]
    assert distilled.model_path == out / "1_distill" / "model.h5"
    assert load_config(out / "1_distill" / "config.yaml").model.overrides == {"base_width": 2}
    side = read_sidecar(distilled.artifacts[0]["artifact"])
    assert side.format == "tflite" and side.source_sha256 == sha256_file(distilled.model_path)
    assert side.recipe["recipe"] == "r" and side.recipe["step"] == 1
    assert side.recipe["steps"] == recipe.to_dict()["steps"]
    assert side.recipe["teacher"]["sha256"] == sha256_file(teacher_run / "model.h5")

    qat = result.steps[1]
    assert qat.model_path is None and qat.weights_path.is_file() and not (out / "2_qat" / "model.h5").exists()
    for step in result.steps[1:]:
        (artifact,) = step.artifacts
        assert artifact["format"] == "tflite_int8" and artifact["macs"] == distilled.cost["macs"]
        source = read_sidecar(artifact["artifact"]).recipe["source_model"]
        assert source["kind"] == "qat_weights" and source["sha256"] == sha256_file(qat.weights_path)
        assert source["architecture"]["sha256"] == sha256_file(distilled.model_path)
        gate = json.loads((step.dir / "gate.json").read_text())
        assert gate["passed"] and "QAT" in gate["artifacts"][0]["qdebug"]["skipped"]
    assert result.final_artifacts[0]["miou"] == saved["steps"][2]["artifacts"][0]["miou"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_structured_with_alpha_distils_the_thin_model_from_the_unpruned_one(teacher_run, tmp_path, monkeypatch):
    distillation = importlib.import_module("roverlite.compress.distill")  # the package's `distill` is the function
    from roverlite.io import sha256_file
    from roverlite.train.modelfile import load_model_file

    calls = []
    real_distill = distillation.distill

    def spy(teacher, student, *args, **kwargs):
        calls.append((teacher.count_params(), student.count_params(), args[2]))
        return real_distill(teacher, student, *args, **kwargs)

    monkeypatch.setattr(distillation, "distill", spy)
    before = sha256_file(teacher_run / "model.h5")
    recipe = _recipe({"structured": {"keep_ratio": 0.5, "epochs": 1, "alpha": 0.7, "temperature": 2.0}},
                     {"export": {"formats": ["tflite"]}}, gate=LOOSE_GATE)
    with eager():
        result = run_recipe(teacher_run, recipe, tmp_path / "out", progress=False)
    teacher = load_model_file(teacher_run / "model.h5")
    ((teacher_params, student_params, cfg),) = calls
    assert teacher_params == teacher.count_params() and student_params < teacher_params
    assert (cfg.alpha, cfg.temperature) == (0.7, 2.0)
    details = result.steps[0].details
    assert details["distilled_from"] == teacher.name and set(details["last_epoch"]) >= {"kd_loss", "hard_loss"}
    assert sha256_file(teacher_run / "model.h5") == before
    # Labels only (the default) does not run the teacher.
    calls.clear()
    with eager():
        run_recipe(teacher_run, _recipe({"structured": {"keep_ratio": 0.5, "epochs": 1}}, gate=LOOSE_GATE),
                   tmp_path / "plain", progress=False)
    assert calls == []


class _Stop(Exception):
    pass


def _first_call(module, name: str, step: dict, teacher_run, tmp_path, monkeypatch) -> tuple:
    """The arguments of the first ``module.name`` call a one-step recipe makes (stopped there, nothing trains)."""
    seen = []

    def capture(*args, **kwargs):
        seen.append((args, kwargs))
        raise _Stop

    monkeypatch.setattr(module, name, capture)
    with pytest.raises(_Stop):
        run_recipe(teacher_run, _recipe(step, gate=LOOSE_GATE), tmp_path / "out", progress=False)
    return seen[0]


def _distill_config_of(step: dict, teacher_run, tmp_path, monkeypatch):
    """The DistillConfig a one-step recipe hands to ``distill``."""
    distillation = importlib.import_module("roverlite.compress.distill")

    args, _ = _first_call(distillation, "distill", step, teacher_run, tmp_path, monkeypatch)
    return args[4]


@pytest.mark.parametrize("weighted", [False, True])
def test_class_weighted_kd_hands_the_hard_loss_class_weights_to_the_soft_term(teacher_run, tmp_path, monkeypatch, weighted):
    from roverlite.data.loader import load_split
    from roverlite.train.losses import class_weights_from_counts

    step = {"distill": {"student": "unet_tiny", "epochs": 1, "class_weighted_kd": weighted}}
    distill_cfg = _distill_config_of(step, teacher_run, tmp_path, monkeypatch)
    if not weighted:
        assert distill_cfg.class_weights is None
        return
    cfg = load_config(teacher_run / "config.yaml")
    masks = load_split(cfg.data, "train").masks
    counts = np.bincount(masks.reshape(-1), minlength=256)[: cfg.data.num_classes]
    want = class_weights_from_counts(counts, cfg.train.class_weighting)
    np.testing.assert_allclose(distill_cfg.class_weights, want, rtol=1e-6)
    assert len(set(np.round(want, 4))) > 1  # the band scenes are imbalanced: the weights differ


@pytest.mark.parametrize("weighted", [False, True])
def test_structured_class_weighted_kd_hands_the_class_weights_to_the_soft_term(teacher_run, tmp_path, monkeypatch, weighted):
    step = {"structured": {"keep_ratio": 0.5, "epochs": 1, "alpha": 0.5, "class_weighted_kd": weighted}}
    weights = _distill_config_of(step, teacher_run, tmp_path, monkeypatch).class_weights
    assert (weights is None) if not weighted else len(set(np.round(weights, 4))) > 1


def _hard_loss_of(step: dict, teacher_run, tmp_path, monkeypatch) -> tuple[dict, np.ndarray]:
    """The terms and class weights a one-step recipe builds its hard loss with."""
    import roverlite.train.losses as losses

    args, _ = _first_call(losses, "build_loss", step, teacher_run, tmp_path, monkeypatch)
    return dict(args[0]), np.asarray(args[3])


_TRAINING_STEPS = [
    {"structured": {"keep_ratio": 1.0, "epochs": 1}},
    {"qat": {"epochs": 1}},
    {"prune": {"target_sparsity": 0.5, "epochs": 1}},
    {"distill": {"student": "unet_tiny", "epochs": 1}},
]


@pytest.mark.parametrize("step", _TRAINING_STEPS, ids=lambda step: next(iter(step)))
@pytest.mark.parametrize("weighting", [None, "none", "inverse"])
def test_a_step_class_weighting_replaces_the_run_weighting_in_its_hard_loss(
    teacher_run, tmp_path, monkeypatch, step, weighting
):
    from roverlite.data.loader import load_split
    from roverlite.train.losses import class_weights_from_counts

    kind = next(iter(step))
    step = {kind: {**step[kind], "class_weighting": weighting}}
    _, got = _hard_loss_of(step, teacher_run, tmp_path, monkeypatch)
    cfg = load_config(teacher_run / "config.yaml")
    counts = np.bincount(load_split(cfg.data, "train").masks.reshape(-1), minlength=256)[: cfg.data.num_classes]
    want = class_weights_from_counts(counts, weighting or cfg.train.class_weighting)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    if weighting is not None:  # the run's own weights differ, so the step's setting is what counted
        assert not np.allclose(got, class_weights_from_counts(counts, cfg.train.class_weighting))


@pytest.mark.parametrize("step", _TRAINING_STEPS, ids=lambda step: next(iter(step)))
def test_a_step_loss_replaces_the_run_loss_terms(teacher_run, tmp_path, monkeypatch, step):
    run_terms = dict(load_config(teacher_run / "config.yaml").train.loss)
    assert _hard_loss_of(step, teacher_run, tmp_path, monkeypatch)[0] == run_terms
    kind = next(iter(step))
    step = {kind: {**step[kind], "loss": {"cross_entropy": 1, "dice": 2.0}}}
    assert run_terms != {"cross_entropy": 1.0, "dice": 2.0}
    assert _hard_loss_of(step, teacher_run, tmp_path / "2", monkeypatch)[0] == {"cross_entropy": 1.0, "dice": 2.0}


def test_structured_class_weighted_kd_uses_the_step_class_weighting(teacher_run, tmp_path, monkeypatch):
    step = {"structured": {"keep_ratio": 1.0, "epochs": 1, "alpha": 0.5, "class_weighted_kd": True,
                           "class_weighting": "none"}}
    weights = _distill_config_of(step, teacher_run, tmp_path, monkeypatch).class_weights
    assert list(weights) == [1.0] * len(weights)


def test_structured_class_weighted_kd_without_distillation_is_refused():
    with pytest.raises(ConfigError, match="Expected structured.alpha > 0"):
        StructuredStep(keep_ratio=0.5, epochs=1, alpha=0.0, class_weighted_kd=True)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_shipped_teacher_ptq_recipe_reports_per_layer_int8_error(teacher_run, tmp_path):
    result = run_recipe(teacher_run, RECIPES / "teacher_ptq.yaml", tmp_path / "ptq", progress=False, enforce_gate=False)
    (report,) = result.steps[0].gate
    assert report.format == "tflite_int8" and report.teacher_miou == result.teacher["miou"]
    top = report.qdebug["top"]
    assert len(top) == 5 and top[0]["rmse_over_scale"] >= top[-1]["rmse_over_scale"]
    assert json.loads((tmp_path / "ptq" / "1_export" / "gate.json").read_text())["artifacts"][0]["qdebug"]["top"]


def test_broken_floor_stops_the_recipe_with_a_gate_error_naming_step_and_numbers(teacher_run, tmp_path):
    recipe = _recipe(
        {"structured": {"keep_ratio": 0.25, "epochs": 0}}, {"export": {"formats": ["tflite"]}},
        gate={"max_miou_drop": 0.0, "max_rare_class_drop": 0.0, "rare_classes": ["big_rock"]},
    )
    with pytest.raises(GateError, match=r"Accuracy gate failed at step 1_structured \(r-1-structured_tflite.tflite\)"):
        run_recipe(teacher_run, recipe, tmp_path / "out", progress=False)
    saved = json.loads((tmp_path / "out" / "recipe_result.json").read_text())
    assert saved["status"] == "failed" and "1_structured" in saved["message"]
    assert not json.loads((tmp_path / "out" / "1_structured" / "gate.json").read_text())["passed"]
    assert not (tmp_path / "out" / "2_export").exists()


def test_final_step_gate_scores_every_step_but_stops_only_at_the_last(teacher_run, tmp_path):
    recipe = _recipe(
        {"structured": {"keep_ratio": 0.25, "epochs": 0}}, {"export": {"formats": ["tflite"]}},
        gate={"max_miou_drop": 0.0, "max_rare_class_drop": 0.0, "rare_classes": ["big_rock"], "enforce": "final_step"},
    )
    with pytest.raises(GateError, match=r"Accuracy gate failed at step 2_export"):
        run_recipe(teacher_run, recipe, tmp_path / "out", progress=False)
    assert not json.loads((tmp_path / "out" / "1_structured" / "gate.json").read_text())["passed"]
    saved = json.loads((tmp_path / "out" / "recipe_result.json").read_text())
    assert saved["status"] == "failed" and "2_export" in saved["message"]
    result = run_recipe(teacher_run, recipe, tmp_path / "again", progress=False, enforce_gate=False)
    assert result.status == "failed" and "2_export" in result.message and not result.steps[0].gate[0].passed


def test_gate_enforce_every_step_is_the_default_and_final_step_checks_only_the_last():
    from roverlite.compress.gate import GateConfig

    assert [GateConfig().enforces(i, 3) for i in (1, 2, 3)] == [True, True, True]
    assert [GateConfig(enforce="final_step").enforces(i, 3) for i in (1, 2, 3)] == [False, False, True]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_prune_structured_pqat_chain_keeps_zeros_and_thins_the_model(teacher_run, tmp_path):
    from roverlite.compress.prune import kernel_sparsity
    from roverlite.train.modelfile import load_model_file

    recipe = _recipe(
        {"prune": {"target_sparsity": 0.5, "epochs": 2}},
        {"structured": {"keep_ratio": 0.75, "epochs": 1}},
        {"prune": {"target_sparsity": 0.5, "epochs": 1}},
        {"qat": {"epochs": 1, "preserve_sparsity": True}},
        {"export": {"formats": ["tflite_int8"]}},
        gate=LOOSE_GATE,
    )
    with eager():
        result = run_recipe(teacher_run, recipe, tmp_path / "out", progress=False)
    prune, structured, reprune, qat, export = result.steps
    assert prune.details["sparsity"] == pytest.approx(0.5, abs=0.05)
    assert kernel_sparsity(load_model_file(prune.model_path)) == pytest.approx(prune.details["sparsity"])
    assert structured.cost["macs"] < prune.cost["macs"] and structured.details["macs_after"] == structured.cost["macs"]
    assert qat.details["sparsity"] >= reprune.details["sparsity"] - 1e-6  # PQAT kept the zeros
    assert export.artifacts[0]["size_bytes"] < result.teacher["size_bytes"]
    assert np.isfinite(export.artifacts[0]["miou"])


def test_recipe_files_refuse_aliases_and_duplicate_keys_and_read_yaml_12_numbers(tmp_path):
    from roverlite.compress.recipe import load_recipe
    from roverlite.config import ConfigError

    good = tmp_path / "good.yaml"
    good.write_text("name: r\nsteps:\n  - qat: {epochs: 1, learning_rate: 1e-4}\n  - export: {formats: [tflite_int8]}\n")
    assert load_recipe(good).steps[0].learning_rate == 1e-4
    aliased = tmp_path / "alias.yaml"
    aliased.write_text("name: r\nq: &q {epochs: 1}\nsteps:\n  - qat: *q\n")
    with pytest.raises(ConfigError, match="alias"):
        load_recipe(aliased)
    twice = tmp_path / "twice.yaml"
    twice.write_text("name: r\nname: s\nsteps:\n  - qat: {epochs: 1}\n")
    with pytest.raises(ConfigError, match="name"):
        load_recipe(twice)


def test_every_step_kind_is_one_registered_class_and_a_kind_registers_once():
    from roverlite.compress._registry import STEP_TYPES, register_step
    from roverlite.compress.recipe import STEP_KINDS

    assert STEP_KINDS == ("distill", "prune", "structured", "qat", "export")
    assert all(cls.kind == kind and callable(cls.run) for kind, cls in STEP_TYPES.items())
    with pytest.raises(ValueError, match="registered once.*'prune'"):
        register_step("prune")(type("Again", (), {}))


def test_hard_loss_is_one_type_validated_once_for_every_training_step():
    from roverlite.compress._registry import HardLoss, TrainingStep
    from roverlite.compress.recipe import STEP_TYPES

    training = [cls for cls in STEP_TYPES.values() if issubclass(cls, TrainingStep)]
    assert sorted(cls.kind for cls in training) == ["distill", "prune", "qat", "structured"]
    step = PruneStep(loss={"cross_entropy": 1, "dice": 2}, class_weighting="median")
    assert step.hard_loss == HardLoss("median", {"cross_entropy": 1.0, "dice": 2.0}, "prune")
    with pytest.raises(ValueError, match="Expected qat.class_weighting in .*Received: 'medain'.*median"):
        QatStep(class_weighting="medain")
