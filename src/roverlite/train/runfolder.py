"""What kind of folder a path is: a training run or a cross-validation folder of runs.

Kept apart from :mod:`roverlite.train.crossval` (which trains folds through
:mod:`roverlite.train.fit`) so that loading and evaluating a model can name the right folder in
their messages without importing the training loop.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["fold_hint", "is_crossval_dir"]


def is_crossval_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``roverlite.train.crossval.train_folds`` (``fold0/``, no model of its own)."""
    path = Path(path)
    return path.is_dir() and (path / "fold0").is_dir() and not (path / "model.h5").exists()


def fold_hint(path: str | Path) -> str:
    """For a "model not found" message: what to pass instead when ``path`` is a cross-validation folder."""
    if not is_crossval_dir(path):
        return ""
    return (
        f" {str(path)!r} is a cross-validation folder with one model per fold: pass one fold's run folder, "
        f"e.g. {str(Path(path) / 'fold0')!r}."
    )
