"""The one place roverlite imports TensorFlow.

TFMOT prunes and quantizes only Keras 2 models, so every roverlite model is a ``tf_keras``
functional model. ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is first imported for
``tf.keras`` to mean Keras 2 as well; this module is the only place that sets it, and every other
module gets TensorFlow through ``from roverlite._tf import tf, keras``.
"""

import os

if os.environ.get("TF_USE_LEGACY_KERAS") not in (None, "1", "true", "True"):
    raise ImportError(
        "roverlite needs Keras 2 (tf_keras) models for TFMOT. Expected TF_USE_LEGACY_KERAS unset or 1. "
        f"Received: TF_USE_LEGACY_KERAS={os.environ['TF_USE_LEGACY_KERAS']!r}."
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras"]
