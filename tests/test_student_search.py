"""Latency-budget student search: the selection rule, latency tables, measuring here, the pipeline's use."""

from __future__ import annotations

import json
import math

import pytest

from roverlite.cli import main
from roverlite.compress.search import (
    LatencyBudgetError,
    SearchSpec,
    choose_student,
    read_latency_table,
    search_spec,
    search_student,
)
from roverlite.config import Config, DataConfig
from roverlite.deploy.bench import (
    BenchResult,
    failed_result,
    latency_stats,
    write_bench_json,
)
from roverlite.pipeline import recipe_for_student, resolve_student_search

TABLE = {"unet_s": 20.0, "unet_xs": 6.0, "unet_xxs": 2.0}


def _write(path, document):
    path.write_text(json.dumps(document))
    return path


def _row(artifact: str, p50: float, name: str | None = None, fmt: str | None = "tflite_int8") -> BenchResult:
    return BenchResult(artifact=artifact, runtime="litert", name=name, format=fmt,
                       latency_ms=latency_stats([p50, p50, p50]))


# === Selection rule ===


@pytest.mark.parametrize("budget, chosen", [(100.0, "unet_s"), (10.0, "unet_xs"), (3.0, "unet_xxs")])
def test_the_largest_student_meeting_the_budget_is_chosen(budget: float, chosen: str) -> None:
    result = choose_student(TABLE, budget)
    assert result.student == chosen
    assert list(result.latencies_ms) == ["unet_s", "unet_xs", "unet_xxs"]


def test_a_latency_equal_to_the_budget_meets_it() -> None:
    assert choose_student(TABLE, 6.0).student == "unet_xs"
    assert choose_student(TABLE, 20.0).student == "unet_s"


def test_no_student_meeting_the_budget_names_the_closest_and_its_latency() -> None:
    with pytest.raises(LatencyBudgetError, match=r"closest is unet_xxs at 2 ms") as info:
        choose_student(TABLE, 1.5)
    assert info.value.result.student is None
    assert info.value.result.closest == "unet_xxs"
    assert "1.5 ms" in str(info.value) and "\n" not in str(info.value)


def test_students_missing_from_the_table_are_skipped_but_none_at_all_is_refused() -> None:
    assert choose_student({"unet_xs": 4.0, "unet_teacher": 90.0}, 50.0).student == "unet_xs"
    with pytest.raises(ValueError, match="at least one student"):
        choose_student({"unet_teacher": 90.0}, 50.0)


@pytest.mark.parametrize("budget", [0, -1.0, math.nan, math.inf, True, "5"])
def test_a_budget_that_is_not_positive_and_finite_is_refused(budget) -> None:
    with pytest.raises(ValueError, match="> 0 and finite"):
        SearchSpec(budget, target="this")


# === Options ===


def test_target_and_table_are_mutually_exclusive(tmp_path) -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        search_spec(5.0, "this", tmp_path / "t.json")


def test_an_unknown_target_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match='Did you mean "this"'):
        search_spec(5.0, "thsi")


def test_a_table_or_target_without_a_budget_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="--latency-budget-ms"):
        search_spec(None, table=tmp_path / "t.json")
    with pytest.raises(ValueError, match="--latency-budget-ms"):
        search_spec(None, target="this")
    with pytest.raises(ValueError, match="Received: neither"):
        search_spec(5.0)
    assert search_spec(None) is None


# === Latency tables ===


def test_a_name_to_p50_mapping_is_read_as_a_table(tmp_path) -> None:
    assert read_latency_table(_write(tmp_path / "t.json", TABLE)) == TABLE


def test_bench_json_rows_are_matched_by_name_or_file_and_int8_tflite_wins(tmp_path) -> None:
    rows = [
        _row("/d/x_tflite_int8.tflite", 4.0, name="unet_xs"),
        _row("/d/x_onnx_int8.onnx", 3.0, name="unet_xs", fmt="onnx_int8"),
        _row("/d/unet_s_tflite_int8.tflite", 12.0, name="renamed"),
        _row("/d/unet_teacher_tflite.tflite", 90.0, name="unet_teacher", fmt="tflite"),
        _row("/d/unet_xxs_onnx_int8.onnx", 1.5, fmt="onnx_int8"),
        failed_result("/d/unet_micro_tflite_int8.tflite", "litert", "broken"),
    ]
    path = write_bench_json(rows, tmp_path / "bench.json")
    assert read_latency_table(path) == {"unet_xs": 4.0, "unet_s": 12.0, "unet_xxs": 1.5}


@pytest.mark.parametrize(
    "document, match",
    [
        ([1, 2], "Unknown latency table"),
        ({}, "Unknown latency table"),
        ({"unet_xs": "fast"}, "Unknown latency table"),
        ({"results": "rows"}, "'results' list"),
        ({"results": []}, "none usable"),
        ({"unet_xs": -1.0}, "p50 latency in ms > 0"),
        ({"unet_xz": 3.0}, 'Did you mean "unet_x'),
    ],
)
def test_other_tables_are_refused_with_what_was_expected(tmp_path, document, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_latency_table(_write(tmp_path / "t.json", document))


def test_a_table_that_is_missing_or_not_json_is_refused(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="Latency table not found"):
        read_latency_table(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{unet_xs: 4")
    with pytest.raises(ValueError, match="Expected JSON"):
        read_latency_table(tmp_path / "bad.json")


# === Measuring on this machine ===


def test_target_this_times_the_ladder_in_int8_and_writes_a_reusable_table(tmp_path) -> None:
    data = DataConfig(image_size=(32, 32))
    bench_json = tmp_path / "search_bench.json"
    result = search_student(SearchSpec(1e6, target="this"), data, threads=1, ladder=("unet_tiny", "unet_tiny_nearest"),
                            bench_json=bench_json, runs=3)
    assert result.student == "unet_tiny" and result.source == "this" and result.threads == 1
    assert set(result.latencies_ms) == {"unet_tiny", "unet_tiny_nearest"}
    assert all(ms > 0 for ms in result.latencies_ms.values())
    assert read_latency_table(bench_json) == pytest.approx(dict(result.latencies_ms))


# === Pipeline ===


def test_the_pipeline_stops_before_training_when_no_student_meets_the_budget(tmp_path, capsys) -> None:
    table, out = _write(tmp_path / "rover.json", TABLE), tmp_path / "run"
    code = main(["-q", "pipeline", "--latency-budget-ms", "1", "--latency-table", str(table), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "closest is unet_xxs at 2 ms" in err
    assert not (out / "teacher").exists() and not (out / "audit").exists()
    saved = json.loads((out / "student_search.json").read_text())
    assert saved["student"] is None and saved["closest"] == "unet_xxs"


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--latency-budget-ms", "5", "--target", "thsi"], 'Did you mean "this"'),
        (["--latency-budget-ms", "5", "--target", "this", "--latency-table", "t.json"], "mutually exclusive"),
        (["--latency-table", "t.json"], "--latency-budget-ms"),
        (["--latency-budget-ms", "-2", "--target", "this"], "> 0 and finite"),
    ],
)
def test_bad_search_options_exit_2_with_one_line(tmp_path, capsys, flags, match: str) -> None:
    code = main(["-q", "pipeline", *flags, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and match in err and len(err.splitlines()) == 1


def test_the_default_recipe_distils_the_chosen_student() -> None:
    recipe = recipe_for_student(None, "unet_s")
    assert recipe.steps[0].kind == "distill" and recipe.steps[0].student == "unet_s"
    assert "unet_s distilled" in recipe.description


def test_a_given_recipe_keeps_its_steps_with_the_chosen_student() -> None:
    raw = {"name": "r", "steps": [{"distill": {"student": "unet_xs", "epochs": 3}}, {"qat": {"epochs": 1}},
                                  {"export": {"formats": ["tflite_int8"]}}]}
    recipe = recipe_for_student(raw, "unet_xxs")
    assert [s.kind for s in recipe.steps] == ["distill", "qat", "export"]
    assert recipe.steps[0].student == "unet_xxs" and recipe.steps[0].epochs == 3


def test_a_recipe_without_one_plain_distill_step_is_refused() -> None:
    export = {"export": {"formats": ["tflite_int8"]}}
    with pytest.raises(ValueError, match="exactly one distill step"):
        recipe_for_student({"name": "r", "steps": [export]}, "unet_xs")
    overridden = {"distill": {"student": "unet_xs", "student_overrides": {"base_width": 6}}}
    with pytest.raises(ValueError, match="student_overrides"):
        recipe_for_student({"name": "r", "steps": [overridden, export]}, "unet_xs")


def test_resume_reuses_the_search_until_the_table_changes(tmp_path, monkeypatch) -> None:
    from roverlite.compress import search

    cfg, state = Config(), {"stages": {}}
    table = _write(tmp_path / "rover.json", TABLE)
    spec = SearchSpec(10.0, table=str(table))
    assert resolve_student_search(cfg, tmp_path, state, spec, None, resume=False).student == "unet_xs"
    calls = []
    monkeypatch.setattr(search, "search_student", lambda *a, **k: calls.append(a) or pytest.fail("re-measured"))
    assert resolve_student_search(cfg, tmp_path, state, spec, None, resume=True).student == "unet_xs"
    assert calls == []
    monkeypatch.undo()
    _write(table, {**TABLE, "unet_s": 9.0})
    state["stages"]["compress"] = {"status": "done", "student": "unet_xs"}
    with pytest.raises(ValueError, match="distilled 'unet_xs'"):
        resolve_student_search(cfg, tmp_path, state, spec, None, resume=True)
