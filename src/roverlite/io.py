"""Crash-safe file writing: every artifact is written to a temporary name, then renamed.

A reader (or a device pulling a bundle) therefore sees either the old file or the complete new
one, never a half-written file, even if the process is killed or the disk fills mid-write.

Two files that only make sense together (an artifact and its sidecar) are staged under temporary
names (:func:`staged_path`, :func:`write_staged`), checked, and renamed into place by
:func:`commit_pair`, so an interrupted or failed command leaves the previous pair intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

# Signals a user or a service manager sends to stop a command; held off while a pair is renamed.
_HELD_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


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
        os.close(fd)
    except OSError as err:
        raise _write_error(err, path) from err
    write_staged(tmp, path, write, mode)  # removes tmp on failure
    try:
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


def staged_path(final: str | os.PathLike) -> Path:
    """A new, empty temporary file beside ``final`` that keeps its suffix: ``.<stem>.<random>.tmp<suffix>``.

    Keeping the suffix lets code that derives a partner's name from the file's (an artifact's
    sidecar is ``<stem>.json``) work on the staged file as on the final one.

    Raises:
        OSError: the folder is not writable (the message names ``final``).
    """
    final = Path(final)
    try:
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}")
    except OSError as err:
        raise _write_error(err, final) from err
    os.close(fd)
    return Path(tmp)


def write_staged(
    staged: str | os.PathLike, final: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb"
) -> Path:
    """Fill the staged file ``staged`` (see :func:`staged_path`) that will become ``final``; no rename.

    The file gets the permissions a plain ``open()`` would give and is flushed to disk. Errors
    (a full disk) name ``final``, the file the user asked for, and remove ``staged``.
    """
    staged, final = Path(staged), Path(final)
    try:
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    except OSError as err:
        raise _write_error(err, final) from err
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as err:
        staged.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _write_error(err, final) from err
        raise
    return staged


def commit_pair(staged: Path, final: Path, staged_partner: Path, final_partner: Path, pending_partner: Path) -> None:
    """Rename two staged files into place so that a reader finds the old pair or the new one.

    Order: the partner goes to ``pending_partner`` first, then ``staged`` replaces ``final`` (the
    commit point), then the pending partner replaces ``final_partner``. SIGINT, SIGTERM and SIGHUP
    are held off meanwhile (delivered right after), so Ctrl-C cannot split the pair. A SIGKILL or
    power cut between the last two renames leaves the new partner at ``pending_partner``, where a
    reader or the next writer finds it (see ``roverlite.deploy.sidecar.load_verified``).

    Raises:
        OSError: a rename failed (the message names the final file); before the commit point
            nothing final has changed.
    """
    held = _hold_signals()
    try:
        try:
            os.replace(staged_partner, pending_partner)
        except OSError as err:
            raise _write_error(err, final_partner) from err
        try:
            os.replace(staged, final)
        except OSError as err:
            pending_partner.unlink(missing_ok=True)
            raise _write_error(err, final) from err
        try:
            os.replace(pending_partner, final_partner)
        except OSError as err:
            raise _write_error(err, final_partner) from err
        _fsync_dir(final.parent)
    finally:
        _release_signals(held)


def _hold_signals() -> set[int] | None:
    if not hasattr(signal, "pthread_sigmask") or not _HELD_SIGNALS:
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)


def _release_signals(previous: set[int] | None) -> None:
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (a power cut after this keeps them); best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the renames themselves are still atomic
    finally:
        os.close(fd)


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
    return atomic_write_text(path, _json_text(obj))


def write_document(path: str | os.PathLike, kind: str, body: Mapping[str, Any]) -> Path:
    """:func:`atomic_write_json` of a run document stamped with its ``kind`` and ``schema_version``
    (:func:`roverlite.core.documents.stamp`; :func:`~roverlite.core.documents.read_document` reads it)."""
    # Imported here: a device bundle copies io.py without core/documents.py (deploy writes no run documents).
    from roverlite.core.documents import stamp

    return atomic_write_json(path, stamp(kind, body))


def write_staged_json(staged: str | os.PathLike, final: str | os.PathLike, obj: Any) -> Path:
    """:func:`write_staged` of ``obj`` as JSON, formatted as :func:`atomic_write_json` writes it."""
    text = _json_text(obj)
    return write_staged(staged, final, lambda fh: fh.write(text), "w")


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def _json_default(obj: Any) -> Any:
    # numpy only when a numpy value is written: io.py itself needs the standard library only
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
