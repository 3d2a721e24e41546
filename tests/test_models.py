"""Model registry, U-Net builder, MAC counter, and that every preset survives TFMOT and int8 export."""

import numpy as np
import pytest

# isort: off
from roverlite._tf import keras, tf

# TFMOT only after roverlite._tf, which selects Keras 2 before TensorFlow is first imported.
import tensorflow_model_optimization as tfmot

# isort: on
from roverlite.train.macs import count_macs, format_cost_table
from roverlite.train.models import STUDENT_LADDER, build_unet, create_model, list_models, model_args

PRESETS = list_models()
# The ops TFLite-Micro implements that a micro U-Net may use (see NOTES.md).
MICRO_OPS = {"CONV_2D", "MAX_POOL_2D", "CONCATENATION", "TRANSPOSE_CONV", "RESIZE_NEAREST_NEIGHBOR", "RELU"}
# Smallest arena (in steps of 1 KiB) that ran unet_micro at 128x128 with tflite-micro on the host
# was about 264 KiB; a little headroom keeps the test independent of allocator details.
MICRO_ARENA_BYTES = 288 * 1024


def _smallest_side(name: str) -> int:
    args = model_args(name)
    return 2 ** args["depth"] * args.get("stem_stride", 1)


# === Registry and factory ===


def test_registry_has_the_ladder_and_test_models():
    expected = {"unet_teacher", "unet_s", "unet_xs", "unet_xxs", "unet_nano", "unet_micro", "unet_tiny", "unet_tiny_nearest"}
    assert expected <= set(PRESETS)
    assert list_models("unet_x*") == ["unet_xs", "unet_xxs"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_builds_and_outputs_float32_logits(name):
    side = max(64, _smallest_side(name))
    model = create_model(name, input_shape=(side, side, 1), num_classes=4)
    assert model.name == name
    assert model.output_shape == (None, side, side, 4)
    out = model(np.zeros((1, side, side, 1), np.float32), training=False)
    assert out.dtype == tf.float32 and out.shape == (1, side, side, 4)


def test_logits_stay_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = create_model("unet_tiny", input_shape=(16, 16, 1), num_classes=3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("enc0_1_conv").compute_dtype == "float16"
    assert model.output.dtype == tf.float32


def test_input_not_divisible_by_two_to_the_depth_is_refused():
    with pytest.raises(ValueError) as err:
        create_model("unet_s", input_shape=(100, 128, 1))
    assert str(err.value) == (
        "Expected height and width divisible by 2**depth=16. Received: input_shape=(100, 128, 1)."
    )


def test_stem_stride_two_runs_the_unet_at_half_resolution_and_returns_full_size_logits():
    for decoder, head in (("transpose", "Conv2DTranspose"), ("nearest", "UpSampling2D")):
        model = build_unet((32, 48, 1), 3, depth=2, base_width=4, stem_stride=2, decoder=decoder)
        assert model.output_shape == (None, 32, 48, 3)
        assert type(model.layers[-1]).__name__ == head
        inner = model.layers[1:-1]  # everything between the input and the output layer
        assert max(layer.output_shape[1] for layer in inner) == 16
        assert model.get_layer("stem_conv").strides == (2, 2)
        assert model.get_layer("logits").dtype == "float32"
    # The stem adds one conv and halves every other layer's positions.
    plain = count_macs(build_unet((32, 32, 1), 3, depth=2, base_width=4))
    halved = count_macs(build_unet((32, 32, 1), 3, depth=2, base_width=4, stem_stride=2))
    assert halved.macs < plain.macs / 2


def test_stem_stride_counts_in_the_divisibility_check_and_only_one_or_two_is_accepted():
    with pytest.raises(ValueError) as err:
        build_unet((36, 32, 1), 3, depth=2, stem_stride=2)
    assert str(err.value) == (
        "Expected height and width divisible by stem_stride * 2**depth=8. Received: input_shape=(36, 32, 1)."
    )
    for bad in (0, 3, True):
        with pytest.raises(ValueError, match=rf"Expected stem_stride 1 or 2\. Received: stem_stride={bad}"):
            build_unet((32, 32, 1), 3, depth=2, stem_stride=bad)


def test_unknown_model_name_lists_closest_names():
    with pytest.raises(ValueError, match=r"Received: name='unet_xss'\. Closest: .*unet_xs"):
        create_model("unet_xss")


def test_overrides_change_the_preset():
    model = create_model("unet_s", input_shape=(32, 32, 1), base_width=8)
    assert model.get_layer("enc0_1_conv").filters == 8
    assert model.get_layer("bottleneck_1_conv").filters == 128
    nearest = create_model("unet_tiny", input_shape=(16, 16, 1), decoder="nearest", convs_per_block=1)
    types = {type(layer).__name__ for layer in nearest.layers}
    assert "UpSampling2D" in types and "Conv2DTranspose" not in types
    assert model_args("unet_s", base_width=8) == {"depth": 4, "base_width": 8}


def test_unknown_override_key_suggests_the_closest():
    with pytest.raises(ValueError, match='Did you mean "base_width"'):
        create_model("unet_s", base_widht=8)
    with pytest.raises(ValueError, match="Expected decoder in"):
        create_model("unet_tiny", input_shape=(16, 16, 1), decoder="bilinear")


def test_width_multipliers_and_fixed_batch():
    model = create_model("unet_tiny", input_shape=(16, 16, 3), batch_size=1, width_multipliers=(1, 1, 2))
    assert model.input_shape == (1, 16, 16, 3)
    assert [model.get_layer(n).filters for n in ("enc0_1_conv", "enc1_1_conv", "bottleneck_1_conv")] == [4, 4, 8]
    with pytest.raises(ValueError, match="Expected 3 positive width_multipliers"):
        create_model("unet_tiny", width_multipliers=(1, 2))


def test_optional_blocks_build():
    model = build_unet(
        (32, 32, 1),
        3,
        depth=2,
        base_width=4,
        residual=True,
        squeeze_excite=True,
        attention_gates=True,
        aspp=True,
        activation="relu6",
        norm="none",
        dropout=0.1,
    )
    assert model.output_shape == (None, 32, 32, 3)
    assert model(np.zeros((2, 32, 32, 1), np.float32)).shape == (2, 32, 32, 3)


# === MAC counter ===


def test_conv_macs_match_hand_count():
    inputs = keras.Input((32, 32, 8))
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    cost = count_macs(keras.Model(inputs, x))
    rows = {r.name: r for r in cost.layers}
    assert rows["conv"].macs == 32 * 32 * 16 * 8 * 9
    assert rows["conv"].params == 16 * 8 * 9 + 16
    assert rows["bn"].macs == 0 and rows["bn"].params == 4 * 16
    assert cost.macs == 32 * 32 * 16 * 8 * 9


def test_other_layer_macs_match_hand_count():
    inputs = keras.Input((16, 16, 8))
    dil = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2, name="dil")(inputs)
    grp = keras.layers.Conv2D(16, 3, padding="same", groups=4, name="grp")(dil)
    dw = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(grp)
    up = keras.layers.Conv2DTranspose(4, 2, strides=2, name="up")(dw)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(up)
    dense = keras.layers.Dense(5, name="fc")(pooled)
    rows = {r.name: r.macs for r in count_macs(keras.Model(inputs, dense)).layers}
    assert rows["dil"] == 16 * 16 * 8 * 8 * 9
    assert rows["grp"] == 16 * 16 * 16 * 9 * (8 // 4)
    assert rows["dw"] == 16 * 16 * 16 * 2 * 9
    assert rows["up"] == 16 * 16 * 32 * 4 * 4  # input pixels x kernel area x C_in x C_out
    assert rows["gap"] == 0 and rows["fc"] == 4 * 5


def _plain_unet_macs(side: int, width: int, depth: int, classes: int, in_ch: int = 1) -> int:
    """Closed form for build_unet(convs_per_block=2, decoder='transpose')."""
    total = 0
    widths = [width * min(2**i, 16) for i in range(depth + 1)]
    c_in = in_ch
    for level, w in enumerate(widths):  # encoder levels and bottleneck: two 3x3 convs each
        pixels = (side // 2**level) ** 2
        total += pixels * 9 * (c_in * w + w * w)
        c_in = w
    for level in reversed(range(depth)):  # 2x2 up-conv, then 3x3 on the concat, then 3x3
        pixels = (side // 2**level) ** 2
        w, w_below = widths[level], widths[level + 1]
        total += pixels * w_below * w + pixels * 9 * (2 * w * w + w * w)
    return total + side * side * width * classes


def test_plain_unet_costs_reproduce_the_notes_table():
    # NOTES.md: depth 4, Conv2DTranspose decoder, 128x128x1 -> 4 classes.
    # (base width, M params, GMAC, decimals the table gives for GMAC)
    rows = ((32, 7.77, 3.01, 2), (16, 1.95, 0.754, 3), (8, 0.49, 0.189, 3), (4, 0.12, 0.048, 3))
    for width, mparams, gmac, decimals in rows:
        cost = count_macs(build_unet((128, 128, 1), 4, depth=4, base_width=width))
        assert cost.macs == _plain_unet_macs(128, width, 4, 4)
        assert round(cost.mparams, 2) == mparams
        assert round(cost.gmacs, decimals) == gmac


def test_macs_ladder_strictly_decreases():
    names = ["unet_teacher", *STUDENT_LADDER]
    costs = [count_macs(create_model(n, input_shape=(128, 128, 1), num_classes=4)) for n in names]
    macs = [c.macs for c in costs]
    assert macs == sorted(macs, reverse=True) and len(set(macs)) == len(names)
    table = format_cost_table(costs[1], top=3)
    assert "unet_s" in table and "total" in table and "more layers" in table


def test_count_macs_sees_through_tfmot_wrappers():
    model = create_model("unet_tiny", input_shape=(16, 16, 1), num_classes=2)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model)
    assert count_macs(pruned).macs == count_macs(model).macs


# === Compression and export ===


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_prunes_and_quantizes_with_tfmot(name):
    side = max(32, _smallest_side(name))
    model = create_model(name, input_shape=(side, side, 1), num_classes=4)
    x = np.random.default_rng(0).random((1, side, side, 1), dtype=np.float32)

    pruned = tfmot.sparsity.keras.prune_low_magnitude(model)
    assert pruned(x, training=False).shape == (1, side, side, 4)

    quantized = tfmot.quantization.keras.quantize_model(model)
    assert quantized(x, training=False).shape == (1, side, side, 4)


def test_squeeze_excite_is_not_quantizable_by_tfmot():
    # Documents why no preset uses SE or attention gates: TFMOT 0.8.1 has no Multiply entry.
    model = build_unet((16, 16, 1), 3, depth=2, base_width=4, squeeze_excite=True)
    with pytest.raises(RuntimeError, match="Multiply"):
        tfmot.quantization.keras.quantize_model(model)


@pytest.fixture(scope="module")
def micro_int8_128():
    """unet_micro at 128x128, batch 1, converted to full-int8 TFLite (int8 input and output)."""
    model = create_model("unet_micro", input_shape=(128, 128, 1), num_classes=4, batch_size=1)
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(4):
            yield [rng.random((1, 128, 128, 1), dtype=np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def _run_litert(buf: bytes, x: np.ndarray, reference_kernels: bool = False) -> tuple[np.ndarray, set[str]]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
    interpreter = Interpreter(model_content=buf, experimental_op_resolver_type=resolver)
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), ops


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
def test_unet_micro_int8_uses_only_tflite_micro_ops(micro_int8_128):
    x = np.random.default_rng(1).integers(-128, 128, size=(1, 128, 128, 1), dtype=np.int8)
    out, ops = _run_litert(micro_int8_128, x)
    assert ops <= MICRO_OPS, f"ops outside the TFLite-Micro list: {sorted(ops - MICRO_OPS)}"
    assert out.shape == (1, 128, 128, 4) and out.dtype == np.int8


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
def test_unet_micro_runs_under_tflite_micro(micro_int8_128):
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    x = np.random.default_rng(2).integers(-128, 128, size=(1, 128, 128, 1), dtype=np.int8)
    reference, _ = _run_litert(micro_int8_128, x, reference_kernels=True)
    interpreter = runtime.Interpreter.from_bytes(micro_int8_128, arena_size=MICRO_ARENA_BYTES)
    interpreter.set_input(x, 0)
    interpreter.invoke()
    out = interpreter.get_output(0)
    # TFLite-Micro shares LiteRT's reference int8 kernels, so the two agree bit for bit. (XNNPACK,
    # LiteRT's default, rounds differently: a few int8 steps apart on this untrained model.)
    np.testing.assert_array_equal(out, reference)


# === Coordinate channels (CoordConv) ===


def test_coordinate_channels_append_row_and_column_ramps_from_minus_one_to_one():
    from roverlite.train.blocks import CoordinateChannels

    x = np.full((2, 3, 5, 1), 7.0, np.float32)
    out = CoordinateChannels()(x).numpy()
    assert out.shape == (2, 3, 5, 3)
    np.testing.assert_array_equal(out[..., 0], x[..., 0])
    np.testing.assert_allclose(out[1, :, 2, 1], [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(out[0, 1, :, 2], [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert np.all(out[0] == out[1])


def test_coord_channels_model_gives_the_first_conv_two_more_inputs_and_depends_on_position():
    plain = build_unet((64, 64, 1), 3, depth=1, base_width=4)
    coord = build_unet((64, 64, 1), 3, depth=1, base_width=4, coord_channels=True)
    assert coord.get_layer("enc0_1_conv").kernel.shape == (3, 3, 3, 4)
    assert count_macs(coord).params == count_macs(plain).params + 2 * 9 * 4
    # On a constant image, pixels whose receptive field (~20 px here) misses the borders all get
    # the same logits from a plain U-Net (every other pixel: the stride-2 transpose conv repeats
    # with period 2); the coordinates make them differ.
    flat = np.ones((1, 64, 64, 1), np.float32)
    assert np.ptp(plain(flat).numpy()[0, 24:40:2, 24:40:2], axis=(0, 1)).max() < 1e-5
    assert np.ptp(coord(flat).numpy()[0, 24:40:2, 24:40:2], axis=(0, 1)).max() > 1e-3


@pytest.mark.parametrize("value", ["false", 1, None])
def test_coord_channels_that_is_not_a_bool_is_refused(value):
    # A YAML string such as "false" would otherwise switch the layer on.
    with pytest.raises(ValueError, match="Expected coord_channels true or false"):
        build_unet((16, 16, 1), 3, depth=2, base_width=4, coord_channels=value)


def test_coord_channels_model_saves_loads_prunes_and_exports_int8_with_builtins_only(tmp_path):
    from roverlite.train.modelfile import load_model_file, save_model_file

    model = build_unet((32, 32, 3), 3, depth=2, base_width=4, coord_channels=True, batch_size=1)
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    loaded = load_model_file(save_model_file(model, tmp_path / "coord.h5"))
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert tfmot.sparsity.keras.prune_low_magnitude(model)(x, training=False).shape == (1, 32, 32, 3)
    with pytest.raises(RuntimeError, match="CoordinateChannels"):
        tfmot.quantization.keras.quantize_model(model)

    converter = tf.lite.TFLiteConverter.from_keras_model(loaded)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for _ in range(4))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    out, ops = _run_litert(converter.convert(), x)
    assert out.shape == (1, 32, 32, 3)
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops)
    assert "CONCATENATION" in ops
