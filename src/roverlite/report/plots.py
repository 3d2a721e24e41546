"""Plots saved as PNG beside the numbers they show: training curves and prediction grids.

Training writes numbers only (``roverlite.train.fit``); :func:`plot_run` draws a finished run's
plots from them, and :mod:`roverlite.training` calls both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from roverlite.config import DataConfig
from roverlite.io import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: workstations without a display, CI, robots
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
    _pyplot().close(fig)
    return path


def plot_curves(history: Sequence[dict[str, Any]], class_names: Sequence[str], path: str | Path) -> Path:
    """Loss, validation mIoU and per-class validation IoU per epoch."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].plot(epochs, [row["loss"] for row in history], marker="o")
    axes[0].set(title="training loss", xlabel="epoch")
    axes[1].plot(epochs, [row["val_miou"] for row in history], marker="o", color="tab:green")
    axes[1].set(title="validation mIoU", xlabel="epoch", ylim=(0, 1))
    for name in class_names:
        values = [row["val_per_class_iou"].get(name) for row in history]
        values = [np.nan if v is None else v for v in values]
        axes[2].plot(epochs, values, marker=".", label=name)
    axes[2].set(title="validation IoU per class", xlabel="epoch", ylim=(0, 1))
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def colorize(mask: np.ndarray, data_cfg: DataConfig) -> np.ndarray:
    """RGB image of a label mask with the config's class colours; ignored/unknown ids are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: data_cfg.num_classes] = np.asarray(data_cfg.class_colors, dtype=np.uint8)
    return lut[mask]


def plot_predictions(
    images: np.ndarray, truth: np.ndarray, pred: np.ndarray, data_cfg: DataConfig, path: str | Path
) -> Path:
    """A grid with one row per sample: image, ground truth, prediction (class colours)."""
    plt = _pyplot()
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for i in range(n):
        img = images[i, ..., 0] if images.shape[-1] == 1 else images[i]
        shown = truth[i].copy()
        axes[i, 0].imshow(img, cmap="gray" if images.shape[-1] == 1 else None, vmin=0, vmax=255)
        axes[i, 1].imshow(colorize(shown, data_cfg))
        axes[i, 2].imshow(colorize(pred[i], data_cfg))
    for ax, title in zip(axes[0], ("image", "truth", "prediction")):
        ax.set_title(title)
    for ax in axes.ravel():
        ax.set_axis_off()
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=np.asarray(c) / 255.0) for c in data_cfg.class_colors
    ]
    fig.legend(handles, list(data_cfg.classes), loc="lower center", ncol=len(handles), fontsize=8)
    return _save(fig, Path(path))


def plot_run(run_dir: str | Path, preview: Any, data_cfg: DataConfig) -> tuple[Path, Path]:
    """A training run's ``curves.png`` and ``predictions.png``, in ``run_dir``.

    Args:
        run_dir: the run folder.
        preview: the run's ``RunPreview`` (``roverlite.train.fit``): ``history`` (the epoch rows of
            ``metrics.jsonl``) and ``images``, ``masks``, ``predictions`` of the first validation images.
        data_cfg: class names and colours.

    Returns:
        The two PNG paths.
    """
    run_dir = Path(run_dir)
    curves = plot_curves(list(preview.history), list(data_cfg.classes), run_dir / "curves.png")
    grid = plot_predictions(preview.images, preview.masks, preview.predictions, data_cfg, run_dir / "predictions.png")
    return curves, grid


def plot_confusion(cm: Any, class_names: Sequence[str], title: str, path: str | Path) -> Path:
    """A small row-normalised confusion heat map (rows truth, columns prediction) as PNG.

    Each cell is the share of its truth class's pixels predicted as the column's class, so a rare
    class (big rock, 0.5 % of Mars pixels) reads as clearly as soil; rows without pixels stay blank.
    """
    plt = _pyplot()
    counts = np.asarray(cm, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * k, 1.0 + 0.5 * k))
    image = ax.imshow(shares, vmin=0.0, vmax=1.0, cmap="viridis")
    for (i, j), value in np.ndenumerate(shares):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.6 else "white")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("truth", fontsize=8)
    ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, Path(path))
