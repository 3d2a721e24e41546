"""Structured channel pruning: thin model shapes, exact weight copy, MAC savings, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from roverlite._tf import keras
from roverlite.compress.structured import structured_prune
from roverlite.train.models import create_model

SHAPE = (32, 32, 1)
LEVEL = re.compile(r"^(?:(?:enc|dec)(\d+)|bottleneck)_")


def _model(seed: int = 0, **overrides) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = create_model("unet_tiny", input_shape=SHAPE, num_classes=4, base_width=8, **overrides)
    # Non-trivial BatchNorm statistics, so a wrongly sliced BatchNorm changes the outputs.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])
    return model


def _images(n: int = 2) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, *SHAPE)).astype("float32")


@pytest.mark.parametrize(
    "overrides",
    [
        {"residual": True},
        {"decoder": "nearest", "norm": "none", "squeeze_excite": True, "attention_gates": True, "aspp": True},
    ],
    ids=["residual", "nearest-nonorm-se-attention-aspp"],
)
def test_structured_keep_all_reproduces_outputs_exactly(overrides):
    model = _model(**overrides)
    thin, report = structured_prune(model, keep_ratio=1.0)
    x = _images()
    np.testing.assert_array_equal(thin(x, training=False).numpy(), model(x, training=False).numpy())
    assert report.macs_after == report.macs_before and report.params_after == report.params_before


@pytest.fixture(scope="module")
def half():
    return structured_prune(_model(), keep_ratio=0.5)


def test_structured_half_gives_expected_channel_counts(half):
    thin, report = half
    assert report.widths_before == (8, 16, 32) and report.widths_after == (4, 8, 16)
    filters = {layer.name: layer.filters for layer in thin.layers if hasattr(layer, "filters")}
    assert filters["enc0_1_conv"] == filters["dec0_2_conv"] == filters["dec0_up_tconv"] == 4
    assert filters["enc1_2_conv"] == filters["dec1_up_tconv"] == 8
    assert filters["bottleneck_1_conv"] == 16
    assert filters["logits"] == 4 and thin.input_shape == (None, *SHAPE)
    assert thin.get_layer("dec0_concat").output_shape[-1] == 8  # 4 up-sampled + 4 skip channels
    assert thin(_images()).shape == (2, *SHAPE[:2], 4)


def test_structured_thin_model_is_the_registry_model_with_narrower_levels():
    thin, report = structured_prune(_model(residual=True), keep_ratio=[0.5, 0.75, 0.25])
    assert report.widths_after == (4, 12, 8)
    ref = create_model("unet_tiny", input_shape=SHAPE, num_classes=4, residual=True, **report.unet_overrides())
    assert [(layer.name, layer.output_shape) for layer in ref.layers] == [
        (layer.name, layer.output_shape) for layer in thin.layers
    ]


def _silence_half_of_each_level(model: keras.Model, rng: np.random.Generator) -> None:
    """Zero the same random half of the filters of every conv at a level (and their BatchNorm)."""
    dropped: dict[str, np.ndarray] = {}
    for layer in model.layers:
        match = LEVEL.match(layer.name)
        if not match or not isinstance(layer, (keras.layers.Conv2D, keras.layers.BatchNormalization)):
            continue
        level = match.group(1) or "bottleneck"
        width = layer.filters if isinstance(layer, keras.layers.Conv2D) else layer.gamma.shape[0]
        idx = dropped.setdefault(level, rng.choice(width, width // 2, replace=False))
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.Conv2DTranspose):
            weights[0][:, :, idx, :] = 0.0  # (kh, kw, out, in)
        elif isinstance(layer, keras.layers.Conv2D):
            weights[0][..., idx] = 0.0
        else:
            weights[0][idx] = 0.0  # gamma
        if len(weights) > 1:
            weights[1][idx] = 0.0  # bias or beta: the channel is then exactly 0
        layer.set_weights(weights)


@pytest.mark.parametrize(
    "criterion, overrides",
    [
        ("l1", {"norm": "none", "decoder": "nearest"}),
        ("l1", {"residual": True}),
        ("bn", {}),
        ("l1", {"residual": True, "coord_channels": True}),
    ],
    ids=["l1-nonorm-nearest", "l1-residual", "bn", "l1-residual-coords"],
)
def test_structured_removing_silent_filters_keeps_outputs(criterion, overrides):
    # Filters whose output is exactly zero contribute nothing; if the right ones are removed and
    # every kernel, bias, BatchNorm and concat slice is copied right, the outputs do not change.
    model = _model(seed=2, **overrides)
    _silence_half_of_each_level(model, np.random.default_rng(3))
    thin, report = structured_prune(model, keep_ratio=0.5, criterion=criterion)
    assert report.widths_after == (4, 8, 16)
    # The image's channels (and the two coordinate channels, when present) are never pruned.
    assert thin.get_layer("enc0_1_conv").kernel.shape[2] == model.get_layer("enc0_1_conv").kernel.shape[2]
    x = _images()
    np.testing.assert_allclose(thin(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-5)


def test_structured_half_cuts_macs_at_least_2x(half):
    _, report = half
    assert report.macs_before >= 2 * report.macs_after
    assert report.params_before > 2 * report.params_after


def test_structured_unsupported_layer_raises_naming_it():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, padding="same", name="enc0_1_conv")(inputs)
    x = keras.layers.LayerNormalization(name="enc0_ln")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="logits")(x))
    with pytest.raises(ValueError, match="'enc0_ln' \\(LayerNormalization\\)"):
        structured_prune(model, 0.5)


@pytest.mark.parametrize("keep_ratio", [0.0, 1.5, [0.5, 0.5]])
def test_structured_rejects_bad_keep_ratio(keep_ratio):
    with pytest.raises(ValueError, match="keep_ratio"):
        structured_prune(_model(), keep_ratio)


def test_structured_bn_criterion_needs_batchnorm():
    with pytest.raises(ValueError, match="criterion='l1'"):
        structured_prune(_model(norm="none"), 0.5, criterion="bn")


# === Granularity ===


@pytest.mark.parametrize("size, ratio, granularity, expected", [
    (16, 0.3, 1, 5), (16, 0.3, 8, 8), (77, 1.0, 8, 77), (256, 0.3, 8, 80), (128, 0.3, 16, 32),
    (4, 0.5, 8, 4), (32, 0.1, 8, 8), (40, 0.5, 16, 16),
])
def test_kept_count_rounds_to_the_nearest_multiple_never_below_one_block(size, ratio, granularity, expected):
    from roverlite.compress.structured import kept_count

    assert kept_count(size, ratio, granularity) == expected


def test_structured_granularity_keeps_only_whole_channel_blocks():
    model = create_model("unet_tiny", input_shape=SHAPE, num_classes=4, base_width=16)
    _, plain = structured_prune(model, 0.3)
    thin, report = structured_prune(model, 0.3, granularity=8)
    assert plain.widths_after == (5, 10, 19)
    assert report.widths_after == (8, 8, 16)
    assert all(after % 8 == 0 for before, after in report.filters.values() if after < before)
    assert thin.count_params() == report.params_after


@pytest.mark.parametrize("granularity", [0, -8, 2.5, True, "8"])
def test_structured_refuses_a_bad_granularity(granularity):
    with pytest.raises(ValueError, match="granularity"):
        structured_prune(_model(), 0.5, granularity=granularity)


def test_a_recipe_structured_step_takes_granularity_and_refuses_a_bad_one():
    from roverlite.compress.recipe import load_recipe
    from roverlite.config import ConfigError

    recipe = load_recipe({"name": "g", "steps": [{"structured": {"keep_ratio": 0.3, "granularity": 16}}]})
    assert recipe.steps[0].granularity == 16
    with pytest.raises(ConfigError, match="structured.granularity"):
        load_recipe({"name": "g", "steps": [{"structured": {"keep_ratio": 0.3, "granularity": 0}}]})
