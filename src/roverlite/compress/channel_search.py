"""Per-level channel search: thin the U-Net where channels cost the most time per unit of importance.

NetAdapt (Yang et al., 2018) and HALP (Shen et al., 2022) choose how many filters each layer keeps
from measured latency rather than from a uniform ratio. This is their greedy form for a U-Net,
one width per level (:mod:`roverlite.compress.structured`):

1. start from the full widths and the unpruned model's predicted int8 time (a
   :class:`~roverlite.compress.latency_table.LatencyTable` measured on the target);
2. for every level, the move is to its nearest smaller width (a multiple of ``granularity``) that
   the table says is faster; its worth is the time it saves divided by the importance it loses,
   the normalised L1 (or BatchNorm) mass of the filters it drops
   (:func:`~roverlite.compress.structured.level_scores`);
3. make the best move; stop as soon as the predicted time meets the target
   (``target_latency_ms``, or ``latency_ratio`` x the unpruned model's predicted time).

A level that is expensive and unimportant is cut first; levels that buy no time (the deep ones
on a per-pixel-bound CPU) keep their filters. :func:`measure_choice` then times the chosen model
against the unpruned one, so predicted and measured milliseconds can be compared.

Example:
    >>> result = search_channels(table, level_scores(model), latency_ratio=0.5, granularity=16)  # doctest: +SKIP
    >>> thin, report = structured_prune(model, result.keep_ratios, granularity=16)                # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from roverlite.compress.latency_table import LatencyTable, time_tflite
from roverlite.export.tflite import convert_tflite

__all__ = ["ChannelSearchResult", "Move", "greedy_moves", "importance_lost", "measure_choice", "search_channels"]

logger = logging.getLogger(__name__)

_EPS = 1e-12


@dataclass(frozen=True)
class Move:
    """One step of the search: ``level`` thinned from ``width_from`` to ``width_to`` filters."""

    level: int
    width_from: int
    width_to: int
    saved_ms: float
    importance_lost: float
    predicted_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ChannelSearchResult:
    """Chosen widths and keep ratios per level (bottleneck last), the predicted time and the moves.

    ``measured_ms`` / ``measured_full_ms`` are set by :func:`measure_choice` (``None`` until then).
    """

    widths_before: tuple[int, ...]
    widths_after: tuple[int, ...]
    keep_ratios: tuple[float, ...]
    threads: int
    granularity: int
    target_ms: float
    full_ms: float
    predicted_ms: float
    moves: tuple[Move, ...]
    measured_ms: float | None = None
    measured_full_ms: float | None = None

    def summary(self) -> str:
        measured = "" if self.measured_ms is None else (
            f"; measured {self.measured_ms:.3f} ms against {self.measured_full_ms:.3f} ms unpruned")
        return (f"channel search: widths {list(self.widths_before)} -> {list(self.widths_after)} in "
                f"{len(self.moves)} moves, predicted int8 p50 {self.full_ms:.3f} -> {self.predicted_ms:.3f} ms "
                f"(target {self.target_ms:.3f} ms, {self.threads} thread(s)){measured}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(widths_before=list(self.widths_before), widths_after=list(self.widths_after),
                   keep_ratios=[round(r, 6) for r in self.keep_ratios], moves=[m.to_dict() for m in self.moves])
        if self.measured_ms is not None:
            out["predicted_error"] = round(self.predicted_ms / self.measured_ms - 1.0, 4)
        return out


def importance_lost(scores: Sequence[np.ndarray], full_width: int, width: int) -> float:
    """Score mass a level drops at ``width``: for each group, the scores below its top-k kept filters.

    ``scores`` are the level's groups from :func:`~roverlite.compress.structured.level_scores`
    (sorted, most important first); a group of ``n`` filters keeps ``round(n * width / full_width)``.
    """
    lost = 0.0
    for group in scores:
        keep = max(1, math.floor(len(group) * width / full_width + 0.5))
        lost += float(np.sum(group[keep:]))
    return lost


def greedy_moves(
    table: LatencyTable,
    scores: Sequence[Sequence[np.ndarray]],
    granularity: int | None = None,
    threads: int | None = None,
) -> Iterator[tuple[Move, tuple[int, ...]]]:
    """The search's moves in order, each with the widths after it, until no level can get faster.

    Args:
        table: measured latencies (its widths are the full widths).
        scores: per level, the groups' sorted normalised scores (``level_scores``); a level with
            none loses nothing.
        granularity: widths are multiples of it (default: the table's); it must be a multiple of
            the table's granularity, so that every width it allows was measured.
        threads: which of the table's thread counts to predict for (default: its first).
    """
    granularity, threads = _settings(table, scores, granularity, threads)
    widths = list(table.widths)
    predicted = table.full_ms[threads]
    while True:
        best = None
        for level, full in enumerate(table.widths):
            move = _level_move(table, scores[level], level, widths[level], full, granularity, threads)
            if move is not None and (best is None or move[0] > best[0]):
                best = move
        if best is None:
            return
        _, level, width, saved, lost = best
        predicted -= saved
        move = Move(level, widths[level], width, saved, lost, predicted)
        widths[level] = width
        yield move, tuple(widths)


def _level_move(table, scores, level, width, full, granularity, threads):
    """``(worth, level, width, saved ms, importance lost)`` of the level's next useful step, or None."""
    now = table.ms(level, width, threads)
    lost_now = importance_lost(scores, full, width)
    for smaller in range(_below(width, granularity), 0, -granularity):
        saved = now - table.ms(level, smaller, threads)
        if saved > 0:
            lost = importance_lost(scores, full, smaller) - lost_now
            return saved / max(lost, _EPS), level, smaller, saved, lost
    return None


def _below(width: int, granularity: int) -> int:
    """The largest multiple of ``granularity`` strictly below ``width`` (0 when none)."""
    return (width - 1) // granularity * granularity


def _settings(table, scores, granularity, threads) -> tuple[int, int]:
    granularity = table.granularity if granularity is None else granularity
    if isinstance(granularity, bool) or not isinstance(granularity, int) or granularity < 1 or (
            granularity % table.granularity):
        raise ValueError(f"Expected a granularity that is a multiple of the table's ({table.granularity}), so every "
                         f"width it allows was measured. Received: granularity={granularity!r}.")
    threads = table.threads[0] if threads is None else threads
    if threads not in table.threads:
        raise ValueError(f"Expected threads measured in the table: {list(table.threads)}. Received: threads={threads!r}.")
    if len(scores) != len(table.widths):
        raise ValueError(f"Expected importance scores for {len(table.widths)} levels (the table's). "
                         f"Received: {len(scores)}.")
    return granularity, threads


def search_channels(
    table: LatencyTable,
    scores: Sequence[Sequence[np.ndarray]],
    target_latency_ms: float | None = None,
    latency_ratio: float | None = None,
    granularity: int | None = None,
    threads: int | None = None,
) -> ChannelSearchResult:
    """Per-level widths whose predicted int8 p50 meets the target, chosen greedily (see the module docstring).

    Give exactly one of ``target_latency_ms`` and ``latency_ratio`` (a fraction of the unpruned
    model's predicted time, in ``(0, 1]``). A target the unpruned model already meets returns
    the full widths with no moves.

    Raises:
        ValueError: both or neither target, a bad value, a table that cannot serve the search
            (granularity, threads, levels), or a target below what the thinnest widths reach
            (the message gives that minimum).
    """
    granularity, threads = _settings(table, scores, granularity, threads)
    full = table.full_ms[threads]
    target = _target(target_latency_ms, latency_ratio, full)
    moves: list[Move] = []
    widths = tuple(table.widths)
    predicted = full
    if predicted > target:
        for move, widths in greedy_moves(table, scores, granularity, threads):
            moves.append(move)
            predicted = move.predicted_ms
            if predicted <= target:
                break
        else:
            raise ValueError(
                f"Expected a latency target the thinned model can meet. Received: target {target:.3f} ms, but the "
                f"thinnest widths {list(widths)} (granularity {granularity}) are predicted at {predicted:.3f} ms "
                f"({predicted / full:.2f}x of {full:.3f} ms unpruned, {threads} thread(s)). Raise the target or "
                "change the architecture (decoder: nearest, resolution: 0.5).")
    result = ChannelSearchResult(
        widths_before=tuple(table.widths), widths_after=tuple(widths),
        keep_ratios=tuple(w / full_w for w, full_w in zip(widths, table.widths)), threads=threads,
        granularity=granularity, target_ms=target, full_ms=full, predicted_ms=predicted, moves=tuple(moves))
    logger.info("%s", result.summary())
    return result


def _target(target_ms: Any, ratio: Any, full_ms: float) -> float:
    if (target_ms is None) == (ratio is None):
        raise ValueError("Expected exactly one of target_latency_ms and latency_ratio. "
                         f"Received: target_latency_ms={target_ms!r}, latency_ratio={ratio!r}.")
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ValueError(f"Expected latency_ratio in (0, 1]. Received: {ratio!r}.")
        return float(ratio) * full_ms
    if isinstance(target_ms, bool) or not isinstance(target_ms, (int, float)) or not 0 < target_ms < math.inf:
        raise ValueError(f"Expected target_latency_ms > 0 and finite. Received: {target_ms!r}.")
    return float(target_ms)


def measure_choice(
    result: ChannelSearchResult, full_model: Any, thin_model: Any, runs: int = 100, rounds: int = 5
) -> ChannelSearchResult:
    """Time the chosen (thin) model against the unpruned one, interleaved, at the search's threads.

    Both are converted to full-int8 TFLite as artifacts are; returns ``result`` with
    ``measured_ms`` and ``measured_full_ms`` set.
    """
    shape = tuple(int(s) for s in full_model.input_shape[1:])
    calibration = np.random.default_rng(0).normal(size=(4, *shape)).astype(np.float32)
    contents = [convert_tflite(m, "int8", calibration=calibration) for m in (full_model, thin_model)]
    full_ms, thin_ms = time_tflite(contents, result.threads, runs=runs, rounds=rounds)
    measured = replace(result, measured_ms=thin_ms, measured_full_ms=full_ms)
    logger.info("%s", measured.summary())
    return measured
