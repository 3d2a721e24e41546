"""Evaluating a Keras model on a split: per-class IoU, mIoU, confusion matrix."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.config import Config, DataConfig
from roverlite.train.metrics import StreamingConfusion

log = logging.getLogger(__name__)


def predict_masks(model, images: np.ndarray, data_cfg: DataConfig, batch_size: int = 16) -> np.ndarray:
    """Argmax class ids (uint8, N×H×W) for uint8 images, normalised as ``data_cfg`` says."""
    from roverlite.data.loader import normalize

    out = np.empty(images.shape[:3], dtype=np.uint8)
    for start in range(0, len(images), batch_size):
        batch = normalize(images[start : start + batch_size], data_cfg.mean, data_cfg.std)
        logits = model(batch, training=False)
        out[start : start + batch_size] = np.argmax(np.asarray(logits), axis=-1).astype(np.uint8)
    return out


def evaluate_arrays(model, images: np.ndarray, masks: np.ndarray, data_cfg: DataConfig, batch_size: int = 16) -> dict[str, Any]:
    """Per-class IoU, mIoU over ``data_cfg.eval_classes``, pixel accuracy and confusion matrix."""
    confusion = StreamingConfusion(data_cfg.num_classes, data_cfg.ignore_index)
    for start in range(0, len(images), batch_size):
        pred = predict_masks(model, images[start : start + batch_size], data_cfg, batch_size)
        confusion.update(masks[start : start + batch_size], pred)
    return confusion.result(list(data_cfg.classes), list(data_cfg.eval_class_ids))


def load_keras_model(path: str | Path):
    """Load a roverlite model file (``model.h5``) or a run folder holding one, without its optimiser.

    Refuses files whose architecture contains ``Lambda`` layers: loading those would execute
    Python code stored inside the file.
    """
    from roverlite.train.modelfile import load_model_file

    path = Path(path)
    if path.is_dir():
        path = path / "model.h5"
    if not path.is_file():
        raise FileNotFoundError(
            f"Model not found. Expected a model.h5 file or a run folder containing one. Received: {str(path)!r}."
        )
    return load_model_file(path)


def evaluate_model(model_path: str | Path, cfg: Config, split: str = "val") -> dict[str, Any]:
    """Evaluate a saved Keras model on ``split`` (``val``, ``train`` or ``all``) of ``cfg.data``."""
    from roverlite.data.loader import load_split

    model = load_keras_model(model_path)
    expected = (*cfg.data.image_size, cfg.data.channels)
    got = tuple(model.input_shape[1:])
    if got != expected:
        raise ValueError(
            f"Model input shape does not match the config. Expected (H, W, C)={expected} from data.image_size "
            f"and data.color_mode. Received: {got} from {str(model_path)!r}."
        )
    arrays = load_split(cfg.data, split, progress=True)
    log.info("evaluating %d images of split %r", len(arrays.images), split)
    result = evaluate_arrays(model, arrays.images, arrays.masks, cfg.data, cfg.train.batch_size)
    result["split"] = split
    result["images"] = len(arrays.images)
    return result
