"""Run a U-Net at half its input resolution: a 2x2 average-pool stem and nearest-upsampled logits.

Why: on CPUs a small int8 U-Net's time is spent at full resolution, not in its MACs. Measured with
LiteRT 2.3 (XNNPACK, 1 thread, idle) on a 128x128 input on this project's 2-core Xeon
(``benchmarks/results/architecture_moves.json``): the width-16 teacher ``unet_s`` runs in 18.0 ms
float / 8.6 ms int8, its width-8 thinning ``unet_xs`` in 8.0 ms int8 (a quarter of the MACs,
nearly the same time: one 8-channel int8 3x3 conv at 128x128 takes 0.9 ms, four times the MACs
at 64x64 0.2 ms), while ``unet_s`` itself behind a 2x2 average pool, at 64x64 with its logits
upsampled, runs in 2.5 ms int8. Every weight of the model carries over
unchanged (a conv does not care about the size of its input), so the half-resolution model starts
from what the full-resolution one learnt and only needs a short fine-tune.

:func:`half_resolution` edits the functional config: an ``AveragePooling2D`` named ``stem_pool``
after the input, an ``UpSampling2D`` (nearest) named ``logits_nearest`` after the ``logits``
conv, every other layer and weight as it was. Both ops are int8 TFLite and TFLite-Micro builtins.
:func:`~roverlite.train.models.build_unet` with ``stem_stride=2, stem="pool"`` builds the same
architecture (:data:`HALF_RESOLUTION_OVERRIDES`), so a saved run's config reproduces it.

``stem="shuffle"`` does the same with a pixel-shuffle pair instead: SPACE_TO_DEPTH in front (no
pixel dropped) and DEPTH_TO_SPACE behind a ``logits`` conv with 4x the outputs. XNNPACK delegates
both in int8, where it runs neither AVERAGE_POOL_2D nor RESIZE_NEAREST_NEIGHBOR in int8; with the
shuffle decoder too, an untrained 16-24-32-40-56 U-Net at 128x128 took 0.73x the time at 1 thread
and 0.58x at 2 threads of the pool + nearest one (LiteRT 2.3, interleaved, this 2-core Xeon).
The weights are rearranged so that the shuffle model starts as the exact function of the pool one.

Example:
    >>> half = half_resolution(thin)          # doctest: +SKIP
    >>> half.output_shape == thin.output_shape  # doctest: +SKIP
    True
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np

from roverlite._tf import keras
from roverlite.config import did_you_mean
from roverlite.train.blocks import DepthToSpace, SpaceToDepth

__all__ = ["HALF_RESOLUTION_OVERRIDES", "STEMS", "half_resolution", "half_resolution_overrides"]

logger = logging.getLogger(__name__)

STEMS = ("pool", "shuffle")
_STEM = {"pool": "stem_pool", "shuffle": "stem_shuffle"}
_UP = {"pool": "logits_nearest", "shuffle": "logits_shuffle"}
_LOGITS = "logits"


def half_resolution(model: keras.Model, stem: str = "pool") -> keras.Model:
    """``model`` run at half its input resolution, its logits brought back to full size.

    Args:
        model: a roverlite U-Net (tf_keras functional, one input, one output: the ``logits`` conv)
            running at full resolution, with a fixed input size divisible by twice its
            downsampling factor.
        stem: ``"pool"``: a 2x2 average pool in front and the logits upsampled 2x (nearest);
            every weight unchanged. ``"shuffle"``: a :class:`~roverlite.train.blocks.SpaceToDepth`
            stem (each 2x2 patch becomes channels) and a ``logits`` conv to 4x the classes followed
            by :class:`~roverlite.train.blocks.DepthToSpace`; the first convolutions' kernels are
            split over the 4 patch pixels (a quarter each) and the logits' copied to each, so the
            new model computes exactly what the ``"pool"`` one does until fine-tuning teaches it
            to use every pixel, with ops XNNPACK delegates in int8.

    Returns:
        A new model with the same input and output shapes; every original layer keeps its name
        (and, for ``"pool"``, its weights).

    Raises:
        ValueError: an unknown ``stem``; a model that already has a stem (runs below full
            resolution), whose output is not a layer named ``logits``, with several inputs or
            outputs, or whose input size does not halve into a size the U-Net accepts; for
            ``"shuffle"``, an input read by anything but Conv2D layers or a ``logits`` that is
            not a Conv2D.
    """
    if stem not in STEMS:
        raise ValueError(f"Expected stem in {STEMS}. Received: stem={stem!r}." + did_you_mean(str(stem), STEMS))
    config = copy.deepcopy(model.get_config())
    source, output = _check_model(model, config)
    readers = [layer["name"] for layer in config["layers"] if _reads(layer, source)]
    if stem == "shuffle":
        _check_shuffle(model, readers)
    name = _STEM[stem]
    for layer in config["layers"]:
        _rewire(layer, source, name)
    head = _UP[stem]
    if stem == "pool":
        first = _entry(keras.layers.AveragePooling2D(2, name=name), source)
        last = _entry(keras.layers.UpSampling2D(2, interpolation="nearest", dtype="float32", name=head), output)
    else:
        first = _entry(SpaceToDepth(2, name=name), source)
        last = _entry(DepthToSpace(2, dtype="float32", name=head), output)
        logits = next(layer for layer in config["layers"] if layer["name"] == _LOGITS)
        logits["config"]["filters"] *= 4
    at = [layer["name"] for layer in config["layers"]].index(source) + 1
    config["layers"] = [*config["layers"][:at], first, *config["layers"][at:], last]
    config["output_layers"] = [[head, 0, 0]]
    half = keras.Model.from_config(config)
    for layer in model.layers:
        if layer.weights:
            half.get_layer(layer.name).set_weights(_weights(layer, stem, readers))
    logger.info("%s now runs at half resolution (%s stem, %s logits)", model.name, name, head)
    return half


def _check_model(model: keras.Model, config: dict[str, Any]) -> tuple[str, str]:
    """The model's input and output layer names, after checking it can run at half resolution."""
    if len(config["input_layers"]) != 1 or len(config["output_layers"]) != 1:
        raise ValueError(f"Expected a model with one input and one output. Received: {model.name!r} with "
                         f"{len(config['input_layers'])} inputs and {len(config['output_layers'])} outputs.")
    if any(layer["name"] == "stem" or layer["name"].startswith("stem_") for layer in config["layers"]):
        raise ValueError(f"Expected a model at full resolution. Received: {model.name!r}, which already has a stem "
                         "(it runs at half resolution).")
    output = config["output_layers"][0][0]
    if output != _LOGITS:
        raise ValueError(f"Expected the model's output to be its {_LOGITS!r} conv. Received: output layer {output!r}.")
    _check_size(model)
    return config["input_layers"][0][0], output


def _check_shuffle(model: keras.Model, readers: list[str]) -> None:
    kinds = {name: type(model.get_layer(name)).__name__ for name in [*readers, _LOGITS]}
    bad = [f"{name!r} ({kind})" for name, kind in kinds.items() if kind != "Conv2D"]
    if bad:
        raise ValueError("Expected the input to be read only by Conv2D layers and 'logits' to be a Conv2D for "
                         f"the shuffle stem (their kernels are split over the 2x2 patch). Received: {', '.join(bad)}. "
                         "Use stem='pool'.")


def _weights(layer: keras.layers.Layer, stem: str, readers: list[str]) -> list[np.ndarray]:
    """``layer``'s weights in the half-resolution model (see :func:`half_resolution`)."""
    weights = layer.get_weights()
    if stem != "shuffle" or layer.name not in (*readers, _LOGITS):
        return weights
    kernel, *bias = weights
    if layer.name in readers:
        # SpaceToDepth channel k * C + c is input channel c of patch pixel k: a quarter of the kernel
        # each sums to the kernel applied to the patch mean, which is what the average pool gives.
        return [np.concatenate([kernel / 4.0] * 4, axis=2), *bias]
    # DepthToSpace output channel o of patch pixel k is input channel k * K + o: the same logits
    # on every pixel of the patch, which is what nearest up-sampling gives.
    return [np.concatenate([kernel] * 4, axis=-1), *(np.tile(b, 4) for b in bias)]


def _reads(layer: dict[str, Any], source: str) -> bool:
    return any(inbound[0] == source for node in layer.get("inbound_nodes", []) for inbound in node)


def half_resolution_overrides(stem: str = "pool") -> dict[str, Any]:
    """``build_unet`` arguments that build what :func:`half_resolution` makes with ``stem``."""
    return {"stem_stride": 2, "stem": stem}


# build_unet arguments that build the architecture half_resolution makes with its default stem.
HALF_RESOLUTION_OVERRIDES = half_resolution_overrides("pool")


def _check_size(model: keras.Model) -> None:
    height, width = (int(d) for d in model.input_shape[1:3])
    pools = sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers)
    factor = 2 * 2**pools
    if height % factor or width % factor:
        raise ValueError(f"Expected an input size divisible by {factor} (2 for the stem x 2**{pools} for the U-Net). "
                         f"Received: {height}x{width}.")


def _rewire(layer: dict[str, Any], old: str, new: str) -> None:
    """Point every inbound reference of ``layer`` to ``old`` at ``new`` (tf_keras node format)."""
    for node in layer.get("inbound_nodes", []):
        for inbound in node:
            if inbound[0] == old:
                inbound[0] = new


def _entry(layer: keras.layers.Layer, inbound: str) -> dict[str, Any]:
    entry = keras.layers.serialize(layer)
    entry["name"] = layer.name
    entry["inbound_nodes"] = [[[inbound, 0, 0, {}]]]
    return entry
