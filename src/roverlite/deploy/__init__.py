"""Run exported artifacts on a robot: numpy, Pillow and a runtime (LiteRT or ONNX Runtime), nothing else.

Installed with ``pip install roverlite[device]``. Nothing in this package imports TensorFlow or
PyYAML; Pillow (which resizes frames exactly as the training loader does) and the runtimes are
imported lazily inside the functions that need them, so ``import roverlite.deploy`` is cheap and
works on a Raspberry Pi or Jetson. The package also runs without a roverlite install:
:func:`make_bundle` copies it (with the two numpy-only modules it uses) next to an artifact.

Example:
    >>> from roverlite.deploy import Segmenter
    >>> seg = Segmenter("exports/unet_xs_tflite_int8.tflite", threads=2)  # doctest: +SKIP
    >>> mask = seg.predict(image)                                   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it; resolved on first attribute access so runtimes load lazily.
_LAZY = {
    "Segmenter": "roverlite.deploy.segmenter",
    "overlay": "roverlite.deploy.segmenter",
    "Runner": "roverlite.deploy.runtime",
    "TensorInfo": "roverlite.deploy.runtime",
    "load_runner": "roverlite.deploy.runtime",
    "Sidecar": "roverlite.deploy.sidecar",
    "read_sidecar": "roverlite.deploy.sidecar",
    "parse_sidecar": "roverlite.deploy.sidecar",
    "sidecar_path": "roverlite.deploy.sidecar",
    "verify_artifact": "roverlite.deploy.sidecar",
    "evaluate_artifact": "roverlite.deploy.evaluate",
    "evaluate_testpack": "roverlite.deploy.evaluate",
    "load_testpack": "roverlite.deploy.evaluate",
    "save_testpack": "roverlite.deploy.evaluate",
    "TestPack": "roverlite.deploy.evaluate",
    "make_bundle": "roverlite.deploy.bundle",
    "unpack_bundle": "roverlite.deploy.bundle",
    "resize_bilinear": "roverlite.deploy.resize",
    "resize_nearest": "roverlite.deploy.resize",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'roverlite.deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
