"""Report figures: accuracy against latency (the Pareto plot) and prediction overlays per variant."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.report.plots import _pyplot, _save
from roverlite.report.tables import VariantRow, pareto_front, recommend_runtime

__all__ = ["pareto_figure", "place_labels", "plot_overlay_grid", "plot_pareto"]

_MIN_MARKER, _MAX_MARKER = 40.0, 900.0


def plot_pareto(rows: Sequence[VariantRow], path: str | Path, title: str = "mIoU vs latency") -> Path:
    """mIoU against p50 latency on each variant's recommended runtime, saved as PNG.

    Marker area grows with the artifact's file size, colour shows the kind, each point is labelled
    with the variant's human label (plus the runtime when it was measured on several), placed where
    it overlaps no other label (:func:`place_labels`), and the Pareto front (no other variant is
    both faster and more accurate) is drawn as a dashed step line. Variants without both an mIoU
    and a latency are listed in a note on the figure instead. The latency axis is logarithmic when
    it spans 10x or more.
    """
    fig, _ = pareto_figure(rows, title)
    return _save(fig, Path(path))


def pareto_figure(rows: Sequence[VariantRow], title: str = "mIoU vs latency") -> tuple[Any, list[Any]]:
    """The figure of :func:`plot_pareto` and its point labels (matplotlib ``Annotation`` objects).

    The caller owns the figure (``plt.close(fig)`` when done).
    """
    plt = _pyplot()
    choices = recommend_runtime(rows)
    plotted = [(row, choices[row.name]) for row in rows if row.miou is not None and row.name in choices]
    plotted_names = {row.name for row, _ in plotted}
    skipped = [row.display_name for row in rows if row.name not in plotted_names]
    fig, ax = plt.subplots(figsize=(8.0, 5.2))
    labels: list[Any] = []
    if plotted:
        areas = _scatter(ax, plt, plotted)
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
        texts = [_point_text(row, choice) for row, choice in plotted]
        radii = [math.sqrt(area / math.pi) for area in areas]
        labels = place_labels(ax, points, texts, avoid=[legend], marker_radii=radii)
    else:
        ax.text(0.5, 0.5, "no variant has both an mIoU and a measured latency", ha="center", va="center",
                transform=ax.transAxes)
    if skipped:
        ax.text(0.01, 0.01, "not plotted (no mIoU or latency): " + ", ".join(skipped), transform=ax.transAxes,
                fontsize=7, color="dimgray", va="bottom")
    ax.set(title=title, xlabel="p50 latency (ms), recommended runtime", ylabel="mIoU")
    ax.grid(alpha=0.3, which="both")
    return fig, labels


def _scatter(ax: Any, plt: Any, plotted: Sequence[tuple[VariantRow, Any]]) -> list[float]:
    """Draw the points; returns each marker's area (points²)."""
    sizes = [row.size_bytes for row, _ in plotted if row.size_bytes]
    largest = max(sizes) if sizes else None
    kinds = list(dict.fromkeys(row.kind for row, _ in plotted))
    colors = plt.get_cmap("tab10")
    labelled: set[str] = set()
    areas = []
    for row, choice in plotted:
        area = _MIN_MARKER if not (row.size_bytes and largest) else (
            _MIN_MARKER + (_MAX_MARKER - _MIN_MARKER) * math.sqrt(row.size_bytes / largest)
        )
        ax.scatter(choice.p50_ms, row.miou, s=area, color=colors(kinds.index(row.kind) % 10), alpha=0.65,
                   edgecolors="black", linewidths=0.6, label=None if row.kind in labelled else row.kind)
        labelled.add(row.kind)
        areas.append(area)
    return areas


def _point_text(row: VariantRow, choice: Any) -> str:
    """The label, with the plotted runtime when the row was measured on more than one."""
    return f"{row.display_name} ({choice.runtime})" if len(row.latency) > 1 else row.display_name


# === Label placement ===

# Gaps (points) between a marker's edge and its label, tried nearest first, each in every direction
# (right, left, up, down, then diagonals); a label beyond the first gap gets a leader line.
_GAPS = (3.0, 12.0, 24.0, 38.0, 54.0, 72.0, 94.0)
_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))
_PAD_PX = 2.0  # breathing room kept between labels (their white backgrounds reach past the text)


def place_labels(
    ax: Any,
    points: Sequence[tuple[float, float]],
    texts: Sequence[str],
    avoid: Sequence[Any] = (),
    marker_radii: Sequence[float] = (),
    fontsize: float = 8,
) -> list[Any]:
    """Label each point where its text box overlaps no other label or marker and stays inside the axes.

    Greedy: points are labelled from the most crowded; for each, offsets around its marker are
    tried nearest first, and the first whose text box (measured with the renderer) is free of the
    labels placed before it, every marker, the ``avoid`` artists and the axes edge is kept. When
    none is free, the offset with the least overlap wins. Axis limits must be final.

    Args:
        ax: the axes holding the points.
        points: data coordinates.
        texts: one label per point.
        avoid: artists the labels must not cover either (e.g. the legend).
        marker_radii: each point's marker radius in points (default: none).
        fontsize: label font size.

    Returns:
        One ``Annotation`` per point, in the order of ``points``.

    Raises:
        ValueError: not one text (and marker radius, when given) per point.
    """
    radii = list(marker_radii) or [0.0] * len(points)
    if not len(points) == len(texts) == len(radii):
        raise ValueError(f"Expected one label and marker radius per point. Received: {len(points)} points, "
                         f"{len(texts)} labels, {len(radii)} radii.")
    fig = ax.figure
    fig.canvas.draw()  # fixes the layout (legend position, scales) before anything is measured
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pixels = ax.transData.transform(np.asarray(points, dtype=float))
    px_per_pt = fig.dpi / 72.0
    taken = [artist.get_window_extent(renderer) for artist in avoid]
    taken += [_marker_box(xy, r * px_per_pt) for xy, r in zip(pixels, radii)]
    placed: dict[int, Any] = {}
    for i in _crowded_first(pixels):
        annotation, box = _best_offset(ax, renderer, points[i], texts[i], radii[i], frame, taken, fontsize)
        placed[i] = annotation
        taken.append(box)
    return [placed[i] for i in range(len(points))]


def _crowded_first(pixels: np.ndarray) -> list[int]:
    """Point indices, those with the nearest neighbour (in display space) first."""
    if len(pixels) < 2:
        return list(range(len(pixels)))
    distances = np.linalg.norm(pixels[:, None, :] - pixels[None, :, :], axis=-1)
    np.fill_diagonal(distances, np.inf)
    return [int(i) for i in np.argsort(distances.min(axis=1), kind="stable")]


def _marker_box(xy: np.ndarray, radius_px: float) -> Any:
    from matplotlib.transforms import Bbox

    return Bbox.from_extents(xy[0] - radius_px, xy[1] - radius_px, xy[0] + radius_px, xy[1] + radius_px)


def _best_offset(
    ax: Any, renderer: Any, point: tuple[float, float], text: str, radius: float, frame: Any, taken: Sequence[Any],
    fontsize: float,
) -> tuple[Any, Any]:
    best = None
    for gap in _GAPS:
        for dx, dy in _DIRECTIONS:
            scale = (radius + gap) / math.hypot(dx, dy)
            annotation = _annotate(ax, point, text, (dx * scale, dy * scale), fontsize, leader=gap > _GAPS[0])
            box = _text_box(annotation, renderer).padded(_PAD_PX)
            overlap = _outside(box, frame) + sum(_overlap(box, other) for other in taken)
            if overlap == 0:
                if best is not None:
                    best[0].remove()
                return annotation, box
            if best is None or overlap < best[2]:
                if best is not None:
                    best[0].remove()
                best = (annotation, box, overlap)
            else:
                annotation.remove()
    return best[0], best[1]


def _annotate(ax: Any, point: tuple[float, float], text: str, offset: tuple[float, float], fontsize: float,
              leader: bool) -> Any:
    ha = "left" if offset[0] > 0 else ("right" if offset[0] < 0 else "center")
    va = "bottom" if offset[1] > 0 else ("top" if offset[1] < 0 else "center")
    arrow = {"arrowstyle": "-", "color": "dimgray", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 2} if leader else None
    background = {"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}
    return ax.annotate(text, point, xytext=offset, textcoords="offset points", fontsize=fontsize, ha=ha, va=va,
                       arrowprops=arrow, bbox=background, annotation_clip=False, zorder=5)


def _text_box(annotation: Any, renderer: Any) -> Any:
    """The display-space box of the label's text alone (an annotation's own extent adds its leader line)."""
    from matplotlib.text import Text

    annotation.update_positions(renderer)
    return Text.get_window_extent(annotation, renderer)


def _overlap(a: Any, b: Any) -> float:
    """Area shared by two display-space boxes (0 when they only touch)."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0


def _outside(box: Any, frame: Any) -> float:
    """Area of ``box`` outside the axes frame."""
    return box.width * box.height - _overlap(box, frame)


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
