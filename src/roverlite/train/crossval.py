"""k-fold cross-validation: train one model per fold and score every image once, out of fold.

A 40-image dataset such as CWFID validates on 10 images per split, and which 10 decides the score
(crop/weed IoU ranged 0.57..0.67 over four seeded splits of the same config). Cross-validation
trains ``data.folds`` models, each validated on a different fold, and pools their confusion
matrices: every image is scored once by a model that never saw it, so the pooled IoU uses all the
labels instead of a quarter of them.

Example:
    >>> cfg = load_config("configs/cropweed.yaml")          # data.folds: 4
    >>> cv = train_folds(cfg, "runs/cwfid-cv")
    >>> cv.summary["miou"], cv.summary["fold_miou_mean"]

The folder holds ``fold0/`` .. ``fold<k-1>/`` (ordinary run folders, see ``roverlite.train.fit.train``) and
``crossval.json`` (the pooled summary). :func:`evaluate_folds` (``roverlite eval CV_DIR``)
re-scores such a folder.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.config import Config
from roverlite.core.metrics import StreamingConfusion
from roverlite.io import atomic_write_json
from roverlite.train import fit
from roverlite.train.evaluate import evaluate_model, worst_first
from roverlite.train.fit import TrainResult
from roverlite.train.runfolder import fold_hint, is_crossval_dir  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrossValResult:
    """The folds' runs and their pooled summary (also written to ``run_dir/crossval.json``)."""

    run_dir: Path
    folds: tuple[TrainResult, ...]
    summary: dict[str, Any]


def fold_config(cfg: Config, fold: int) -> Config:
    """``cfg`` with ``data.fold`` set to ``fold`` (validated like any config)."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=fold))


def train_folds(cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True) -> CrossValResult:
    """Train every fold of ``cfg.data.folds`` into ``run_dir/fold<k>`` and pool the validation scores.

    Args:
        cfg: a config with ``data.folds`` set (its ``data.fold`` is ignored: every fold is trained).
        run_dir: the cross-validation folder.
        resume: continue each fold from its last checkpoint (a finished fold is only re-evaluated).
        progress: show progress bars.

    Raises:
        ValueError: ``cfg.data.folds`` is not set.
    """
    if cfg.data.folds is None:
        raise ValueError(
            "Cross-validation needs data.folds. Expected an integer >= 2 (e.g. --set data.folds=4). "
            "Received: data.folds=None."
        )
    run_dir = Path(run_dir)
    results = []
    for fold in range(cfg.data.folds):
        log.info("cross-validation: fold %d of %d", fold + 1, cfg.data.folds)
        # fit.train looked up at call time, so a patched or reloaded fit module is honoured
        results.append(fit.train(fold_config(cfg, fold), run_dir / f"fold{fold}", resume=resume, progress=progress))
    summary = pool_folds([r.summary for r in results], cfg)
    atomic_write_json(run_dir / "crossval.json", summary)
    return CrossValResult(run_dir, tuple(results), summary)


def pool_folds(summaries: list[dict[str, Any]], cfg: Config) -> dict[str, Any]:
    """Pooled (out-of-fold) IoU from the folds' confusion matrices, plus each fold's own numbers.

    ``miou``, ``per_class_iou``, ``pixel_accuracy`` and ``confusion_matrix`` are those of the summed
    matrix; ``fold_miou_mean`` / ``fold_miou_std`` (population) summarise the per-fold mIoU.
    """
    if not summaries:
        raise ValueError("Expected at least one fold summary. Received: none.")
    speeds = [s["images_per_second"] for s in summaries if s.get("images_per_second")]
    first = summaries[0]
    return {
        "model": first["model"],
        **pool_scores(summaries, cfg),
        "params": first["params"],
        "macs": first["macs"],
        "train_seconds": round(sum(s["train_seconds"] for s in summaries), 1),
        "images_per_second": round(float(np.mean(speeds)), 2) if speeds else None,
        "per_fold": [
            {
                "fold": k,
                "miou": s["miou"],
                "per_class_iou": s["per_class_iou"],
                "best_epoch": s["best_epoch"],
                "epochs_run": s["epochs_run"],
                "train_seconds": s["train_seconds"],
                "model_path": s.get("model_path"),
            }
            for k, s in enumerate(summaries)
        ],
    }


def pool_scores(results: list[dict[str, Any]], cfg: Config) -> dict[str, Any]:
    """``folds``, the scores of the summed confusion matrix, and the per-fold mIoU mean and spread."""
    confusion = StreamingConfusion(cfg.data.num_classes, cfg.data.ignore_index)
    for r in results:
        confusion.add_matrix(np.asarray(r["confusion_matrix"], dtype=np.int64))
    fold_miou = [r["miou"] for r in results if r["miou"] is not None and math.isfinite(r["miou"])]
    return {
        "folds": len(results),
        **confusion.result(list(cfg.data.classes), list(cfg.data.eval_class_ids), cfg.data.hazards),
        "fold_miou_mean": float(np.mean(fold_miou)) if fold_miou else None,
        "fold_miou_std": float(np.std(fold_miou)) if fold_miou else None,
    }


def evaluate_folds(run_dir: str | Path, cfg: Config, split: str = "val", per_image: bool = False) -> dict[str, Any]:
    """Re-score a cross-validation folder: each fold's model on its own fold, pooled.

    ``per_image`` adds every image's scores (each from the model that did not train on it), worst
    first, with the fold that scored it.

    Only ``split="val"`` is meaningful (a fold's model has seen every other image), so the other
    splits are refused rather than silently mixing seen and unseen images.

    Raises:
        ValueError: ``split`` is not ``val``, ``cfg.data.folds`` is not set, or a fold folder is missing.
    """
    if split != "val":
        raise ValueError(
            "A cross-validation folder is scored out of fold: each model on the fold it did not train "
            f"on. Expected split 'val'. Received: {split!r}."
        )
    if cfg.data.folds is None:
        raise ValueError(f"Expected a config with data.folds for the folder {str(run_dir)!r}. Received: data.folds=None.")
    run_dir = Path(run_dir)
    missing = [f"fold{k}" for k in range(cfg.data.folds) if not (run_dir / f"fold{k}").is_dir()]
    if missing:
        raise ValueError(
            f"Expected {cfg.data.folds} fold folders in {str(run_dir)!r} (data.folds={cfg.data.folds}). "
            f"Received: {missing} missing."
        )
    results = [
        evaluate_model(run_dir / f"fold{k}", fold_config(cfg, k), split="val", per_image=per_image)
        for k in range(cfg.data.folds)
    ]
    images = [{**img, "fold": k} for k, r in enumerate(results) for img in r.pop("per_image", [])]
    pooled = {**pool_scores(results, cfg), "per_fold": [{"fold": k, **r} for k, r in enumerate(results)]}
    if per_image:
        pooled["per_image"] = worst_first(images)
    return pooled
