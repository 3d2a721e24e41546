"""Crash-safe training checkpoints: the last complete epoch, written atomically.

A checkpoint is a folder ``checkpoints/last`` holding TensorFlow's checkpoint of the model and
optimiser (weights, moments, step counter) plus ``state.json``: the epoch count, best score and
the per-epoch metrics history. It is written to ``checkpoints/.tmp-*`` and renamed into place, so
a kill at any moment leaves the previous complete checkpoint. ``metrics.jsonl`` is rewritten
from the checkpoint's history on resume, so it never holds an epoch twice or misses one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roverlite._tf import tf

LAST = "last"


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs."""

    epoch: int = 0
    best_miou: float = float("-inf")
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "best_miou": None if self.best_miou == float("-inf") else self.best_miou,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
            "history": self.history,
            "train_seconds": self.train_seconds,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainState":
        best = raw.get("best_miou")
        return cls(
            epoch=int(raw["epoch"]),
            best_miou=float("-inf") if best is None else float(best),
            best_epoch=int(raw.get("best_epoch", -1)),
            epochs_without_improvement=int(raw.get("epochs_without_improvement", 0)),
            history=list(raw.get("history", [])),
            train_seconds=float(raw.get("train_seconds", 0.0)),
        )


def save_checkpoint(folder: Path, model, optimizer, state: TrainState, **tracked: Any) -> Path:
    """Write model + optimiser (+ ``tracked`` objects, e.g. a weight EMA) + state as ``folder/last``, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    _finish_interrupted_swap(folder)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-"))
    try:
        tf.train.Checkpoint(model=model, optimizer=optimizer, **tracked).write(str(tmp / "ckpt"))
        (tmp / "state.json").write_text(json.dumps(state.to_dict(), indent=1))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final = folder / LAST
        old = folder / ".old-last"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _finish_interrupted_swap(folder: Path) -> None:
    """Put back a ``.old-last`` that a kill left without ``last``; drop temporaries a kill left.

    Without this, the next save would delete ``.old-last`` (the only complete checkpoint) before
    its own is renamed into place, and every kill mid-save would leave a full-size ``.tmp-*``.
    """
    last, old = folder / LAST, folder / ".old-last"
    if not (last / "state.json").is_file() and (old / "state.json").is_file():
        shutil.rmtree(last, ignore_errors=True)
        os.replace(old, last)
    for stale in folder.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def find_checkpoint(folder: Path) -> Path | None:
    """The last complete checkpoint in ``folder`` (also one left as ``.old-last`` by a crash mid-swap)."""
    for name in (LAST, ".old-last"):
        candidate = folder / name
        if (candidate / "state.json").is_file():
            return candidate
    return None


def load_checkpoint(path: Path, model, optimizer, **tracked: Any) -> TrainState:
    """Restore model, optimiser (and ``tracked``) tensors from ``path`` and return its state."""
    state = TrainState.from_dict(json.loads((path / "state.json").read_text()))
    status = tf.train.Checkpoint(model=model, optimizer=optimizer, **tracked).read(str(path / "ckpt"))
    # Optimiser slots are created on the first step; restoration of those is deferred until then.
    status.assert_existing_objects_matched()
    return state
