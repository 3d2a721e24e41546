"""Training runs with their plots: what ``roverlite train`` and the pipeline's teacher stage call.

The training loop (:mod:`roverlite.train.fit`) writes numbers (``metrics.jsonl``, ``summary.json``,
the best model) and returns a preview of its predictions; the report layer draws them
(:func:`roverlite.report.plots.plot_run`). This module, above both, runs one after the other, so
that ``roverlite.train`` never imports ``roverlite.report``.

Example:
    >>> result = train_run(load_config("configs/mars.yaml"), "runs/mars-teacher")  # doctest: +SKIP
    >>> sorted(p.name for p in result.run_dir.glob("*.png"))                       # doctest: +SKIP
    ['curves.png', 'predictions.png']
"""

from __future__ import annotations

from pathlib import Path

from roverlite.config import Config, DataConfig
from roverlite.report.plots import plot_run
from roverlite.train import crossval, fit

__all__ = ["train_folds_run", "train_run"]


def train_run(cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True) -> fit.TrainResult:
    """:func:`roverlite.train.fit.train`, then the run's ``curves.png`` and ``predictions.png``."""
    result = fit.train(cfg, run_dir, resume=resume, progress=progress)
    _plot(result, cfg.data)
    return result


def train_folds_run(
    cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True
) -> crossval.CrossValResult:
    """:func:`roverlite.train.crossval.train_folds`, then each fold's plots in its run folder."""
    cv = crossval.train_folds(cfg, run_dir, resume=resume, progress=progress)
    for result in cv.folds:
        _plot(result, cfg.data)
    return cv


def _plot(result: fit.TrainResult, data_cfg: DataConfig) -> None:
    if result.preview is not None:  # a non-chief worker of a multi-worker run writes nothing
        plot_run(result.run_dir, result.preview, data_cfg)
