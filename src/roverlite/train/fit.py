"""Training a model from a config into a run folder, resumable after any interruption.

The run folder holds ``config.yaml`` (resolved), ``splits.json``, ``metrics.jsonl`` (one line per
finished epoch), ``model.h5`` (best validation mIoU), ``checkpoints/last`` (last finished epoch,
model + optimiser) and ``summary.json``. Training writes numbers only: the plots of a run
(``curves.png``, ``predictions.png``) are drawn by :func:`roverlite.report.plots.plot_run` from the
:class:`RunPreview` in the result, and :mod:`roverlite.training` (what ``roverlite train`` calls)
does both.

Each epoch is one ``model.fit`` call over a dataset shuffled and augmented with a seed derived from
(train.seed, epoch), so epoch k sees the same batches whether or not the run was resumed before it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.config import Config, load_config, to_plain
from roverlite.data.loader import load_split
from roverlite.core.documents import TRAIN_SUMMARY
from roverlite.io import atomic_write_json, atomic_write_text, ensure_writable_dir, write_document
from roverlite.train.evaluate import evaluate_arrays, predict_masks

log = logging.getLogger(__name__)


# Validation images whose predictions by the best model are kept for the run's prediction grid.
PREVIEW_IMAGES = 6


@dataclass(frozen=True)
class RunPreview:
    """The numbers a run's plots are drawn from (:func:`roverlite.report.plots.plot_run`).

    Attributes:
        history: one row per epoch, as in ``metrics.jsonl``.
        images, masks: the first validation images (uint8 ``(N, H, W, C)``) and their truth.
        predictions: the best model's class ids for ``images`` (uint8 ``(N, H, W)``).
    """

    history: tuple[dict[str, Any], ...]
    images: np.ndarray
    masks: np.ndarray
    predictions: np.ndarray


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or early-stopped) training run produced.

    ``preview`` holds what the run's plots show; ``None`` on a non-chief worker, which writes nothing.
    """

    run_dir: Path
    model_path: Path
    best_miou: float
    best_epoch: int
    epochs_run: int
    summary: dict[str, Any]
    preview: RunPreview | None = None


# === Run-folder bookkeeping ===


# Keys that change what evaluation reports, never what training does: a run trained before one was
# declared (or with another value) is the same run, so resuming or adopting it is not refused.
_EVAL_ONLY_KEYS = {"data.hazards"}


def _differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs (evaluation-only keys left out)."""
    if prefix in _EVAL_ONLY_KEYS:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        out: list[str] = []
        for k in keys:
            out += _differing_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix]


# Keys that may change between an interrupted run and its resume without changing the result.
_RESUMABLE_CHANGES = {"train.epochs", "train.patience"}


def _check_resume_config(run_dir: Path, cfg: Config) -> None:
    saved = load_config(run_dir / "config.yaml")
    diff = [k for k in _differing_keys(to_plain(saved), to_plain(cfg)) if k not in _RESUMABLE_CHANGES]
    if diff:
        raise ValueError(
            f"Cannot resume {str(run_dir)!r} with a different config. Expected the settings saved in its "
            f"config.yaml. Received differences in: {', '.join(diff)}."
        )


def _prepare_run_dir(run_dir: Path, cfg: Config, resume: bool, is_chief: bool) -> None:
    if not is_chief:
        return
    ensure_writable_dir(run_dir)
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(
                f"Nothing to resume. Expected a run folder with config.yaml. Received: {str(run_dir)!r}."
            )
        _check_resume_config(run_dir, cfg)
    elif (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists():
        raise ValueError(
            f"Run folder {str(run_dir)!r} already holds a training run. Expected an empty or new folder; "
            "pass --resume to continue it or choose another --out."
        )
    cfg.to_yaml(run_dir / "config.yaml")


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))


# === Training ===


def _current_learning_rate(optimizer) -> float:
    # imports TensorFlow: roverlite.train, training and the pipeline import without it
    from roverlite._tf import keras

    lr = optimizer.learning_rate
    if callable(lr):
        lr = lr(optimizer.iterations)
    # get_value reads plain, mirrored (multi-GPU/worker) and schedule-produced values alike.
    return float(keras.backend.get_value(lr))


def _build(cfg: Config, steps_per_epoch: int, class_weights: np.ndarray):
    """The run's model, compiled with the shared training set-up (:mod:`roverlite.train.setup`)."""
    # imports TensorFlow: roverlite.train, training and the pipeline import without it
    from roverlite.train.models import create_model
    from roverlite.train.setup import compile_for_training, train_loss, train_optimizer

    data = cfg.data
    model = create_model(
        cfg.model.name,
        input_shape=(*data.image_size, data.channels),
        num_classes=data.num_classes,
        **dict(cfg.model.overrides),
    )
    optimizer = train_optimizer(cfg, steps_per_epoch)
    compile_for_training(model, cfg, optimizer, train_loss(cfg, class_weights))
    return model, optimizer


def train(
    cfg: Config,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` into ``run_dir``; continue it when ``resume`` is set.

    Example:
        >>> result = train(load_config("configs/mars.yaml"), "runs/mars-teacher")
        >>> result.best_miou
    """
    # imports TensorFlow: roverlite.train, training and the pipeline import without it
    from roverlite.train.checkpoint import TrainState, find_checkpoint, load_checkpoint, save_checkpoint
    from roverlite.train.distribute import select_precision, select_strategy, worker_role
    from roverlite.train.modelfile import save_model_file
    from roverlite.train.setup import batch_seed, class_pixel_counts, class_weights, seed_everything, train_batches

    run_dir = Path(run_dir)
    role = worker_role()
    strategy = select_strategy(cfg.train.strategy)  # first: multi-worker needs it before other TF ops
    precision = select_precision(cfg.train.mixed_precision)
    if role.is_chief:
        ensure_writable_dir(run_dir)  # fail before spending minutes on loading
    # Data is loaded and validated before the run folder gets anything: a bad file leaves no run behind.
    train_arrays = load_split(cfg.data, "train", progress=progress)
    val_arrays = load_split(cfg.data, "val", progress=progress)
    _prepare_run_dir(run_dir, cfg, resume, role.is_chief)
    # Non-chief workers write into a scratch folder of their own. They must still write: reading
    # BatchNorm's moving statistics (sync-on-read variables) to save them is a collective
    # all-reduce, so a save that only the chief made would desynchronise the workers.
    work_dir = run_dir if role.is_chief else run_dir / f".worker-{role.task_index}"
    ckpt_dir = work_dir / "checkpoints"
    seed_everything(cfg.train.seed)
    if role.is_chief:
        atomic_write_json(run_dir / "splits.json", {"train": train_arrays.ids, "val": val_arrays.ids})
    weights = class_weights(cfg, class_pixel_counts(train_arrays.masks, cfg.data.num_classes))
    log.info(
        "train %d / val %d images, class weights %s, precision %s, %d replica(s)",
        len(train_arrays.images), len(val_arrays.images), np.round(weights, 3).tolist(),
        precision, strategy.num_replicas_in_sync,
    )

    def epoch_dataset(epoch: int):
        return train_batches(train_arrays.images, train_arrays.masks, cfg, batch_seed(cfg.train.seed, epoch))

    steps = int(epoch_dataset(0).cardinality())  # counts oversampled images, unlike len(images)
    with strategy.scope():
        model, optimizer = _build(cfg, steps, weights)
    ema = _weight_ema(cfg, model, strategy)
    tracked = {} if ema is None else {"ema": ema}

    state = TrainState()
    found = find_checkpoint(ckpt_dir) if resume else None
    if found is not None:
        state = load_checkpoint(found, model, optimizer, **tracked)
        log.info("resuming after epoch %d (best val mIoU %.4f at epoch %d)", state.epoch, state.best_miou, state.best_epoch)
        if role.is_chief:
            _write_metrics(run_dir, state.history)
    elif resume:
        log.warning("no complete checkpoint in %s: starting from epoch 0", ckpt_dir)

    # imports TensorFlow: roverlite.train, training and the pipeline import without it
    from roverlite.train.progress import EpochProgress

    model_path = work_dir / "model.h5"
    started = time.perf_counter() - state.train_seconds
    images_seen = 0
    fit_seconds = 0.0
    for epoch in range(state.epoch, cfg.train.epochs):
        if cfg.train.patience is not None and state.epochs_without_improvement >= cfg.train.patience:
            log.info("early stop: val mIoU did not improve for %d epochs", cfg.train.patience)
            break
        # Restart the stateful random ops (dropout) of the traced train step at every epoch.
        # tf_keras keeps their state out of checkpoints, so a resumed process would otherwise draw
        # epoch k's dropout masks from the start of the stream, not from where the killed run was;
        # with the restart, epoch k draws the same masks resumed or not. (The sequence of masks
        # then repeats each epoch, over differently shuffled and augmented batches.)
        seed_everything(cfg.train.seed)
        dataset = epoch_dataset(epoch)
        bar = EpochProgress(epoch, cfg.train.epochs, enabled=progress and role.is_chief)
        t0 = time.perf_counter()
        # A repeated dataset with a fixed step count: every worker of a multi-worker run then
        # takes the same number of steps, whatever share of the last batch its shard holds.
        callbacks = [bar] if ema is None else [bar, ema.callback()]
        hist = model.fit(dataset.repeat(), steps_per_epoch=steps, epochs=1, verbose=0, callbacks=callbacks)
        epoch_seconds = time.perf_counter() - t0
        fit_seconds += epoch_seconds
        images_seen += bar.images_seen(cfg.train.batch_size)
        # With train.ema_decay, validation and the best model file use the averaged weights.
        with contextlib.nullcontext() if ema is None else ema.applied(model):
            val = evaluate_arrays(model, val_arrays.images, val_arrays.masks, cfg.data, cfg.train.batch_size)
            miou = val["miou"] if val["miou"] is not None else float("-inf")
            improved = miou > state.best_miou
            if improved:
                save_model_file(model, model_path)
        bar.close(val["miou"])

        row = {
            "epoch": epoch + 1,
            "loss": float(hist.history["loss"][-1]),
            "val_miou": val["miou"],
            "val_per_class_iou": val["per_class_iou"],
            "val_pixel_accuracy": val["pixel_accuracy"],
            "learning_rate": _current_learning_rate(optimizer),
            "seconds": round(epoch_seconds, 2),
        }
        state.history.append(row)
        state.epoch = epoch + 1
        if improved:
            state.best_miou, state.best_epoch, state.epochs_without_improvement = miou, epoch + 1, 0
        else:
            state.epochs_without_improvement += 1
        state.train_seconds = time.perf_counter() - started
        # Checkpoint first, then the metrics file: a kill between them is repaired on resume,
        # because metrics.jsonl is rewritten from the checkpoint's history.
        save_checkpoint(ckpt_dir, model, optimizer, state, **tracked)
        if role.is_chief:
            _write_metrics(run_dir, state.history)

    summary: dict[str, Any] = {}
    preview = None
    if role.is_chief:
        summary, preview = _finish_run(run_dir, cfg, state, val_arrays, model_path, images_seen, fit_seconds)
    return TrainResult(run_dir, model_path, state.best_miou, state.best_epoch, state.epoch, summary, preview)


def _weight_ema(cfg: Config, model, strategy):
    """The weight average of ``train.ema_decay`` (None when unset); single-replica runs only."""
    if cfg.train.ema_decay is None:
        return None
    if strategy.num_replicas_in_sync > 1:
        raise ValueError(
            "train.ema_decay averages the weights of one replica. Expected train.strategy none (or auto on "
            f"one device). Received: {strategy.num_replicas_in_sync} replicas with strategy {cfg.train.strategy!r}."
        )
    # imports TensorFlow: roverlite.train, training and the pipeline import without it
    from roverlite.train.ema import WeightEMA

    return WeightEMA(model, cfg.train.ema_decay)


def _finish_run(
    run_dir, cfg, state, val_arrays, model_path, images_seen, fit_seconds
) -> tuple[dict[str, Any], RunPreview]:
    # imports TensorFlow: roverlite.train, training and the pipeline import without it
    from roverlite.train.macs import count_macs
    from roverlite.train.modelfile import load_model_file

    best = load_model_file(model_path)
    val = evaluate_arrays(best, val_arrays.images, val_arrays.masks, cfg.data, cfg.train.batch_size)
    cost = count_macs(best)
    summary = {
        "model": cfg.model.name,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        **val,
        "params": int(cost.params),
        "macs": int(cost.macs),
        "train_seconds": round(state.train_seconds, 1),
        "images_per_second": round(images_seen / fit_seconds, 2) if fit_seconds > 0 else None,
        "model_path": str(model_path),
    }
    write_document(run_dir / "summary.json", TRAIN_SUMMARY, summary)
    k = min(PREVIEW_IMAGES, len(val_arrays.images))
    pred = predict_masks(best, val_arrays.images[:k], cfg.data)
    preview = RunPreview(tuple(state.history), val_arrays.images[:k], val_arrays.masks[:k], pred)
    return summary, preview
