"""The accuracy gate: mIoU and rare-class floors, a broken artifact fails, an identical copy passes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_helpers import DATA_CFG, band_scenes, trained_tiny_model

from roverlite.compress.gate import (
    GateConfig,
    GateError,
    compare_to_teacher,
    gate_artifact,
    raise_if_failed,
    write_gate,
)
from roverlite.config import ConfigError

GATE = GateConfig(max_miou_drop=0.02, max_rare_class_drop=0.10, rare_classes=("big_rock",))


def _result(miou: float | None, images: int = 4, **iou: float | None) -> dict:
    return {"miou": miou, "per_class_iou": iou, "images": images}


# === Comparing results ===


def test_gate_passes_when_artifact_matches_teacher():
    teacher = _result(0.7, soil=0.9, big_rock=0.5)
    report = compare_to_teacher(teacher, dict(teacher), GATE, "1_prune", "a.tflite")
    assert report.passed and not report.reasons
    assert report.deltas == {"soil": 0.0, "big_rock": 0.0}
    assert report.miou_drop == 0.0 and report.rare_class_drops == {"big_rock": 0.0}


def test_gate_fails_on_miou_drop_naming_step_artifact_and_numbers():
    report = compare_to_teacher(
        _result(0.70, soil=0.9, big_rock=0.5), _result(0.65, soil=0.8, big_rock=0.5), GATE, "2_qat", "out/s.tflite"
    )
    assert not report.passed
    (reason,) = report.reasons
    for text in ("step 2_qat", "s.tflite", "5.00 points", "0.7000", "0.6500", "gate.max_miou_drop=0.02"):
        assert text in reason


def test_gate_fails_on_rare_class_relative_drop_naming_the_class():
    report = compare_to_teacher(
        _result(0.70, soil=0.9, big_rock=0.40), _result(0.69, soil=0.9, big_rock=0.30), GATE, "1_distill", "s.tflite"
    )
    assert not report.passed
    (reason,) = report.reasons
    for text in ("step 1_distill", "big_rock", "25.0%", "0.4000", "0.3000", "gate.max_rare_class_drop=0.1"):
        assert text in reason
    assert report.rare_class_drops["big_rock"] == pytest.approx(0.25)


def test_rare_class_floor_is_relative_to_the_teachers_iou():
    # 0.08 absolute is 8.9 % of 0.9 (passes) but 40 % of 0.2 (fails).
    high = compare_to_teacher(_result(0.8, big_rock=0.9), _result(0.8, big_rock=0.82), GATE, "s", "a")
    low = compare_to_teacher(_result(0.8, big_rock=0.2), _result(0.8, big_rock=0.12), GATE, "s", "a")
    assert high.passed and not low.passed


def test_rare_class_absent_for_the_teacher_is_noted_not_checked():
    report = compare_to_teacher(_result(0.8, big_rock=0.0), _result(0.8, big_rock=0.0), GATE, "s", "a")
    assert report.passed and report.rare_class_drops == {"big_rock": None}
    assert any("big_rock" in note for note in report.notes)


def test_nan_miou_breaks_the_floor():
    report = compare_to_teacher(_result(0.8, big_rock=0.5), _result(float("nan"), big_rock=0.5), GATE, "s", "a")
    assert not report.passed
    assert json.loads(json.dumps(report.to_dict()))["miou_drop"] is None  # strict JSON, NaN as null


def test_comparing_different_image_sets_is_refused():
    with pytest.raises(ValueError, match="teacher's 4 images"):
        compare_to_teacher(_result(0.8, big_rock=0.5), _result(0.8, images=5, big_rock=0.5), GATE, "s", "a")


def test_raise_if_failed_raises_a_value_error_with_the_first_reason_and_report_path(tmp_path):
    ok = compare_to_teacher(_result(0.8, big_rock=0.5), _result(0.8, big_rock=0.5), GATE, "1_prune", "a")
    bad = compare_to_teacher(_result(0.8, big_rock=0.5), _result(0.5, big_rock=0.1), GATE, "1_prune", "b")
    raise_if_failed([ok])
    path = write_gate(tmp_path / "gate.json", "1_prune", [ok, bad])
    with pytest.raises(GateError, match=r"mIoU fell 30.00 points .*\(and 1 more\).*gate.json") as info:
        raise_if_failed([ok, bad], path)
    assert isinstance(info.value, ValueError) and info.value.reports == (bad,)
    saved = json.loads(path.read_text())
    assert saved["passed"] is False and [a["passed"] for a in saved["artifacts"]] == [True, False]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_miou_drop": -0.1}, "max_miou_drop in \\[0, 1\\]"),
        ({"max_rare_class_drop": 1.5}, "max_rare_class_drop in \\[0, 1\\]"),
        ({"rare_classes": ("a", "a")}, "once"),
        ({"rare_classes": ("a",), "max_rare_class_drop": None}, "needs gate.max_rare_class_drop"),
        ({"max_images": 0}, "max_images >= 1"),
    ],
)
def test_gate_config_rejects_impossible_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GateConfig(**kwargs)


def test_rare_class_typo_suggests_the_class():
    with pytest.raises(ConfigError, match='Did you mean "big_rock"'):
        GateConfig(rare_classes=("big_rok",)).check_classes(("soil", "big_rock"))


# === Artifacts through roverlite.deploy ===


def _export_float(model, folder, name):
    from roverlite.export import ExportSettings, export_model

    return export_model(model, ExportSettings(["tflite"], folder, DATA_CFG, name=name))[0].path


def _copy(model, shuffle: bool):
    from roverlite._tf import keras

    clone = keras.models.clone_model(model)
    weights = model.get_weights()
    if shuffle:  # same values, wrong places: a model that ran but learnt nothing useful
        rng = np.random.default_rng(0)
        weights = [rng.permutation(w.reshape(-1)).reshape(w.shape) for w in weights]
    clone.set_weights(weights)
    return clone


def test_gate_fails_on_a_broken_model_and_passes_on_an_identical_copy(tmp_path):
    from roverlite.deploy.evaluate import evaluate_artifact

    model = trained_tiny_model()
    images, masks = band_scenes(12, seed=3)
    teacher = evaluate_artifact(_export_float(model, tmp_path / "teacher", "teacher"), images, masks)
    assert teacher["miou"] > 0.5  # a decisive teacher, so a broken copy has something to lose

    same_path = _export_float(_copy(model, False), tmp_path / "copy", "copy")
    same = gate_artifact(same_path, images, masks, teacher, GATE, "1_copy")
    assert same.passed and all(d == pytest.approx(0.0, abs=1e-9) for d in same.deltas.values())

    broken_path = _export_float(_copy(model, True), tmp_path / "broken", "broken")
    broken = gate_artifact(broken_path, images, masks, teacher, GATE, "2_broken")
    assert not broken.passed and broken.miou_drop > 0.02
    with pytest.raises(GateError, match=r"step 2_broken \(broken_tflite.tflite\): mIoU fell"):
        raise_if_failed([broken])


# === Quantization debugger ===


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_qdebug_ranks_layers_of_an_int8_conversion_worst_first():
    from roverlite.compress.qdebug import debug_quantization, format_table
    from roverlite.data.loader import normalize

    model = trained_tiny_model()
    images, _ = band_scenes(8, seed=4)
    table = debug_quantization(model, normalize(images, DATA_CFG.mean, DATA_CFG.std), images=3, top_k=4)
    assert table["images"] == 3 and table["layers"] >= 4 and len(table["top"]) == 4
    scores = [row["rmse_over_scale"] for row in table["top"]]
    assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
    names = {layer.name for layer in model.layers}
    # Rows name the Keras layers fused into each op (the model output keeps its tensor name).
    assert sum(set(row["layer"].split("+")) <= names for row in table["top"]) >= len(table["top"]) - 1
    assert table["top"][0]["layer"][:20] in format_table(table)



# === Hazard floor ===

NAMES = ("soil", "bedrock", "sand", "big_rock")
HAZARDS = {"big_rock": ["soil", "sand"]}


def _scored(rows: dict[int, dict[int, int]]) -> dict:
    """An evaluate_artifact-like result from ``{truth id: {predicted id: pixels}}``, scored by metrics."""
    from roverlite.train.metrics import StreamingConfusion

    truth = np.array([t for t, preds in rows.items() for p, n in preds.items() for _ in range(n)], dtype=np.uint8)
    pred = np.array([p for t, preds in rows.items() for p, n in preds.items() for _ in range(n)], dtype=np.uint8)
    stream = StreamingConfusion(4, ignore_index=255)
    stream.update(truth, pred)
    return {**stream.result(NAMES, hazards=HAZARDS), "images": 4}


TEACHER_PIXELS = {0: {0: 380, 1: 20}, 1: {1: 285, 0: 15}, 2: {2: 190, 0: 10}, 3: {3: 70, 1: 25, 0: 5}}
# The same model, except that the big rocks it gets wrong are now called sand, not bedrock:
# big-rock IoU is unchanged and mIoU moves by less than a point, but the rover drives onto them.
ROCKS_AS_SAND = {**TEACHER_PIXELS, 3: {3: 70, 2: 30}}


def test_gate_fails_on_a_model_that_turns_big_rock_into_sand_while_miou_holds():
    teacher, student = _scored(TEACHER_PIXELS), _scored(ROCKS_AS_SAND)
    assert abs(teacher["miou"] - student["miou"]) < 0.02
    assert student["per_class_iou"]["big_rock"] == teacher["per_class_iou"]["big_rock"]
    assert teacher["hazards"]["big_rock"]["miss_rate"] == pytest.approx(0.05)
    assert student["hazards"]["big_rock"]["miss_rate"] == pytest.approx(0.30)

    without = compare_to_teacher(teacher, student, GATE, "3_export", "out/s_tflite_int8.tflite")
    assert without.passed  # the mIoU and rare-class floors alone let it through
    cfg = GateConfig(max_miou_drop=0.02, max_rare_class_drop=0.10, rare_classes=("big_rock",),
                     max_hazard_miss_increase=0.02)
    report = compare_to_teacher(teacher, student, cfg, "3_export", "out/s_tflite_int8.tflite")
    assert not report.passed
    (reason,) = report.reasons
    for text in ("step 3_export", "s_tflite_int8.tflite", "big_rock miss rate", "soil or sand", "25.00 points",
                 "teacher 0.0500", "artifact 0.3000", "gate.max_hazard_miss_increase=0.02"):
        assert text in reason
    assert report.hazard_miss_increases == {"big_rock": pytest.approx(0.25)}
    plain = report.to_dict()
    assert plain["teacher_hazards"]["big_rock"]["miss_rate"] == pytest.approx(0.05)
    assert plain["artifact_hazards"]["big_rock"]["miss_rate"] == pytest.approx(0.30)
    assert plain["limits"]["max_hazard_miss_increase"] == 0.02


def test_hazard_floor_passes_an_unchanged_model_and_notes_an_absent_hazard():
    cfg = GateConfig(max_hazard_miss_increase=0.02)
    teacher = _scored(TEACHER_PIXELS)
    assert compare_to_teacher(teacher, dict(teacher), cfg, "1", "a.tflite").passed
    no_rocks = _scored({k: v for k, v in TEACHER_PIXELS.items() if k != 3})
    report = compare_to_teacher(no_rocks, dict(no_rocks), cfg, "1", "a.tflite")
    assert report.passed and any("miss rate undefined" in note for note in report.notes)


def test_hazard_floor_is_validated_and_needs_declared_hazards():
    with pytest.raises(ConfigError, match="max_hazard_miss_increase"):
        GateConfig(max_hazard_miss_increase=1.5)
    cfg = GateConfig(max_hazard_miss_increase=0.02)
    cfg.check_classes(NAMES, HAZARDS)
    with pytest.raises(ConfigError, match="needs hazards declared in the run config"):
        cfg.check_classes(NAMES, None)


def test_recipe_yaml_accepts_the_hazard_floor():
    from pathlib import Path

    from roverlite.compress.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "configs" / "recipes" / "mars_student_int8.yaml")
    assert recipe.gate.max_hazard_miss_increase == 0.02
    assert load_recipe(recipe.to_dict()).gate == recipe.gate
