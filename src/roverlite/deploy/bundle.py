"""Device bundles: one folder (or ``.tar.gz``) that runs an artifact on a robot with no roverlite install.

A bundle holds::

    <artifact>  <artifact>.json     the verified artifact and its sidecar
    testpack.npz                    images, masks, ids (read with allow_pickle=False)
    requirements-device.txt         numpy, pillow, ai-edge-litert, onnxruntime pinned to this machine's versions
    run.py                          scores the test pack and times the model (python run.py --threads 2)
    bench.py                        full benchmark with accuracy of the timed runner (python bench.py --json b.json)
    roverlite/                      a copy of roverlite.deploy (the edgeloop camera loop included) plus the numpy-only modules it uses
    bundle.json                     manifest: artifact, test pack, sha256 of every file

:func:`unpack_bundle` checks every member before extracting anything and refuses absolute paths,
``..`` components, device files, links that point outside the destination (followed through
each other), hard links to anything but a file stored before them, and archives over
:data:`MAX_BUNDLE_MEMBERS` members or :data:`MAX_BUNDLE_BYTES` bytes, so a tampered archive cannot
write outside the folder it is unpacked into, nor fill the disk.

Example:
    >>> make_bundle("exports/unet_xs_tflite_int8.tflite", "unet_xs_tflite_int8.tar.gz", images, masks, ids)  # doctest: +SKIP
    >>> # on the robot:  python -c "from roverlite.deploy.bundle import unpack_bundle; ..."
    >>> # or simply:     mkdir b && tar -xzf unet_xs_tflite_int8.tar.gz -C b && python b/run.py
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path, PurePosixPath

import numpy as np

from roverlite.deploy.evaluate import save_testpack
from roverlite.deploy.sidecar import load_verified, sidecar_path
from roverlite.io import atomic_write, sha256_file

__all__ = [
    "BUNDLE_SCHEMA_VERSION", "DEVICE_REQUIREMENTS", "MAX_BUNDLE_BYTES", "MAX_BUNDLE_MEMBERS", "make_bundle", "unpack_bundle",
]

logger = logging.getLogger(__name__)

BUNDLE_SCHEMA_VERSION = 1
# Pillow resizes frames on the device exactly as the training loader does (roverlite.deploy.resize).
DEVICE_REQUIREMENTS = ("numpy", "pillow", "ai-edge-litert", "onnxruntime")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
# Paths inside the roverlite package copied into a bundle besides roverlite/deploy/: what deploy
# imports, i.e. roverlite.io and the numpy-only bottom layer (.importlinter keeps it that way).
_VENDORED_MODULES = (
    "io.py", "core/__init__.py", "core/errors.py", "core/metrics.py", "core/preprocessing.py",
)
_PACKAGE_STUB = '"""roverlite (device subset copied into a bundle by roverlite.deploy.make_bundle)."""\n'
# Limits of unpack_bundle: a bundle holds ~30 members and at most a few hundred MB (artifact and
# test pack); a hostile 2 MB archive could otherwise write gigabytes or millions of files.
MAX_BUNDLE_MEMBERS = 10_000
MAX_BUNDLE_BYTES = 1 << 30


# === Making ===


def make_bundle(
    artifact: str | os.PathLike,
    out: str | os.PathLike,
    testpack_images: np.ndarray,
    testpack_masks: np.ndarray,
    ids: Sequence[str] | None = None,
) -> Path:
    """Write a self-contained device bundle for ``artifact``.

    Args:
        artifact: a ``.tflite`` / ``.onnx`` file with its sidecar (its sha256 is verified first).
        out: a folder that does not exist yet (or is empty), or a path ending in ``.tar.gz``/``.tgz``.
        testpack_images: uint8 images (N, H, W[, C]) for the test pack.
        testpack_masks: uint8 masks (N, H, W).
        ids: one id per image (default ``"0"``, ``"1"``, ...).

    Returns:
        The bundle folder or archive path.

    Raises:
        FileExistsError: ``out`` exists (a non-empty folder or any file).
        ValueError: artifact refused by its sidecar, or an inconsistent test pack.
    """
    artifact, out = Path(artifact), Path(out)
    sidecar, content = load_verified(artifact)
    is_archive = out.name.lower().endswith(_ARCHIVE_SUFFIXES)
    if (is_archive and out.exists()) or (out.is_dir() and any(out.iterdir())) or out.is_file():
        raise FileExistsError(f"Bundle output exists. Expected a new path (or an empty folder). Received: {str(out)!r}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the bundle is meant to be shared
        (staging / artifact.name).write_bytes(content)
        shutil.copyfile(sidecar_path(artifact), staging / sidecar_path(artifact).name)
        save_testpack(staging / "testpack.npz", testpack_images, testpack_masks, ids)
        (staging / "requirements-device.txt").write_text(_requirements_text())
        shutil.copyfile(Path(__file__).with_name("_bundle_run.py"), staging / "run.py")
        (staging / "run.py").chmod(0o755)
        shutil.copyfile(Path(__file__).with_name("_bundle_bench.py"), staging / "bench.py")
        (staging / "bench.py").chmod(0o755)
        _copy_deploy_package(staging)
        _write_manifest(staging, artifact.name, sidecar.format, sidecar.runtime)
        if is_archive:
            _write_archive(staging, out)
            shutil.rmtree(staging)
        else:
            os.replace(staging, out)  # atomic: the bundle folder appears complete or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("bundle written to %s (%s, %d test images)", out, sidecar.format, len(testpack_images))
    return out


def _requirements_text() -> str:
    lines = ["# Device runtime for this bundle, pinned to the versions it was exported and checked with."]
    for name in DEVICE_REQUIREMENTS:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(name)  # not installed where the bundle was made: leave the choice to the device
    return "\n".join(lines) + "\n"


def _copy_deploy_package(staging: Path) -> None:
    package_root = Path(__file__).resolve().parent.parent  # .../roverlite
    target = staging / "roverlite"
    (target / "deploy").mkdir(parents=True)
    (target / "__init__.py").write_text(_PACKAGE_STUB)
    for source in sorted((package_root / "deploy").rglob("*.py")):  # edgeloop/ too: the camera loop
        relative = source.relative_to(package_root / "deploy")
        (target / "deploy" / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / "deploy" / relative)
    for relative in _VENDORED_MODULES:
        (target / relative).parent.mkdir(exist_ok=True)
        shutil.copyfile(package_root / relative, target / relative)


def _write_manifest(staging: Path, artifact_name: str, fmt: str, runtime: str) -> None:
    files = {
        path.relative_to(staging).as_posix(): sha256_file(path)
        for path in sorted(staging.rglob("*"))
        if path.is_file()
    }
    manifest = {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "artifact": artifact_name,
        "sidecar": sidecar_path(artifact_name).name,
        "testpack": "testpack.npz",
        "format": fmt,
        "runtime": runtime,
        "files": files,
    }
    (staging / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _write_archive(staging: Path, out: Path) -> None:
    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def write(fh) -> None:
        with tarfile.open(fileobj=fh, mode="w:gz") as tar:
            for path in sorted(staging.rglob("*")):
                tar.add(path, arcname=path.relative_to(staging).as_posix(), recursive=False, filter=normalise)

    atomic_write(out, write)


# === Unpacking ===


def unpack_bundle(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    max_members: int = MAX_BUNDLE_MEMBERS,
    max_bytes: int = MAX_BUNDLE_BYTES,
) -> Path:
    """Extract a bundle archive into ``dest`` after checking every member.

    Nothing is extracted when any member is unsafe: an absolute path, a ``..`` component, a
    device file, FIFO or sparse file, a name given twice, a member stored under a symbolic link, a
    symbolic link whose target (followed through the archive's other links, as the file system
    would) lies outside ``dest``, or a hard link to anything but a regular file stored before it. Nor when the archive holds more than
    ``max_members`` members or more than ``max_bytes`` bytes of files (read from the headers,
    before any file's content is decompressed). The archive is extracted into a temporary folder
    beside ``dest`` and renamed into place, so ``dest`` appears complete or not at all.

    Args:
        archive: a ``.tar.gz`` bundle.
        dest: a folder that does not exist yet (or is empty).
        max_members: most members accepted (a bundle holds a few dozen).
        max_bytes: most bytes of file content accepted.

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError: no such archive.
        FileExistsError: ``dest`` holds files.
        ValueError: not a tar archive, an unsafe member (named in the message), or over a limit.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"Bundle archive not found. Expected a .tar.gz file. Received: {str(archive)!r}.")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"Bundle destination exists. Expected a new path (or an empty folder). Received: {str(dest)!r}.")
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by `with tar` below
    except (tarfile.TarError, OSError) as err:
        raise ValueError(f"Cannot read bundle {str(archive)!r}. Expected a tar archive. Received: {err}.") from None
    with tar:
        members = _checked_members(tar, archive, max_members, max_bytes)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
        try:
            staging.chmod(0o755)
            if hasattr(tarfile, "data_filter"):
                # Defence in depth: Python's own 'data' filter re-checks paths, links and modes.
                tar.extractall(staging, members=members, filter="data")
            else:  # Python < 3.11.4: the checks above are the guard
                tar.extractall(staging, members=members)
            os.replace(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return dest


def _checked_members(tar: tarfile.TarFile, archive: Path, max_members: int, max_bytes: int) -> list[tarfile.TarInfo]:
    """Every member of ``tar``, read header by header within the limits, each checked (see unpack_bundle)."""
    members: list[tarfile.TarInfo] = []
    total = 0
    try:
        for member in tar:
            members.append(member)
            total += member.size if member.isreg() else 0
            if len(members) > max_members:
                raise ValueError(
                    f"Refusing to unpack {str(archive)!r}: too many members. Expected at most {max_members}. "
                    f"Received: more than {max_members}."
                )
            if total > max_bytes:
                raise ValueError(
                    f"Refusing to unpack {str(archive)!r}: its files are too large. Expected at most {max_bytes} "
                    f"bytes in all. Received: more than {max_bytes} bytes (member {member.name!r})."
                )
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"Cannot read bundle {str(archive)!r}. Expected a complete tar archive. Received: {err}.") from None
    tree = _ArchiveTree(members)
    for member in members:
        problem = _unsafe_member(member) or tree.problem(member)
        if problem:
            raise ValueError(
                f"Refusing to unpack {str(archive)!r}: member {member.name!r} {problem}. "
                "Expected relative paths and links that stay inside the destination."
            )
    return members


def _unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` may not be extracted, judged on its own, or None when it is safe."""
    problem = _unsafe_path(member.name)
    if problem:
        return problem
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()) or member.issparse():
        return "is a device file, FIFO or sparse file"
    if member.issym() and _is_absolute(member.linkname):
        return f"is a symbolic link to the absolute path {member.linkname!r}"
    if member.islnk():
        problem = _unsafe_path(member.linkname)
        if problem:
            return f"is a hard link whose target {member.linkname!r} {problem}"
    return None


class _ArchiveTree:
    """The archive's names as the file system will see them once extracted, links included.

    Resolving a path follows every symbolic link among the members component by component, as
    the kernel does, so ``d/s -> ..`` followed by ``x -> d/s/..`` is seen to leave the root.
    """

    _MAX_LINKS = 40  # like the kernel's ELOOP limit

    def __init__(self, members: Sequence[tarfile.TarInfo]) -> None:
        self.members: dict[str, tarfile.TarInfo] = {}
        self.order: dict[str, int] = {}
        self.duplicates: set[str] = set()
        for index, member in enumerate(members):
            key = _normal(member.name)
            if key in self.members:
                self.duplicates.add(key)
            self.members[key], self.order[key] = member, index

    def problem(self, member: tarfile.TarInfo) -> str | None:
        key = _normal(member.name)
        if key in self.duplicates:
            return "appears more than once"
        link = self.link_above(key)
        if link is not None:  # extraction would write through the link (or fail half-way when it dangles)
            return f"lies under the symbolic link {link.name!r}"
        parent = self.resolve(posixpath.dirname(key))
        if parent is None:
            return "lies under a link that leaves the destination"
        parts = parent.split("/") if parent else []
        for depth in range(1, len(parts) + 1):
            above = self.members.get("/".join(parts[:depth]))
            if above is not None and not above.isdir():
                return f"lies under {above.name!r}, which is not a folder"
        if member.issym():
            target = self.resolve(posixpath.join(parent, member.linkname))
            if target is None:
                return f"is a symbolic link escaping the destination (to {member.linkname!r})"
        if member.islnk():
            target_key = _normal(member.linkname)
            target = self.members.get(target_key)
            if target is None or not target.isreg() or self.order[target_key] > self.order[key]:
                return f"is a hard link to {member.linkname!r}, which is not a regular file stored before it"
        return None

    def link_above(self, key: str) -> tarfile.TarInfo | None:
        """The symbolic-link member that ``key``'s stored path passes through, if any."""
        parts = key.split("/")
        for depth in range(1, len(parts)):
            above = self.members.get("/".join(parts[:depth]))
            if above is not None and above.issym():
                return above
        return None

    def resolve(self, path: str, links: int = 0) -> str | None:
        """``path`` (relative to the root) with every link followed; None when it leaves the root."""
        done: list[str] = []
        parts = [p for p in path.split("/") if p not in ("", ".")]
        while parts:
            part = parts.pop(0)
            if part == "..":
                if not done:
                    return None
                done.pop()
                continue
            here = "/".join([*done, part])
            member = self.members.get(here)
            if member is not None and member.issym():
                links += 1
                if links > self._MAX_LINKS or _is_absolute(member.linkname):
                    return None
                parts = [p for p in member.linkname.split("/") if p not in ("", ".")] + parts
                continue
            done.append(part)
        return "/".join(done)


def _normal(name: str) -> str:
    return posixpath.normpath(name.replace("\\", "/")).lstrip("/") if name else name


def _unsafe_path(name: str) -> str | None:
    if not name or _is_absolute(name):
        return "has an absolute (or empty) path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "has a '..' path component"
    return None


def _is_absolute(name: str) -> bool:
    # Windows drive letters too: an archive may be made on one system and unpacked on another.
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")
