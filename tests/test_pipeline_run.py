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
