"""The Keras model an export starts from: loading it, checking it, and fixing its batch at 1.

Exported artifacts have a fixed ``[1, H, W, C]`` input: TFLite-Micro and most accelerators need
static shapes, and a batch of 1 is what a robot runs. The converters get the model through an
input signature of that shape (a concrete function for TFLite, ``input_signature`` for tf2onnx)
instead of a model rebuilt from its config, which would need custom-object scopes for QAT layers.

TensorFlow is imported inside the functions (through ``roverlite._tf``), so importing the export
package stays cheap.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.config import DataConfig
from roverlite.io import sha256_file
from roverlite.train.evaluate import load_keras_model

__all__ = [
    "batch_one_function",
    "check_calibration",
    "check_exportable",
    "check_model_fits_config",
    "input_hwc",
    "input_name",
    "load_source_model",
    "model_file_sha256",
]

logger = logging.getLogger(__name__)


def load_source_model(path: str | os.PathLike) -> Any:
    """Load a ``model.h5`` (or a run folder holding one) without its optimiser.

    Raises:
        FileNotFoundError: no model file.
        ValueError: not a Keras model file, or one with layers that would execute stored code.
    """
    return load_keras_model(path)


def input_hwc(model: Any) -> tuple[int, int, int]:
    """``(height, width, channels)`` of a single-input image model.

    Raises:
        ValueError: several inputs, not 4-D, or open height/width/channels.
    """
    if len(model.inputs) != 1:
        raise ValueError(f"Expected a model with one image input. Received: {len(model.inputs)} inputs.")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or any(s is None for s in shape[1:]):
        raise ValueError(
            f"Expected a model input of shape (batch, height, width, channels) with fixed height, width and "
            f"channels. Received: {shape}."
        )
    return int(shape[1]), int(shape[2]), int(shape[3])


def check_model_fits_config(model: Any, data_cfg: DataConfig) -> None:
    """Refuse a model whose input size, channels or class count differ from ``data_cfg``.

    Raises:
        ValueError: naming both values.
    """
    got = input_hwc(model)
    expected = (*(int(s) for s in data_cfg.image_size), data_cfg.channels)
    if got != expected:
        raise ValueError(
            f"Model input does not match the data config. Expected (H, W, C)={expected} from data.image_size "
            f"and data.color_mode. Received: {got}."
        )
    classes = int(model.outputs[0].shape[-1]) if len(model.outputs) == 1 else None
    if classes != data_cfg.num_classes:
        raise ValueError(
            f"Model output does not match the data config. Expected one output with {data_cfg.num_classes} "
            f"logits per pixel (data.classes). Received: {classes if classes is not None else len(model.outputs)} "
            f"{'logits' if classes is not None else 'outputs'}."
        )


def check_exportable(model: Any) -> tuple[int, int, int]:
    """``(height, width, channels)`` of a model the converters can take.

    Raises:
        ValueError: several inputs, open spatial size, or pruning wrappers still in place.
    """
    hwc = input_hwc(model)
    pruned = [layer.name for layer in getattr(model, "layers", ()) if type(layer).__name__ == "PruneLowMagnitude"]
    if pruned:
        raise ValueError(
            "Expected a model without pruning wrappers (call tfmot.sparsity.keras.strip_pruning first). "
            f"Received: wrapped layers {pruned[:5]}."
        )
    return hwc


def input_name(model: Any) -> str:
    """The model's input name (``image`` for roverlite models), used as the artifact's input name."""
    return str(model.inputs[0].name).split(":")[0]


def batch_one_function(model: Any) -> Any:
    """A ``tf.function`` running ``model`` in inference mode on a ``[1, H, W, C]`` float32 input.

    The signature fixes the batch at 1 without rebuilding the model from its config, so TFMOT
    (QAT) wrappers need no custom-object scope.
    """
    from roverlite._tf import tf

    height, width, channels = check_exportable(model)
    spec = tf.TensorSpec((1, height, width, channels), tf.float32, name=input_name(model))
    return tf.function(lambda image: model(image, training=False), input_signature=[spec])


def check_calibration(calibration: Any, hwc: tuple[int, int, int], what: str = "calibration images") -> np.ndarray:
    """Validate normalised float calibration data ``(N, H, W, C)`` for a model input ``hwc``.

    Raises:
        ValueError: empty, wrong rank or size, not floating point, or not finite.
    """
    if calibration is None:
        raise ValueError(f"Expected {what} for a format that needs calibration. Received: None.")
    array = np.asarray(calibration)
    if array.ndim != 4 or array.shape[0] == 0 or tuple(array.shape[1:]) != tuple(hwc):
        raise ValueError(
            f"Wrong {what}. Expected a non-empty array of shape (N, {hwc[0]}, {hwc[1]}, {hwc[2]}). "
            f"Received: shape={array.shape}."
        )
    if array.dtype.kind != "f" or not np.isfinite(array).all():
        raise ValueError(f"Wrong {what}. Expected finite normalised float values. Received: dtype={array.dtype}.")
    return array.astype(np.float32, copy=False)


def model_file_sha256(path: str | os.PathLike) -> tuple[str, str]:
    """``(resolved model file path, sha256)`` of a model path or run folder."""
    path = Path(path)
    file = path / "model.h5" if path.is_dir() else path
    return str(file.resolve()), sha256_file(file)
