"""Swap a trained U-Net's transposed-conv up-sampling for a 1x1 conv and nearest up-sampling.

Why: int8 ``TRANSPOSE_CONV`` is the slowest op of a small U-Net on XNNPACK. Measured with LiteRT
2.3 (1 thread, idle) on this project's 2-core Xeon, 128x128 input, ``unet_xs`` int8: 8.0 ms with
the transposed-conv decoder, 5.2 ms with the nearest one (the same model otherwise), while the two
cost the same in float (``benchmarks/results/architecture_moves.json``). :func:`build_unet` has built the nearest decoder all along (``decoder:
nearest``: ``dec{i}_up_conv`` 1x1, then ``dec{i}_up_nearest``); :func:`nearest_decoder` turns a
trained transposed-conv U-Net into it, every other layer and weight unchanged. Each 2x2 stride-2
up-convolution gives each of its four output pixels its own 1x1 weights; the 1x1 conv starts from
their mean, so the swapped model starts close to the trained one and a short fine-tune adapts it.

Example:
    >>> fast = nearest_decoder(thin)    # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from roverlite._tf import keras

__all__ = ["NEAREST_DECODER_OVERRIDES", "nearest_decoder"]

logger = logging.getLogger(__name__)

# build_unet arguments that build the architecture nearest_decoder makes.
NEAREST_DECODER_OVERRIDES = {"decoder": "nearest"}
_SUFFIX = "_tconv"


def nearest_decoder(model: keras.Model) -> keras.Model:
    """``model`` with every ``*_tconv`` up-convolution replaced by ``*_conv`` (1x1) + ``*_nearest``.

    Raises:
        ValueError: the model has no ``*_tconv`` layer (it already uses the nearest decoder), or one
            that is not a 2x2 stride-2 ``Conv2DTranspose``.
    """
    config = copy.deepcopy(model.get_config())
    tconvs = [layer for layer in model.layers if layer.name.endswith(_SUFFIX)]
    if not tconvs:
        raise ValueError(f"Expected a U-Net with transposed-conv up-sampling ('*{_SUFFIX}' layers). Received: "
                         f"{model.name!r} has none (its decoder is already nearest).")
    for layer in tconvs:
        if not isinstance(layer, keras.layers.Conv2DTranspose) or tuple(layer.strides) != (2, 2):
            raise ValueError(f"Expected {layer.name!r} to be a 2x2 stride-2 Conv2DTranspose. Received: "
                             f"{type(layer).__name__} with strides {getattr(layer, 'strides', None)}.")
    layers = []
    for entry in config["layers"]:
        if entry["name"].endswith(_SUFFIX):
            layers += _replacement(model.get_layer(entry["name"]), entry)
        else:
            layers.append(entry)
    renamed = {layer.name: _base(layer.name) + "_nearest" for layer in tconvs}
    for entry in layers:
        for node in entry.get("inbound_nodes", []):
            for inbound in node:
                inbound[0] = renamed.get(inbound[0], inbound[0])
    config["layers"] = layers
    fast = keras.Model.from_config(config)
    for layer in model.layers:
        if layer.name in renamed:
            kernel, *bias = layer.get_weights()
            # Conv2DTranspose kernels are (kh, kw, out, in); a 1x1 Conv2D kernel is (1, 1, in, out).
            fast.get_layer(_base(layer.name) + "_conv").set_weights([kernel.mean(axis=(0, 1)).T[None, None], *bias])
        elif layer.weights:
            fast.get_layer(layer.name).set_weights(layer.get_weights())
    logger.info("%s: %d transposed-conv up-samplings replaced by 1x1 conv + nearest", model.name, len(tconvs))
    return fast


def _base(name: str) -> str:
    return name[: -len(_SUFFIX)]


def _replacement(tconv: keras.layers.Conv2DTranspose, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The two config entries that replace one up-convolution (same inputs, new names)."""
    base = _base(tconv.name)
    conv = keras.layers.Conv2D(tconv.filters, 1, use_bias=tconv.use_bias, dtype=tconv.dtype, name=f"{base}_conv")
    up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{base}_nearest")
    first = {**keras.layers.serialize(conv), "name": conv.name, "inbound_nodes": entry["inbound_nodes"]}
    second = {**keras.layers.serialize(up), "name": up.name, "inbound_nodes": [[[conv.name, 0, 0, {}]]]}
    return [first, second]

