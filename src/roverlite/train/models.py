"""U-Net model registry and factory (timm-style).

Each preset is a tiny registered function that returns the keyword arguments of
:func:`build_unet`; the registry maps names to those functions and nothing else, so a preset's
recipe can be listed, overridden and saved beside an artifact without building the model.

Example:
    >>> model = create_model("unet_s", input_shape=(128, 128, 1), num_classes=4)
    >>> model.output_shape
    (None, 128, 128, 4)
    >>> list_models("unet_x*")
    ['unet_xs', 'unet_xxs']
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from roverlite._tf import keras
from roverlite.config import did_you_mean
from roverlite.train import blocks

logger = logging.getLogger(__name__)

__all__ = ["STUDENT_LADDER", "build_unet", "create_model", "list_models", "model_args", "register_model"]

PresetFn = Callable[[], dict[str, Any]]

_MODELS: dict[str, PresetFn] = {}

STEMS = ("conv", "pool", "shuffle")  # build_unet(stem=...), used with stem_stride=2

# The distillation students, largest first: the latency-budget search
# (roverlite.compress.search) takes the first one fast enough. unet_micro is left out: it is the
# MCU model (a different decoder and depth), not a rung of this size ladder.
STUDENT_LADDER: tuple[str, ...] = ("unet_s", "unet_xs", "unet_xxs", "unet_nano")

# Widths double per level up to 16x the base: deeper levels work at 1/256 of the pixels or
# fewer, and further doubling would add parameters much faster than accuracy.
_MAX_MULTIPLIER = 16


# === Builder ===


def build_unet(
    input_shape: Sequence[int] = (128, 128, 1),
    num_classes: int = 4,
    depth: int = 4,
    base_width: int = 16,
    width_multipliers: Sequence[float] | None = None,
    norm: str = "batch",
    activation: str = "relu",
    decoder: str = "transpose",
    residual: bool = False,
    squeeze_excite: bool = False,
    attention_gates: bool = False,
    aspp: bool = False,
    aspp_rates: Sequence[int] = (2, 4),
    convs_per_block: int = 2,
    dropout: float = 0.0,
    stem_stride: int = 1,
    stem: str = "conv",
    coord_channels: bool = False,
    batch_size: int | None = None,
    name: str = "unet",
) -> keras.Model:
    """Build a U-Net that maps an image to per-pixel class logits.

    Args:
        input_shape: ``(height, width, channels)``; height and width divisible by ``2**depth``.
        num_classes: output channels (logits, no softmax).
        depth: number of 2x downsamplings (encoder levels below the bottleneck).
        base_width: channels at full resolution.
        width_multipliers: ``depth + 1`` multipliers of ``base_width``, one per level, the
            bottleneck last. Default: doubling per level, capped at 16x.
        norm: ``"batch"`` (folded into the conv at export, so free on the device) or ``"none"``.
        activation: ``"relu"`` or ``"relu6"`` (both fuse into CONV_2D and suit int8 and
            TFLite-Micro) or ``"swish"`` (float only: LOGISTIC + MUL in int8, not for micro).
        decoder: ``"transpose"`` (2x2 stride-2 Conv2DTranspose), ``"nearest"`` (1x1 conv then
            nearest UpSampling2D) or ``"shuffle"`` (1x1 conv to 4x the channels then
            DepthToSpace: the transposed conv's function with int8 ops XNNPACK delegates).
            All three export to int8 TFLite and TFLite-Micro.
        residual: use ResNet basic blocks (Add + 1x1 projection where channels change).
        squeeze_excite: add SE channel gating to every block (uses Multiply: no TFMOT QAT).
        attention_gates: gate every skip connection (uses Multiply: no TFMOT QAT).
        aspp: add atrous spatial pyramid pooling after the bottleneck block.
        aspp_rates: dilation rates of the ASPP 3x3 branches.
        convs_per_block: 3x3 convolutions per encoder and decoder block.
        dropout: SpatialDropout2D rate after the bottleneck (0 = none).
        stem_stride: 1, or 2 for a stride-2 3x3 stem conv: the whole U-Net then runs at half
            the input resolution and the logits are upsampled 2x at the end (a 2x2 stride-2
            Conv2DTranspose for the transpose decoder, nearest UpSampling2D for the nearest one).
            No layer works at full resolution, which is where a small model spends most of
            its latency (memory traffic of thin, large tensors, not MACs).
        stem: with ``stem_stride=2``, ``"conv"`` (the stride-2 3x3 conv above) or ``"pool"``: a
            2x2 average pool, the U-Net unchanged behind it, and its 1x1 ``logits`` upsampled 2x
            (nearest) whatever the decoder. That is a full-resolution U-Net run at half
            resolution, what :func:`roverlite.compress.resolution.half_resolution` makes of a
            trained one (every weight carries over). ``"shuffle"``: a SpaceToDepth stem (each 2x2
            patch becomes 4 channels, no pixel dropped) and a ``logits`` conv to 4x the classes
            followed by DepthToSpace (``logits_shuffle``): half resolution with every op
            delegated to XNNPACK in int8.
        coord_channels: append each pixel's row and column (in [-1, 1]) to the input channels
            (CoordConv, :class:`blocks.CoordinateChannels`), for scenes whose layout is fixed to
            the camera. TFMOT prunes it but cannot quantize-aware-train it (PTQ int8 works).
        batch_size: fixed batch size of the input (``None`` = any; 1 for TFLite-Micro export).
        name: model name.

    Returns:
        A tf_keras functional model with output ``(batch, height, width, num_classes)`` in
        float32, also under a mixed-precision policy.

    Raises:
        ValueError: for an invalid argument or an input size not divisible by
            ``stem_stride * 2**depth``.
    """
    widths = _level_widths(depth, base_width, width_multipliers)
    _check_args(input_shape, num_classes, depth, norm, activation, decoder, convs_per_block, dropout, aspp_rates, stem_stride)
    if stem not in STEMS:
        raise ValueError(f"Expected stem in {STEMS}. Received: stem={stem!r}." + did_you_mean(stem, STEMS))
    block = {"convs": int(convs_per_block), "norm": norm, "act": activation, "residual": residual, "se": squeeze_excite}

    inputs = keras.Input(shape=tuple(int(s) for s in input_shape), batch_size=batch_size, name="image")
    x, skips = inputs, []
    if not isinstance(coord_channels, bool):
        raise ValueError(f"Expected coord_channels true or false. Received: coord_channels={coord_channels!r}.")
    if coord_channels:
        x = blocks.CoordinateChannels(name="coords")(x)
    if stem_stride == 2 and stem == "pool":
        x = keras.layers.AveragePooling2D(2, name="stem_pool")(x)
    elif stem_stride == 2 and stem == "shuffle":
        x = blocks.SpaceToDepth(2, name="stem_shuffle")(x)
    elif stem_stride == 2:
        x = blocks.conv_norm_act(x, widths[0], "stem", strides=2, norm=norm, act=activation)
    for level in range(depth):
        x = blocks.conv_block(x, widths[level], f"enc{level}", **block)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = blocks.conv_block(x, widths[depth], "bottleneck", **block)
    if aspp:
        x = blocks.aspp(x, widths[depth], "aspp", rates=aspp_rates, norm=norm, act=activation)
    if dropout > 0:
        x = keras.layers.SpatialDropout2D(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        x = blocks.upsample(x, widths[level], f"dec{level}_up", decoder=decoder)
        skip = skips[level]
        if attention_gates:
            skip = blocks.attention_gate(skip, x, f"dec{level}_gate")
        x = keras.layers.Concatenate(name=f"dec{level}_concat")([x, skip])
        x = blocks.conv_block(x, widths[level], f"dec{level}", **block)
    # float32 so logits (and the loss computed from them) stay float32 under mixed precision.
    # The output conv is always named "logits": pruning skips it by that name.
    if stem_stride == 1:
        outputs = keras.layers.Conv2D(num_classes, 1, dtype="float32", name="logits")(x)
    elif decoder == "transpose" and stem == "conv":
        outputs = keras.layers.Conv2DTranspose(num_classes, 2, strides=2, dtype="float32", name="logits")(x)
    elif stem == "shuffle":
        x = keras.layers.Conv2D(4 * num_classes, 1, dtype="float32", name="logits")(x)
        outputs = blocks.DepthToSpace(2, dtype="float32", name="logits_shuffle")(x)
    else:
        x = keras.layers.Conv2D(num_classes, 1, dtype="float32", name="logits")(x)
        outputs = keras.layers.UpSampling2D(2, interpolation="nearest", dtype="float32", name="logits_nearest")(x)
    return keras.Model(inputs, outputs, name=name)


def _level_widths(depth: int, base_width: int, multipliers: Sequence[float] | None) -> list[int]:
    if int(depth) < 1:
        raise ValueError(f"Expected depth >= 1. Received: depth={depth}.")
    if int(base_width) < 1:
        raise ValueError(f"Expected base_width >= 1. Received: base_width={base_width}.")
    if multipliers is None:
        multipliers = [min(2**level, _MAX_MULTIPLIER) for level in range(depth + 1)]
    if len(multipliers) != depth + 1 or any(m <= 0 for m in multipliers):
        raise ValueError(
            f"Expected {depth + 1} positive width_multipliers (one per level plus the bottleneck) "
            f"for depth={depth}. Received: width_multipliers={list(multipliers)}."
        )
    return [max(1, round(base_width * m)) for m in multipliers]


def _check_args(input_shape, num_classes, depth, norm, activation, decoder, convs, dropout, rates, stem_stride) -> None:
    for value, options, key in (
        (norm, blocks.NORMS, "norm"),
        (activation, blocks.ACTIVATIONS, "activation"),
        (decoder, blocks.DECODERS, "decoder"),
    ):
        if value not in options:
            raise ValueError(f"Expected {key} in {options}. Received: {key}={value!r}." + did_you_mean(value, options))
    if len(input_shape) != 3:
        raise ValueError(f"Expected input_shape=(height, width, channels). Received: input_shape={input_shape}.")
    if isinstance(stem_stride, bool) or stem_stride not in (1, 2):
        raise ValueError(f"Expected stem_stride 1 or 2. Received: stem_stride={stem_stride!r}.")
    shape = tuple(int(s) for s in input_shape)
    factor = 2**depth * stem_stride
    what = f"stem_stride * 2**depth={factor}" if stem_stride > 1 else f"2**depth={factor}"
    if shape[0] % factor or shape[1] % factor or min(shape) < 1:
        raise ValueError(f"Expected height and width divisible by {what}. Received: input_shape={shape}.")
    if int(num_classes) < 1:
        raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes}.")
    if int(convs) < 1:
        raise ValueError(f"Expected convs_per_block >= 1. Received: convs_per_block={convs}.")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"Expected dropout in [0, 1). Received: dropout={dropout}.")
    if any(int(r) < 1 for r in rates):
        raise ValueError(f"Expected aspp_rates >= 1. Received: aspp_rates={list(rates)}.")


# Keys a preset or an override may set: build_unet's arguments minus those create_model owns.
_FACTORY_ARGS = ("input_shape", "num_classes", "batch_size", "name")
_BUILD_KEYS = tuple(k for k in inspect.signature(build_unet).parameters if k not in _FACTORY_ARGS)


# === Registry ===


def register_model(fn: PresetFn) -> PresetFn:
    """Register a preset: a function named after the model that returns build_unet kwargs."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"Expected a new model name. Received: {fn.__name__!r}, already registered.")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered model names, optionally filtered by a shell-style ``pattern``."""
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names


def model_args(name: str, **overrides: Any) -> dict[str, Any]:
    """The build_unet keyword arguments of preset ``name`` with ``overrides`` applied.

    Raises:
        ValueError: for an unknown model name or override key (with the closest valid names).
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.4)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise ValueError(f"Unknown model. Expected one of {list_models()}. Received: name={name!r}.{hint}")
    for key, value in overrides.items():
        if key not in _BUILD_KEYS:
            raise ValueError(
                f"Unknown override for model {name!r}. Expected one of {list(_BUILD_KEYS)}. "
                f"Received: {key}={value!r}." + did_you_mean(key, _BUILD_KEYS)
            )
    return {**_MODELS[name](), **overrides}


def create_model(
    name: str,
    input_shape: Sequence[int] = (128, 128, 1),
    num_classes: int = 4,
    batch_size: int | None = None,
    **overrides: Any,
) -> keras.Model:
    """Build registered model ``name``, overriding any of its preset arguments.

    Args:
        name: a name from :func:`list_models`.
        input_shape: ``(height, width, channels)``.
        num_classes: number of output logits per pixel.
        batch_size: fixed input batch size (``None`` = any).
        **overrides: any :func:`build_unet` argument, e.g. ``base_width=8``.

    Returns:
        A tf_keras functional model named ``name`` that outputs float32 logits.

    Raises:
        ValueError: for an unknown name or override, or invalid arguments.

    Example:
        >>> model = create_model("unet_xs", input_shape=(64, 64, 1), num_classes=4, base_width=4)
        >>> model.output_shape
        (None, 64, 64, 4)
    """
    kwargs = model_args(name, **overrides)
    logger.debug("Building %s with %s", name, kwargs)
    return build_unet(input_shape, num_classes, batch_size=batch_size, name=name, **kwargs)


# === Presets ===
# Costs at 128x128x1 -> 4 classes (count_macs; the tests check the ladder and the NOTES rows):
#   unet_teacher 4.57 M params 1.789 GMAC | unet_s 1.95 M 0.754 | unet_xs 0.49 M 0.189
#   unet_xxs 0.061 M 0.027 | unet_nano 0.061 M 0.022 | unet_micro 0.029 M 0.036 (int8 TFLite-Micro
#   arena ~264 KiB)


@register_model
def unet_teacher() -> dict[str, Any]:
    """Teacher: residual width-24 U-Net (4.57 M params, 1.79 GMAC at 128x128x1).

    Sized for two CPU cores: 2.4x the MACs of ``unet_s`` (room to distil from) while ~13 AI4Mars
    epochs still fit in 90 minutes at the NOTES' training rate; the plain width-32 U-Net (3 GMAC)
    would fit ~8. Residual blocks add 6 % MACs and optimise better in short schedules. Left out on
    purpose: ASPP (TF's CPU dilated convolutions slowed training by 1.4-2x for +12 % MACs, and at
    128x128 a depth-4 U-Net already sees the whole image) and SE / attention gates (Multiply is
    not in TFMOT's 8-bit registry, so ``quantize_model`` would refuse the teacher).
    """
    return {"depth": 4, "base_width": 24, "residual": True, "dropout": 0.1}


@register_model
def unet_s() -> dict[str, Any]:
    """Student S: the plain width-16 U-Net of the NOTES latency table (1.95 M params, 0.754 GMAC)."""
    return {"depth": 4, "base_width": 16}


@register_model
def unet_xs() -> dict[str, Any]:
    """Student XS: plain width-8 U-Net (about a quarter of S's MACs)."""
    return {"depth": 4, "base_width": 8}


@register_model
def unet_xxs() -> dict[str, Any]:
    """Student XXS: width 4 with one conv per block; MAC-tiny, per-op overhead dominates."""
    return {"depth": 4, "base_width": 4, "convs_per_block": 1}


@register_model
def unet_nano() -> dict[str, Any]:
    """Student nano: a stride-2 stem, then a depth-3 width-8 U-Net at half resolution.

    For latency budgets the full-resolution students cannot meet: on a CPU a thin U-Net's time
    goes to its full-resolution layers (large, thin tensors: memory traffic and per-op overhead),
    not to its MACs. Here nothing but the stem's input and the 2x2 transposed-conv logits is at
    full resolution. On AI4Mars (128x128x1, distilled from unet_s at T = 1, int8) it scored 0.608
    mIoU against 0.576 for ``unet_xxs`` with two convs per block, at about a third of its int8
    latency (benchmarks/results/compress_ai4mars.json, bench_ladder_unet_s.json).
    """
    return {"depth": 3, "base_width": 8, "convs_per_block": 1, "stem_stride": 2}


@register_model
def unet_micro() -> dict[str, Any]:
    """TFLite-Micro student: int8 ops CONV_2D, MAX_POOL_2D, CONCATENATION, RESIZE_NEAREST_NEIGHBOR.

    Depth 3 and width 4 keep the tensor arena small at 128x128, where the full-resolution skip and
    concatenation dominate it. The nearest decoder, not TRANSPOSE_CONV: TFLite-Micro's int8
    transpose convolution takes an int32 scratch buffer the size of its output, which raised the
    arena from about 264 KiB to 424 KiB at 128x128. BatchNorm folds and ReLU fuses into CONV_2D.
    """
    return {"depth": 3, "base_width": 4, "decoder": "nearest", "activation": "relu"}


@register_model
def unet_tiny() -> dict[str, Any]:
    """Unit-test model: depth 2, width 4, transpose decoder."""
    return {"depth": 2, "base_width": 4}


@register_model
def unet_tiny_nearest() -> dict[str, Any]:
    """Unit-test model: depth 2, width 4, nearest-neighbour decoder."""
    return {"depth": 2, "base_width": 4, "decoder": "nearest"}
