"""Saving and loading Keras model files safely and atomically."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import h5py

from roverlite._tf import keras
from roverlite.train import blocks  # noqa: F401  registers roverlite's custom layers for loading

# Layers whose saved config carries Python bytecode; loading them would execute it. (TFOpLambda
# stores only the name of a TensorFlow op, resolved from TensorFlow itself, so it is safe.)
_CODE_LAYERS = ("Lambda",)


def save_model_file(model, path: str | Path) -> Path:
    """Save ``model`` as HDF5 via a temporary file renamed into place (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".h5")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # HDF5 is deliberate: it loads without executing code once Lambda layers are refused.
            warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save\(\)`.*")
            model.save(tmp, include_optimizer=False, save_format="h5")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _code_layers_in(path: Path) -> list[str]:
    with h5py.File(path, "r") as fh:
        raw = fh.attrs.get("model_config")
    if raw is None:
        raise ValueError(f"Not a Keras model file. Expected an HDF5 file with a model_config. Received: {str(path)!r}.")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    return _code_layers(json.loads(raw))


def _code_layers(node) -> list[str]:
    """Every layer config whose class runs stored code, at any depth (nested models, wrappers)."""
    if isinstance(node, list):
        return [found for item in node for found in _code_layers(item)]
    if not isinstance(node, dict):
        return []
    found = []
    if node.get("class_name") in _CODE_LAYERS:
        config = node.get("config") if isinstance(node.get("config"), dict) else {}
        found.append(f"{node.get('name') or config.get('name')} ({node['class_name']})")  # Sequential: in config
    for value in node.values():
        found += _code_layers(value)
    return found


def load_model_file(path: str | Path):
    """Load a ``.h5`` model without compiling it; refuse files that would run stored Python code."""
    path = Path(path)
    try:
        risky = _code_layers_in(path)
    except OSError as err:
        raise ValueError(f"Cannot read model file {str(path)!r}. Expected a Keras HDF5 file. Received: {err}.") from None
    if risky:
        raise ValueError(
            f"Refusing to load {str(path)!r}: it contains layers that execute stored Python code: {risky}. "
            "Expected a model built from roverlite's registry."
        )
    return keras.models.load_model(path, compile=False)
