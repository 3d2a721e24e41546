"""Crash safety of training: a run killed with SIGKILL mid-epoch resumes to the same result.

The slow test kills a real ``roverlite train`` process in the middle of an epoch (after at least
one checkpoint), resumes it with ``--resume``, and compares it with an uninterrupted run of the
same config. The fast tests plant the folder states a kill during a checkpoint swap can leave.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from roverlite.config import load_config

EPOCHS = 4
# 32x32 unet_tiny, batch 4: 600 scenes (420 for training) make ~105 steps an epoch, about a second,
# long enough to land a kill inside one; few scenes would finish epochs between two polls.
TRAIN_SETTINGS = [
    "model.name=unet_tiny",
    "data.image_size=[32, 32]",
    "data.synthetic_count=600",
    "train.batch_size=4",
    f"train.epochs={EPOCHS}",
]
# tqdm's line for a running epoch, e.g. "epoch 2/4:  40%|####      | 42/105 [...]".
PROGRESS = re.compile(r"epoch (\d+)/\d+:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")


# === Helpers ===


def start_training(run: Path, log: Path, resume: bool = False) -> subprocess.Popen:
    # Not -q: the progress bar on stderr is how the test sees which batch the run is at.
    argv = [sys.executable, "-m", "roverlite", "train", "--out", str(run)]
    for setting in TRAIN_SETTINGS:
        argv += ["--set", setting]
    if resume:
        argv.append("--resume")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with open(log, "wb") as fh:
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)


def checkpoint_epoch(run: Path) -> int:
    try:
        return json.loads((run / "checkpoints" / "last" / "state.json").read_text())["epoch"]
    except (OSError, ValueError):  # absent, or seen mid-rename
        return 0


def running_batch(log: Path) -> tuple[int, int, int] | None:
    """(epoch, batch, batches) of the last progress update in ``log``, or None before the first."""
    found = PROGRESS.findall(log.read_bytes().decode("utf-8", "replace"))
    return tuple(int(v) for v in found[-1]) if found else None


def kill_mid_epoch(proc: subprocess.Popen, run: Path, log: Path, timeout: float = 300.0) -> tuple[int, int, int]:
    """SIGKILL ``proc`` once a checkpoint exists and a later epoch is part-way; return where it was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training finished (exit {proc.returncode}) before it could be killed:\n{log.read_text()[-2000:]}")
        done = checkpoint_epoch(run)
        at = running_batch(log)
        if done >= 1 and at is not None and at[0] == done + 1 and 0 < at[1] < at[2] * 3 // 4:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return at
        time.sleep(0.02)
    proc.kill()
    pytest.fail("timed out waiting for the run to be mid-epoch")


def run_to_completion(run: Path, log: Path, resume: bool = False) -> None:
    proc = start_training(run, log, resume=resume)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def checkpoint_tensors(run: Path) -> dict[str, np.ndarray]:
    """Every tensor of the final checkpoint: weights, BatchNorm statistics, Adam moments, step."""
    from roverlite._tf import tf

    reader = tf.train.load_checkpoint(str(run / "checkpoints" / "last" / "ckpt"))
    names = [n for n in reader.get_variable_to_shape_map() if "save_counter" not in n and "CHECKPOINTABLE" not in n]
    return {n: reader.get_tensor(n) for n in names}


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.name != "last")


# === Kill -9 mid-epoch, then --resume ===


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path):
    reference = tmp_path / "uninterrupted"
    run_to_completion(reference, tmp_path / "reference.log")

    crashed = tmp_path / "crashed"
    proc = start_training(crashed, tmp_path / "crash.log")
    epoch, batch, batches = kill_mid_epoch(proc, crashed, tmp_path / "crash.log")
    # The kill landed inside epoch `epoch`, after the checkpoint of the one before it.
    assert checkpoint_epoch(crashed) == epoch - 1
    assert [row["epoch"] for row in read_metrics(crashed)] == list(range(1, epoch))
    assert not (crashed / "summary.json").exists()

    run_to_completion(crashed, tmp_path / "resume.log", resume=True)
    history = read_metrics(crashed)
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    assert leftovers(crashed) == []
    assert checkpoint_epoch(crashed) == EPOCHS

    # Bit-equal, not close: see the module docstring of roverlite.train.fit for why resume is exact.
    expected = read_metrics(reference)
    for got, want in zip(history, expected):
        for key in ("loss", "val_miou", "val_per_class_iou", "val_pixel_accuracy", "learning_rate"):
            assert got[key] == want[key], (got["epoch"], key)
    final, reference_final = checkpoint_tensors(crashed), checkpoint_tensors(reference)
    assert final.keys() == reference_final.keys() and len(final) > 10
    for name, value in reference_final.items():
        np.testing.assert_array_equal(final[name], value, err_msg=name)
