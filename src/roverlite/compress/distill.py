"""Knowledge distillation: train a small student U-Net to match a frozen teacher, pixel by pixel.

The student's loss on a batch is

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))      (soft term)
    + (1 - alpha) * hard_loss(labels, student)                          (hard term)
    + feature_weight * MSE(project(student bottleneck), teacher bottleneck)   (optional)

The KL divergence is taken per pixel over the class axis and averaged over the pixels whose label
is not ignored, the same pixels the hard loss counts: the unlabelled parts of AI4Mars images carry
no teacher knowledge worth copying (the teacher was never trained there). With ``class_weights``
the average is weighted by each pixel's label, as the class-weighted hard loss is. Measured on
CWFID (``benchmarks/results/compress_cwfid.json``): at ``T = 4`` a width-4 student lost the rare
crop class entirely, weighted or not, and kept it at ``T = 1``; with small students, start at
``T = 1``. ``T^2`` keeps the soft
term's gradients on the scale of the hard term's as ``T`` grows (Hinton et al., 2015). The feature
term matches the student's bottleneck (projected by a learnt 1x1 conv to the teacher's width) to
the teacher's (FitNets-style hints, Romero et al., 2015); the projection is discarded after
training.

The teacher is frozen: ``trainable=False`` while distilling and always called with
``training=False``, so neither its weights nor its BatchNorm statistics change.

Example:
    >>> cfg = DistillConfig(temperature=4.0, alpha=0.7)
    >>> student = distill(teacher, create_model("unet_xs"), train_ds, val_ds, cfg, epochs=10,
    ...                   optimizer=build_optimizer(2e-3, 1e-4, steps, 10, 1.0))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from roverlite._tf import keras, tf
from roverlite.train.losses import build_loss, pixel_weights, weighted_mean

__all__ = ["DistillConfig", "Distiller", "bottleneck_feature", "distill", "kd_loss"]

logger = logging.getLogger(__name__)

_UP_LAYER = re.compile(r"^dec(\d+)_up_")


# === Config ===


@dataclass(frozen=True)
class DistillConfig:
    """How the student learns from the teacher.

    Attributes:
        temperature: softmax temperature ``T`` > 0 for the soft term; higher spreads the
            teacher's probabilities and shows more of how it ranks the wrong classes.
        alpha: weight of the soft term in ``[0, 1]``; the hard (label) term gets ``1 - alpha``.
        feature_weight: weight >= 0 of the bottleneck feature term (0 = off).
        ignore_index: label of pixels left out of the soft term (and of the default hard loss).
        class_weights: one weight >= 0 per class for the soft term: each counted pixel's KL is
            weighted by its label's weight (pass the hard loss's class weights). ``None``: every
            counted pixel alike.
        teacher_feature, student_feature: layer names whose outputs the feature term compares.
            ``None``: the tensor entering the decoder's first up-sampling (after the bottleneck
            block, ASPP and dropout), see :func:`bottleneck_feature`.
    """

    temperature: float = 4.0
    alpha: float = 0.5
    feature_weight: float = 0.0
    ignore_index: int | None = 255
    teacher_feature: str | None = None
    student_feature: str | None = None
    class_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not float(self.temperature) > 0:
            raise ValueError(f"Expected temperature > 0. Received: temperature={self.temperature}.")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"Expected alpha in [0, 1]. Received: alpha={self.alpha}.")
        if not float(self.feature_weight) >= 0:
            raise ValueError(f"Expected feature_weight >= 0. Received: feature_weight={self.feature_weight}.")
        if self.ignore_index is not None and (isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int)):
            raise ValueError(f"Expected ignore_index to be an integer or None. Received: ignore_index={self.ignore_index!r}.")
        if self.class_weights is not None:
            weights = tuple(float(w) for w in self.class_weights)
            if not weights or not all(w >= 0 and math.isfinite(w) for w in weights) or not any(weights):
                raise ValueError(
                    "Expected class_weights: one finite weight >= 0 per class, not all 0. "
                    f"Received: class_weights={self.class_weights!r}."
                )
            object.__setattr__(self, "class_weights", weights)


# === Losses ===


def kd_loss(
    labels, student_logits, teacher_logits, temperature: float, ignore_index: int | None = 255,
    class_weights: Sequence[float] | None = None,
) -> tf.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, mean over counted pixels.

    Args:
        labels: ``(B, H, W)`` or ``(B, H, W, 1)`` integer labels; they only choose the pixels.
        student_logits, teacher_logits: ``(B, H, W, K)``.
        temperature: ``T`` > 0.
        ignore_index: pixels with this label (and labels outside ``0..K-1``, as in
            :mod:`roverlite.train.losses`) are not counted.
        class_weights: ``K`` weights; the mean becomes a mean weighted by each pixel's label.

    Returns:
        A float32 scalar; 0 (with zero gradient) when no pixel is counted.
    """
    student = tf.cast(student_logits, tf.float32) / temperature
    teacher = tf.cast(teacher_logits, tf.float32) / temperature
    log_p_teacher = tf.nn.log_softmax(teacher, axis=-1)
    log_p_student = tf.nn.log_softmax(student, axis=-1)
    kl = tf.reduce_sum(tf.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
    _check_class_weights(class_weights, student.shape[-1])
    # The pixels the hard losses count, weighted as they weight them (roverlite.train.losses).
    weights = pixel_weights(labels, student_logits, ignore_index, class_weights)
    return temperature**2 * weighted_mean(kl, weights)


def _check_class_weights(class_weights: Sequence[float] | None, num_classes: int) -> None:
    if class_weights is not None and len(class_weights) != num_classes:
        raise ValueError(
            f"Expected one class weight per class ({num_classes}). Received: class_weights={list(class_weights)}."
        )


def bottleneck_feature(model: keras.Model, layer_name: str | None = None):
    """The feature tensor the feature term compares: a named layer's output, or the bottleneck.

    The default is the input of the deepest ``dec{i}_up_*`` layer of a roverlite U-Net: the
    bottleneck's output after ASPP and dropout, whatever the block type.

    Raises:
        ValueError: for an unknown layer name or a model without ``dec{i}_up_*`` layers.
    """
    if layer_name is not None:
        names = [layer.name for layer in model.layers]
        if layer_name not in names:
            raise ValueError(f"Expected a layer of {model.name!r}. Received: feature layer {layer_name!r}.")
        return model.get_layer(layer_name).output
    ups = [(int(m.group(1)), layer) for layer in model.layers if (m := _UP_LAYER.match(layer.name))]
    if not ups:
        raise ValueError(
            f"Expected a roverlite U-Net with dec{{i}}_up_* layers to find the bottleneck. Received: {model.name!r}; "
            "name the feature layers in DistillConfig."
        )
    return max(ups, key=lambda item: item[0])[1].input


# === Distiller ===


class Distiller(keras.Model):
    """Trains ``student`` against a frozen ``teacher``; ``fit`` it like any Keras model.

    ``call`` runs the student. Metrics: ``loss`` (the total), ``kd_loss``, ``hard_loss`` and, when
    the feature term is on, ``feature_loss``; the same names prefixed ``val_`` on validation data.
    With ``alpha == 0`` and no feature term the teacher is never run (training on labels alone, the
    distillation ablation) and there is no ``kd_loss``.
    Build it once per run; the student is trained in place and is the model to keep.

    Constructing it sets ``teacher.trainable = False`` (:func:`distill` restores the flag after).
    The train step applies no loss scaling: use the float32 or mixed_bfloat16 policy, not
    mixed_float16.
    """

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        cfg: DistillConfig,
        hard_loss: keras.losses.Loss,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=kwargs.pop("name", "distiller"), **kwargs)
        _check_pair(teacher, student, cfg)
        teacher.trainable = False
        self.teacher = teacher
        self.student = student
        self.cfg = cfg
        self.hard_loss = hard_loss
        self.use_features = cfg.feature_weight > 0
        # alpha 0 without the feature term is training on labels alone: the teacher is never run.
        self.runs_teacher = self.use_features or cfg.alpha > 0
        self.projection = None
        if self.use_features:
            t_feat = bottleneck_feature(teacher, cfg.teacher_feature)
            s_feat = bottleneck_feature(student, cfg.student_feature)
            if tuple(t_feat.shape[1:3]) != tuple(s_feat.shape[1:3]):
                raise ValueError(
                    "Expected teacher and student features of the same height and width for the feature term. "
                    f"Received: teacher {tuple(t_feat.shape[1:])}, student {tuple(s_feat.shape[1:])}."
                )
            # Sub-models sharing the original layers: training student_net trains student.
            self.teacher_net = keras.Model(teacher.inputs, [teacher.output, t_feat], name="teacher_with_feature")
            self.student_net = keras.Model(student.inputs, [student.output, s_feat], name="student_with_feature")
            self.projection = keras.layers.Conv2D(int(t_feat.shape[-1]), 1, name="distill_projection")
            self.projection.build(s_feat.shape)
        self._loss_trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", *(("kd_loss",) if self.runs_teacher else ()), "hard_loss",
                         *(("feature_loss",) if self.use_features else ()))
        }

    @property
    def metrics(self) -> list:
        # Listed here so Keras resets them at every epoch.
        return list(self._loss_trackers.values())

    def call(self, inputs, training: bool = False):
        return self.student(inputs, training=training)

    def _distill_losses(self, x, y, training: bool) -> dict[str, tf.Tensor]:
        if not self.runs_teacher:
            out = {"hard_loss": self.hard_loss(y, self.student(x, training=training))}
            regularisation = tf.add_n(self.student.losses) if self.student.losses else 0.0
            out["loss"] = out["hard_loss"] + regularisation
            return out
        if self.use_features:
            t_logits, t_feat = self.teacher_net(x, training=False)
            s_logits, s_feat = self.student_net(x, training=training)
        else:
            t_logits = self.teacher(x, training=False)
            s_logits = self.student(x, training=training)
        t_logits = tf.stop_gradient(t_logits)
        out = {
            "kd_loss": kd_loss(y, s_logits, t_logits, self.cfg.temperature, self.cfg.ignore_index, self.cfg.class_weights),
            "hard_loss": self.hard_loss(y, s_logits),
        }
        total = self.cfg.alpha * out["kd_loss"] + (1.0 - self.cfg.alpha) * out["hard_loss"]
        if self.use_features:
            projected = tf.cast(self.projection(s_feat), tf.float32)
            target = tf.stop_gradient(tf.cast(t_feat, tf.float32))
            out["feature_loss"] = tf.reduce_mean(tf.square(projected - target))
            total += self.cfg.feature_weight * out["feature_loss"]
        if self.student.losses:
            total += tf.add_n(self.student.losses)
        out["loss"] = total
        return out

    def _variables_to_train(self) -> list:
        extra = self.projection.trainable_variables if self.projection is not None else []
        return [*self.student.trainable_variables, *extra]

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            losses = self._distill_losses(x, y, training=True)
        variables = self._variables_to_train()
        grads = tape.gradient(losses["loss"], variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return self._record(losses)

    def test_step(self, data):
        x, y = data[0], data[1]
        return self._record(self._distill_losses(x, y, training=False))

    def _record(self, losses: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        for name, value in losses.items():
            self._loss_trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self._loss_trackers.items()}


def distill(
    teacher: keras.Model,
    student: keras.Model,
    train_ds: tf.data.Dataset,
    val_data: tf.data.Dataset | None,
    cfg: DistillConfig,
    epochs: int,
    optimizer: keras.optimizers.Optimizer,
    hard_loss: keras.losses.Loss | None = None,
    steps_per_epoch: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    jit_compile: bool = False,
) -> keras.Model:
    """Train ``student`` to match ``teacher`` on ``train_ds``; returns the trained student.

    Args:
        teacher: trained model; frozen while distilling, its ``trainable`` flag restored after.
        student: any registered preset with the teacher's input shape and classes; trained in
            place.
        train_ds: batches of ``(images, masks)``, e.g. ``make_dataset(..., training=True)``.
        val_data: optional ``(images, masks)`` batches; the ``val_`` losses are logged per epoch.
        cfg: temperature, weights and feature term.
        epochs: passes over ``steps_per_epoch`` batches.
        optimizer: a fresh optimiser, e.g. from ``build_optimizer``.
        hard_loss: the label term (default: masked cross-entropy with ``cfg.ignore_index``, i.e.
            ``build_loss({"cross_entropy": 1.0}, ...)``); pass the teacher's training loss to
            keep class weights.
        steps_per_epoch: batches per epoch (``None`` = the whole dataset).
        callbacks: extra Keras callbacks (they see the distiller's logs).
        jit_compile: compile the train step (teacher forward, student forward and backward) with
            XLA, as ``train.jit_compile`` does for training.

    Returns:
        ``student``, trained.

    Raises:
        ValueError: when the student's input shape or class count differs from the teacher's,
            or the feature layers cannot be matched.
    """
    if int(epochs) < 1:
        raise ValueError(f"Expected epochs >= 1. Received: epochs={epochs}.")
    if hard_loss is None:
        hard_loss = build_loss({"cross_entropy": 1.0}, int(student.output_shape[-1]), ignore_index=cfg.ignore_index)
    was_trainable = teacher.trainable
    try:
        distiller = Distiller(teacher, student, cfg, hard_loss)
        distiller.compile(optimizer=optimizer, jit_compile=bool(jit_compile))
        history = distiller.fit(
            train_ds,
            epochs=int(epochs),
            steps_per_epoch=steps_per_epoch,
            validation_data=val_data,
            callbacks=list(callbacks),
            verbose=0,
        )
    finally:
        teacher.trainable = was_trainable
    last = {k: round(float(v[-1]), 4) for k, v in history.history.items()}
    logger.info("Distilled %s into %s over %d epochs: %s", teacher.name, student.name, int(epochs), last)
    return student


def _check_pair(teacher: keras.Model, student: keras.Model, cfg: DistillConfig) -> None:
    if tuple(teacher.input_shape[1:]) != tuple(student.input_shape[1:]):
        raise ValueError(
            f"Expected the student to take the teacher's input shape {tuple(teacher.input_shape[1:])}. "
            f"Received: {tuple(student.input_shape[1:])}."
        )
    if teacher.output_shape[-1] != student.output_shape[-1]:
        raise ValueError(
            f"Expected the student to predict the teacher's {teacher.output_shape[-1]} classes. "
            f"Received: {student.output_shape[-1]}."
        )
    _check_class_weights(cfg.class_weights, int(teacher.output_shape[-1]))
