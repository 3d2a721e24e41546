"""Atomic writes: a failed write leaves neither a partial file nor a temporary one behind."""

from __future__ import annotations

import os

import pytest

from roverlite.io import atomic_write, atomic_write_json, ensure_writable_dir, sha256_file


def test_atomic_write_replaces_file_whole(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert target.read_text().strip().endswith("}")
    assert '"x": 2' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")

    def write_then_fail(fh):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, write_then_fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_folder_is_reported_with_its_path(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            ensure_writable_dir(locked / "out")
    finally:
        locked.chmod(0o700)


def test_output_path_under_a_file_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="not writable"):
        ensure_writable_dir(blocker / "out")


def test_sha256_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "b"
    path.write_bytes(b"roverlite" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"roverlite" * 1000).hexdigest()


def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path):
    import os
    import stat

    from roverlite.io import atomic_write_bytes

    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    written = atomic_write_bytes(tmp_path / "artifact.tflite", b"x")
    assert stat.S_IMODE(os.stat(written).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
