"""Issue 6's targets as ``benchmarks/pipeline.py`` checks them on a report's rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "benchmarks"))  # pipeline.py imports its sibling teacher.py
        spec = importlib.util.spec_from_file_location("pipeline_benchmark", ROOT / "benchmarks" / "pipeline.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def _row(name, kind, precision, recommended="litert", **p50):
    return {"name": name, "kind": kind, "precision": precision, "recommended_runtime": recommended,
            "latency_ms": {runtime: {"p50": ms} for runtime, ms in p50.items()}}


def test_the_fastest_student_int8_row_is_compared_with_the_float_teacher_on_litert(bench):
    rows = [
        _row("teacher", "teacher float", "float32", "onnxruntime", litert=15.0, onnxruntime=12.0),
        _row("teacher_int8", "teacher int8", "int8", litert=0.5),  # the teacher's own int8 is not a student
        _row("student_float", "distilled student", "float32", litert=0.4),
        _row("student_int8", "QAT int8", "int8", litert=0.9),
        _row("nano_int8", "QAT int8", "int8", litert=1.2),
    ]
    latency, runtime = bench.check_targets(rows)
    assert latency["student"] == "student_int8" and latency["value"] == pytest.approx(0.06)
    assert latency["met"] is True
    assert runtime == {**runtime, "value": 0, "rows": [], "met": True}


def test_a_slow_student_or_a_recommended_runtime_that_is_slower_misses(bench):
    rows = [
        _row("teacher", "teacher float", "float32", "litert", litert=15.0, onnxruntime=12.0),
        _row("student_int8", "QAT int8", "int8", litert=1.5),
    ]
    latency, runtime = bench.check_targets(rows)
    assert latency["value"] == pytest.approx(0.1) and latency["met"] is False
    assert runtime["rows"] == ["teacher"] and runtime["met"] is False


def test_no_timed_student_leaves_the_latency_target_unmeasured(bench):
    latency, _ = bench.check_targets([_row("teacher", "teacher float", "float32", litert=15.0)])
    assert latency["value"] is None and latency["met"] is None


# === Issue 22: the built-in demo ===


def _demo_rows(student_miou=0.78, student_rock=0.45, student_p50=1.5, int8_p50=3.0):
    teacher = {**_row("t", "teacher float", "float32", litert=6.0), "artifact": "t.tflite", "miou": 0.80,
               "per_class_iou": {"big_rock": 0.50}}
    teacher_int8 = {**_row("t8", "teacher int8", "int8", litert=int8_p50), "artifact": "t8.tflite", "miou": 0.80}
    student = {**_row("s", "student", "int8", litert=student_p50), "artifact": "s.tflite", "miou": student_miou,
               "per_class_iou": {"big_rock": student_rock}}
    return [teacher, teacher_int8, student], {"artifact": "s.tflite", "gate": {"passed": True, "reasons": []}}


def test_demo_targets_are_met_by_an_accurate_fast_deliverable(bench):
    rows, deliverable = _demo_rows()
    targets = bench.check_demo_targets(rows, deliverable, ["big_rock"], wall=200.0)
    assert [t["met"] for t in targets] == [True] * 6, targets
    assert targets[0]["value"] == pytest.approx(0.02) and targets[2]["value"] == pytest.approx(0.25)


@pytest.mark.parametrize("change, missed", [
    ({"student_miou": 0.76}, "mIoU drop"),
    ({"student_rock": 0.39}, "big_rock IoU"),
    ({"student_p50": 2.5}, "float teacher p50"),
    ({"int8_p50": 1.4}, "int8 teacher p50"),
])
def test_each_demo_target_is_missed_on_its_own(bench, change, missed):
    rows, deliverable = _demo_rows(**change)
    failed = [t["target"] for t in bench.check_demo_targets(rows, deliverable, ["big_rock"], wall=200.0)
              if t["met"] is False]
    assert len(failed) == 1 and missed in failed[0], failed


def test_a_slow_demo_or_a_failed_gate_misses(bench):
    rows, deliverable = _demo_rows()
    deliverable["gate"]["passed"] = False
    failed = [t["target"] for t in bench.check_demo_targets(rows, deliverable, ["big_rock"], wall=301.0)
              if t["met"] is False]
    assert failed == ["deliverable passes its gate", "pipeline wall seconds"]
