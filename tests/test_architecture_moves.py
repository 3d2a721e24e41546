"""Architecture moves that keep every trained weight: the nearest decoder swap and half resolution."""

from __future__ import annotations

import numpy as np
import pytest

from roverlite._tf import keras
from roverlite.compress.decoder import NEAREST_DECODER_OVERRIDES, nearest_decoder
from roverlite.compress.resolution import HALF_RESOLUTION_OVERRIDES, half_resolution
from roverlite.compress.structured import structured_prune
from roverlite.config import ConfigError
from roverlite.train.models import create_model

SHAPE = (32, 32, 1)


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return create_model("unet_tiny", input_shape=SHAPE, num_classes=4, base_width=8)


# === nearest_decoder ===


@pytest.mark.parametrize("move, overrides", [
    (nearest_decoder, NEAREST_DECODER_OVERRIDES), (half_resolution, HALF_RESOLUTION_OVERRIDES),
], ids=["nearest_decoder", "half_resolution"])
def test_a_moved_thin_model_is_what_the_registry_builds_with_the_move_s_overrides(move, overrides):
    thin, report = structured_prune(_model(), 0.5)
    moved = move(thin)
    rebuilt = create_model("unet_tiny", input_shape=SHAPE, num_classes=4, **report.unet_overrides(), **overrides)
    assert [(layer.name, type(layer).__name__) for layer in moved.layers] == [
        (layer.name, type(layer).__name__) for layer in rebuilt.layers]
    assert [w.shape for w in moved.weights] == [w.shape for w in rebuilt.weights]


def test_every_layer_but_the_up_sampling_keeps_its_weights_and_the_1x1_starts_from_the_taps_mean():
    model = _model()
    fast = nearest_decoder(model)
    for layer in model.layers:
        if layer.weights and not layer.name.endswith("_tconv"):
            for ours, theirs in zip(fast.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(ours, theirs)
    tconv = model.get_layer("dec0_up_tconv").get_weights()[0]  # (2, 2, out, in)
    conv = fast.get_layer("dec0_up_conv").get_weights()[0]  # (1, 1, in, out)
    np.testing.assert_allclose(conv[0, 0], tconv.mean(axis=(0, 1)).T, rtol=1e-6)


def test_a_tconv_whose_four_taps_agree_gives_exactly_the_same_outputs():
    model = _model()
    for layer in model.layers:
        if layer.name.endswith("_tconv"):
            kernel, *bias = layer.get_weights()
            layer.set_weights([np.broadcast_to(kernel[:1, :1], kernel.shape).copy(), *bias])
    x = np.random.default_rng(0).random((2, *SHAPE), dtype=np.float32)
    np.testing.assert_allclose(nearest_decoder(model)(x).numpy(), model(x).numpy(), atol=1e-5)


def test_a_model_with_the_nearest_decoder_already_is_refused():
    with pytest.raises(ValueError, match="already nearest"):
        nearest_decoder(create_model("unet_tiny_nearest", input_shape=SHAPE, num_classes=4))


def test_a_structured_step_takes_the_nearest_decoder_and_refuses_others():
    from roverlite.compress.recipe import load_recipe

    recipe = load_recipe({"name": "r", "steps": [{"structured": {"keep_ratio": 0.5, "decoder": "nearest"}}]})
    assert recipe.steps[0].decoder == "nearest"
    with pytest.raises(ConfigError, match='Did you mean "nearest"'):
        load_recipe({"name": "r", "steps": [{"structured": {"keep_ratio": 0.5, "decoder": "nearst"}}]})


# === half_resolution ===


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


def test_half_resolution_refuses_a_model_that_already_runs_below_full_resolution():
    nano = create_model("unet_nano", input_shape=(64, 64, 1), num_classes=4)
    with pytest.raises(ValueError, match="already has a stem"):
        half_resolution(nano)
    with pytest.raises(ValueError, match="divisible by 8"):
        half_resolution(create_model("unet_tiny", input_shape=(36, 36, 1), num_classes=4))


def test_half_resolution_model_exports_to_int8_tflite_with_builtin_ops(tmp_path):
    from export_helpers import band_scenes

    from roverlite.config import DataConfig
    from roverlite.export import ExportSettings, export_model
    from roverlite.export.tflite import tflite_ops

    images, masks = band_scenes(8, seed=1)
    [result] = export_model(half_resolution(_model()), ExportSettings(
        ["tflite_int8"], tmp_path, DataConfig(image_size=(32, 32)),
        calibration_images=images, check_images=images, check_masks=masks, name="half"))
    ops = {op.name for op in tflite_ops(result.path.read_bytes())}
    assert {"AVERAGE_POOL_2D", "RESIZE_NEAREST_NEIGHBOR", "CONV_2D"} <= ops


def test_a_structured_step_takes_half_resolution_and_refuses_other_values():
    from roverlite.compress.recipe import load_recipe

    recipe = load_recipe({"name": "r", "steps": [{"structured": {"keep_ratio": 0.5, "resolution": 0.5}}]})
    assert recipe.steps[0].resolution == 0.5
    for bad in (0.25, 2, True, "half"):
        with pytest.raises(ConfigError, match="structured.resolution"):
            load_recipe({"name": "r", "steps": [{"structured": {"keep_ratio": 0.5, "resolution": bad}}]})
