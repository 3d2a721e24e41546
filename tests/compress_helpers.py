"""Helpers shared by the compression tests (test_prune, test_qat)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from roverlite._tf import tf


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run ``fit`` eagerly: a few eager steps of a tiny model cost less than tracing TFMOT's wrappers."""
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)
