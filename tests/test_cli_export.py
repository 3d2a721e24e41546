"""`roverlite export`, `eval ARTIFACT` and `bundle` through the real CLI, on a tiny trained run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roverlite.cli import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from roverlite.config import load_config
    from roverlite.train.fit import train

    run = tmp_path_factory.mktemp("cli-export") / "run"
    cfg = load_config(None, overrides=[
        "model.name=unet_tiny", "data.image_size=[32, 32]", "data.synthetic_count=16",
        "train.batch_size=4", "train.epochs=3", "train.learning_rate=0.01",
    ])
    train(cfg, run, progress=False)
    return run


def test_export_writes_artifact_and_sidecar_per_format(tiny_run, tmp_path, capsys):
    out = tmp_path / "exports"
    code = main(["-q", "export", str(tiny_run), "--format", "tflite", "tflite_int8", "onnx",
                 "--out", str(out), "--representative-count", "8", "--check-images", "6"])
    assert code == 0, capsys.readouterr()
    for stem, ext in (("unet_tiny_tflite", ".tflite"), ("unet_tiny_tflite_int8", ".tflite"), ("unet_tiny_onnx", ".onnx")):
        assert (out / f"{stem}{ext}").is_file()
        sidecar = json.loads((out / f"{stem}.json").read_text())
        assert sidecar["classes"] == ["soil", "bedrock", "sand", "big_rock"]
        assert sidecar["self_check"]["passed"] is True


def test_eval_of_float_artifact_matches_keras_eval_on_the_same_split(tiny_run, tmp_path, capsys):
    out = tmp_path / "exports"
    assert main(["-q", "export", str(tiny_run), "--format", "tflite", "--out", str(out), "--check-images", "4"]) == 0
    keras_json, tflite_json = tmp_path / "keras.json", tmp_path / "tflite.json"
    assert main(["-q", "eval", str(tiny_run), "--split", "val", "--json", str(keras_json)]) == 0
    # The run trained on 16 synthetic scenes; the artifact is evaluated on the same data and split.
    code = main(["-q", "eval", str(out / "unet_tiny_tflite.tflite"), "--data", "synthetic", "--set",
                 "data.synthetic_count=16", "--split", "val", "--json", str(tflite_json)])
    assert code == 0, capsys.readouterr()
    keras, tflite = json.loads(keras_json.read_text()), json.loads(tflite_json.read_text())
    assert set(tflite) >= {"miou", "per_class_iou", "confusion_matrix"}
    assert tflite["miou"] == pytest.approx(keras["miou"], abs=2e-3)  # argmax ties only


def test_eval_of_artifact_without_data_is_a_one_line_error(tiny_run, tmp_path, capsys):
    out = tmp_path / "exports"
    assert main(["-q", "export", str(tiny_run), "--format", "onnx", "--out", str(out), "--check-images", "4"]) == 0
    capsys.readouterr()
    code = main(["eval", str(out / "unet_tiny_onnx.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "--data" in err and "Traceback" not in err


def test_export_unknown_format_suggests_the_closest(tiny_run, tmp_path, capsys):
    code = main(["export", str(tiny_run), "--format", "tflite_int", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and 'Did you mean "tflite_int8"' in err


def test_bundle_from_cli_holds_runner_and_test_pack(tiny_run, tmp_path, capsys):
    out = tmp_path / "exports"
    assert main(["-q", "export", str(tiny_run), "--format", "tflite_int8", "--out", str(out),
                 "--representative-count", "8", "--check-images", "4"]) == 0
    bundle = tmp_path / "bundle"
    code = main(["-q", "bundle", str(out / "unet_tiny_tflite_int8.tflite"), "--data", "synthetic",
                 "--images", "5", "--out", str(bundle)])
    assert code == 0, capsys.readouterr()
    names = {p.name for p in bundle.iterdir()}
    assert {"run.py", "testpack.npz", "requirements-device.txt", "unet_tiny_tflite_int8.tflite",
            "unet_tiny_tflite_int8.json"} <= names
