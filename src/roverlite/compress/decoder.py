"""Swap a trained U-Net's transposed-conv up-sampling for a 1x1 conv and nearest or pixel-shuffle up-sampling.

Why: int8 ``TRANSPOSE_CONV`` is the slowest op of a small U-Net on XNNPACK. Measured with LiteRT
2.3 (1 thread, idle) on this project's 2-core Xeon, 128x128 input, ``unet_xs`` int8: 8.0 ms with
the transposed-conv decoder, 5.2 ms with the nearest one (the same model otherwise), while the two
cost the same in float (``benchmarks/results/architecture_moves.json``). :func:`build_unet` has built the nearest decoder all along (``decoder:
nearest``: ``dec{i}_up_conv`` 1x1, then ``dec{i}_up_nearest``); :func:`nearest_decoder` turns a
trained transposed-conv U-Net into it, every other layer and weight unchanged. Each 2x2 stride-2
up-convolution gives each of its four output pixels its own 1x1 weights; the 1x1 conv starts from
their mean, so the swapped model starts close to the trained one and a short fine-tune adapts it.

:func:`shuffle_decoder` is the exact rewrite: the 1x1 conv gets 4x the filters, one set per output
pixel of the patch, and DEPTH_TO_SPACE lays them out (``decoder: shuffle``). Unlike
RESIZE_NEAREST_NEIGHBOR, XNNPACK delegates DEPTH_TO_SPACE in int8, so the graph stays in one
delegate partition.

Example:
    >>> fast = nearest_decoder(thin)    # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np

from roverlite._tf import keras
from roverlite.config import did_you_mean
from roverlite.train.blocks import DepthToSpace

__all__ = ["NEAREST_DECODER_OVERRIDES", "SHUFFLE_DECODER_OVERRIDES", "SWAPS", "nearest_decoder", "shuffle_decoder",
           "swap_decoder"]

logger = logging.getLogger(__name__)

# The decoders a transposed-conv U-Net can be swapped to; build_unet(decoder=<swap>) builds the result.
SWAPS = ("nearest", "shuffle")
NEAREST_DECODER_OVERRIDES = {"decoder": "nearest"}
SHUFFLE_DECODER_OVERRIDES = {"decoder": "shuffle"}
_SUFFIX = "_tconv"


def nearest_decoder(model: keras.Model) -> keras.Model:
    """``model`` with every ``*_tconv`` up-convolution replaced by ``*_conv`` (1x1) + ``*_nearest``.

    Raises:
        ValueError: the model has no ``*_tconv`` layer (it already uses another decoder), or one
            that is not a 2x2 stride-2 ``Conv2DTranspose``.
    """
    return swap_decoder(model, "nearest")


def shuffle_decoder(model: keras.Model) -> keras.Model:
    """``model`` with every ``*_tconv`` replaced by ``*_conv`` (1x1, 4x the filters) + ``*_shuffle``.

    Exact: a 2x2 stride-2 transposed conv gives each of the 4 pixels of an output patch its own
    1x1 weights, which is a 1x1 conv to 4x the channels followed by depth-to-space; the swapped
    model computes the same function (to float rounding) with int8 ops XNNPACK delegates.

    Raises:
        ValueError: as :func:`nearest_decoder`.
    """
    return swap_decoder(model, "shuffle")


def swap_decoder(model: keras.Model, mode: str) -> keras.Model:
    """:func:`nearest_decoder` or :func:`shuffle_decoder` by name (``mode`` in :data:`SWAPS`).

    Raises:
        ValueError: an unknown ``mode``, or as :func:`nearest_decoder`.
    """
    if mode not in SWAPS:
        raise ValueError(f"Expected a decoder in {SWAPS}. Received: {mode!r}." + did_you_mean(str(mode), SWAPS))
    config = copy.deepcopy(model.get_config())
    tconvs = [layer for layer in model.layers if layer.name.endswith(_SUFFIX)]
    if not tconvs:
        raise ValueError(f"Expected a U-Net with transposed-conv up-sampling ('*{_SUFFIX}' layers). Received: "
                         f"{model.name!r} has none (its decoder is already nearest or shuffle).")
    for layer in tconvs:
        if not isinstance(layer, keras.layers.Conv2DTranspose) or tuple(layer.strides) != (2, 2) \
                or tuple(layer.kernel_size) != (2, 2):
            raise ValueError(f"Expected {layer.name!r} to be a 2x2 stride-2 Conv2DTranspose. Received: "
                             f"{type(layer).__name__} with kernel {getattr(layer, 'kernel_size', None)} and "
                             f"strides {getattr(layer, 'strides', None)}.")
    layers = []
    for entry in config["layers"]:
        if entry["name"].endswith(_SUFFIX):
            layers += _replacement(model.get_layer(entry["name"]), entry, mode)
        else:
            layers.append(entry)
    renamed = {layer.name: f"{_base(layer.name)}_{mode}" for layer in tconvs}
    for entry in layers:
        for node in entry.get("inbound_nodes", []):
            for inbound in node:
                inbound[0] = renamed.get(inbound[0], inbound[0])
    config["layers"] = layers
    swapped = keras.Model.from_config(config)
    for layer in model.layers:
        if layer.name in renamed:
            swapped.get_layer(_base(layer.name) + "_conv").set_weights(_conv_weights(layer, mode))
        elif layer.weights:
            swapped.get_layer(layer.name).set_weights(layer.get_weights())
    logger.info("%s: %d transposed-conv up-samplings replaced by 1x1 conv + %s", model.name, len(tconvs), mode)
    return swapped


def _conv_weights(tconv: keras.layers.Conv2DTranspose, mode: str) -> list[np.ndarray]:
    """The 1x1 conv weights that replace ``tconv`` (kernel (kh, kw, out, in), as tf_keras stores it)."""
    kernel, *bias = tconv.get_weights()
    if mode == "nearest":
        # Each output pixel of a patch had its own weights: the one 1x1 conv starts from their mean.
        return [kernel.mean(axis=(0, 1)).T[None, None], *bias]
    # Depth-to-space reads output channel o of patch pixel (i, j) from channel (i * 2 + j) * out + o.
    out, cin = kernel.shape[2], kernel.shape[3]
    stacked = np.transpose(kernel, (3, 0, 1, 2)).reshape(cin, 4 * out)
    return [stacked[None, None], *(np.tile(b, 4) for b in bias)]


def _base(name: str) -> str:
    return name[: -len(_SUFFIX)]


def _replacement(tconv: keras.layers.Conv2DTranspose, entry: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    """The two config entries that replace one up-convolution (same inputs, new names)."""
    base = _base(tconv.name)
    filters = tconv.filters * (4 if mode == "shuffle" else 1)
    conv = keras.layers.Conv2D(filters, 1, use_bias=tconv.use_bias, dtype=tconv.dtype, name=f"{base}_conv")
    if mode == "nearest":
        up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{base}_nearest")
    else:
        up = DepthToSpace(2, dtype=tconv.dtype, name=f"{base}_shuffle")
    first = {**keras.layers.serialize(conv), "name": conv.name, "inbound_nodes": entry["inbound_nodes"]}
    second = {**keras.layers.serialize(up), "name": up.name, "inbound_nodes": [[[conv.name, 0, 0, {}]]]}
    return [first, second]

