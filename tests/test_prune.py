"""Magnitude pruning: the target sparsity is reached, zero sparsity changes nothing, errors name layers."""

from __future__ import annotations

import numpy as np
import pytest
from compress_helpers import eager

from roverlite._tf import keras, tf
from roverlite.compress.prune import (
    PruneConfig,
    fine_tune_pruned,
    is_pruning_wrapped,
    prune,
    sparsity_report,
    strip,
    zipped_size,
)
from roverlite.config import from_plain, to_plain
from roverlite.train.losses import build_loss
from roverlite.train.models import create_model

SHAPE = (32, 32, 1)
CLASSES = 4


def _tiny_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return create_model("unet_tiny", input_shape=SHAPE, num_classes=CLASSES)


def _dataset(n: int = 8, batch: int = 4) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, *SHAPE)).astype("float32")
    masks = rng.integers(0, CLASSES, size=(n, *SHAPE[:2])).astype("int32")
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch).repeat()


def _loss():
    return build_loss({"cross_entropy": 1.0}, CLASSES)


@pytest.fixture(scope="module")
def half_pruned():
    """unet_tiny pruned to 50 % over 4 steps (mask updates at steps 2 and 4), then stripped."""
    model = _tiny_model()
    before = [w.copy() for w in model.get_weights()]
    cfg = PruneConfig(target_sparsity=0.5, begin_fraction=0.0, end_fraction=1.0, frequency=2)
    pruned = prune(model, cfg, total_steps=4)
    with eager():
        fine_tune_pruned(pruned, _dataset(), epochs=2, steps=2, loss=_loss(), optimizer=keras.optimizers.Adam(1e-3))
    return model, before, pruned, strip(pruned)


def test_prune_reaches_target_sparsity_after_strip(half_pruned):
    _, _, _, stripped = half_pruned
    report = dict(sparsity_report(stripped))
    assert not is_pruning_wrapped(stripped)
    assert report.pop("logits") == 0.0  # skipped by default
    assert len(report) == 12  # 10 convs + 2 transpose convs
    for name, zeros in report.items():
        assert zeros == pytest.approx(0.5, abs=0.01), name


def test_prune_zipped_size_shrinks(half_pruned):
    model, _, _, stripped = half_pruned
    assert zipped_size(stripped) < 0.85 * zipped_size(model)


def test_prune_leaves_input_model_untouched(half_pruned):
    model, before, _, _ = half_pruned
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_zipped_size_refuses_wrapped_model(half_pruned):
    _, _, pruned, _ = half_pruned
    with pytest.raises(ValueError, match="strip"):
        zipped_size(pruned)


def test_prune_zero_sparsity_is_noop():
    model = _tiny_model(seed=1)
    cfg = PruneConfig(target_sparsity=0.0, begin_step=0, end_step=1, frequency=1)
    np.testing.assert_equal(strip(prune(model, cfg)).get_weights(), model.get_weights())

    pruned = prune(model, cfg)
    # A zero learning rate isolates the masks: the one mask update (step 1) must keep every weight.
    with eager():
        fine_tune_pruned(pruned, _dataset(), epochs=1, steps=1, loss=_loss(), optimizer=keras.optimizers.SGD(0.0))
    stripped = strip(pruned)
    np.testing.assert_equal([w.numpy() for w in stripped.trainable_weights], [w.numpy() for w in model.trainable_weights])
    assert all(zeros == 0.0 for _, zeros in sparsity_report(stripped))


def test_prune_unsupported_layer_raises_naming_it():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.PReLU(name="learned_slope")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="logits")(x))
    with pytest.raises(ValueError, match="'learned_slope' \\(PReLU\\)"):
        prune(model, PruneConfig(begin_step=0, end_step=100))
    # Skipping it keeps it dense and prunes the rest.
    pruned = prune(model, PruneConfig(begin_step=0, end_step=100, skip_layers=("logits", "learned_*")))
    assert [type(layer).__name__ for layer in pruned.layers[1:]] == ["PruneLowMagnitude", "PReLU", "Conv2D"]


def test_prune_skip_layer_that_matches_nothing_suggests_a_name():
    with pytest.raises(ValueError, match='Did you mean "logits"'):
        prune(_tiny_model(), PruneConfig(begin_step=0, end_step=100, skip_layers=("logit",)))


def test_fine_tune_pruned_refuses_unwrapped_model():
    with pytest.raises(ValueError, match="no pruning wrappers"):
        fine_tune_pruned(_tiny_model(), _dataset(), 1, 1, _loss(), keras.optimizers.SGD(0.1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_sparsity": 1.0}, "target_sparsity in \\[0, 1\\)"),
        ({"schedule": "polynomal"}, 'Did you mean "polynomial"'),
        ({"frequency": 0}, "frequency"),
        ({"begin_step": 0, "begin_fraction": 0.1}, "either begin_step or begin_fraction"),
        ({"end_fraction": 1.5}, "end_fraction in \\[0, 1\\]"),
        ({"begin_step": 0, "end_step": 150, "frequency": 100}, "multiple of frequency"),
        ({"begin_step": 0, "end_step": 50, "frequency": 100}, "at least one mask update"),
    ],
)
def test_prune_config_rejects_impossible_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig(**kwargs)


def test_prune_schedule_fractions_snap_to_last_mask_update():
    cfg = PruneConfig(end_fraction=0.75, frequency=10)
    assert cfg.resolve_steps(100) == (0, 70)  # 75 would fall between the updates at 70 and 80
    with pytest.raises(ValueError, match="total_steps"):
        cfg.resolve_steps(None)
    with pytest.raises(ValueError, match="at least one mask update"):
        cfg.resolve_steps(5)


def test_prune_config_round_trips_through_plain_data():
    cfg = PruneConfig(target_sparsity=0.6, schedule="constant", begin_step=10, end_step=110, skip_layers=["logits"])
    assert from_plain(PruneConfig, to_plain(cfg), "prune") == cfg
