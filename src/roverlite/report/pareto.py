"""Report figures: accuracy against latency (the Pareto plot) and prediction overlays per variant."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from roverlite.report.plots import _pyplot, _save
from roverlite.report.tables import VariantRow, pareto_front, recommend_runtime

__all__ = ["plot_overlay_grid", "plot_pareto"]

_MIN_MARKER, _MAX_MARKER = 40.0, 900.0


def plot_pareto(rows: Sequence[VariantRow], path: str | Path, title: str = "mIoU vs latency") -> Path:
    """mIoU against p50 latency on each variant's recommended runtime.

    Marker area grows with the artifact's file size, colour shows the kind, each point is labelled
    ``name (runtime)``, and the Pareto front (no other variant is both faster and more accurate)
    is drawn as a dashed step line. Variants without both an mIoU and a latency are listed in a
    note on the figure instead. The latency axis is logarithmic when it spans 10x or more.
    """
    plt = _pyplot()
    choices = recommend_runtime(rows)
    plotted = [(row, choices[row.name]) for row in rows if row.miou is not None and row.name in choices]
    plotted_names = {row.name for row, _ in plotted}
    skipped = [row.name for row in rows if row.name not in plotted_names]
    fig, ax = plt.subplots(figsize=(8.0, 5.2))
    if plotted:
        sizes = [row.size_bytes for row, _ in plotted if row.size_bytes]
        largest = max(sizes) if sizes else None
        kinds = list(dict.fromkeys(row.kind for row, _ in plotted))
        colors = plt.get_cmap("tab10")
        labelled: set[str] = set()
        for row, choice in plotted:
            area = _MIN_MARKER if not (row.size_bytes and largest) else (
                _MIN_MARKER + (_MAX_MARKER - _MIN_MARKER) * math.sqrt(row.size_bytes / largest)
            )
            color = colors(kinds.index(row.kind) % 10)
            ax.scatter(choice.p50_ms, row.miou, s=area, color=color, alpha=0.65, edgecolors="black", linewidths=0.6,
                       label=None if row.kind in labelled else row.kind)
            labelled.add(row.kind)
            ax.annotate(f"{row.name} ({choice.runtime})", (choice.p50_ms, row.miou), textcoords="offset points",
                        xytext=(6, 6), fontsize=8)
        points = [(choice.p50_ms, row.miou) for row, choice in plotted]
        front = [points[i] for i in pareto_front(points)]
        if len(front) > 1:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", linestyle="--", color="gray",
                    linewidth=1, label="Pareto front")
        xs = [p[0] for p in points]
        if max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        legend = ax.legend(fontsize=8, loc="best", title="marker area ∝ file size", title_fontsize=8)
        for handle in legend.legend_handles:
            if hasattr(handle, "set_sizes"):
                handle.set_sizes([40.0])  # legend markers at one size; the plot's sizes carry the file size
        ax.margins(x=0.12, y=0.12)
    else:
        ax.text(0.5, 0.5, "no variant has both an mIoU and a measured latency", ha="center", va="center",
                transform=ax.transAxes)
    if skipped:
        ax.text(0.01, 0.01, "not plotted (no mIoU or latency): " + ", ".join(skipped), transform=ax.transAxes,
                fontsize=7, color="dimgray", va="bottom")
    ax.set(title=title, xlabel="p50 latency (ms), recommended runtime", ylabel="mIoU")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, Path(path))


def plot_overlay_grid(
    images: Sequence[np.ndarray],
    columns: Mapping[str, Sequence[np.ndarray]],
    path: str | Path,
    class_names: Sequence[str] = (),
    class_colors: Sequence[Sequence[int]] = (),
) -> Path:
    """A grid with one row per image: the image, then one RGB tile per column (truth, variants).

    Args:
        images: uint8 images ``(H, W[, C])`` (gray shown in gray).
        columns: title -> one RGB uint8 tile per image (e.g. ``Segmenter.overlay`` output).
        class_names, class_colors: legend entries.

    Raises:
        ValueError: a column without one tile per image.
    """
    plt = _pyplot()
    n = len(images)
    for title, tiles in columns.items():
        if len(tiles) != n:
            raise ValueError(f"Expected one tile per image ({n}) in column {title!r}. Received: {len(tiles)}.")
    ncols = 1 + len(columns)
    fig, axes = plt.subplots(max(n, 1), ncols, figsize=(2.3 * ncols, 2.3 * max(n, 1) + 0.4), squeeze=False)
    for i, image in enumerate(images):
        pixels = np.asarray(image)
        gray = pixels.ndim == 2 or pixels.shape[-1] == 1
        axes[i, 0].imshow(pixels.reshape(pixels.shape[:2]) if gray else pixels, cmap="gray" if gray else None,
                          vmin=0, vmax=255)
        for j, tiles in enumerate(columns.values(), start=1):
            axes[i, j].imshow(tiles[i])
    for ax, title in zip(axes[0], ["image", *columns]):
        ax.set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    if class_names and class_colors:
        handles = [plt.Rectangle((0, 0), 1, 1, color=np.asarray(c) / 255.0) for c in class_colors]
        fig.legend(handles, list(class_names), loc="lower center", ncol=min(len(handles), 6), fontsize=8)
        fig.tight_layout(rect=(0, 0.5 / fig.get_figheight(), 1, 1))
    return _save(fig, Path(path))
