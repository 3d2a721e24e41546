"""Shared helpers for the export and deploy tests: a tiny trained model and its exports, built once.

Conversions take seconds each, so the tiny model is trained once per pytest process and exported
once to every format (the session-scoped ``tiny_exports`` fixture of ``conftest.py``); the export,
deploy, bench, report and soak tests all read those artifacts (and copy them before damaging any). The model is trained briefly on "intensity band" scenes (class = which
quarter of the gray range a pixel falls in), so its predictions are decisive and an int8 version
can be held to a tight IoU tolerance; an untrained model has near-tied logits everywhere.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.config import DataConfig

SIZE = 32
DATA_CFG = DataConfig(image_size=(SIZE, SIZE), mean=(0.5,), std=(0.25,))
# Modules a robot does not have; device-side subprocesses run with these made unimportable.
# Pillow is a device requirement (roverlite[device], a bundle's requirements-device.txt).
BLOCKED_MODULES = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tf2onnx", "onnx", "yaml")

_CACHE: dict[str, Any] = {}


def band_scenes(n: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Smooth gray scenes and masks of their intensity quartile; the bottom row is ignore (255)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((n, size, size, 1), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    for k in range(n):
        field = np.zeros((size, size))
        for _ in range(4):
            cy, cx = rng.random(2)
            sigma, amplitude = rng.uniform(0.15, 0.4), rng.uniform(-1, 1)
            field += amplitude * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        field = (field - field.min()) / (field.max() - field.min() + 1e-9) * 255
        images[k, ..., 0] = field.astype(np.uint8)
        masks[k] = np.digitize(field, [64, 128, 192]).astype(np.uint8)
    masks[:, -1] = 255
    return images, masks


def trained_tiny_model() -> Any:
    """``unet_tiny`` (32x32x1 -> 4 classes) trained for a few seconds on band scenes (cached)."""
    if "model" not in _CACHE:
        from roverlite._tf import keras
        from roverlite.data.loader import normalize
        from roverlite.train.models import create_model

        keras.utils.set_random_seed(0)
        model = create_model("unet_tiny", input_shape=(SIZE, SIZE, 1), num_classes=4)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.5  # moving statistics settle within a few steps
        images, masks = band_scenes(96, seed=0)
        masks = np.where(masks == 255, 0, masks)
        model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(normalize(images, DATA_CFG.mean, DATA_CFG.std), masks, batch_size=16, epochs=12, verbose=0)
        _CACHE["model"] = model
    return _CACHE["model"]


def export_every_format(out_dir: Path) -> dict[str, Any]:
    """Every format of the trained tiny model, exported into ``out_dir``: ``{format: ExportResult}``.

    Tests use it through the session-scoped ``tiny_exports`` fixture (``conftest.py``), so it runs
    once per pytest process.
    """
    from roverlite.export import ExportSettings, export_model, list_formats

    calibration, _ = band_scenes(32, seed=1)
    check_images, check_masks = band_scenes(12, seed=2)
    results = export_model(
        trained_tiny_model(), ExportSettings(list_formats(), out_dir, DATA_CFG,
        calibration_images=calibration, check_images=check_images, check_masks=check_masks,
        name="tiny", recipe={"test": True}, representative_count=32)
    )
    return {r.format: r for r in results}


def run_device_python(code: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where TensorFlow, PyYAML and onnx cannot be imported."""
    blocker = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in BLOCKED_MODULES)
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
    )
