"""`roverlite pipeline` end to end on a tiny synthetic config, and `--resume` skipping stages."""

from __future__ import annotations

import dataclasses
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
    kinds = [r.get("kind") for r in rows]
    assert kinds.count("teacher float") == 1 and kinds.count("teacher int8") == 1, kinds  # the teacher once
    assert not any(r["name"].endswith("_keras") for r in rows)  # its float TFLite is the reference row
    sources = {r.get("accuracy_source") for r in rows}
    assert len(sources) == 1 and next(iter(sources)).endswith("images, from testpack.npz"), sources
    state = json.loads((out / "pipeline.json").read_text())["stages"]
    assert str(state["testpack"]["images"]) in next(iter(sources))  # the whole validation split
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


# === Adopting a trained teacher ===


def _fake_run(folder, cfg):
    folder.mkdir(parents=True)
    cfg.to_yaml(folder / "config.yaml")
    (folder / "model.h5").write_bytes(b"weights")
    (folder / "summary.json").write_text(json.dumps({"miou": 0.7, "epochs_run": 3}))
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"x" * 10)
    return folder


def test_adopted_teacher_is_copied_without_checkpoints(tmp_path):
    from roverlite.config import Config
    from roverlite.pipeline import _adopt_teacher

    cfg = Config()
    source = _fake_run(tmp_path / "trained", dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=40)))
    info = _adopt_teacher(cfg, source, tmp_path / "run" / "teacher")  # only the epoch count differs: allowed
    assert (tmp_path / "run" / "teacher" / "model.h5").read_bytes() == b"weights"
    assert not (tmp_path / "run" / "teacher" / "checkpoints").exists()
    assert info["best_miou"] == 0.7 and len(info["model_sha256"]) == 64


def test_adopting_a_teacher_trained_with_other_settings_lists_the_differences(tmp_path):
    from roverlite.config import Config
    from roverlite.pipeline import _adopt_teacher

    cfg = Config()
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name="unet_xs"))
    source = _fake_run(tmp_path / "trained", other)
    with pytest.raises(ValueError, match="model.name"):
        _adopt_teacher(cfg, source, tmp_path / "run" / "teacher")
    (source / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="summary.json"):
        _adopt_teacher(other, source, tmp_path / "run" / "teacher")


# === Adopting a finished compress folder ===


def test_pipeline_adopts_teacher_and_compress_folder_without_retraining(pipeline_run, tmp_path):
    _, out, _ = pipeline_run
    again = tmp_path / "again"
    code = main(["-q", "pipeline", *TINY, "--teacher", str(out / "teacher"), "--compressed", str(out / "compress"),
                 "--out", str(again), "--bench-runs", "3"])
    assert code == 0
    stages = json.loads((again / "pipeline.json").read_text())["stages"]
    assert stages["compress"]["adopted_from"] == str((out / "compress").resolve())
    assert stages["compress"]["student"] == "unet_tiny_nearest"
    first = {r["name"] for r in json.loads((out / "report" / "summary.json").read_text())["variants"]}
    second = {r["name"] for r in json.loads((again / "report" / "summary.json").read_text())["variants"]}
    assert first == second


def test_adopting_a_compress_folder_made_from_another_teacher_shows_both_hashes(pipeline_run, tmp_path):
    from roverlite.pipeline import _adopt_compressed

    _, out, _ = pipeline_run
    other = tmp_path / "model.h5"
    other.write_bytes(b"another teacher")
    with pytest.raises(ValueError, match="another teacher") as err:
        _adopt_compressed(out / "compress", other, tmp_path / "compress")
    assert json.loads((out / "compress" / "recipe_result.json").read_text())["teacher"]["sha256"] in str(err.value)
    assert not (tmp_path / "compress").exists()
    with pytest.raises(FileNotFoundError, match="recipe_result.json"):
        _adopt_compressed(tmp_path, other, tmp_path / "compress")


def test_pipeline_refuses_a_compress_folder_together_with_a_recipe(pipeline_run, tmp_path, capsys):
    _, out, recipe = pipeline_run
    code = main(["pipeline", *TINY, "--recipe", str(recipe), "--compressed", str(out / "compress"),
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "fixes the recipe" in capsys.readouterr().err


# === The deliverable's gate decides the exit code ===


def _crippled_recipe(path):
    """A student that learns nothing (learning rate 1e-9) judged by a gate that allows no drop."""
    path.write_text(
        "name: crippled\nsteps:\n  - distill: {student: unet_tiny_nearest, epochs: 1, learning_rate: 1.0e-9}\n"
        "  - export: {formats: [tflite_int8]}\ngate: {max_miou_drop: 0.0}\n"
    )
    return path


@pytest.fixture(scope="module")
def crippled_run(tmp_path_factory):
    """A tiny teacher trained long enough to beat an untrained student, adopted by a pipeline whose
    recipe ships that untrained student; gate enforced (the default)."""
    root = tmp_path_factory.mktemp("crippled")
    teacher = root / "teacher"
    assert main(["-q", "train", *TINY, "--set", "train.epochs=12", "--out", str(teacher)]) == 0
    recipe, run = _crippled_recipe(root / "crippled.yaml"), root / "run"
    args = [*TINY, "--teacher", str(teacher), "--recipe", str(recipe), "--out", str(run), "--bench-runs", "3"]
    return main(["-q", "pipeline", *args]), run, args


def test_a_deliverable_failing_its_gate_makes_the_pipeline_exit_1_after_writing_the_report(crippled_run, capfd):
    code, run, _ = crippled_run
    assert code == 1
    summary = json.loads((run / "report" / "summary.json").read_text())
    deliverable = summary["deliverable"]
    assert deliverable["gate"]["passed"] is False and deliverable["enforced"] is True
    assert deliverable["artifact"].endswith("crippled-2-export_tflite_int8.tflite")
    assert any("mIoU" in reason for reason in deliverable["gate"]["reasons"])
    assert (run / "report" / "report.html").is_file()  # the report is written before the verdict


def test_the_failed_deliverable_is_named_in_one_line_and_no_gate_exits_0(crippled_run, capsys):
    _, run, args = crippled_run
    assert main(["-q", "pipeline", *args, "--resume"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deliverable crippled-2-export_tflite_int8.tflite FAILED its gate: " in err[0]
    assert main(["-q", "pipeline", *args, "--resume", "--no-gate"]) == 0
    assert "FAILED its gate" not in capsys.readouterr().err


def test_pipeline_benchmarks_each_artifact_in_its_own_process(pipeline_run):
    _, out, _ = pipeline_run
    rows = json.loads((out / "bench" / "bench.json").read_text())["results"]
    assert rows and all(r["isolated"] for r in rows if r["status"] == "ok")
    # A process holding TensorFlow peaks above 400 MiB; a numpy + runtime process with a tiny model does not.
    assert max(r["peak_rss_mb"] for r in rows) < 400
