"""Segmentation losses against plain NumPy references on a small case with ignored pixels."""

import numpy as np
import pytest

from roverlite._tf import keras, tf
from roverlite.train.losses import (
    CombinedLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    build_loss,
    class_weights_from_counts,
)

IGNORE = 255
K = 3
WEIGHTS = np.array([0.5, 1.0, 2.0], np.float32)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, K, size=(2, 4, 4)).astype(np.int32)
    y_true[0, 0, :] = IGNORE
    y_true[1, 3, 1:3] = IGNORE
    logits = rng.normal(scale=2.0, size=(2, 4, 4, K)).astype(np.float32)
    return y_true, logits


# === NumPy references ===


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ref_ce(y, logits, weights=None, gamma=0.0):
    p = _softmax(logits.astype(np.float64))
    total = norm = 0.0
    for idx in np.ndindex(y.shape):
        if y[idx] == IGNORE:
            continue
        pt = p[idx][y[idx]]
        w = 1.0 if weights is None else weights[y[idx]]
        total += -w * (1 - pt) ** gamma * np.log(pt)
        norm += w
    return total / norm if norm else 0.0


def _ref_dice(y, logits, weights=None):
    p = _softmax(logits.astype(np.float64))
    valid = y != IGNORE
    num = den = 0.0
    for c in range(K):
        truth = (y == c) & valid
        if not truth.any():
            continue
        pc = p[..., c][valid]
        tc = truth[valid].astype(float)
        dice = 2 * (pc * tc).sum() / (pc.sum() + tc.sum())
        w = 1.0 if weights is None else weights[c]
        num += w * (1 - dice)
        den += w
    return num / den if den else 0.0


# === Losses vs references ===


@pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["unweighted", "weighted"])
def test_cross_entropy_matches_numpy(case, weights):
    y, logits = case
    loss = CrossEntropyLoss(IGNORE, weights)(y, logits)
    assert float(loss) == pytest.approx(_ref_ce(y, logits, weights), rel=1e-5)


@pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["unweighted", "weighted"])
def test_focal_matches_numpy(case, weights):
    y, logits = case
    loss = FocalLoss(gamma=2.0, ignore_index=IGNORE, class_weights=weights)(y, logits)
    assert float(loss) == pytest.approx(_ref_ce(y, logits, weights, gamma=2.0), rel=1e-5)


def test_focal_with_gamma_zero_is_cross_entropy(case):
    y, logits = case
    focal = FocalLoss(gamma=0.0, ignore_index=IGNORE, class_weights=WEIGHTS)(y, logits)
    ce = CrossEntropyLoss(IGNORE, WEIGHTS)(y, logits)
    assert float(focal) == pytest.approx(float(ce), rel=1e-6)


@pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["unweighted", "weighted"])
def test_dice_matches_numpy(case, weights):
    y, logits = case
    loss = DiceLoss(IGNORE, weights)(y, logits)
    assert float(loss) == pytest.approx(_ref_dice(y, logits, weights), rel=1e-5)


def test_labels_with_channel_axis_are_accepted(case):
    y, logits = case
    a = CrossEntropyLoss(IGNORE)(y[..., None], logits)
    b = CrossEntropyLoss(IGNORE)(y, logits)
    assert float(a) == pytest.approx(float(b))


def test_build_loss_is_the_weighted_sum(case):
    y, logits = case
    loss = build_loss({"cross_entropy": 1.0, "dice": 0.5, "focal": 0.25}, K, IGNORE, WEIGHTS, focal_gamma=2.0)
    expected = (
        _ref_ce(y, logits, WEIGHTS) + 0.5 * _ref_dice(y, logits, WEIGHTS) + 0.25 * _ref_ce(y, logits, WEIGHTS, 2.0)
    )
    assert isinstance(loss, CombinedLoss)
    assert float(loss(y, logits)) == pytest.approx(expected, rel=1e-5)


def test_build_loss_rejects_bad_terms():
    with pytest.raises(ValueError, match='Did you mean "dice"'):
        build_loss({"dise": 1.0}, K, IGNORE)
    with pytest.raises(ValueError, match="Expected 3 class weights"):
        build_loss({"cross_entropy": 1.0}, K, IGNORE, class_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="positive weight"):
        build_loss({"cross_entropy": 0.0}, K, IGNORE)


# === Edge cases ===


@pytest.mark.parametrize("name", ["cross_entropy", "dice", "focal"])
def test_all_ignored_batch_gives_zero_and_zero_gradient(name):
    y = np.full((2, 4, 4), IGNORE, np.int32)
    logits = tf.Variable(np.random.default_rng(1).normal(size=(2, 4, 4, K)).astype(np.float32))
    loss_fn = build_loss({name: 1.0}, K, IGNORE, WEIGHTS)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, logits)
    grad = tape.gradient(loss, logits).numpy()
    assert float(loss) == 0.0
    assert np.isfinite(grad).all() and not grad.any()


@pytest.mark.parametrize("name", ["cross_entropy", "dice", "focal"])
def test_gradient_flows_only_through_counted_pixels(case, name):
    y, logits_np = case
    logits = tf.Variable(logits_np)
    loss_fn = build_loss({name: 1.0}, K, IGNORE, WEIGHTS)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, logits)
    grad_norm = np.abs(tape.gradient(loss, logits).numpy()).sum(-1)
    ignored = y == IGNORE
    assert not grad_norm[ignored].any()
    assert (grad_norm[~ignored] > 0).all()


@pytest.mark.parametrize("name", ["cross_entropy", "dice", "focal"])
def test_float16_logits_are_safe(case, name):
    y, logits = case
    loss_fn = build_loss({name: 1.0}, K, IGNORE, WEIGHTS)
    big = tf.constant(logits * 3000.0, tf.float16)  # exp() of these overflows in float16
    value = float(loss_fn(y, big))
    assert np.isfinite(value)
    assert float(loss_fn(y, tf.constant(logits, tf.float16))) == pytest.approx(float(loss_fn(y, logits)), rel=1e-2)


def test_losses_train_a_keras_model(case):
    y, _ = case
    x = np.random.default_rng(2).normal(size=(2, 4, 4, 1)).astype(np.float32)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(K, 1)])
    model.compile(keras.optimizers.SGD(0.1), loss=build_loss({"cross_entropy": 1.0, "dice": 1.0}, K, IGNORE))
    history = model.fit(x, y, epochs=3, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_combined_loss_round_trips_through_config():
    loss = build_loss({"cross_entropy": 1.0, "focal": 0.5}, K, IGNORE, WEIGHTS, focal_gamma=1.5)
    clone = CombinedLoss.from_config(loss.get_config())
    assert [w for w, _ in clone.terms] == [1.0, 0.5]
    assert clone.terms[1][1].gamma == 1.5 and clone.terms[1][1].class_weights == WEIGHTS.tolist()


# === Class weights ===


def test_class_weights_inverse_mean_one_over_present_classes():
    w = class_weights_from_counts([100, 300, 0, 600], "inverse")
    # f = (1/10, 3/10, 6/10) -> 1/f = (10, 10/3, 10/6) -> mean 5
    np.testing.assert_allclose(w, [2.0, 2 / 3, 0.0, 1 / 3], rtol=1e-6)
    assert w.dtype == np.float32


def test_class_weights_other_methods():
    counts = [100, 400, 0, 900]
    np.testing.assert_allclose(class_weights_from_counts(counts, "none"), [1, 1, 1, 1])
    inv_sqrt = 1 / np.sqrt(np.array([1, 4, 9]) / 14)
    np.testing.assert_allclose(
        class_weights_from_counts(counts, "inverse_sqrt")[[0, 1, 3]], inv_sqrt / inv_sqrt.mean(), rtol=1e-6
    )
    freq = np.array([1, 4, 9]) / 14
    median = np.median(freq) / freq
    np.testing.assert_allclose(
        class_weights_from_counts(counts, "median")[[0, 1, 3]], median / median.mean(), rtol=1e-6
    )


def test_class_weights_reject_bad_input():
    with pytest.raises(ValueError, match='Did you mean "inverse_sqrt"'):
        class_weights_from_counts([1, 2], "inverse_sqr")
    with pytest.raises(ValueError, match="non-negative"):
        class_weights_from_counts([1, -2], "inverse")
    with pytest.raises(ValueError, match="at least one class"):
        class_weights_from_counts([0, 0], "median")
