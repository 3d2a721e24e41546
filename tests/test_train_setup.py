"""roverlite.train.setup: the one training set-up that fit and compress fine-tuning share."""

from __future__ import annotations

import numpy as np
import pytest

from roverlite.config import load_config
from roverlite.train import setup


def _cfg(*overrides: str):
    return load_config(None, overrides=["data.image_size=[16, 16]", "train.epochs=3", *overrides])


def test_batch_seeds_are_the_ones_training_and_recipe_steps_always_drew():
    # fit: seed * 100_003 + epoch; a recipe's step i: seed * 100_003 + 7_919 * i (reruns see the same batches).
    assert [setup.batch_seed(5, epoch) for epoch in range(3)] == [500_015, 500_016, 500_017]
    assert setup.batch_seed(5, stream=2) == 5 * 100_003 + 2 * 7_919
    assert len({setup.batch_seed(0, stream=i) for i in range(1, 6)}) == 5


def test_class_pixel_counts_leave_out_the_ignore_label():
    masks = np.array([[0, 0, 1, 255], [2, 2, 2, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(setup.class_pixel_counts(masks, 4), [2.0, 1.0, 3.0, 0.0])


def test_class_weights_and_loss_follow_the_run_unless_a_caller_overrides_them(monkeypatch):
    cfg = _cfg("train.class_weighting=inverse", "train.loss={cross_entropy: 1.0}")
    counts = [100.0, 300.0, 600.0, 1000.0][: cfg.data.num_classes]
    run = setup.class_weights(cfg, counts)
    none = setup.class_weights(cfg, counts, "none")
    assert run[0] > run[-1] and np.allclose(none, 1.0)
    calls = []
    monkeypatch.setattr(setup.losses, "build_loss", lambda *args: calls.append(args))
    setup.train_loss(cfg, run)
    setup.train_loss(cfg, none, {"dice": 2.0})
    assert [dict(c[0]) for c in calls] == [{"cross_entropy": 1.0}, {"dice": 2.0}]
    assert calls[0][1:3] == (cfg.data.num_classes, cfg.data.ignore_index) and calls[1][3] is none


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_optimizer_spans_the_run_epochs_unless_given_and_warms_up_as_asked():
    cfg = _cfg("train.learning_rate=0.01", "train.warmup_epochs=1.0")

    def schedule(optimizer) -> tuple:
        config = optimizer.get_config()["learning_rate"]["config"]
        return config["peak"], config["total_steps"], config["warmup_steps"]

    assert schedule(setup.train_optimizer(cfg, steps_per_epoch=10)) == (0.01, 30, 10)
    step = setup.train_optimizer(cfg, steps_per_epoch=10, epochs=2, learning_rate=0.001, warmup_epochs=0.0)
    assert schedule(step) == (0.001, 20, 0)
