"""Knowledge distillation: the KD loss against numpy, a frozen teacher, a student that learns."""

from __future__ import annotations

import numpy as np
import pytest

from roverlite._tf import keras, tf
from roverlite.compress.distill import DistillConfig, Distiller, distill, kd_loss
from roverlite.config import from_plain, to_plain
from roverlite.train.losses import build_loss
from roverlite.train.models import create_model

SHAPE = (32, 32, 1)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _kd_reference(labels, student, teacher, t, ignore_index, class_weights=None):
    p_t, p_s = _softmax(teacher / t), _softmax(student / t)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(axis=-1)
    counted = (labels != ignore_index) & (labels >= 0) & (labels < student.shape[-1])
    if class_weights is None:
        return t**2 * kl[counted].mean()
    w = np.asarray(class_weights)[labels[counted]]
    return t**2 * (kl[counted] * w).sum() / w.sum()


def test_kd_loss_matches_numpy_reference_over_non_ignored_pixels():
    rng = np.random.default_rng(0)
    student = rng.normal(size=(2, 3, 3, 4)).astype("float32") * 3
    teacher = rng.normal(size=(2, 3, 3, 4)).astype("float32") * 3
    labels = rng.integers(0, 4, size=(2, 3, 3))
    labels[0, 0] = 255  # ignored row
    labels[1, 2, 2] = 7  # out of range: not counted either
    got = kd_loss(labels, student, teacher, temperature=2.0, ignore_index=255).numpy()
    want = _kd_reference(labels, student.astype(np.float64), teacher.astype(np.float64), 2.0, 255)
    assert got == pytest.approx(want, rel=1e-5)
    # The ignored pixels really are excluded: counting them changes the value.
    assert got != pytest.approx(_kd_reference(np.zeros_like(labels), student, teacher, 2.0, 255), rel=1e-3)
    # (B, H, W, 1) labels give the same.
    assert kd_loss(labels[..., None], student, teacher, 2.0, 255).numpy() == pytest.approx(got)


def test_kd_loss_class_weights_weight_each_pixel_by_its_label():
    rng = np.random.default_rng(3)
    student = rng.normal(size=(2, 4, 4, 3)).astype("float32") * 2
    teacher = rng.normal(size=(2, 4, 4, 3)).astype("float32") * 2
    labels = rng.integers(0, 3, size=(2, 4, 4))
    labels[0, 0] = 255
    weights = (0.2, 1.0, 5.0)
    got = kd_loss(labels, student, teacher, 4.0, 255, class_weights=weights).numpy()
    want = _kd_reference(labels, student.astype(np.float64), teacher.astype(np.float64), 4.0, 255, weights)
    assert got == pytest.approx(want, rel=1e-5)
    assert got != pytest.approx(kd_loss(labels, student, teacher, 4.0, 255).numpy(), rel=1e-3)
    # Equal weights are the unweighted mean, whatever their scale.
    assert kd_loss(labels, student, teacher, 4.0, 255, class_weights=(3.0,) * 3).numpy() == pytest.approx(
        kd_loss(labels, student, teacher, 4.0, 255).numpy(), rel=1e-5
    )


@pytest.mark.parametrize("weights", [(), (1.0, -1.0), (0.0, 0.0), (1.0, float("nan"))])
def test_distill_config_rejects_unusable_class_weights(weights):
    with pytest.raises(ValueError, match="class_weights"):
        DistillConfig(class_weights=weights)


def test_distiller_rejects_class_weights_of_another_length():
    teacher = create_model("unet_tiny", input_shape=SHAPE, num_classes=2)
    student = create_model("unet_tiny", input_shape=SHAPE, num_classes=2)
    with pytest.raises(ValueError, match="one class weight per class \\(2\\)"):
        Distiller(teacher, student, DistillConfig(class_weights=(1.0, 2.0, 3.0)), build_loss({"cross_entropy": 1.0}, 2))


def test_kd_loss_is_zero_for_identical_logits_or_no_counted_pixel():
    logits = np.random.default_rng(1).normal(size=(1, 2, 2, 3)).astype("float32")
    assert kd_loss(np.zeros((1, 2, 2)), logits, logits, 4.0).numpy() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(np.full((1, 2, 2), 255), logits, -logits, 4.0).numpy() == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [({"temperature": 0.0}, "temperature > 0"), ({"alpha": 1.5}, "alpha in \\[0, 1\\]"), ({"feature_weight": -1.0}, "feature_weight >= 0")],
)
def test_distill_config_rejects_impossible_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistillConfig(**kwargs)


def test_distill_config_round_trips_through_plain_data():
    cfg = DistillConfig(temperature=3.0, alpha=0.8, feature_weight=0.5, ignore_index=None, student_feature="x",
                        class_weights=(0.5, 2))
    assert from_plain(DistillConfig, to_plain(cfg), "distill") == cfg


def _toy_data() -> tf.data.Dataset:
    # A learnable toy problem: the class is whether the pixel is bright; the top rows are unlabelled.
    images = np.random.default_rng(2).normal(size=(16, *SHAPE)).astype("float32")
    masks = (images[..., 0] > 0).astype("int32")
    masks[:, :4] = 255
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(8).repeat()


class _EpochLogs(keras.callbacks.Callback):
    """Every epoch's logs, as floats."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict[str, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({k: float(v) for k, v in (logs or {}).items()})


@pytest.fixture(scope="module")
def distilled():
    keras.utils.set_random_seed(0)
    teacher = create_model("unet_tiny", input_shape=SHAPE, num_classes=2, base_width=8)
    student = create_model("unet_tiny", input_shape=SHAPE, num_classes=2, base_width=2)
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    record = _EpochLogs()
    cfg = DistillConfig(temperature=2.0, alpha=0.5, feature_weight=0.1)
    out = distill(
        teacher, student, _toy_data(), _toy_data().take(1), cfg, epochs=4,
        optimizer=keras.optimizers.Adam(1e-2), steps_per_epoch=2, callbacks=[record],
    )
    return teacher, teacher_before, student, student_before, out, [e["loss"] for e in record.epochs]


def test_distill_leaves_teacher_bit_identical(distilled):
    teacher, teacher_before, *_ = distilled
    for a, b in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert teacher.trainable  # restored after distilling


def test_distill_trains_the_student(distilled):
    _, _, student, student_before, out, losses = distilled
    assert out is student
    kernels = [i for i, w in enumerate(student.weights) if "kernel" in w.name]
    assert all(not np.array_equal(student_before[i], student.get_weights()[i]) for i in kernels)
    assert losses[-1] < losses[0]


def test_distiller_rejects_student_with_other_classes():
    teacher = create_model("unet_tiny", input_shape=SHAPE, num_classes=2)
    student = create_model("unet_tiny", input_shape=SHAPE, num_classes=3)
    with pytest.raises(ValueError, match="2 classes"):
        Distiller(teacher, student, DistillConfig(), build_loss({"cross_entropy": 1.0}, 3))


def test_distiller_feature_term_needs_matching_bottleneck_size():
    teacher = create_model("unet_tiny", input_shape=SHAPE, num_classes=2)
    student = create_model("unet_micro", input_shape=SHAPE, num_classes=2)  # depth 3 vs 2
    with pytest.raises(ValueError, match="same height and width"):
        Distiller(teacher, student, DistillConfig(feature_weight=1.0), build_loss({"cross_entropy": 1.0}, 2))


def _teacher_that_fails_when_run() -> keras.Model:
    def fail_if_run(x):
        check = tf.debugging.assert_less(tf.reduce_max(x), -1e30, message="the teacher was run")
        with tf.control_dependencies([check]):
            return tf.identity(x)

    inputs = keras.Input(SHAPE)
    logits = keras.layers.Conv2D(2, 1)(keras.layers.Lambda(fail_if_run)(inputs))
    return keras.Model(inputs, logits, name="tripwire_teacher")


def test_distill_with_alpha_zero_trains_on_labels_without_running_the_teacher():
    keras.utils.set_random_seed(0)
    student = create_model("unet_tiny", input_shape=SHAPE, num_classes=2, base_width=2)
    logs = _EpochLogs()
    distill(_teacher_that_fails_when_run(), student, _toy_data(), _toy_data().take(1),
            DistillConfig(alpha=0.0), epochs=1, optimizer=keras.optimizers.Adam(1e-2), steps_per_epoch=2,
            callbacks=[logs])
    keys = set().union(*logs.epochs)
    assert "kd_loss" not in keys and {"loss", "hard_loss", "val_hard_loss"} <= keys
    # The tripwire is real: with a soft term the same teacher stops training.
    with pytest.raises(tf.errors.InvalidArgumentError, match="the teacher was run"):
        distill(_teacher_that_fails_when_run(), student, _toy_data(), _toy_data().take(1),
                DistillConfig(alpha=0.5), epochs=1, optimizer=keras.optimizers.Adam(1e-2), steps_per_epoch=2)


def _first_epoch_losses(jit_compile: bool) -> dict[str, float]:
    keras.utils.set_random_seed(0)
    teacher = create_model("unet_tiny", input_shape=SHAPE, num_classes=2, base_width=8)
    student = create_model("unet_tiny", input_shape=SHAPE, num_classes=2, base_width=2)
    logs = _EpochLogs()
    cfg = DistillConfig(temperature=2.0, alpha=0.5, feature_weight=0.1, class_weights=(1.0, 3.0))
    distill(teacher, student, _toy_data(), None, cfg, epochs=1, optimizer=keras.optimizers.Adam(1e-2),
            steps_per_epoch=2, callbacks=[logs], jit_compile=jit_compile)
    return logs.epochs[-1]


def test_distill_under_xla_computes_the_same_losses_as_the_plain_train_step():
    plain, xla = _first_epoch_losses(False), _first_epoch_losses(True)
    assert set(plain) == set(xla) >= {"loss", "hard_loss", "kd_loss"}
    for key in plain:
        assert xla[key] == pytest.approx(plain[key], rel=1e-3, abs=1e-5), key
