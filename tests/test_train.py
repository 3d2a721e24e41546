"""Training: it learns, it resumes without losing or repeating epochs, and eval reproduces it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roverlite.cli import main
from roverlite.config import load_config


def tiny_synthetic_config(**extra: str):
    overrides = [
        "model.name=unet_tiny",
        "data.image_size=[32, 32]",
        "data.synthetic_count=12",
        "train.batch_size=4",
        "train.epochs=2",
        *[f"{k}={v}" for k, v in extra.items()],
    ]
    return load_config(None, overrides=overrides)


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def overfit_folder(shared_datasets, tmp_path) -> Path:
    """Six real AI4Mars pairs, used as both train and val split (symlinks, nothing copied)."""
    src = shared_datasets / "ai4mars-msl"
    ids = json.loads((src / "splits.json").read_text())["train"][:6]
    root = tmp_path / "six"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in ids:
        (root / "images" / f"{i}.jpg").symlink_to(src / "images" / f"{i}.jpg")
        (root / "masks" / f"{i}.png").symlink_to(src / "masks" / f"{i}.png")
    (root / "splits.json").write_text(json.dumps({"train": ids, "val": ids}))
    return root


def test_small_model_overfits_a_handful_of_real_ai4mars_images(overfit_folder, tmp_path):
    from roverlite.train.fit import train

    cfg = load_config(
        None,
        overrides=[
            "data.format=folder",
            f"data.path={overfit_folder}",
            "data.image_size=[64, 64]",
            "augment.hflip=false",
            "model.name=unet_xs",
            "train.epochs=60",
            "train.batch_size=6",
            "train.learning_rate=0.01",
            "train.warmup_epochs=2",
            "train.weight_decay=0",
            "train.class_weighting=none",
        ],
    )
    result = train(cfg, tmp_path / "run", progress=False)
    history = read_metrics(tmp_path / "run")
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert result.best_miou > 0.9, history[-1]


def test_run_folder_has_every_documented_file(tmp_path):
    from roverlite.training import train_run as train  # the training loop, then the run's plots

    run = tmp_path / "run"
    result = train(tiny_synthetic_config(), run, progress=False)
    for name in ("config.yaml", "splits.json", "metrics.jsonl", "summary.json", "curves.png", "predictions.png", "model.h5"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    for key in ("miou", "per_class_iou", "confusion_matrix", "params", "macs", "train_seconds", "images_per_second"):
        assert key in summary, key
    assert summary["params"] > 0 and summary["macs"] > 0
    assert result.epochs_run == 2
    assert load_config(run / "config.yaml") == tiny_synthetic_config()
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_epoch_count_with_continuous_metrics(tmp_path):
    from roverlite.train.fit import train

    run = tmp_path / "run"
    train(tiny_synthetic_config(**{"train.epochs": 1}), run, progress=False)
    assert [row["epoch"] for row in read_metrics(run)] == [1]
    result = train(tiny_synthetic_config(**{"train.epochs": 3}), run, resume=True, progress=False)
    assert [row["epoch"] for row in read_metrics(run)] == [1, 2, 3]
    assert result.epochs_run == 3


def test_checkpoint_restores_weights_and_optimizer_step_counter(tmp_path):
    import numpy as np

    from roverlite.train.checkpoint import find_checkpoint, load_checkpoint
    from roverlite.train.fit import _build, train

    cfg = tiny_synthetic_config(**{"train.epochs": 1})
    result = train(cfg, tmp_path / "run", progress=False)
    trained = result.run_dir / "checkpoints"
    model, optimizer = _build(cfg, steps_per_epoch=1, class_weights=np.ones(4))
    state = load_checkpoint(find_checkpoint(trained), model, optimizer)
    assert state.epoch == 1
    # 12 scenes, 30 % to val -> 8 or 9 training images -> ceil(n / 4) = 3 steps in the epoch.
    assert int(optimizer.iterations.numpy()) == 3
    from roverlite.train.modelfile import load_model_file

    last = load_model_file(result.model_path)  # best == last after one epoch
    for a, b in zip(model.get_weights(), last.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_resume_with_a_different_config_is_refused_listing_the_keys(tmp_path):
    from roverlite.train.fit import train

    run = tmp_path / "run"
    train(tiny_synthetic_config(**{"train.epochs": 1}), run, progress=False)
    changed = tiny_synthetic_config(**{"train.learning_rate": 0.1, "train.batch_size": 2})
    with pytest.raises(ValueError, match=r"train\.batch_size, train\.learning_rate"):
        train(changed, run, resume=True, progress=False)


def test_training_into_a_used_run_folder_without_resume_is_refused(tmp_path):
    from roverlite.train.fit import train

    run = tmp_path / "run"
    train(tiny_synthetic_config(**{"train.epochs": 1}), run, progress=False)
    with pytest.raises(ValueError, match="--resume"):
        train(tiny_synthetic_config(**{"train.epochs": 1}), run, progress=False)


def test_eval_of_saved_model_reproduces_the_runs_validation_miou(tmp_path, capsys):
    from roverlite.train.fit import train

    run = tmp_path / "run"
    train(tiny_synthetic_config(), run, progress=False)
    out = tmp_path / "eval.json"
    assert main(["-q", "eval", str(run), "--split", "val", "--json", str(out)]) == 0
    evaluated = json.loads(out.read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert evaluated["miou"] == pytest.approx(summary["miou"], abs=1e-9)
    assert set(evaluated) >= {"miou", "per_class_iou", "confusion_matrix"}
    assert evaluated["confusion_matrix"] == summary["confusion_matrix"]


def test_unknown_model_name_lists_the_closest_names(tmp_path, capsys):
    code = main(["train", "--model", "unet_xss", "--epochs", "1", "--set", "data.synthetic_count=4",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "unet_xss" in err and "unet_xs" in err and "Traceback" not in err


def test_input_shape_not_divisible_by_depth_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--model", "unet_s", "--set", "data.image_size=[100, 128]", "--set",
                 "data.synthetic_count=4", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "divisible by 2**depth=16" in err and "100" in err


def test_multiworker_without_tf_config_is_refused(tmp_path, monkeypatch):
    from roverlite.train.distribute import select_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        select_strategy("multiworker")


def test_warmup_cosine_schedule_shape():
    from roverlite.train.optim import WarmupCosine

    schedule = WarmupCosine(1.0, total_steps=100, warmup_steps=10, floor=0.0)
    values = [float(schedule(s)) for s in (0, 4, 9, 10, 55, 99, 100)]
    assert values[0] == pytest.approx(0.1)
    assert values[2] == pytest.approx(1.0)
    assert values[3] == pytest.approx(1.0)
    assert values[4] == pytest.approx(0.5, abs=0.01)
    assert values[-1] == pytest.approx(0.0, abs=1e-6)
    assert values == sorted(values[:3]) + sorted(values[3:], reverse=True)
