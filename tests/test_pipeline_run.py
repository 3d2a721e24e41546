"""`roverlite pipeline` end to end on a tiny synthetic config, and `--resume` skipping stages."""

from __future__ import annotations

import json

import pytest

from roverlite.cli import main

TINY = [
    "--set", "model.name=unet_tiny", "--set", "data.image_size=[32, 32]", "--set", "data.synthetic_count=16",
    "--set", "train.epochs=2", "--set", "train.batch_size=4",
]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    recipe = root / "recipe.yaml"
    recipe.write_text(
        "name: tiny\nsteps:\n  - distill: {student: unet_tiny_nearest, epochs: 1}\n"
        "  - export: {formats: [tflite_int8]}\ngate: {max_miou_drop: 1.0}\n"
    )
    out = root / "run"
    code = main(["-q", "pipeline", *TINY, "--recipe", str(recipe), "--out", str(out), "--bench-runs", "3"])
    return code, out, recipe


def test_pipeline_writes_report_files_and_summary_rows(pipeline_run):
    code, out, _ = pipeline_run
    assert code == 0
    for name in ("report.md", "report.html", "pareto.png", "summary.json"):
        assert (out / "report" / name).is_file(), name
    rows = json.loads((out / "report" / "summary.json").read_text())["variants"]
    artifacts = [r for r in rows if r.get("artifact")]
    assert len(artifacts) >= 3
    for row in artifacts:
        assert set(row) >= {"name", "miou", "size_bytes", "macs", "p50_ms"}
        assert row["size_bytes"] > 0 and row["p50_ms"] > 0
    state = json.loads((out / "pipeline.json").read_text())["stages"]
    assert list(state) == ["audit", "teacher", "compress", "export", "testpack", "bench", "report"]


def test_pipeline_resume_skips_finished_stages(pipeline_run, caplog):
    _, out, recipe = pipeline_run
    before = (out / "teacher" / "model.h5").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="roverlite.pipeline"):
        code = main(["pipeline", *TINY, "--recipe", str(recipe), "--out", str(out), "--resume"])
    assert code == 0
    assert (out / "teacher" / "model.h5").stat().st_mtime_ns == before
    assert sum("done earlier, skipped" in r.getMessage() for r in caplog.records) == 7


def test_pipeline_into_a_used_folder_without_resume_is_refused(pipeline_run, capsys):
    _, out, recipe = pipeline_run
    code = main(["pipeline", *TINY, "--recipe", str(recipe), "--out", str(out)])
    assert code == 2 and "--resume" in capsys.readouterr().err
