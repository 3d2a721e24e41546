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
