"""Structured channel pruning: remove whole filters, giving a thinner dense model with fewer MACs.

Unlike magnitude pruning (:mod:`roverlite.compress.prune`), removing filters shrinks every tensor
and weight it touches, so the thin model is smaller and faster on every runtime, with no sparse
kernels needed. The price is that channels are coupled across layers, and this module keeps the
couplings consistent:

* a conv's kept filters fix the input channels of every consumer (the next conv, its BatchNorm,
  and the Concatenate that feeds a decoder block, where the kept channels of both inputs are
  offset and joined);
* tensors added or multiplied together (residual shortcuts, squeeze-excitation gates, attention
  gates) share one set of kept channels, ranked by the sum of their convs' normalised scores;
* the network's input and output channels (the ``logits`` conv) never change.

Filters are kept per U-Net level: level ``i`` is the encoder block ``enc{i}``, its mirrored
decoder block ``dec{i}`` with the up-convolution into it, and level ``depth`` the bottleneck (and
ASPP). Every channel group at a level keeps the same fraction, each ranked by its own filters, so
the thin model is the one :func:`~roverlite.train.models.build_unet` builds with smaller per-level
widths (:meth:`StructuredReport.unet_overrides` gives them for ``create_model``). Groups that
belong to no level are left whole.

The thin model is rebuilt from the original's config with edited filter counts (same layer names
and order), and the kept slices of kernels, biases and BatchNorm parameters and statistics are
copied into it. Fine-tune it afterwards: pruning filters changes the function.

Example:
    >>> thin, report = structured_prune(model, keep_ratio=0.5)          # doctest: +SKIP
    >>> report.macs_before / report.macs_after                           # doctest: +SKIP
    3.9
    >>> create_model("unet_s", **report.unet_overrides())                # same architecture
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from roverlite._tf import keras
from roverlite.config import did_you_mean
from roverlite.train.macs import count_macs

__all__ = ["CRITERIA", "StructuredReport", "kept_count", "level_scores", "level_widths", "structured_prune", "thinned_config"]

logger = logging.getLogger(__name__)

CRITERIA = ("l1", "bn")

_CONVS = ("Conv2D", "Conv2DTranspose")
# Layers whose output has the channels of their (single) input.
_PASS_THROUGH = (
    "BatchNormalization", "ReLU", "Activation", "MaxPooling2D", "AveragePooling2D", "UpSampling2D",
    "Dropout", "SpatialDropout2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ZeroPadding2D", "Cropping2D",
)
_MERGES = ("Add", "Multiply", "Subtract", "Maximum", "Minimum", "Average")
# roverlite's CoordConv layer: its input's channels, then two fixed coordinate channels.
_COORDS = "CoordinateChannels"
# roverlite's pixel-shuffle pair: they move channels to space and back, so the channels on either
# side are kept whole (the up-sampling conv before a DepthToSpace is not pruned).
_SHUFFLES = {"SpaceToDepth": 4, "DepthToSpace": 0.25}
_SUPPORTED = ("InputLayer", "Concatenate", _COORDS, *_SHUFFLES, *_CONVS, *_PASS_THROUGH, *_MERGES)

_LEVEL_NAME = re.compile(r"^(?:enc|dec)(\d+)_")
_DEEPEST_NAME = re.compile(r"^(?:bottleneck|aspp)(?:_|$)")


@dataclass(frozen=True)
class StructuredReport:
    """What :func:`structured_prune` removed and what it saved.

    Attributes:
        criterion: ``"l1"`` or ``"bn"``.
        keep_ratios: fraction of filters kept per level (``depth + 1`` values, bottleneck last).
        widths_before, widths_after: filters per level (of the level's block convolutions).
        filters: ``{conv layer: (filters before, filters after)}`` for every conv.
        params_before, params_after, macs_before, macs_after: from ``count_macs``.
    """

    criterion: str
    keep_ratios: tuple[float, ...]
    widths_before: tuple[int, ...]
    widths_after: tuple[int, ...]
    filters: Mapping[str, tuple[int, int]] = field(repr=False)
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    @property
    def mac_reduction(self) -> float:
        """``macs_before / macs_after``."""
        return self.macs_before / max(1, self.macs_after)

    def unet_overrides(self) -> dict[str, Any]:
        """``base_width`` and ``width_multipliers`` that make ``create_model`` build the thin model.

        Exact for plain and residual U-Nets (every registered preset); the inner widths of
        squeeze-excitation and attention gates are pruned by the same ratio here, which may round
        differently from what ``build_unet`` derives from the thinner block.
        """
        base = self.widths_after[0]
        return {"base_width": base, "width_multipliers": [w / base for w in self.widths_after]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "criterion": self.criterion,
            "keep_ratios": list(self.keep_ratios),
            "widths_before": list(self.widths_before),
            "widths_after": list(self.widths_after),
            "filters": {k: list(v) for k, v in self.filters.items()},
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
        }


def structured_prune(
    model: keras.Model,
    keep_ratio: float | Sequence[float],
    criterion: str = "l1",
    granularity: int = 1,
) -> tuple[keras.Model, StructuredReport]:
    """Remove the least important filters of each U-Net level and rebuild a thinner dense model.

    Args:
        model: a roverlite U-Net (tf_keras functional, layers named ``enc{i}_*``, ``dec{i}_*``,
            ``bottleneck_*``) with a fixed input size. Not wrapped for pruning or quantization.
        keep_ratio: fraction of filters kept, in ``(0, 1]``: one value for every level, or
            ``depth + 1`` values, one per level with the bottleneck last (as ``width_multipliers``).
            A group of ``n`` filters keeps ``max(1, floor(n * ratio + 0.5))``.
        criterion: how filters are ranked within a group. ``"l1"``: L1 norm of each filter's
            kernel (Li et al., 2017). ``"bn"``: ``|gamma|`` of the BatchNorm after the conv
            (network slimming, Liu et al., 2017); convs with no BatchNorm after them (the
            transpose up-convolutions, 1x1 decoder convs) are ranked by L1 either way.
        granularity: kept filters per group are rounded to the nearest multiple of this (at
            least one multiple; a group smaller than it stays whole), as NVIDIA TAO's pruning
            does: int8 SIMD kernels (XNNPACK QS8, VNNI, ARM dot-product) work on channel blocks
            of 4-16, and an odd count such as 5 or 77 wastes part of every block. 1 = no rounding.

    Returns:
        ``(thin_model, report)``. At ``keep_ratio=1`` the thin model computes exactly what
        ``model`` computes.

    Raises:
        ValueError: for a ratio outside ``(0, 1]`` or of the wrong length, an unknown criterion,
            a layer type this module cannot slice (named), a model without U-Net level names,
            or ``criterion="bn"`` on a model without BatchNorm.
    """
    if criterion not in CRITERIA:
        raise ValueError(
            f"Expected criterion in {CRITERIA}. Received: criterion={criterion!r}." + did_you_mean(criterion, CRITERIA)
        )
    graph = _Graph(model)
    if criterion == "bn" and "BatchNormalization" not in graph.classes.values():
        raise ValueError(
            "Expected BatchNormalization layers for criterion='bn' (their gamma ranks the filters). "
            f"Received: {model.name!r} without BatchNorm; use criterion='l1'."
        )
    if isinstance(granularity, bool) or not isinstance(granularity, int) or granularity < 1:
        raise ValueError(f"Expected granularity to be a positive integer (e.g. 8 or 16). Received: {granularity!r}.")
    ratios = _level_ratios(keep_ratio, graph.depth)
    kept = {root: _choose_filters(graph, root, ratios, criterion, granularity) for root in graph.roots()}
    thin = _rebuild(model, graph, kept)
    report = _report(model, thin, graph, kept, ratios, criterion)
    logger.info(
        "Structured pruning of %s (%s): widths %s -> %s, %.3f -> %.3f GMAC, %.3f -> %.3f M params.",
        model.name, criterion, list(report.widths_before), list(report.widths_after),
        report.macs_before / 1e9, report.macs_after / 1e9, report.params_before / 1e6, report.params_after / 1e6,
    )
    return thin, report


# === Channel groups ===


class _Graph:
    """The model's layers, their inputs, and the channel groups that must be pruned together.

    Every conv starts a group (its output channels); Add/Multiply merge the groups of their
    inputs (union-find). A tensor's channels are a list of segments ``(group, size)``: one for a
    conv output, several after a Concatenate.
    """

    def __init__(self, model: keras.Model) -> None:
        self.config = model.get_config()
        self.layers = {layer.name: layer for layer in model.layers}
        self.inputs: dict[str, list[str]] = {}
        self.classes: dict[str, str] = {}
        self._parent: dict[int, int] = {}
        self.group_size: dict[int, int] = {}
        self.members: dict[int, list[str]] = {}  # group -> conv layers producing it
        self.fixed: set[int] = set()
        self.segments: dict[str, list[tuple[int, int]]] = {}
        self.conv_group: dict[str, int] = {}
        for spec in self.config["layers"]:
            self._add_layer(spec)
        for name in self.config["output_layers"]:
            self.fixed.update(g for g, _ in self.segments[name[0]])
        self.depth = self._depth()

    # --- construction ---

    def _add_layer(self, spec: Mapping[str, Any]) -> None:
        name, cls = spec["name"], spec["class_name"]
        if cls not in _SUPPORTED:
            raise ValueError(
                f"Cannot prune channels through layer {name!r} ({cls}). Expected only layers of types "
                f"{sorted(_SUPPORTED)}. Received: {cls}."
            )
        nodes = spec["inbound_nodes"]
        if len(nodes) > 1:
            raise ValueError(f"Expected each layer to be called once. Received: layer {name!r} called {len(nodes)} times.")
        self.classes[name] = cls
        self.inputs[name] = [entry[0] for entry in nodes[0]] if nodes else []
        ins = [self.segments[i] for i in self.inputs[name]]
        if cls == "InputLayer":
            group = self._new_group(spec["config"]["batch_input_shape"][-1])
            self.fixed.add(group)
            self.segments[name] = [(group, self.group_size[group])]
        elif cls in _CONVS:
            if spec["config"].get("groups", 1) != 1:
                raise ValueError(f"Expected ungrouped convolutions. Received: layer {name!r} with groups={spec['config']['groups']}.")
            group = self._new_group(spec["config"]["filters"])
            self.members[group] = [name]
            self.conv_group[name] = group
            self.segments[name] = [(group, self.group_size[group])]
        elif cls == "Concatenate":
            if spec["config"].get("axis", -1) not in (-1, 3):
                raise ValueError(f"Expected concatenation on the channel axis. Received: layer {name!r} with axis={spec['config']['axis']}.")
            self.segments[name] = [s for segs in ins for s in segs]
        elif cls in _MERGES:
            self.segments[name] = self._merge(ins)
        elif cls in _SHUFFLES:
            self.fixed.update(g for g, _ in ins[0])
            group = self._new_group(int(sum(n for _, n in ins[0]) * _SHUFFLES[cls]))
            self.fixed.add(group)
            self.segments[name] = [(group, self.group_size[group])]
        elif cls == _COORDS:
            group = self._new_group(2)
            self.fixed.add(group)
            self.segments[name] = [*ins[0], (group, 2)]
        else:
            self.segments[name] = list(ins[0])

    def _new_group(self, size: int) -> int:
        group = len(self._parent)
        self._parent[group] = group
        self.group_size[group] = int(size)
        return group

    def _merge(self, ins: list[list[tuple[int, int]]]) -> list[tuple[int, int]]:
        widths = [sum(n for _, n in segs) for segs in ins]
        wide = [segs for segs, w in zip(ins, widths) if w > 1]
        # A 1-channel operand broadcasts (an attention gate's map): it must stay one channel.
        for segs, w in zip(ins, widths):
            if w == 1 and len(wide) > 0:
                self.fixed.update(g for g, _ in segs)
        if not wide:
            return list(ins[0])
        shapes = {tuple(n for _, n in segs) for segs in wide}
        if len(shapes) > 1:
            # Operands built from different concatenations cannot share one kept set per group.
            self.fixed.update(g for segs in wide for g, _ in segs)
            return list(wide[0])
        for segs in wide[1:]:
            for (a, _), (b, _) in zip(wide[0], segs):
                self._union(a, b)
        return list(wide[0])

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self._parent[rb] = ra

    def find(self, group: int) -> int:
        while self._parent[group] != group:
            self._parent[group] = self._parent[self._parent[group]]
            group = self._parent[group]
        return group

    def _depth(self) -> int:
        levels = [int(m.group(1)) for name in self.conv_group if (m := _LEVEL_NAME.match(name)) and name.startswith("enc")]
        if not levels or not any(_DEEPEST_NAME.match(n) for n in self.conv_group):
            raise ValueError(
                "Expected a roverlite U-Net with layers named enc{i}_*, dec{i}_* and bottleneck_*. "
                f"Received: convolutions {sorted(self.conv_group)[:8]}..."
            )
        return max(levels) + 1

    # --- queries ---

    def roots(self) -> list[int]:
        return sorted({self.find(g) for g in self._parent})

    def root_members(self, root: int) -> list[str]:
        return [name for g, convs in self.members.items() if self.find(g) == root for name in convs]

    def root_fixed(self, root: int) -> bool:
        return any(self.find(g) == root for g in self.fixed)

    def level_of(self, conv: str) -> int | None:
        if _DEEPEST_NAME.match(conv):
            return self.depth
        match = _LEVEL_NAME.match(conv)
        return int(match.group(1)) if match and int(match.group(1)) < self.depth else None

    def consumers(self, name: str) -> list[str]:
        return [layer for layer, ins in self.inputs.items() if name in ins]


def _level_ratios(keep_ratio: float | Sequence[float], depth: int) -> tuple[float, ...]:
    ratios = [keep_ratio] * (depth + 1) if isinstance(keep_ratio, (int, float)) else list(keep_ratio)
    if len(ratios) != depth + 1 or any(isinstance(r, bool) or not 0.0 < float(r) <= 1.0 for r in ratios):
        raise ValueError(
            f"Expected keep_ratio in (0, 1], as one value or {depth + 1} (one per level, bottleneck last) "
            f"for this depth-{depth} U-Net. Received: keep_ratio={keep_ratio!r}."
        )
    return tuple(float(r) for r in ratios)


def kept_count(size: int, ratio: float, granularity: int = 1) -> int:
    """Filters a group of ``size`` keeps at ``ratio``: the nearest whole number (at least 1),
    then the nearest multiple of ``granularity`` (at least one), never more than ``size``."""
    keep = max(1, math.floor(size * ratio + 0.5))
    if granularity > 1 and keep < size:
        keep = max(granularity, granularity * math.floor(keep / granularity + 0.5))
    return min(keep, size)


def _root_level(graph: _Graph, root: int) -> int | None:
    """The level whose ratio prunes group ``root``; ``None`` for groups that stay whole."""
    members = graph.root_members(root)
    levels = {graph.level_of(m) for m in members}
    if graph.root_fixed(root) or not members or len(levels) != 1 or None in levels:
        return None
    return levels.pop()


def _root_keep(graph: _Graph, root: int, ratios: Sequence[float], granularity: int) -> int:
    size = graph.group_size[root]
    level = _root_level(graph, root)
    return size if level is None else kept_count(size, ratios[level], granularity)


def _root_scores(graph: _Graph, root: int, criterion: str) -> np.ndarray:
    score = np.zeros(graph.group_size[root])
    for conv in graph.root_members(root):
        s = _filter_scores(graph, conv, criterion)
        # Normalised so that each conv of a shared group has the same say, whatever its scale.
        score += s / max(float(s.sum()), 1e-12)
    return score


def _choose_filters(graph: _Graph, root: int, ratios: Sequence[float], criterion: str, granularity: int) -> np.ndarray:
    size = graph.group_size[root]
    keep = _root_keep(graph, root, ratios, granularity)
    if keep >= size:
        return np.arange(size)
    score = _root_scores(graph, root, criterion)
    # Stable sort, then back to the original order, so kept channels keep their relative order.
    return np.sort(np.argsort(-score, kind="stable")[:keep])


# === Level queries (for latency-aware searches) ===


def level_widths(model: keras.Model) -> tuple[int, ...]:
    """Filters per U-Net level (``depth + 1`` values, bottleneck last), as ``StructuredReport.widths_before``."""
    graph = _Graph(model)
    return tuple(
        max(graph.group_size[graph.conv_group[conv]] for conv in _width_convs(graph, level))
        for level in range(graph.depth + 1)
    )


def _width_convs(graph: _Graph, level: int) -> list[str]:
    """The convs whose filters are ``level``'s width: its prunable ones (a shuffle decoder's fixed 4x
    up-sampling conv is not a width), or all of them when none is prunable."""
    convs = [conv for conv in graph.conv_group if graph.level_of(conv) == level]
    free = [conv for conv in convs if not graph.root_fixed(graph.find(graph.conv_group[conv]))]
    return free or convs


def level_scores(model: keras.Model, criterion: str = "l1") -> tuple[tuple[np.ndarray, ...], ...]:
    """The filter scores :func:`structured_prune` ranks by, grouped per level (bottleneck last).

    Each level holds one vector per channel group it prunes, sorted from the most to the least
    important filter; each conv's scores sum to 1 (a group shared by ``k`` convs sums to ``k``),
    so the mass of the filters a level drops is comparable across levels whatever their scale.
    """
    if criterion not in CRITERIA:
        raise ValueError(
            f"Expected criterion in {CRITERIA}. Received: criterion={criterion!r}." + did_you_mean(criterion, CRITERIA)
        )
    graph = _Graph(model)
    levels: list[list[np.ndarray]] = [[] for _ in range(graph.depth + 1)]
    for root in graph.roots():
        level = _root_level(graph, root)
        if level is not None:
            levels[level].append(np.sort(_root_scores(graph, root, criterion))[::-1])
    return tuple(tuple(groups) for groups in levels)


def thinned_config(model: keras.Model, keep_ratio: float | Sequence[float], granularity: int = 1) -> dict[str, Any]:
    """The functional config of the model :func:`structured_prune` would build, without its weights.

    Cheap (no weights sliced or copied): for measuring the latency of candidate widths.
    """
    graph = _Graph(model)
    ratios = _level_ratios(keep_ratio, graph.depth)
    sizes = {root: _root_keep(graph, root, ratios, granularity) for root in graph.roots()}
    return _thin_config(graph, sizes)


def _filter_scores(graph: _Graph, conv: str, criterion: str) -> np.ndarray:
    if criterion == "bn":
        after = graph.consumers(conv)
        if len(after) == 1 and graph.classes[after[0]] == "BatchNormalization":
            bn = graph.layers[after[0]]
            if bn.gamma is not None:
                return np.abs(bn.gamma.numpy()).astype(np.float64)
    layer = graph.layers[conv]
    kernel = layer.kernel.numpy()
    # Conv2D kernels are (kh, kw, in, out); Conv2DTranspose kernels are (kh, kw, out, in).
    axis = 2 if graph.classes[conv] == "Conv2DTranspose" else 3
    return np.abs(kernel).sum(axis=tuple(a for a in range(4) if a != axis)).astype(np.float64)


# === Rebuild and copy ===


def _channels(graph: _Graph, name: str, kept: Mapping[int, np.ndarray]) -> np.ndarray:
    """Indices (into the original channels) of layer ``name``'s output that survive."""
    parts, offset = [], 0
    for group, size in graph.segments[name]:
        parts.append(kept[graph.find(group)] + offset)
        offset += size
    return np.concatenate(parts)


def _thin_config(graph: _Graph, sizes: Mapping[int, int]) -> dict[str, Any]:
    config = copy.deepcopy(graph.config)
    for spec in config["layers"]:
        if spec["class_name"] in _CONVS:
            spec["config"]["filters"] = int(sizes[graph.find(graph.conv_group[spec["name"]])])
        spec.pop("build_config", None)  # stale input shapes; the functional rebuild infers them
    return config


def _rebuild(model: keras.Model, graph: _Graph, kept: Mapping[int, np.ndarray]) -> keras.Model:
    thin = keras.Model.from_config(_thin_config(graph, {root: len(idx) for root, idx in kept.items()}))
    for layer in thin.layers:
        if layer.weights:
            layer.set_weights(_sliced_weights(graph, layer.name, kept))
    return thin


def _sliced_weights(graph: _Graph, name: str, kept: Mapping[int, np.ndarray]) -> list[np.ndarray]:
    cls = graph.classes[name]
    weights = graph.layers[name].get_weights()
    if cls in _CONVS:
        out_idx = _channels(graph, name, kept)
        in_idx = _channels(graph, graph.inputs[name][0], kept)
        kernel = weights[0]
        if cls == "Conv2DTranspose":
            kernel = kernel[:, :, out_idx, :][:, :, :, in_idx]
        else:
            kernel = kernel[:, :, in_idx, :][:, :, :, out_idx]
        return [kernel, *(b[out_idx] for b in weights[1:])]
    if cls == "BatchNormalization":
        idx = _channels(graph, graph.inputs[name][0], kept)
        return [w[idx] for w in weights]
    raise ValueError(f"Expected weights only in convolutions and BatchNorm. Received: layer {name!r} ({cls}) with weights.")


def _report(model, thin, graph, kept, ratios, criterion) -> StructuredReport:
    before, after = count_macs(model), count_macs(thin)
    filters = {
        conv: (graph.group_size[group], len(kept[graph.find(group)])) for conv, group in graph.conv_group.items()
    }
    widths_before, widths_after = [], []
    for level in range(graph.depth + 1):
        convs = _width_convs(graph, level)
        widths_before.append(max(filters[conv][0] for conv in convs))
        widths_after.append(max(filters[conv][1] for conv in convs))
    return StructuredReport(
        criterion=criterion,
        keep_ratios=tuple(ratios),
        widths_before=tuple(widths_before),
        widths_after=tuple(widths_after),
        filters=filters,
        params_before=before.params,
        params_after=after.params,
        macs_before=before.macs,
        macs_after=after.macs,
    )
