"""The recipe's step kinds, one module each: the step's frozen, validated settings and its ``run``.

Each module registers its class with :func:`~roverlite.compress._registry.register_step` and holds
what the step does to a model, beside the technique it drives:

* :mod:`.distill` (:class:`DistillStep`): a fresh student trained against the current model, by
  :mod:`roverlite.compress.distill`;
* :mod:`.prune` (:class:`PruneStep`): magnitude pruning while fine-tuning, by :mod:`roverlite.compress.prune`;
* :mod:`.structured` (:class:`StructuredStep`): filter pruning by :mod:`roverlite.compress.structured`,
  with the decoder, resolution and latency-search options, then a fine-tune;
* :mod:`.qat` (:class:`QatStep`): quantization-aware training by :mod:`roverlite.compress.qat`;
* :mod:`.export` (:class:`ExportStep`): the formats the runner exports the model to.

A step that trains builds its technique's config in one method (``PruneStep.prune_config``,
``DistillStep.distill_config``) and fine-tunes with the run's training set-up
(:class:`roverlite.compress.finetune.FineTune`). Techniques are imported when a step runs or is
validated, not when this package is.
"""

from __future__ import annotations

# isort: off
# Imported in the order a chain runs them: it is the registration order, listed in recipe.STEP_KINDS.
from roverlite.compress.steps.distill import DistillStep
from roverlite.compress.steps.prune import PruneStep
from roverlite.compress.steps.structured import StructuredStep
from roverlite.compress.steps.qat import QatStep
from roverlite.compress.steps.export import ExportStep
# isort: on

__all__ = ["DistillStep", "ExportStep", "PruneStep", "QatStep", "Step", "StructuredStep"]

Step = DistillStep | PruneStep | StructuredStep | QatStep | ExportStep
