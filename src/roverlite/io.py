"""Crash-safe file writing: every artifact is written to a temporary name, then renamed.

A reader (or a device pulling a bundle) therefore sees either the old file or the complete new
one, never a half-written file, even if the process is killed or the disk fills mid-write.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove it is writable; raise a one-line error otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".roverlite-write-test-"):
            pass
    except OSError as err:
        raise PermissionError(
            f"Output folder is not writable. Expected a folder roverlite can create files in. "
            f"Received: {str(path)!r} ({err.strerror or err})."
        ) from None
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path`` and rename it into place.

    On any error (including a full disk) the temporary file is removed and ``path`` is untouched.
    The file gets the permissions a plain ``open()`` would give (``0o666`` less the umask), not
    ``mkstemp``'s owner-only ``0o600``, so a device service running as another user can read it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _write_error(err, path) from err
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError):
            raise _write_error(err, path) from err
        raise
    return path


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _write_error(err: OSError, path: Path) -> OSError:
    """``err`` (same type and errno) with a one-line message naming the file being written.

    A full disk surfaces as ``[Errno 28] No space left on device`` with no file name; the CLI prints
    only the message, so it must say which file could not be written.
    """
    reason = err.strerror or str(err)
    if err.filename is not None and str(err.filename) != str(path):
        reason += f": {err.filename}"
    new = type(err)(f"Cannot write {str(path)!r}. Expected a writable folder with free space. Received: {reason}.")
    new.errno = err.errno
    return new


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data), "wb")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), "w")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
