"""half_resolution: the same U-Net and weights behind a 2x2 average pool, logits upsampled 2x."""

from __future__ import annotations

import numpy as np
import pytest

from roverlite._tf import keras
from roverlite.compress.resolution import HALF_RESOLUTION_OVERRIDES, half_resolution
from roverlite.compress.structured import structured_prune
from roverlite.config import ConfigError
from roverlite.train.models import create_model

SHAPE = (32, 32, 1)


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return create_model("unet_tiny", input_shape=SHAPE, num_classes=4, base_width=8)


def test_half_resolution_computes_the_model_on_the_pooled_image_then_repeats_each_logit():
    model = _model()
    half = half_resolution(model)
    x = np.random.default_rng(0).random((2, *SHAPE), dtype=np.float32)
    pooled = x.reshape(2, 16, 2, 16, 2, 1).mean(axis=(2, 4))
    small = create_model("unet_tiny", input_shape=(16, 16, 1), num_classes=4, base_width=8)
    small.set_weights(model.get_weights())
    expected = np.repeat(np.repeat(small(pooled, training=False).numpy(), 2, axis=1), 2, axis=2)
    np.testing.assert_allclose(half(x, training=False).numpy(), expected, atol=1e-5)
    assert half.output_shape == model.output_shape and half.count_params() == model.count_params()


def test_half_resolution_of_a_thinned_model_is_what_build_unet_makes_with_a_pool_stem():
    thin, report = structured_prune(_model(), 0.5)
    half = half_resolution(thin)
    rebuilt = create_model("unet_tiny", input_shape=SHAPE, num_classes=4,
                           **report.unet_overrides(), **HALF_RESOLUTION_OVERRIDES)
    assert [(layer.name, type(layer).__name__) for layer in half.layers] == [
        (layer.name, type(layer).__name__) for layer in rebuilt.layers]
    assert [w.shape for w in half.weights] == [w.shape for w in rebuilt.weights]


def test_half_resolution_refuses_a_model_that_already_runs_below_full_resolution():
    nano = create_model("unet_nano", input_shape=(64, 64, 1), num_classes=4)
    with pytest.raises(ValueError, match="already has a stem"):
        half_resolution(nano)
    with pytest.raises(ValueError, match="divisible by 8"):
        half_resolution(create_model("unet_tiny", input_shape=(36, 36, 1), num_classes=4))


def test_half_resolution_model_exports_to_int8_tflite_with_builtin_ops(tmp_path):
    from export_helpers import band_scenes

    from roverlite.config import DataConfig
    from roverlite.export import export_model
    from roverlite.export.tflite import tflite_ops

    images, masks = band_scenes(8, seed=1)
    [result] = export_model(half_resolution(_model()), ["tflite_int8"], tmp_path, DataConfig(image_size=(32, 32)),
                            calibration_images=images, check_images=images, check_masks=masks, name="half")
    ops = {op.name for op in tflite_ops(result.path.read_bytes())}
    assert {"AVERAGE_POOL_2D", "RESIZE_NEAREST_NEIGHBOR", "CONV_2D"} <= ops


def test_a_structured_step_takes_half_resolution_and_refuses_other_values():
    from roverlite.compress.recipe import load_recipe

    recipe = load_recipe({"name": "r", "steps": [{"structured": {"keep_ratio": 0.5, "resolution": 0.5}}]})
    assert recipe.steps[0].resolution == 0.5
    for bad in (0.25, 2, True, "half"):
        with pytest.raises(ConfigError, match="structured.resolution"):
            load_recipe({"name": "r", "steps": [{"structured": {"keep_ratio": 0.5, "resolution": bad}}]})
