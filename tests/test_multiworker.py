"""Multi-worker training is real: two processes on 127.0.0.1 train in lockstep via TF_CONFIG."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_two_workers_finish_with_identical_weights(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    run = tmp_path / "run"
    argv = [
        sys.executable, "-m", "roverlite", "-q", "train", "--strategy", "multiworker",
        "--model", "unet_tiny", "--epochs", "2", "--batch-size", "4",
        "--set", "data.image_size=[32, 32]", "--set", "data.synthetic_count=16", "--out", str(run),
    ]
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        outputs.append(out)
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(o[-3000:] for o in outputs)

    from roverlite.config import load_config
    from roverlite.train.checkpoint import find_checkpoint, load_checkpoint
    from roverlite.train.fit import _build

    cfg = load_config(run / "config.yaml")
    weights = []
    for folder in (run / "checkpoints", run / ".worker-1" / "checkpoints"):
        model, optimizer = _build(cfg, steps_per_epoch=1, class_weights=np.ones(4))
        state = load_checkpoint(find_checkpoint(folder), model, optimizer)
        assert state.epoch == 2
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
