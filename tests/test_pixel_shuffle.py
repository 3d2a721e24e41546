"""The pixel-shuffle moves: the exact shuffle decoder, the space-to-depth stem, and their int8 and ONNX exports."""

from __future__ import annotations

import numpy as np
import pytest

from roverlite._tf import keras
from roverlite.compress.decoder import SHUFFLE_DECODER_OVERRIDES, nearest_decoder, shuffle_decoder
from roverlite.compress.resolution import half_resolution, half_resolution_overrides
from roverlite.compress.structured import level_widths, structured_prune
from roverlite.config import ConfigError
from roverlite.train.blocks import DepthToSpace, SpaceToDepth
from roverlite.train.models import create_model

SHAPE = (32, 32, 1)


def _model() -> keras.Model:
    """unet_tiny with every weight random, BatchNorm statistics included, so no term hides."""
    keras.utils.set_random_seed(0)
    model = create_model("unet_tiny", input_shape=SHAPE, num_classes=4, base_width=8)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        weights = [
            rng.uniform(0.5, 2.0, w.shape) if "variance" in v.name else rng.normal(0.0, 0.3, w.shape)
            for w, v in zip(layer.get_weights(), layer.weights)
        ]
        if weights:
            layer.set_weights([w.astype(np.float32) for w in weights])
    return model


def _images(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).random((n, *SHAPE), dtype=np.float32)


def _fast(model: keras.Model) -> keras.Model:
    return half_resolution(shuffle_decoder(model), "shuffle")


# === shuffle_decoder ===


def test_the_shuffle_decoder_computes_exactly_what_the_transposed_conv_did():
    model, x = _model(), _images()
    expected = model(x, training=False).numpy()
    np.testing.assert_allclose(shuffle_decoder(model)(x, training=False).numpy(), expected, atol=1e-5)
    # The nearest swap is an approximation: it must differ here, or the comparison above proves nothing.
    assert np.abs(nearest_decoder(model)(x, training=False).numpy() - expected).max() > 1e-2


def test_the_shuffle_decoder_replaces_each_tconv_by_a_4x_1x1_conv_and_a_depth_to_space():
    fast = shuffle_decoder(_model())
    assert not [layer.name for layer in fast.layers if layer.name.endswith("_tconv")]
    up, shuffle = fast.get_layer("dec0_up_conv"), fast.get_layer("dec0_up_shuffle")
    assert up.kernel_size == (1, 1) and up.filters == 4 * 8 and isinstance(shuffle, DepthToSpace)
    with pytest.raises(ValueError, match="already nearest or shuffle"):
        shuffle_decoder(fast)


# === half_resolution(stem="shuffle") ===


def test_the_shuffle_stem_starts_as_exactly_the_average_pool_stem():
    model, x = _model(), _images()
    pooled = half_resolution(model, "pool")(x, training=False).numpy()
    shuffled = half_resolution(model, "shuffle")
    np.testing.assert_allclose(shuffled(x, training=False).numpy(), pooled, atol=1e-5)
    assert isinstance(shuffled.get_layer("stem_shuffle"), SpaceToDepth)
    assert shuffled.get_layer("logits").filters == 16 and shuffled.output_shape == model.output_shape


def test_a_shuffled_thin_model_is_what_the_registry_builds_with_the_moves_overrides():
    thin, report = structured_prune(_model(), 0.5)
    moved = _fast(thin)
    rebuilt = create_model("unet_tiny", input_shape=SHAPE, num_classes=4, **report.unet_overrides(),
                           **SHUFFLE_DECODER_OVERRIDES, **half_resolution_overrides("shuffle"))
    assert [(layer.name, type(layer).__name__) for layer in moved.layers] == [
        (layer.name, type(layer).__name__) for layer in rebuilt.layers]
    assert [w.shape for w in moved.weights] == [w.shape for w in rebuilt.weights]


def test_the_shuffle_stem_refuses_an_unknown_stem_and_an_input_read_by_a_non_conv():
    with pytest.raises(ValueError, match='Did you mean "shuffle"'):
        half_resolution(_model(), "shufle")
    coords = create_model("unet_tiny", input_shape=SHAPE, num_classes=4, coord_channels=True)
    with pytest.raises(ValueError, match="read only by Conv2D"):
        half_resolution(coords, "shuffle")


# === structured pruning through the shuffle layers ===


def test_structured_pruning_thins_the_levels_of_a_shuffle_model_and_keeps_its_shuffles_whole():
    fast = _fast(_model())
    assert level_widths(fast) == (8, 16, 32)  # not the 4x up-sampling convs
    thin, report = structured_prune(fast, 0.5)
    assert report.widths_after == (4, 8, 16)
    assert thin.get_layer("dec0_up_conv").filters == 4 * 8  # feeds a DepthToSpace: whole
    assert thin.get_layer("logits").filters == 16
    thin(_images(), training=False)  # the sliced weights fit


# === the layers ===


def test_pixel_shuffle_layers_round_trip_their_config_and_refuse_a_bad_block_size():
    layer = DepthToSpace(2, name="d")
    assert DepthToSpace.from_config(layer.get_config()).block_size == 2
    for bad in (1, 2.0, True):
        with pytest.raises(ValueError, match="block_size >= 2"):
            SpaceToDepth(bad)


def test_a_shuffle_model_survives_save_and_load(tmp_path):
    from roverlite.train.modelfile import load_model_file

    fast, x = _fast(_model()), _images()
    fast.save(tmp_path / "m.h5")
    loaded = load_model_file(tmp_path / "m.h5")
    np.testing.assert_allclose(loaded(x, training=False).numpy(), fast(x, training=False).numpy(), atol=1e-6)


def test_qat_refuses_the_shuffle_layers_by_name():
    from roverlite.compress.qat import quantize_aware

    with pytest.raises(ValueError, match="stem_shuffle"):
        quantize_aware(_fast(_model()))


# === recipe ===


def test_a_structured_step_takes_the_shuffle_decoder_and_stem_and_refuses_a_stem_at_full_resolution():
    from roverlite.compress.recipe import load_recipe

    step = {"keep_ratio": 0.5, "decoder": "shuffle", "resolution": 0.5, "stem": "shuffle"}
    [parsed] = load_recipe({"name": "r", "steps": [{"structured": step}]}).steps
    assert (parsed.decoder, parsed.stem) == ("shuffle", "shuffle")
    with pytest.raises(ConfigError, match='Did you mean "shuffle"'):
        load_recipe({"name": "r", "steps": [{"structured": {**step, "stem": "shufle"}}]})
    with pytest.raises(ConfigError, match="resolution 0.5 with it"):
        load_recipe({"name": "r", "steps": [{"structured": {**step, "resolution": 1.0}}]})


# === exports ===


def test_a_shuffle_model_exports_to_int8_tflite_with_no_resize_and_no_average_pool(tmp_path):
    from export_helpers import band_scenes

    from roverlite.config import DataConfig
    from roverlite.export import ExportSettings, export_model
    from roverlite.export.tflite import tflite_ops

    images, masks = band_scenes(8, seed=1)
    [result] = export_model(_fast(structured_prune(_model(), 0.5)[0]), ExportSettings(
        ["tflite_int8"], tmp_path, DataConfig(image_size=(32, 32)),
        calibration_images=images, check_images=images, check_masks=masks, name="shuffle"))
    ops = {op.name for op in tflite_ops(result.path.read_bytes())}
    assert {"SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "CONV_2D"} <= ops
    assert not ops & {"RESIZE_NEAREST_NEIGHBOR", "AVERAGE_POOL_2D", "TRANSPOSE_CONV"}


def test_xnnpack_delegates_every_op_of_an_int8_shuffle_model(tmp_path):
    from export_helpers import band_scenes

    from roverlite.config import DataConfig
    from roverlite.deploy.profile import profile_tflite
    from roverlite.export import ExportSettings, export_model

    images, masks = band_scenes(8, seed=1)
    [result] = export_model(_fast(_model()), ExportSettings(
        ["tflite_int8"], tmp_path, DataConfig(image_size=(32, 32)),
        calibration_images=images, check_images=images, check_masks=masks, name="shuffle"))
    sample = np.zeros((1, *SHAPE), np.int8)
    profile = profile_tflite(result.path.read_bytes(), sample, threads=1, runs=2)
    assert profile["delegate_partitions"] == 1
    assert profile["delegated_nodes"] >= profile["nodes"] - 2  # at most the input quantize / output dequantize


def test_onnx_export_of_a_shuffle_model_matches_keras_within_1e_4():
    import onnxruntime as ort

    from roverlite.export.onnx import keras_to_onnx

    model, x = _fast(_model()), _images()
    proto = keras_to_onnx(model)
    ops = {node.op_type for node in proto.graph.node}
    assert {"DepthToSpace", "SpaceToDepth"} <= ops
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    expected = model(x, training=False).numpy()
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_a_latency_table_tells_the_shuffle_architecture_from_the_pool_one():
    from roverlite.compress.latency_table import architecture_of

    model = _model()
    assert architecture_of(_fast(model)) == {"decoder": "shuffle", "resolution": 0.5, "stem": "shuffle"}
    assert architecture_of(half_resolution(nearest_decoder(model))) == {"decoder": "nearest", "resolution": 0.5}
    assert architecture_of(shuffle_decoder(model)) == {"decoder": "shuffle", "resolution": 1.0}


def test_swap_decoder_names_the_two_swaps_and_refuses_others():
    from roverlite.compress.decoder import swap_decoder

    np.testing.assert_array_equal(swap_decoder(_model(), "shuffle")(_images(), training=False).numpy(),
                                  shuffle_decoder(_model())(_images(), training=False).numpy())
    with pytest.raises(ValueError, match='Did you mean "shuffle"'):
        swap_decoder(_model(), "shufle")
