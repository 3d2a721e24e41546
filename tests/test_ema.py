"""Weight EMA: the averaging rule, the swap for validation, and that training with it saves and resumes it."""

from __future__ import annotations

import numpy as np
import pytest

from roverlite._tf import keras
from roverlite.train.ema import WeightEMA, check_decay


def _dense_model() -> keras.Model:
    inputs = keras.Input((3,))
    x = keras.layers.Dense(2, name="dense")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, x)


def test_updates_follow_the_ramped_decay_and_average_batchnorm_statistics_too():
    model = _dense_model()
    start = model.get_weights()
    ema = WeightEMA(model, decay=0.5)
    # One update: n = 1, decay = min(0.5, 2 / 11); two: n = 2, decay = min(0.5, 3 / 12).
    target = [w + 1.0 for w in start]
    model.set_weights(target)
    ema.update()
    d1 = 2 / 11
    expected = [d1 * s + (1 - d1) * t for s, t in zip(start, target)]
    for got, want in zip(ema.averages, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    ema.update()
    d2 = 3 / 12
    expected = [d2 * e + (1 - d2) * t for e, t in zip(expected, target)]
    for got, want in zip(ema.averages, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    assert len(ema.averages) == len(model.weights) == 6  # kernel, bias, gamma, beta, moving mean, moving variance
    # Long after the ramp the configured decay rules: n = 1000 -> min(0.5, 1001 / 1010) = 0.5.
    ema.updates.assign(999)
    before = [a.numpy() for a in ema.averages]
    model.set_weights(start)
    ema.update()
    for got, b, s in zip(ema.averages, before, start):
        np.testing.assert_allclose(got.numpy(), 0.5 * b + 0.5 * s, rtol=1e-6)


def test_applied_swaps_the_averages_in_and_puts_the_raw_weights_back():
    model = _dense_model()
    ema = WeightEMA(model, decay=0.9)
    raw = [w + 3.0 for w in model.get_weights()]
    model.set_weights(raw)
    with ema.applied(model):
        for got, average in zip(model.get_weights(), ema.averages):
            np.testing.assert_array_equal(got, average.numpy())
    for got, want in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, float("nan"), True, "0.9"])
def test_a_decay_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match=r"Expected an EMA decay in \(0, 1\), such as 0\.99\. Received: "):
        check_decay(bad)


def test_training_with_ema_saves_the_averaged_model_and_resumes_the_average_exactly(tmp_path):
    from test_train import read_metrics, tiny_synthetic_config

    from roverlite.train.checkpoint import find_checkpoint, load_checkpoint
    from roverlite.train.fit import _build, train
    from roverlite.train.modelfile import load_model_file

    ema = {"train.ema_decay": 0.9}
    one = tiny_synthetic_config(**ema, **{"train.epochs": 1})
    first = train(one, tmp_path / "resumed", progress=False)
    # After one epoch the best model file is that epoch's *averaged* weights; the checkpoint holds
    # the raw weights (to train on) and the averages.
    model, optimizer = _build(one, steps_per_epoch=1, class_weights=np.ones(4))
    averages = WeightEMA(model, 0.9)
    load_checkpoint(find_checkpoint(first.run_dir / "checkpoints"), model, optimizer, ema=averages)
    saved = load_model_file(first.model_path).get_weights()
    for got, average in zip(saved, averages.averages):
        np.testing.assert_array_equal(got, average.numpy())
    assert any(not np.array_equal(got, raw) for got, raw in zip(saved, model.get_weights()))
    assert int(averages.updates.numpy()) == int(optimizer.iterations.numpy()) > 0

    resumed = train(tiny_synthetic_config(**ema, **{"train.epochs": 2}), tmp_path / "resumed", resume=True,
                    progress=False)
    straight = train(tiny_synthetic_config(**ema, **{"train.epochs": 2}), tmp_path / "straight", progress=False)
    # The same seeds and data: a resumed run validates (the averaged weights) exactly like an unbroken one.
    assert [r["val_miou"] for r in read_metrics(resumed.run_dir)] == [r["val_miou"] for r in read_metrics(straight.run_dir)]
