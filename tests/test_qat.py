"""Quantization-aware training: trains, converts to int8 TFLite, keeps a pruned model's zeros."""

from __future__ import annotations

import numpy as np
import pytest
from compress_helpers import eager

from roverlite._tf import keras, tf
from roverlite.compress.prune import PruneConfig, fine_tune_pruned, prune, sparsity_report, strip
from roverlite.compress.qat import fine_tune_qat, is_quantize_wrapped, quantize_aware
from roverlite.train.losses import build_loss
from roverlite.train.models import create_model

SHAPE = (32, 32, 1)
CLASSES = 4


def _tiny_model(seed: int = 0, **overrides) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return create_model("unet_tiny", input_shape=SHAPE, num_classes=CLASSES, **overrides)


def _images(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, *SHAPE)).astype("float32")


def _dataset() -> tf.data.Dataset:
    masks = np.random.default_rng(1).integers(0, CLASSES, size=(8, *SHAPE[:2])).astype("int32")
    return tf.data.Dataset.from_tensor_slices((_images(), masks)).batch(4).repeat()


def _loss():
    return build_loss({"cross_entropy": 1.0}, CLASSES)


def _int8_tflite(model: keras.Model) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter.representative_dataset = lambda: ([image[None]] for image in _images(4))
    return converter.convert()


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
def test_qat_model_trains_and_converts_to_int8_weights():
    model = _tiny_model()
    qat = quantize_aware(model)
    assert is_quantize_wrapped(qat) and not is_quantize_wrapped(model)
    before = [w.numpy().copy() for w in qat.trainable_weights]
    with eager():
        history = fine_tune_qat(qat, _dataset(), epochs=1, steps=2, loss=_loss(), optimizer=keras.optimizers.Adam(1e-3))
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, qat.trainable_weights))

    from ai_edge_litert.interpreter import Interpreter

    tensors = Interpreter(model_content=_int8_tflite(qat)).get_tensor_details()
    assert not [t["name"] for t in tensors if t["dtype"] == np.float32]
    int8_shapes = {tuple(t["shape"]) for t in tensors if t["dtype"] == np.int8}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            kh, kw, out, inp = layer.kernel.shape  # TFLite stores (out, kh, kw, in) for both
            assert (out, kh, kw, inp) in int8_shapes, layer.name
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, inp, out = layer.kernel.shape
            assert (out, kh, kw, inp) in int8_shapes, layer.name


@pytest.fixture(scope="module")
def half_sparse():
    """unet_tiny pruned to 50 % in one step and stripped."""
    pruned = prune(_tiny_model(seed=1), PruneConfig(target_sparsity=0.5, schedule="constant", begin_step=0, end_step=1, frequency=1))
    with eager():
        fine_tune_pruned(pruned, _dataset(), epochs=1, steps=1, loss=_loss(), optimizer=keras.optimizers.SGD(0.0))
    return strip(pruned)


def _pruned_layer_sparsity(model: keras.Model) -> dict[str, float]:
    return {name: zeros for name, zeros in sparsity_report(model) if name != "logits"}


def test_pqat_keeps_pruned_zeros_after_fine_tuning(half_sparse):
    assert min(_pruned_layer_sparsity(half_sparse).values()) >= 0.49
    pqat = quantize_aware(half_sparse, preserve_sparsity=True)
    with eager():
        fine_tune_qat(pqat, _dataset(), epochs=1, steps=3, loss=_loss(), optimizer=keras.optimizers.Adam(1e-2))
    kept = _pruned_layer_sparsity(pqat)
    assert len(kept) == 12 and "dec0_up_tconv" in kept  # transpose convs too (TFMOT alone refuses them)
    for name, zeros in kept.items():
        assert zeros >= 0.49, name

    # Control: the same fine-tuning under plain QAT re-grows the pruned weights.
    qat = quantize_aware(half_sparse)
    with eager():
        fine_tune_qat(qat, _dataset(), epochs=1, steps=3, loss=_loss(), optimizer=keras.optimizers.Adam(1e-2))
    assert max(_pruned_layer_sparsity(qat).values()) < 0.25


def test_qat_refuses_model_still_wrapped_for_pruning():
    pruned = prune(_tiny_model(), PruneConfig(begin_step=0, end_step=100))
    with pytest.raises(ValueError, match="strip"):
        quantize_aware(pruned, preserve_sparsity=True)


def test_qat_unsupported_layer_raises_naming_it():
    with pytest.raises(ValueError, match="'enc0_se_scale' \\(Multiply\\)"):
        quantize_aware(_tiny_model(squeeze_excite=True))


def test_fine_tune_qat_refuses_float_model():
    with pytest.raises(ValueError, match="no quantize wrappers"):
        fine_tune_qat(_tiny_model(), _dataset(), 1, 1, _loss(), keras.optimizers.SGD(0.1))
