"""nearest_decoder: a trained transposed-conv U-Net rebuilt with 1x1 conv + nearest up-sampling."""

from __future__ import annotations

import numpy as np
import pytest

from roverlite._tf import keras
from roverlite.compress.decoder import NEAREST_DECODER_OVERRIDES, nearest_decoder
from roverlite.compress.structured import structured_prune
from roverlite.config import ConfigError
from roverlite.train.models import create_model

SHAPE = (32, 32, 1)


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return create_model("unet_tiny", input_shape=SHAPE, num_classes=4, base_width=8)


def test_swapped_decoder_is_the_registry_model_with_the_nearest_decoder():
    thin, report = structured_prune(_model(), 0.5)
    fast = nearest_decoder(thin)
    rebuilt = create_model("unet_tiny", input_shape=SHAPE, num_classes=4,
                           **report.unet_overrides(), **NEAREST_DECODER_OVERRIDES)
    assert [(layer.name, type(layer).__name__) for layer in fast.layers] == [
        (layer.name, type(layer).__name__) for layer in rebuilt.layers]
    assert [w.shape for w in fast.weights] == [w.shape for w in rebuilt.weights]


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
