"""Choosing how training runs: device strategy (one machine, several GPUs, several machines) and precision.

Multi-worker training uses TensorFlow's own ``MultiWorkerMirroredStrategy``. Each worker process
is started with the same command and a ``TF_CONFIG`` environment variable that lists the cluster
and names the worker, e.g. for two workers on one host::

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]},
                "task": {"type": "worker", "index": 0}}' roverlite train --strategy multiworker ...

(and ``"index": 1`` for the second). Worker 0 is the chief: it alone writes the run folder; the
others write their checkpoints and model into ``DIR/.worker-<index>/``: every worker must save,
because reading synchronised variables to save them is itself a collective operation.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from roverlite._tf import keras, tf

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerRole:
    """Where this process sits in a (possibly single-process) training cluster."""

    task_type: str | None
    task_index: int
    num_workers: int

    @property
    def is_chief(self) -> bool:
        return self.task_type in (None, "chief") or (self.task_type == "worker" and self.task_index == 0)


def worker_role() -> WorkerRole:
    """Read this process's role from ``TF_CONFIG`` (single process when it is unset)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return WorkerRole(None, 0, 1)
    try:
        conf = json.loads(raw)
        task = conf["task"]
        cluster = conf["cluster"]
        workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
        return WorkerRole(str(task["type"]), int(task["index"]), workers)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            'TF_CONFIG is not valid. Expected JSON like {"cluster": {"worker": ["host:port", ...]}, '
            f'"task": {{"type": "worker", "index": 0}}}}. Received: {raw!r} ({err}).'
        ) from None


def select_strategy(name: str) -> tf.distribute.Strategy:
    """Return the distribution strategy for ``auto|none|mirrored|multiworker``.

    ``auto`` mirrors across GPUs when there are several and otherwise uses the default
    (single-device) strategy. ``multiworker`` requires ``TF_CONFIG`` and must be chosen before
    any other TensorFlow op runs in the process.
    """
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "--strategy multiworker needs the TF_CONFIG environment variable describing the cluster "
                "(see roverlite.train.distribute). Received: TF_CONFIG unset."
            )
        worker_role()  # validates TF_CONFIG with a readable error
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    if name in ("auto", "none"):
        return tf.distribute.get_strategy()
    raise ValueError(f"Expected strategy auto|none|mirrored|multiworker. Received: {name!r}.")


def select_precision(name: str) -> str:
    """Resolve ``auto`` to ``mixed_float16`` on a GPU, else ``float32``, and set the Keras policy."""
    if name == "auto":
        name = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    keras.mixed_precision.set_global_policy(name)
    return name
