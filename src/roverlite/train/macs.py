"""Per-layer multiply-accumulate (MAC) and parameter counts for tf_keras models.

Convention, as commonly reported for CNNs: MACs are the multiply-accumulates of convolutions and
dense layers only (1 MAC = one multiply plus one add; FLOPs ~ 2 x MACs).

* Conv2D: ``H_out * W_out * C_out * k_h * k_w * C_in / groups``. Dilation changes the receptive
  field, not the count.
* DepthwiseConv2D: ``H_out * W_out * C_in * multiplier * k_h * k_w``.
* SeparableConv2D: its depthwise plus its pointwise part.
* Conv2DTranspose: ``H_in * W_in * C_in * C_out * k_h * k_w`` (every input pixel scatters the whole
  kernel; for the 2x2 stride-2 up-convolution that equals ``H_out * W_out * C_in * C_out``).
* Dense: ``inputs * units`` per position.
* BatchNormalization: 0 (the converters fold it into the preceding convolution).
* Bias adds, activations, pooling, upsampling, Add, Multiply, Concatenate: 0. They cost time on
  small models (per-op overhead, memory traffic) but are not MACs.

Wrapped layers (TFMOT ``PruneLowMagnitude`` / ``QuantizeWrapper``) are counted as the layer they wrap.
Parameters are ``layer.count_params()``: trainable and non-trainable (BatchNorm moving statistics,
TFMOT masks and quantizer ranges) alike, as ``model.count_params()`` reports them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from roverlite._tf import keras

__all__ = ["LayerCost", "ModelCost", "count_macs", "format_cost_table"]


@dataclass(frozen=True)
class LayerCost:
    """One row of the cost table."""

    name: str
    type: str
    output_shape: tuple[Any, ...]
    params: int
    macs: int


@dataclass(frozen=True)
class ModelCost:
    """Per-layer rows in graph order and totals."""

    model_name: str
    layers: tuple[LayerCost, ...]
    params: int
    macs: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (shapes as lists, ``None`` for the batch dimension)."""
        out = asdict(self)
        out["layers"] = [{**row, "output_shape": list(row["output_shape"])} for row in out["layers"]]
        return out


def count_macs(model: keras.Model) -> ModelCost:
    """Count parameters and MACs per layer of a built tf_keras model (batch size 1).

    Raises:
        ValueError: when a counted layer's spatial output size is unknown (build the model with a
            fixed input height and width).
    """
    rows = []
    for layer in model.layers:
        inner = _unwrap(layer)
        if isinstance(inner, keras.layers.InputLayer):
            continue
        out_shape = _single_shape(layer.output_shape)
        rows.append(
            LayerCost(
                name=layer.name,
                type=type(inner).__name__,
                output_shape=tuple(out_shape),
                params=int(layer.count_params()),
                macs=_layer_macs(inner, layer),
            )
        )
    return ModelCost(
        model_name=model.name,
        layers=tuple(rows),
        params=int(model.count_params()),
        macs=sum(r.macs for r in rows),
    )


def _unwrap(layer):
    # TFMOT wrappers subclass keras.layers.Wrapper and keep the real layer in `.layer`.
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def _single_shape(shape):
    return shape[0] if isinstance(shape, list) else shape


def _positions(shape, layer) -> int:
    """Product of all non-batch, non-channel dimensions."""
    dims = shape[1:-1]
    if any(d is None for d in dims):
        raise ValueError(
            f"Expected a fixed spatial size to count MACs. Received: layer {layer.name!r} with "
            f"output shape {tuple(shape)}."
        )
    return math.prod(dims)


def _layer_macs(inner, outer) -> int:
    layers = keras.layers
    if isinstance(inner, layers.Conv2DTranspose):
        kh, kw = inner.kernel_size
        c_in = _single_shape(outer.input_shape)[-1]
        return _positions(_single_shape(outer.input_shape), outer) * kh * kw * c_in * inner.filters
    if isinstance(inner, layers.SeparableConv2D):
        kh, kw = inner.kernel_size
        c_in = _single_shape(outer.input_shape)[-1]
        pos = _positions(_single_shape(outer.output_shape), outer)
        mid = c_in * inner.depth_multiplier
        return pos * mid * kh * kw + pos * mid * inner.filters
    if isinstance(inner, layers.DepthwiseConv2D):
        kh, kw = inner.kernel_size
        c_in = _single_shape(outer.input_shape)[-1]
        return _positions(_single_shape(outer.output_shape), outer) * c_in * inner.depth_multiplier * kh * kw
    if isinstance(inner, layers.Conv2D):
        kh, kw = inner.kernel_size
        c_in = _single_shape(outer.input_shape)[-1]
        groups = getattr(inner, "groups", 1) or 1
        return _positions(_single_shape(outer.output_shape), outer) * inner.filters * kh * kw * (c_in // groups)
    if isinstance(inner, layers.Dense):
        in_shape = _single_shape(outer.input_shape)
        positions = math.prod(d for d in in_shape[1:-1]) if len(in_shape) > 2 else 1
        return positions * in_shape[-1] * inner.units
    return 0


def format_cost_table(cost: ModelCost, top: int | None = None) -> str:
    """A fixed-width table of the layers (all, or the ``top`` by MACs) and the totals.

    Example:
        >>> print(format_cost_table(count_macs(model), top=5))  # doctest: +SKIP
    """
    rows = list(cost.layers)
    if top is not None:
        rows = sorted(rows, key=lambda r: r.macs, reverse=True)[: max(0, int(top))]
    header = f"{'layer':<28} {'type':<20} {'output shape':<20} {'params':>10} {'MMAC':>9} {'%MAC':>6}"
    lines = [f"{cost.model_name}: {cost.mparams:.3f} M params, {cost.gmacs:.4f} GMAC", header, "-" * len(header)]
    for r in rows:
        shape = "x".join("?" if d is None else str(d) for d in r.output_shape[1:])
        share = 100.0 * r.macs / cost.macs if cost.macs else 0.0
        lines.append(
            f"{r.name[:28]:<28} {r.type[:20]:<20} {shape:<20} {r.params:>10,} {r.macs / 1e6:>9.2f} {share:>5.1f}%"
        )
    if top is not None and len(rows) < len(cost.layers):
        lines.append(f"... {len(cost.layers) - len(rows)} more layers")
    lines.append("-" * len(header))
    lines.append(f"{'total':<70} {cost.params:>10,} {cost.macs / 1e6:>9.2f} {100.0 if cost.macs else 0.0:>5.1f}%")
    return "\n".join(lines)
