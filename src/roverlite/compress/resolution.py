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

Example:
    >>> half = half_resolution(thin)          # doctest: +SKIP
    >>> half.output_shape == thin.output_shape  # doctest: +SKIP
    True
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from roverlite._tf import keras

__all__ = ["HALF_RESOLUTION_OVERRIDES", "half_resolution"]

logger = logging.getLogger(__name__)

# build_unet arguments that build the architecture half_resolution makes.
HALF_RESOLUTION_OVERRIDES = {"stem_stride": 2, "stem": "pool"}
_STEM, _UP, _LOGITS = "stem_pool", "logits_nearest", "logits"


def half_resolution(model: keras.Model) -> keras.Model:
    """``model`` behind a 2x2 average pool, with its ``logits`` upsampled 2x (nearest); same weights.

    Args:
        model: a roverlite U-Net (tf_keras functional, one input, one output: the ``logits`` conv)
            running at full resolution, with a fixed input size divisible by twice its
            downsampling factor.

    Returns:
        A new model with the same input and output shapes; every original layer keeps its name and
        weights.

    Raises:
        ValueError: a model that already has a stem (runs below full resolution), whose output is
            not a layer named ``logits``, with several inputs or outputs, or whose input size does
            not halve into a size the U-Net accepts.
    """
    config = copy.deepcopy(model.get_config())
    names = [layer["name"] for layer in config["layers"]]
    if len(config["input_layers"]) != 1 or len(config["output_layers"]) != 1:
        raise ValueError(f"Expected a model with one input and one output. Received: {model.name!r} with "
                         f"{len(config['input_layers'])} inputs and {len(config['output_layers'])} outputs.")
    if any(name == "stem" or name.startswith("stem_") for name in names):
        raise ValueError(f"Expected a model at full resolution. Received: {model.name!r}, which already has a stem "
                         "(it runs at half resolution).")
    output = config["output_layers"][0][0]
    if output != _LOGITS:
        raise ValueError(f"Expected the model's output to be its {_LOGITS!r} conv. Received: output layer {output!r}.")
    _check_size(model)
    source = config["input_layers"][0][0]
    for layer in config["layers"]:
        _rewire(layer, source, _STEM)
    stem = _entry(keras.layers.AveragePooling2D(2, name=_STEM), source)
    up = _entry(keras.layers.UpSampling2D(2, interpolation="nearest", dtype="float32", name=_UP), output)
    at = names.index(source) + 1
    config["layers"] = [*config["layers"][:at], stem, *config["layers"][at:], up]
    config["output_layers"] = [[_UP, 0, 0]]
    half = keras.Model.from_config(config)
    for layer in model.layers:
        if layer.weights:
            half.get_layer(layer.name).set_weights(layer.get_weights())
    logger.info("%s now runs at half resolution (%s stem, nearest-upsampled logits)", model.name, _STEM)
    return half


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
