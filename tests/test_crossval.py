"""k-fold cross-validation: folds partition the data, each fold trains its own run, scores pool."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from roverlite.config import ConfigError, DataConfig, load_config
from roverlite.data.formats import FolderSource
from roverlite.data.loader import split_ids
from roverlite.data.source import DataError
from roverlite.data.splits import write_splits

ROOT = Path(__file__).resolve().parents[1]


# === Config and loader ===


def test_config_refuses_a_fold_without_folds_and_a_fold_out_of_range():
    assert DataConfig(folds=4, fold=3).fold == 3
    with pytest.raises(ConfigError, match="set data.folds"):
        DataConfig(fold=1)
    with pytest.raises(ConfigError, match=r"data.fold must be an integer in 0\.\.3"):
        DataConfig(folds=4, fold=4)
    with pytest.raises(ConfigError, match="data.folds must be an integer >= 2"):
        DataConfig(folds=1)
    with pytest.raises(ConfigError, match="data.folds must be an integer >= 2"):
        DataConfig(folds=True)


def test_folds_round_trip_through_yaml(tmp_path):
    cfg = load_config(None, overrides=["data.folds=5", "data.fold=2"])
    cfg.to_yaml(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").data == cfg.data


def test_loader_validates_on_the_configured_fold(tiny_folder_dataset):
    root = tiny_folder_dataset(n=8)
    seen = []
    for fold in range(4):
        cfg = DataConfig(format="folder", path=str(root), folds=4, fold=fold, split_seed=0)
        val = split_ids(FolderSource(root), cfg, "val")
        train = split_ids(FolderSource(root), cfg, "train")
        assert len(val) == 2 and len(train) == 6 and not set(val) & set(train)
        seen += val
    assert sorted(seen) == [f"s{k:03d}" for k in range(8)]


def test_folds_on_a_dataset_with_its_own_splits_are_refused(tiny_folder_dataset):
    root = tiny_folder_dataset(n=4)
    write_splits(root / "splits.json", {"train": ["s000", "s001", "s002"], "val": ["s003"]})
    cfg = DataConfig(format="folder", path=str(root), folds=2)
    with pytest.raises(DataError, match="has its own splits"):
        split_ids(FolderSource(root), cfg, "val")
    assert len(split_ids(FolderSource(root), cfg, "all")) == 4  # --split all ignores splits either way


# === Training every fold ===


def _summary(cm: list[list[int]], miou: float) -> dict:
    return {
        "model": "unet_tiny", "confusion_matrix": cm, "miou": miou, "per_class_iou": {},
        "params": 10, "macs": 100, "train_seconds": 2.0, "images_per_second": 4.0,
        "best_epoch": 1, "epochs_run": 1,
    }


def test_pooled_scores_come_from_the_summed_confusion_matrices():
    from roverlite.train.crossval import pool_folds

    cfg = load_config(None, overrides=["data.classes=[a, b]", "data.folds=2"])
    pooled = pool_folds([_summary([[8, 2], [0, 0]], 0.4), _summary([[0, 0], [1, 9]], 0.45)], cfg)
    assert pooled["confusion_matrix"] == [[8, 2], [1, 9]]
    assert pooled["per_class_iou"] == {"a": pytest.approx(8 / 11), "b": pytest.approx(9 / 12)}
    assert pooled["miou"] == pytest.approx((8 / 11 + 9 / 12) / 2)
    assert pooled["fold_miou_mean"] == pytest.approx(0.425)
    assert pooled["fold_miou_std"] == pytest.approx(0.025)
    assert pooled["train_seconds"] == 4.0 and [f["fold"] for f in pooled["per_fold"]] == [0, 1]


def test_train_folds_trains_one_run_per_fold_and_writes_the_pooled_summary(tiny_folder_dataset, tmp_path):
    from roverlite.train.crossval import train_folds

    root = tiny_folder_dataset(n=6, size=(32, 32))
    cfg = load_config(None, overrides=[
        "data.format=folder", f"data.path={root}", "data.image_size=[32, 32]", "data.folds=3",
        "model.name=unet_tiny", "train.epochs=1", "train.batch_size=2",
    ])
    cv = train_folds(cfg, tmp_path / "cv", progress=False)
    vals = [json.loads((tmp_path / "cv" / f"fold{k}" / "splits.json").read_text())["val"] for k in range(3)]
    assert sorted(i for v in vals for i in v) == [f"s{k:03d}" for k in range(6)]
    assert [r.run_dir.name for r in cv.folds] == ["fold0", "fold1", "fold2"]
    written = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    total = np.sum([r.summary["confusion_matrix"] for r in cv.folds], axis=0)
    assert written["confusion_matrix"] == total.tolist() == cv.summary["confusion_matrix"]
    assert written["folds"] == 3


def test_train_folds_needs_folds_in_the_config(tmp_path):
    from roverlite.train.crossval import train_folds

    with pytest.raises(ValueError, match="needs data.folds"):
        train_folds(load_config(None), tmp_path)


def test_teacher_benchmark_judges_a_cross_validated_config_on_the_pooled_scores(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("teacher_benchmark_cv", ROOT / "benchmarks" / "teacher.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    import roverlite.train.crossval as crossval
    from roverlite.train.crossval import CrossValResult, pool_folds

    cfg = load_config(ROOT / "configs" / "cropweed.yaml")
    assert cfg.data.folds == 4  # the configured CWFID teacher is judged by cross-validation
    # fold 0 alone misses the target, the pool meets it: crop 30/40, weed 30/40 overall.
    folds = [_summary([[50, 0, 0], [0, 5, 5], [0, 5, 5]], 0.5), _summary([[50, 0, 0], [0, 25, 0], [0, 0, 25]], 1.0)]
    for s, crop_weed in zip(folds, [(1 / 3, 1 / 3), (1.0, 1.0)]):
        s["per_class_iou"] = {"soil": 1.0, "crop": crop_weed[0], "weed": crop_weed[1]}
    monkeypatch.setattr(crossval, "train_folds",
                        lambda cfg, out, resume=False: CrossValResult(out, (), pool_folds(folds, cfg)))
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    code = bench.main(["--config", str(ROOT / "configs" / "cropweed.yaml"), "--out", str(tmp_path / "cv")])
    record = json.loads((tmp_path / "teacher_cwfid.json").read_text())
    assert code == 0 and record["targets"][0]["met"] is True
    assert record["targets"][0]["value"] == pytest.approx(30 / 40)
    assert [f["targets"][0]["met"] for f in record["per_fold"]] == [False, True]
    assert record["scored_on"] == "pooled out-of-fold confusion matrix"


def test_cli_all_folds_trains_every_fold_and_resumes_without_a_config(tiny_folder_dataset, tmp_path, capsys):
    from roverlite.cli import main

    root = tiny_folder_dataset(n=4, size=(32, 32))
    args = ["--quiet", "train", "--data", str(root), "--model", "unet_tiny", "--epochs", "1", "--batch-size", "2",
            "--set", "data.image_size=[32, 32]", "--set", "data.folds=2", "--all-folds",
            "--out", str(tmp_path / "cv")]
    assert main(args) == 0
    assert "pooled out-of-fold mIoU" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "cv").iterdir()) == ["crossval.json", "fold0", "fold1"]
    assert main(["--quiet", "train", "--all-folds", "--resume", "--out", str(tmp_path / "cv")]) == 0
    assert [json.loads(line)["epoch"] for line in (tmp_path / "cv" / "fold1" / "metrics.jsonl").read_text().splitlines()] == [1]
    # eval of the folder re-scores each fold's model on its own fold and reproduces the pooled matrix
    assert main(["--quiet", "eval", str(tmp_path / "cv"), "--json", str(tmp_path / "e.json")]) == 0
    pooled = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    scored = json.loads((tmp_path / "e.json").read_text())
    assert scored["confusion_matrix"] == pooled["confusion_matrix"]
    assert scored["miou"] == pytest.approx(pooled["miou"])
    assert main(["--quiet", "eval", str(tmp_path / "cv"), "--split", "train"]) != 0
    assert "scored out of fold" in capsys.readouterr().err


def test_cli_all_folds_without_folds_in_the_config_is_refused(tmp_path, capsys):
    from roverlite.cli import main

    assert main(["train", "--all-folds", "--epochs", "1", "--out", str(tmp_path / "cv")]) != 0
    assert "needs data.folds" in capsys.readouterr().err


def test_a_cross_validation_folder_given_as_one_model_names_a_fold_to_pass(tmp_path):
    from roverlite.compress.runner import _resolve_source
    from roverlite.train.evaluate import load_keras_model

    (tmp_path / "cv" / "fold0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="cross-validation folder .* e.g. '.*fold0'"):
        load_keras_model(tmp_path / "cv")
    with pytest.raises(FileNotFoundError, match="pass one fold's run folder"):
        _resolve_source(tmp_path / "cv", None)
    with pytest.raises(FileNotFoundError) as plain:
        load_keras_model(tmp_path / "cv" / "fold0")
    assert "cross-validation" not in str(plain.value)


def test_eval_per_image_lists_every_image_worst_first_with_its_fold(tiny_folder_dataset, tmp_path, capsys):
    from roverlite.cli import main

    root = tiny_folder_dataset(n=4, size=(32, 32))
    assert main(["--quiet", "train", "--data", str(root), "--model", "unet_tiny", "--epochs", "1",
                 "--batch-size", "2", "--set", "data.image_size=[32, 32]", "--set", "data.folds=2",
                 "--all-folds", "--out", str(tmp_path / "cv")]) == 0
    assert main(["--quiet", "eval", str(tmp_path / "cv"), "--per-image", "--json", str(tmp_path / "e.json")]) == 0
    assert "worst 4 of 4 images by mIoU" in capsys.readouterr().out
    rows = json.loads((tmp_path / "e.json").read_text())["per_image"]
    assert sorted(r["id"] for r in rows) == ["s000", "s001", "s002", "s003"]
    assert [r["miou"] for r in rows] == sorted(r["miou"] for r in rows)
    folds = json.loads((tmp_path / "cv" / "fold1" / "splits.json").read_text())["val"]
    assert sorted(r["id"] for r in rows if r["fold"] == 1) == sorted(folds)
    # 32x32 pixels, the bottom row ignored (255), the rest counted per class in the truth
    assert all(sum(r["pixels"].values()) == 31 * 32 for r in rows)


def test_image_scores_match_a_hand_count():
    from roverlite.train.evaluate import image_scores

    cfg = DataConfig(classes=("a", "b", "c"), ignore_index=255)
    truth = np.array([[0, 0, 1, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 2]], np.uint8)
    row = image_scores("x", truth, pred, cfg)
    assert row["per_class_iou"] == {"a": pytest.approx(0.5), "b": pytest.approx(0.5), "c": None}
    assert row["miou"] == pytest.approx(0.5) and row["pixels"] == {"a": 2, "b": 1, "c": 0}


def test_per_image_on_an_exported_artifact_is_refused(tmp_path, capsys):
    from roverlite.cli import main

    (tmp_path / "m.tflite").write_bytes(b"x")
    assert main(["eval", str(tmp_path / "m.tflite"), "--per-image"]) != 0
    assert "--per-image scores Keras models" in capsys.readouterr().err
