"""Segmentation metrics: moved to :mod:`roverlite.core.metrics` (numpy-only, shared with the device).

This name stays so that existing imports keep working; new code imports ``roverlite.core.metrics``.
"""

from roverlite.core.metrics import (  # noqa: F401 - re-exported
    StreamingConfusion,
    class_iou_dict,
    confusion_matrix,
    hazard_rates,
    hazard_summary,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)
from roverlite.core.metrics import __all__  # noqa: F401
