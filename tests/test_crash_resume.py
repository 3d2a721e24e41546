"""Crash safety of training: a run killed with SIGKILL mid-epoch resumes to the same result.

The slow test kills a real ``roverlite train`` process in the middle of an epoch (after at least
one checkpoint), resumes it with ``--resume``, and compares it with an uninterrupted run of the
same config: bit for bit, every weight, BatchNorm statistic, Adam moment and metric. That holds on
CPU because every source of randomness is re-derived on resume: the data order and augmentation
from (train.seed, epoch), initial weights from train.seed, and dropout's stateful random ops,
whose state tf_keras leaves out of checkpoints, by the per-epoch restart in ``fit.train``. (Bit
equality is for one machine; another core count may order float reductions differently.)

The fast tests plant the folder states that a kill during a checkpoint swap can leave.
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
# Dropout is on so that the comparison covers TensorFlow's stateful random ops as well.
TRAIN_SETTINGS = [
    "model.name=unet_tiny",
    "model.overrides={dropout: 0.2}",
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
            tail = log.read_text()[-2000:]
            pytest.fail(f"training finished (exit {proc.returncode}) before it could be killed:\n{tail}")
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
    epoch = kill_mid_epoch(proc, crashed, tmp_path / "crash.log")[0]
    # The kill landed inside epoch `epoch`, after the checkpoint of the one before it.
    assert checkpoint_epoch(crashed) == epoch - 1
    assert [row["epoch"] for row in read_metrics(crashed)] == list(range(1, epoch))
    assert not (crashed / "summary.json").exists()

    run_to_completion(crashed, tmp_path / "resume.log", resume=True)
    history = read_metrics(crashed)
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    assert leftovers(crashed) == []
    assert checkpoint_epoch(crashed) == EPOCHS

    # Bit-equal, not close (see the module docstring).
    expected = read_metrics(reference)
    for got, want in zip(history, expected):
        for key in ("loss", "val_miou", "val_per_class_iou", "val_pixel_accuracy", "learning_rate"):
            assert got[key] == want[key], (got["epoch"], key)
    final, reference_final = checkpoint_tensors(crashed), checkpoint_tensors(reference)
    assert final.keys() == reference_final.keys() and len(final) > 10
    for name, value in reference_final.items():
        np.testing.assert_array_equal(final[name], value, err_msg=name)


# === A kill during the checkpoint swap (fast) ===


def _small_model():
    from roverlite.train.fit import _build

    cfg = load_config(None, overrides=["model.name=unet_tiny", "data.image_size=[16, 16]"])
    return _build(cfg, steps_per_epoch=1, class_weights=np.ones(4))


@pytest.fixture(scope="module")
def epoch3_checkpoint(tmp_path_factory):
    """A ``checkpoints`` folder holding epoch 3 of a model with distinctive weights; and the weights."""
    from roverlite.train.checkpoint import TrainState, save_checkpoint

    model, optimizer = _small_model()
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape).astype(w.dtype) for w in model.get_weights()])
    optimizer.iterations.assign(7)
    folder = tmp_path_factory.mktemp("template") / "checkpoints"
    state = TrainState(epoch=3, best_miou=0.5, best_epoch=2, history=[{"epoch": k} for k in (1, 2, 3)])
    save_checkpoint(folder, model, optimizer, state)
    return folder, model.get_weights()


@pytest.fixture(scope="module")
def blank_model():
    return _small_model()


def _plant(template: Path, dest: Path, layout: str) -> Path:
    """Copy the template checkpoint folder to ``dest`` and rearrange it as a kill would leave it."""
    import shutil

    shutil.copytree(template, dest)
    if layout == "old-last":  # killed between the two renames of save_checkpoint
        (dest / "last").rename(dest / ".old-last")
        (dest / ".tmp-killed").mkdir()
        (dest / ".tmp-killed" / "ckpt.index").write_bytes(b"half")
    elif layout == "stale-tmp":  # killed after writing a complete temporary, before renaming it
        shutil.copytree(dest / "last", dest / ".tmp-killed")
        state = json.loads((dest / ".tmp-killed" / "state.json").read_text())
        (dest / ".tmp-killed" / "state.json").write_text(json.dumps({**state, "epoch": 4}))
    return dest


def _load_into(blank_model, path: Path):
    from roverlite.train.checkpoint import load_checkpoint

    model, optimizer = blank_model
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    optimizer.iterations.assign(0)
    return load_checkpoint(path, model, optimizer)


@pytest.mark.parametrize("layout, found", [("old-last", ".old-last"), ("stale-tmp", "last")])
def test_checkpoint_left_by_a_kill_mid_swap_is_found_and_restores_epoch_3(
    epoch3_checkpoint, blank_model, tmp_path, layout, found
):
    from roverlite.train.checkpoint import find_checkpoint

    template, weights = epoch3_checkpoint
    folder = _plant(template, tmp_path / "checkpoints", layout)
    path = find_checkpoint(folder)
    assert path == folder / found
    state = _load_into(blank_model, path)
    model, optimizer = blank_model
    assert state.epoch == 3 and [row["epoch"] for row in state.history] == [1, 2, 3]
    assert int(optimizer.iterations.numpy()) == 7
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(got, want)


def test_first_save_after_resuming_from_old_last_leaves_one_complete_checkpoint(
    epoch3_checkpoint, blank_model, tmp_path
):
    from roverlite.train.checkpoint import find_checkpoint, save_checkpoint

    folder = _plant(epoch3_checkpoint[0], tmp_path / "checkpoints", "old-last")
    state = _load_into(blank_model, find_checkpoint(folder))
    state.epoch = 4
    save_checkpoint(folder, *blank_model, state)
    assert find_checkpoint(folder) == folder / "last"
    assert checkpoint_epoch(tmp_path) == 4
    assert not (folder / ".old-last").exists()


class SimulatedKill(BaseException):
    pass


def test_kill_during_the_save_after_resuming_from_old_last_keeps_a_checkpoint(
    epoch3_checkpoint, blank_model, tmp_path, monkeypatch
):
    from roverlite.train import checkpoint

    folder = _plant(epoch3_checkpoint[0], tmp_path / "checkpoints", "old-last")
    state = _load_into(blank_model, checkpoint.find_checkpoint(folder))
    state.epoch = 4
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).name.startswith(".tmp-"):  # the kill lands just before the new one is in place
            raise SimulatedKill()
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    with pytest.raises(SimulatedKill):
        checkpoint.save_checkpoint(folder, *blank_model, state)
    assert checkpoint.find_checkpoint(folder) is not None


def test_save_after_a_kill_removes_stale_temporary_checkpoints(epoch3_checkpoint, blank_model, tmp_path):
    from roverlite.train.checkpoint import find_checkpoint, save_checkpoint

    folder = _plant(epoch3_checkpoint[0], tmp_path / "checkpoints", "stale-tmp")
    state = _load_into(blank_model, find_checkpoint(folder))
    state.epoch = 4
    save_checkpoint(folder, *blank_model, state)
    assert sorted(p.name for p in folder.iterdir()) == ["last"]
