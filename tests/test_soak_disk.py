"""What the robot loop leaves on disk and in CPython's tables over a long run (issue 26).

``MaskPngPublisher`` keeps only the newest ``--keep-masks`` PNGs, across restarts too; the loop's
file names never pass through pathlib, whose ``sys.intern`` of every new name grew the interned
string table (the +0.52 MiB step of the Jetson soak).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from loop_fakes import ConstantSegmenter, CountingSource

def _edgeloop(name: str):
    return importlib.import_module(f"roverlite.deploy.edgeloop.{name}")


def _frame(index: int):
    return _edgeloop("frames").Frame(index, np.zeros((4, 6), np.uint8), f"test#{index}", 0.0)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _mask_names(*indices: int) -> list[str]:
    return sorted(f"mask_{k:06d}.png" for k in indices)


def test_mask_publisher_keeps_only_the_newest_masks_and_keep_zero_keeps_all(tmp_path):
    publish = _edgeloop("publish")
    bounded, unbounded = publish.MaskPngPublisher(tmp_path / "b", keep=3), publish.MaskPngPublisher(tmp_path / "u", 0)
    for index in (0, 1, 2, 5, 6, 9):  # skipped indices (a dropped camera frame) leave nothing behind
        bounded.publish(_frame(index), np.full((4, 6), index % 4, np.uint8))
        unbounded.publish(_frame(index), np.zeros((4, 6), np.uint8))
    assert _names(tmp_path / "b") == _mask_names(5, 6, 9) and bounded.on_disk == 3
    assert _names(tmp_path / "u") == _mask_names(0, 1, 2, 5, 6, 9)
    from PIL import Image

    assert np.asarray(Image.open(tmp_path / "b" / "mask_000009.png")).tolist() == [[1] * 6] * 4


def test_mask_publisher_counts_an_earlier_runs_masks_and_never_deletes_a_file_it_just_overwrote(tmp_path):
    publish = _edgeloop("publish")
    folder = tmp_path / "masks"
    folder.mkdir()
    for age, index in enumerate((900, 901, 902, 0, 1)):  # an earlier run, oldest first; 0 and 1 come again
        path = folder / f"mask_{index:06d}.png"
        path.write_bytes(b"old")
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    (folder / "notes.txt").write_text("not a mask")
    publisher = publish.MaskPngPublisher(folder, keep=3)
    assert _names(folder) == sorted([*_mask_names(902, 0, 1), "notes.txt"])  # the two oldest went at start
    for index in range(3):
        publisher.publish(_frame(index), np.zeros((4, 6), np.uint8))
    assert _names(folder) == sorted([*_mask_names(0, 1, 2), "notes.txt"])
    assert all((folder / name).read_bytes() != b"old" for name in _mask_names(0, 1, 2))  # this run's files
    publisher.publish(_frame(3), np.zeros((4, 6), np.uint8))
    assert _names(folder) == sorted([*_mask_names(1, 2, 3), "notes.txt"])


def test_keep_masks_is_validated_and_reaches_the_png_publisher_from_the_loop_arguments(tmp_path):
    import argparse

    app, publish = _edgeloop("app"), _edgeloop("publish")
    with pytest.raises(ValueError, match="Expected --keep-masks >= 0"):
        publish.MaskPngPublisher(tmp_path, keep=-1)
    parser = argparse.ArgumentParser()
    app.add_arguments(parser, ("auto", "folder"))
    assert parser.parse_args(["--model", "m.tflite"]).keep_masks == publish.DEFAULT_KEEP_MASKS > 0
    args = parser.parse_args(["--model", "m.tflite", "--keep-masks", "7", "--publish", f"png:{tmp_path}"])
    (publisher,) = publish.make_publishers(args.publish, ["a", "b"], keep_masks=args.keep_masks)
    assert publisher.keep == 7


def test_the_loop_interns_no_file_name_per_frame(tmp_path, monkeypatch):
    # pathlib calls sys.intern on every new path part: one new table entry per overlay or mask name,
    # which resized CPython's interned-string table during the Jetson soak (+0.52 MiB at frame 49,500).
    loop, publish = _edgeloop("loop"), _edgeloop("publish")
    interned = []
    real_intern = sys.intern
    monkeypatch.setattr(sys, "intern", lambda text: interned.append(text) or real_intern(text))
    options = loop.LoopOptions(max_frames=40, overlay_dir=tmp_path / "overlays", overlay_every=2, overlay_keep=3,
                               log_every_s=0)
    summary = loop.run_loop(ConstantSegmenter(), CountingSource(40, shape=(4, 6), name="test#{index}"), options,
                            [publish.MaskPngPublisher(tmp_path / "masks", keep=5)])
    assert summary["frames"] == 40 and len(_names(tmp_path / "overlays")) == 3 and len(_names(tmp_path / "masks")) == 5
    assert [name for name in interned if name.startswith(("overlay_", "mask_", ".overlay_", ".mask_"))] == []
