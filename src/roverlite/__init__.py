"""roverlite: segmentation U-Nets from workstation to rover.

The public API is re-exported here. Names that need TensorFlow are imported lazily on first
use, so ``import roverlite`` (and ``roverlite.deploy`` on a robot) never loads TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; resolved on first attribute access.
_LAZY = {
    "Config": "roverlite.config",
    "DataConfig": "roverlite.config",
    "AugmentConfig": "roverlite.config",
    "ModelConfig": "roverlite.config",
    "TrainConfig": "roverlite.config",
    "ConfigError": "roverlite.config",
    "load_config": "roverlite.config",
    "DataError": "roverlite.data.source",
    "open_source": "roverlite.data.formats",
    "load_split": "roverlite.data.loader",
    "audit": "roverlite.data.audit",
    "make_dataset": "roverlite.data.pipeline",
    "create_model": "roverlite.train.models",
    "list_models": "roverlite.train.models",
    "count_macs": "roverlite.train.macs",
    "build_loss": "roverlite.train.losses",
    "StreamingConfusion": "roverlite.core.metrics",
    "Preprocessing": "roverlite.core.preprocessing",
    "PruneConfig": "roverlite.compress",
    "prune": "roverlite.compress",
    "strip": "roverlite.compress",
    "structured_prune": "roverlite.compress",
    "quantize_aware": "roverlite.compress",
    "DistillConfig": "roverlite.compress",
    "distill": "roverlite.compress",
    "run_recipe": "roverlite.compress",
    "load_recipe": "roverlite.compress",
    "Recipe": "roverlite.compress",
    "GateError": "roverlite.compress",
    "export_model": "roverlite.export",
    "ExportSettings": "roverlite.export",
    "Segmenter": "roverlite.deploy",
    "make_bundle": "roverlite.deploy",
    "run_pipeline": "roverlite.pipeline",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'roverlite' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
