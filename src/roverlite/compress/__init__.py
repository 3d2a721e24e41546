"""Compressing a trained U-Net for the rover: pruning, channel slimming, QAT and distillation.

One module per technique, each with paired apply / strip (or train) functions and a frozen,
validated config where there are settings:

* :mod:`~roverlite.compress.prune`: TFMOT magnitude pruning (element-wise zeros; smaller only
  once compressed, see :func:`zipped_size`).
* :mod:`~roverlite.compress.structured`: filter (channel) pruning that rebuilds a thinner dense
  U-Net, the one way here to cut MACs of a trained model.
* :mod:`~roverlite.compress.qat`: TFMOT quantization-aware training, optionally keeping a pruned
  model's zeros.
* :mod:`~roverlite.compress.distill`: knowledge distillation from a teacher into any preset.

Workstation-only: importing this package imports TensorFlow and TFMOT (after
:mod:`roverlite._tf`, which selects Keras 2).
"""

from __future__ import annotations

from roverlite.compress.distill import DistillConfig, Distiller, bottleneck_feature, distill, kd_loss
from roverlite.compress.prune import (
    PruneConfig,
    fine_tune_pruned,
    is_pruning_wrapped,
    prune,
    sparsity_report,
    strip,
    zipped_size,
)
from roverlite.compress.qat import fine_tune_qat, is_quantize_wrapped, quantize_aware
from roverlite.compress.structured import StructuredReport, structured_prune

__all__ = [
    "DistillConfig",
    "Distiller",
    "PruneConfig",
    "StructuredReport",
    "bottleneck_feature",
    "distill",
    "fine_tune_pruned",
    "fine_tune_qat",
    "is_pruning_wrapped",
    "is_quantize_wrapped",
    "kd_loss",
    "prune",
    "quantize_aware",
    "sparsity_report",
    "strip",
    "structured_prune",
    "zipped_size",
]
