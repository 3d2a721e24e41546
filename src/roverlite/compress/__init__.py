"""Compressing a trained U-Net for the rover: pruning, channel slimming, QAT and distillation.

One module per technique, each with paired apply / strip (or train) functions and a frozen,
validated config where there are settings:

* :mod:`~roverlite.compress.prune`: TFMOT magnitude pruning (element-wise zeros; smaller only
  once compressed, see :func:`zipped_size`).
* :mod:`~roverlite.compress.structured`: filter (channel) pruning that rebuilds a thinner dense
  U-Net, the one way here to cut MACs of a trained model (a recipe's ``structured`` step can
  fine-tune the thin model by distilling from the unpruned one).
* :mod:`~roverlite.compress.qat`: TFMOT quantization-aware training, optionally keeping a pruned
  model's zeros.
* :mod:`~roverlite.compress.distill`: knowledge distillation from a teacher into any preset.

Chained by a recipe (:mod:`~roverlite.compress.recipe`: the YAML schema and its order rules), whose
step kinds are one frozen class each in :mod:`~roverlite.compress.steps` (one module per kind,
registered with :func:`~roverlite.compress._registry.register_step`, with its ``run(model, ctx)``
beside the technique it drives; training steps fine-tune with
:class:`~roverlite.compress.finetune.FineTune`, the run's own set-up from
:mod:`roverlite.train.setup`), run by :func:`~roverlite.compress.runner.run_recipe` (a loop over the
steps), with an accuracy gate after every step (:mod:`~roverlite.compress.gate`) and a per-layer
int8 error table (:mod:`~roverlite.compress.qdebug`).

Workstation-only: importing this package imports TensorFlow and TFMOT (after
:mod:`roverlite._tf`, which selects Keras 2).
"""

from __future__ import annotations

from roverlite.compress.distill import DistillConfig, Distiller, bottleneck_feature, distill, kd_loss
from roverlite.compress.gate import GateConfig, GateError, GateReport
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
from roverlite.compress.qdebug import QDebugConfig, debug_quantization
from roverlite.compress.recipe import Recipe, load_recipe
from roverlite.compress.runner import RecipeResult, StepResult, run_recipe
from roverlite.compress.structured import StructuredReport, structured_prune

__all__ = [
    "DistillConfig",
    "Distiller",
    "GateConfig",
    "GateError",
    "GateReport",
    "PruneConfig",
    "QDebugConfig",
    "Recipe",
    "RecipeResult",
    "StepResult",
    "StructuredReport",
    "bottleneck_feature",
    "debug_quantization",
    "distill",
    "fine_tune_pruned",
    "fine_tune_qat",
    "is_pruning_wrapped",
    "is_quantize_wrapped",
    "kd_loss",
    "load_recipe",
    "prune",
    "quantize_aware",
    "run_recipe",
    "sparsity_report",
    "strip",
    "structured_prune",
    "zipped_size",
]
