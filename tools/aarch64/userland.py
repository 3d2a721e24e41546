"""The emulated arm64 userland, cached outside the repo: Debian's arm64 packages unpacked into a root
(the sysroot qemu gets with ``-L``), PyPI's aarch64 wheels installed into one site per pinned
requirements set."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterator

from aarch64.host import DEBIAN_PACKAGES, PYTHON_VERSION, EmulationError, run_command

logger = logging.getLogger("roverlite.tools.emulate_aarch64")

# A Raspberry Pi 4's cores (Cortex-A72 r0p3) as its kernel reports them, one entry per host CPU.
_CPUINFO_ENTRY = (
    "processor\t: {index}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n"
)
# The board line names the emulator, so a benchmark run under it says so in its host field.
_CPUINFO_TAIL = "Model\t\t: QEMU-emulated Cortex-A72 (qemu-aarch64-static -cpu cortex-a72)\n"


@dataclass(frozen=True)
class Userland:
    """A built arm64 sysroot plus one installed wheel set, ready to run ``python3.11`` under qemu."""

    root: Path
    site: Path
    debs: Mapping[str, str]
    wheels: Mapping[str, str]
    platform_tags: tuple[str, ...]

    @property
    def python(self) -> Path:
        return self.root / "usr" / "bin" / f"python{PYTHON_VERSION}"


def parse_requirements(text: str) -> list[str]:
    """Requirement lines of a ``requirements-device.txt`` (comments and blanks dropped), sorted."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return sorted(line for line in lines if line)


def host_requirements(names: Sequence[str] = ("numpy", "pillow", "ai-edge-litert", "onnxruntime")) -> list[str]:
    """The device runtimes pinned to this machine's versions, as ``make_bundle`` writes them."""
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return sorted(pins)


def site_key(requirements: Sequence[str], platform_tags: Sequence[str]) -> str:
    """Cache key of a wheel set: requirements, Python version and platform tags."""
    text = "\n".join([f"python=={PYTHON_VERSION}", *sorted(requirements), *platform_tags])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def platform_tags(glibc: tuple[int, int]) -> tuple[str, ...]:
    """pip ``--platform`` tags an aarch64 system with this glibc accepts, newest first.

    pip expands none of the ``manylinux_2_X`` tags by itself, so every older one is listed.
    """
    major, minor = glibc
    if major != 2 or minor < 17:
        raise ValueError(f"Expected glibc 2.17 or newer. Received: {major}.{minor}.")
    return tuple(f"manylinux_2_{m}_aarch64" for m in range(minor, 16, -1)) + ("manylinux2014_aarch64",)


def glibc_of(libc6_version: str) -> tuple[int, int]:
    """``(2, 36)`` from a Debian libc6 version such as ``2.36-9+deb12u14``."""
    match = re.match(r"(?:\d+:)?(\d+)\.(\d+)", libc6_version)
    if not match:
        raise ValueError(f"Expected a libc6 version like '2.36-9'. Received: {libc6_version!r}.")
    return int(match.group(1)), int(match.group(2))


def cpuinfo_text(cpus: int) -> str:
    """An arm64 ``/proc/cpuinfo`` listing ``cpus`` Cortex-A72 cores."""
    if cpus < 1:
        raise ValueError(f"Expected at least one CPU. Received: cpus={cpus}.")
    return "".join(_CPUINFO_ENTRY.format(index=i) for i in range(cpus)) + _CPUINFO_TAIL


def host_cpu_count() -> int:
    """CPUs the guest sees in ``/sys/devices/system/cpu/possible`` (its cpuinfo must list as many)."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()  # e.g. "0-1" or "0,2-3"
        count = 0
        for part in text.split(","):
            first, _, last = part.partition("-")
            count += int(last or first) - int(first) + 1
        return count
    except (OSError, ValueError):
        return os.cpu_count() or 1


def ensure_userland(
    cache: Path, requirements: Sequence[str], constraints: Sequence[str] = (), rebuild: bool = False
) -> Userland:
    """The cached userland for ``requirements``, building what is missing (under a file lock).

    Args:
        cache: the cache folder (created).
        requirements: pinned requirement lines, e.g. the bundle's ``requirements-device.txt``.
        constraints: optional pins for transitive dependencies (``--check`` passes this host's
            versions so both machines run the same protobuf, flatbuffers, ...).
        rebuild: drop the cached sysroot and wheel set first.

    Raises:
        EmulationError: a download or unpack step failed (its output is in the message).
    """
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        if rebuild:
            for path in [cache / "root", cache / "root.json", *cache.glob("site-*")]:
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        debs = _ensure_root(cache)
        tags = platform_tags(glibc_of(debs["libc6"]))
        key = site_key(requirements, tags)
        wheels = _ensure_site(cache, key, requirements, constraints, tags)
        _write_if_changed(cache / "root" / "proc" / "cpuinfo", cpuinfo_text(host_cpu_count()))
    return Userland(root=cache / "root", site=cache / f"site-{key}", debs=debs, wheels=wheels, platform_tags=tags)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:  # two sessions sharing a cache build it once
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _apt_options(cache: Path) -> list[str]:
    """apt options for a private arm64-only state: the host's sources, none of its lists or status."""
    state = cache / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    user = pwd.getpwuid(os.getuid()).pw_name  # apt's _apt sandbox user cannot write into a user's cache
    settings = {
        "Dir::State::Lists": state / "lists",
        "Dir::Cache": state / "cache",
        "Dir::State::status": state / "status",
        "APT::Architecture": "arm64",
        "APT::Architectures::": "arm64",
        "APT::Sandbox::User": user,
        "Debug::NoLocking": "1",
    }
    return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]


def _ensure_root(cache: Path) -> dict[str, str]:
    manifest = cache / "root.json"
    if manifest.is_file() and (cache / "root").is_dir():
        recorded = json.loads(manifest.read_text())
        if tuple(recorded.get("packages", ())) == DEBIAN_PACKAGES:
            return recorded["debs"]
        logger.info("package list changed: rebuilding the arm64 sysroot")
    started = time.perf_counter()
    apt = _apt_options(cache)
    logger.info("downloading arm64 package lists (private apt state in %s)", cache / "apt")
    run_command(["apt-get", "-q", *apt, "update"], "apt-get update (arm64 lists)")
    debs_dir = cache / "debs"
    shutil.rmtree(debs_dir, ignore_errors=True)
    debs_dir.mkdir()
    run_command(["apt-get", "-q", *apt, "download", *DEBIAN_PACKAGES], "apt-get download (arm64 .debs)", cwd=debs_dir)
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=".root."))
    versions = {}
    for deb in sorted(debs_dir.glob("*.deb")):
        fields = run_command(["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"], f"dpkg-deb -f {deb.name}").stdout
        info = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
        if info.get("Architecture") not in ("arm64", "all"):
            raise EmulationError(f"Expected arm64 packages. Received: {deb.name} for {info.get('Architecture')!r}.")
        versions[info["Package"]] = info["Version"]
        run_command(["dpkg-deb", "-x", str(deb), str(staging)], f"dpkg-deb -x {deb.name}")
    missing = sorted(set(DEBIAN_PACKAGES) - set(versions))
    if missing:
        shutil.rmtree(staging)
        raise EmulationError(f"Expected every arm64 package to download. Received: none for {missing}.")
    shutil.rmtree(cache / "root", ignore_errors=True)
    os.replace(staging, cache / "root")
    manifest.write_text(json.dumps({"packages": list(DEBIAN_PACKAGES), "debs": versions}, indent=2) + "\n")
    logger.info("arm64 sysroot built in %.0f s (%d packages)", time.perf_counter() - started, len(versions))
    return versions


def _ensure_site(
    cache: Path, key: str, requirements: Sequence[str], constraints: Sequence[str], tags: Sequence[str]
) -> dict[str, str]:
    site, manifest = cache / f"site-{key}", cache / f"site-{key}.json"
    if manifest.is_file() and site.is_dir():
        return json.loads(manifest.read_text())["wheels"]
    started = time.perf_counter()
    wheels_dir = cache / "wheels"
    wheels_dir.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=cache, prefix=".site."))
    try:
        (work / "requirements.txt").write_text("\n".join(requirements) + "\n")
        target = [
            "--only-binary=:all:", *(arg for tag in tags for arg in ("--platform", tag)),
            "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp" + PYTHON_VERSION.replace(".", ""),
            "-r", str(work / "requirements.txt"),
        ]
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        logger.info("downloading aarch64 wheels for %s", ", ".join(requirements))
        if constraints:
            (work / "constraints.txt").write_text("\n".join(constraints) + "\n")
            try:
                run_command([*pip, "download", "--dest", str(wheels_dir), *target, "-c", str(work / "constraints.txt")],
                     "pip download (aarch64 wheels, host versions)")
                target += ["-c", str(work / "constraints.txt")]
            except EmulationError as err:  # e.g. a host version with no aarch64 wheel: let pip choose
                logger.warning("aarch64 wheels at this host's versions unavailable, resolving freely: %s",
                               str(err).splitlines()[-1])
        if "-c" not in target:
            run_command([*pip, "download", "--dest", str(wheels_dir), *target], "pip download (aarch64 wheels)")
        run_command(
            [*pip, "install", "--no-index", "--find-links", str(wheels_dir), "--target", str(work / "site"),
             "--no-compile", *target],
            "pip install --target (aarch64 wheels)",
        )
        wheels = {d.metadata["Name"]: d.version for d in metadata.distributions(path=[str(work / "site")])}
        shutil.rmtree(site, ignore_errors=True)
        os.replace(work / "site", site)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = {"requirements": list(requirements), "pinned_to_host_versions": "-c" in target, "platform_tags": list(tags),
              "wheels": dict(sorted(wheels.items()))}
    manifest.write_text(json.dumps(record, indent=2) + "\n")
    logger.info("aarch64 wheels installed in %.0f s: %s", time.perf_counter() - started,
                ", ".join(f"{k} {v}" for k, v in sorted(wheels.items())))
    return record["wheels"]


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
