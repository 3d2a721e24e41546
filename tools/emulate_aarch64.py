#!/usr/bin/env python3
"""Run roverlite device bundles on an emulated 64-bit Arm CPU and compare them with x86-64.

A Raspberry Pi 4/5 on 64-bit Raspberry Pi OS (Debian bookworm) runs a bundle with Debian's Python
3.11 and the aarch64 wheels of numpy, Pillow and ai-edge-litert; a Jetson's CPU path is ONNX Runtime's
aarch64 wheel. This tool builds that userland once, from Debian's arm64 packages and PyPI's
aarch64 wheels, in a cache outside the repo, and runs a bundle's benchmark with accuracy
(``bench.py`` when the bundle has one, else ``run.py``) under ``qemu-aarch64-static -cpu
cortex-a72``. ``--check`` goes end to end: it trains a small student on real AI4Mars images,
exports it to int8 TFLite and float ONNX, bundles each with 20 validation images, runs every
bundle on this x86-64 machine and under emulation, and compares logits, masks (pixel by pixel),
mIoU, and the schema of the bundle runner's JSON. Emulated timings are recorded, marked as
emulated, and never compared: qemu translates every instruction, so they say nothing about real
silicon.

Cache (``$XDG_CACHE_HOME/roverlite/aarch64``, default ``~/.cache/roverlite/aarch64``)::

    apt/              private apt state with arm64 package lists (the host's apt is not touched)
    debs/             the arm64 .debs (python3.11-minimal, libc6, libstdc++6, ...)
    root/             their contents unpacked: the sysroot passed to qemu with -L
    root/proc/cpuinfo a Cortex-A72 /proc/cpuinfo (see below)
    root.json         package -> version
    wheels/           aarch64 wheels as downloaded, shared by every site
    site-<key>/       wheels installed for one set of pinned requirements (key = their sha256)
    site-<key>.json   requirements, wheel name -> version, platform tags

Why ``root/proc/cpuinfo``: LiteRT's XNNPACK and ONNX Runtime read ``/proc/cpuinfo`` to pick
kernels; under qemu 7.2 the emulated process reads the host's x86 file and LiteRT's
``allocate_tensors()`` segfaults. qemu-user resolves every absolute path inside the ``-L`` prefix
first, so an arm64 cpuinfo placed there is what the guest reads; no root, mount namespace or bind
mount is needed. The guest's view is checked on every run (``cpu_parts`` in the results), so a
qemu that stopped translating the path fails the check instead of passing it.

Usage::

    python tools/emulate_aarch64.py --setup            # apt-get install qemu-user-static (root); build the cache
    python tools/emulate_aarch64.py --check            # end to end; writes benchmarks/results/aarch64_emulated.json
    python tools/emulate_aarch64.py --bundle b.tar.gz  # one bundle's bench.py (or run.py) under emulation
    python tools/emulate_aarch64.py --support          # can this host emulate? exit 0, or 77 with the reason

Exit codes: 0 passed, 1 the emulated run disagrees with x86, 2 an error (bad input, failed
download), 77 this host cannot emulate (the reason on stderr; CI treats it as a skip).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import platform
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np

logger = logging.getLogger("roverlite.tools.emulate_aarch64")

REPO = Path(__file__).resolve().parents[1]
RESULTS_JSON = REPO / "benchmarks" / "results" / "aarch64_emulated.json"
SCHEMA_VERSION = 1
SKIP_EXIT = 77  # automake's "skipped"; CI scripts read it as "not applicable here"

QEMU = "qemu-aarch64-static"
QEMU_CPU = "cortex-a72"  # Raspberry Pi 4's core; NEON, no dot product: the baseline Armv8.0 kernels
PYTHON_VERSION = "3.11"
# The arm64 userland: the interpreter, its stdlib, and the C/C++ libraries the wheels link against.
# Left out on purpose (not used by a bundle): readline, curses, sqlite3, dbm, nis and their libraries.
DEBIAN_PACKAGES = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "zlib1g",
    "libexpat1",
    "libssl3",
    "libffi8",
    "libbz2-1.0",
    "liblzma5",
    "libuuid1",
    "libcrypt1",
)
# A Raspberry Pi 4's cores (Cortex-A72 r0p3) as its kernel reports them, one entry per host CPU.
_CPUINFO_ENTRY = (
    "processor\t: {index}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n"
)
# The board line names the emulator, so a benchmark run under it says so in its host field.
_CPUINFO_TAIL = "Model\t\t: QEMU-emulated Cortex-A72 (qemu-aarch64-static -cpu cortex-a72)\n"
CORTEX_A72_PART = "0xd08"

# The check's comparison limits (issue 9): masks from the two machines, and mIoU on 20 images.
MIN_PIXEL_AGREEMENT = 0.999
MAX_MIOU_ABS_DIFF = 0.001
CHECK_FORMATS = ("tflite_int8", "onnx")
# What a robot lacks; the device-side probe makes these unimportable on both machines.
BLOCKED_MODULES = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tf2onnx", "onnx", "yaml")


class EmulationError(RuntimeError):
    """Building the userland or running under emulation failed (the message says which step)."""


# === Host support ===


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "roverlite" / "aarch64"


def support_problem(cache: Path | None = None) -> str | None:
    """Why this host cannot run bundles under aarch64 emulation, or ``None`` when it can.

    Checked in order: an x86-64 Linux host, ``qemu-aarch64-static`` on ``PATH``, and either a
    built userland in ``cache`` or the Debian tools to build one (``apt-get``, ``dpkg-deb``).
    """
    system, machine = platform.system(), platform.machine().lower()
    if system != "Linux" or machine not in ("x86_64", "amd64"):
        return (
            f"aarch64 emulation is checked on x86-64 Linux hosts only. Received: {system} {platform.machine()} "
            "(on an arm64 machine run the bundle's run.py natively instead)."
        )
    if shutil.which(QEMU) is None:
        return (
            f"{QEMU} not found on PATH. Expected Debian's qemu-user-static: run "
            "`python tools/emulate_aarch64.py --setup` as root (or `apt-get install qemu-user-static`)."
        )
    cache = default_cache_dir() if cache is None else cache
    if not (cache / "root.json").is_file():
        missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
        if missing:
            return (
                f"no arm64 userland cached in {cache} and this host cannot build one: {', '.join(missing)} not found "
                "(the userland is unpacked from Debian's arm64 packages; a Debian host is expected)."
            )
        distro = _os_release().get("ID", "")
        if distro != "debian":
            return (
                f"no arm64 userland cached in {cache}; it is built from Debian's arm64 packages with the host's apt "
                f"sources, which only a Debian host has. Received: ID={distro or 'unknown'} in /etc/os-release."
            )
    return None


def _os_release() -> dict[str, str]:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key: value.strip().strip('"') for key, value in pairs}


def install_qemu() -> None:
    """``apt-get install qemu-user-static`` when it is missing (needs root; only with ``--setup``)."""
    if shutil.which(QEMU):
        logger.info("%s already installed: %s", QEMU, qemu_version())
        return
    if shutil.which("apt-get") is None:
        raise EmulationError(f"Cannot install {QEMU}. Expected apt-get (a Debian host). Received: no apt-get on PATH.")
    if os.geteuid() != 0:
        raise EmulationError(
            f"Installing {QEMU} needs root. Expected to run --setup as root. Received: uid {os.geteuid()}; "
            "run `sudo apt-get install qemu-user-static`, then this tool without --setup."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "-q", "update"], "apt-get update", env=env)
    _run(["apt-get", "-q", "install", "-y", "--no-install-recommends", "qemu-user-static"], "apt-get install", env=env)
    logger.info("installed %s", qemu_version())


def qemu_version() -> str:
    out = _run([QEMU, "--version"], f"{QEMU} --version").stdout
    return out.splitlines()[0].strip() if out.strip() else "unknown"


# === The arm64 userland (cache) ===


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
    _run(["apt-get", "-q", *apt, "update"], "apt-get update (arm64 lists)")
    debs_dir = cache / "debs"
    shutil.rmtree(debs_dir, ignore_errors=True)
    debs_dir.mkdir()
    _run(["apt-get", "-q", *apt, "download", *DEBIAN_PACKAGES], "apt-get download (arm64 .debs)", cwd=debs_dir)
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=".root."))
    versions = {}
    for deb in sorted(debs_dir.glob("*.deb")):
        fields = _run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"], f"dpkg-deb -f {deb.name}").stdout
        info = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
        if info.get("Architecture") not in ("arm64", "all"):
            raise EmulationError(f"Expected arm64 packages. Received: {deb.name} for {info.get('Architecture')!r}.")
        versions[info["Package"]] = info["Version"]
        _run(["dpkg-deb", "-x", str(deb), str(staging)], f"dpkg-deb -x {deb.name}")
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
                _run([*pip, "download", "--dest", str(wheels_dir), *target, "-c", str(work / "constraints.txt")],
                     "pip download (aarch64 wheels, host versions)")
                target += ["-c", str(work / "constraints.txt")]
            except EmulationError as err:  # e.g. a host version with no aarch64 wheel: let pip choose
                logger.warning("aarch64 wheels at this host's versions unavailable, resolving freely: %s",
                               str(err).splitlines()[-1])
        if "-c" not in target:
            _run([*pip, "download", "--dest", str(wheels_dir), *target], "pip download (aarch64 wheels)")
        _run(
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


# === Running under emulation ===


def emulated_command(userland: Userland, args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run ``python3.11 args...`` as an aarch64 process."""
    argv = [QEMU, "-cpu", QEMU_CPU, "-L", str(userland.root), str(userland.python), "-s", *args]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "LANG": "C.UTF-8",
        "PYTHONHOME": str(userland.root / "usr"),
        "PYTHONPATH": str(userland.site),
        "PYTHONNOUSERSITE": "1",
    }
    return argv, env


def run_emulated(
    userland: Userland, args: Sequence[str], cwd: Path, timeout: float = 1800
) -> subprocess.CompletedProcess:
    """Run the arm64 Python on ``args`` under qemu; output is captured (and logged on failure)."""
    argv, env = emulated_command(userland, args)
    return _run(argv, "emulated python3.11", cwd=cwd, env=env, timeout=timeout)


def _run(
    argv: Sequence[str], what: str, cwd: Path | None = None, env: Mapping[str, str] | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    logger.debug("running %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            list(argv), cwd=cwd, env=None if env is None else dict(env), capture_output=True, text=True,
            timeout=timeout, check=False,
        )
    except FileNotFoundError:
        raise EmulationError(f"{what} failed. Expected {argv[0]!r} on PATH. Received: not found.") from None
    except subprocess.TimeoutExpired:
        raise EmulationError(f"{what} failed. Expected it to finish within {timeout:.0f} s. Received: a timeout.") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise EmulationError(f"{what} failed with exit code {proc.returncode}: {shlex.join(argv)[:300]}\n{tail}")
    return proc


# The device-side probe. It runs the bundle's own benchmark with accuracy (bench.py, when the
# bundle has one; else run.py, which scores the test pack and times the model), then saves the
# logits and masks of every test image and what the process saw. The same script runs under the
# host's venv and under the emulated arm64 Python.
PROBE = '''
import json, platform, runpy, sys
from importlib import metadata
from pathlib import Path

for name in BLOCKED:
    sys.modules[name] = None  # as on a robot: no TensorFlow, onnx, PyYAML (Pillow is a device requirement)
bundle, out, threads, repeat = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve(), sys.argv[3], sys.argv[4]
if (bundle / "bench.py").is_file():
    runner = "bench.py"
    args = ["--runs", repeat, "--warmup", "3", "--end-to-end"]
else:
    runner = "run.py"
    args = ["--repeat", repeat]
sys.argv = [str(bundle / runner), "--json", str(out / "result.json"), "--threads", threads, *args]
try:
    runpy.run_path(str(bundle / runner), run_name="__main__")
except SystemExit as stop:
    if stop.code not in (0, None):
        raise
import numpy as np
from roverlite.deploy import Segmenter, load_testpack

manifest = json.loads((bundle / "bundle.json").read_text())
segmenter = Segmenter(bundle / manifest["artifact"], threads=int(threads))
pack = load_testpack(bundle / manifest["testpack"])
np.save(out / "logits.npy", np.stack([segmenter.predict_logits(image) for image in pack.images]))
np.save(out / "masks.npy", segmenter.predict_batch(pack.images))

def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None

cpuinfo = Path("/proc/cpuinfo").read_text()
env = {
    "runner": runner,
    "machine": platform.machine(),
    "python": platform.python_version(),
    "versions": {name: version(name) for name in ("numpy", "pillow", "ai-edge-litert", "onnxruntime")},
    "cpu_parts": sorted({line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("CPU part")}),
    "deploy_package": str(Path(sys.modules["roverlite.deploy"].__file__).resolve().parent),
}
(out / "env.json").write_text(json.dumps(env, indent=2))
'''
# Distribution that provides each runtime named in sidecars and results.
RUNTIME_DISTRIBUTIONS = {"litert": "ai-edge-litert", "onnxruntime": "onnxruntime"}


@dataclass(frozen=True)
class ProbeOutput:
    """What one run of the probe left: the bundle runner's JSON, logits, masks, and the process's view.

    Attributes:
        bundle: the unpacked bundle folder.
        document: ``bench.py``'s or ``run.py``'s JSON, as written.
        logits: float32 ``(N, H, W, K)`` at the model's size; masks: uint8 ``(N, H, W)`` at the images' size.
        env: ``runner``, ``machine``, ``python``, ``versions``, ``cpu_parts``, ``deploy_package``.
        wall_s: wall time of the whole process, start-up included.
    """

    bundle: Path
    document: dict[str, Any]
    logits: np.ndarray
    masks: np.ndarray
    env: dict[str, Any]
    wall_s: float

    @property
    def summary(self) -> dict[str, Any]:
        return run_summary(self.document, self.env.get("runner", "run.py"))


def probe_bundle(
    bundle: Path, out: Path, threads: int, repeat: int, userland: Userland | None = None
) -> ProbeOutput:
    """Run the probe on an unpacked ``bundle``: on this host when ``userland`` is None, else emulated."""
    out.mkdir(parents=True, exist_ok=True)
    script = out / "probe.py"
    script.write_text(f"BLOCKED = {list(BLOCKED_MODULES)!r}\n{PROBE}")
    args = [str(script), str(bundle), str(out), str(threads), str(repeat)]
    started = time.perf_counter()
    if userland is None:
        _run([sys.executable, "-s", *args], f"probe of {bundle.name} on this host", cwd=out, timeout=600)
    else:
        run_emulated(userland, args, cwd=out)
    wall = time.perf_counter() - started
    return ProbeOutput(
        bundle=bundle.resolve(),
        document=json.loads((out / "result.json").read_text()),
        logits=np.load(out / "logits.npy", allow_pickle=False),
        masks=np.load(out / "masks.npy", allow_pickle=False),
        env=json.loads((out / "env.json").read_text()),
        wall_s=wall,
    )


def run_summary(document: Mapping[str, Any], runner: str) -> dict[str, Any]:
    """The fields compared across machines, from ``bench.py``'s JSON (one row) or ``run.py``'s.

    Raises:
        EmulationError: a bench document without exactly one measured row.
    """
    if runner == "bench.py":
        rows = document.get("results") or []
        if len(rows) != 1 or rows[0].get("status") != "ok":
            errors = [row.get("error") for row in rows]
            raise EmulationError(f"Expected one measured row from bench.py. Received: {len(rows)} rows, errors {errors}.")
        row = rows[0]
        accuracy = row.get("accuracy") or {}
        latency = {"model": row.get("latency_ms"), "end_to_end": row.get("end_to_end_ms"),
                   "init_ms": row.get("init_ms"), "first_inference_ms": row.get("first_inference_ms")}
        return {
            "runtime": row.get("runtime"), "format": row.get("format"), "artifact": row.get("artifact"),
            "sha256": row.get("sha256"), "backend": row.get("backend"), "images": accuracy.get("images"),
            "miou": accuracy.get("miou"), "per_class_iou": accuracy.get("per_class_iou") or {},
            "confusion_matrix": None, "latency_ms": latency,
        }
    keys = ("runtime", "format", "artifact", "sha256", "backend", "images", "miou", "latency_ms")
    return {**{key: document.get(key) for key in keys}, "per_class_iou": document.get("per_class_iou") or {},
            "confusion_matrix": document.get("confusion_matrix")}


# === Comparing runs ===


def json_schema(value: Any) -> Any:
    """The shape of a JSON value: dict keys with their schemas, list element schemas, type names.

    ``int`` and ``float`` are both ``number`` (JSON does not tell them apart); ``None`` is ``null``.
    """
    if isinstance(value, Mapping):
        return {str(k): json_schema(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        elements = {json.dumps(json_schema(v), sort_keys=True) for v in value}
        return [json.loads(e) for e in sorted(elements)]
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def schema_differences(a: Any, b: Any, where: str = "$") -> list[str]:
    """Where the JSON values ``a`` and ``b`` differ in shape: keys, element kinds, types.

    A ``null`` matches any type (the field is nullable: e.g. a profile not taken) and an empty
    list matches any list (e.g. no SIMD flag of interest on one CPU).
    """
    return _schema_diff(json_schema(a), json_schema(b), where)


def _schema_diff(sa: Any, sb: Any, where: str) -> list[str]:
    if "null" in (sa, sb):
        return []
    if isinstance(sa, dict) and isinstance(sb, dict):
        out = [f"{where}.{k}: only in the first" for k in sorted(set(sa) - set(sb))]
        out += [f"{where}.{k}: only in the second" for k in sorted(set(sb) - set(sa))]
        for k in sorted(set(sa) & set(sb)):
            out += _schema_diff(sa[k], sb[k], f"{where}.{k}")
        return out
    if isinstance(sa, list) and isinstance(sb, list):
        if not sa or not sb:
            return []
        if len(sa) == 1 and len(sb) == 1:
            return _schema_diff(sa[0], sb[0], f"{where}[]")
    if sa != sb:
        return [f"{where}: {json.dumps(sa)[:80]} vs {json.dumps(sb)[:80]}"]
    return []


def compare_runs(
    reference: ProbeOutput, emulated: ProbeOutput, pins: Mapping[str, str] | None = None,
    min_agreement: float = MIN_PIXEL_AGREEMENT, max_miou_diff: float = MAX_MIOU_ABS_DIFF,
) -> dict[str, Any]:
    """Masks, logits, mIoU, per-class IoU and JSON schema of an emulated run against the x86 run.

    Args:
        reference, emulated: the probe's outputs on this host and under emulation.
        pins: requirement pins (``{"numpy": "2.4.6", ...}``) both processes must have run with.

    Returns:
        One ``runs`` entry of the results JSON, with ``passed`` and the ``failures`` behind it.
    """
    ref, emu = reference.summary, emulated.summary
    failures = []
    if reference.masks.shape != emulated.masks.shape:
        failures.append(f"mask shapes differ: {reference.masks.shape} vs {emulated.masks.shape}")
        agreement, differing = 0.0, int(reference.masks.size)
    else:
        differing = int(np.count_nonzero(reference.masks != emulated.masks))
        agreement = 1.0 - differing / max(reference.masks.size, 1)
    same_logit_shape = reference.logits.shape == emulated.logits.shape
    logit_diff = float(np.abs(reference.logits - emulated.logits).max()) if same_logit_shape else None
    miou_diff = _abs_diff(ref["miou"], emu["miou"])
    class_diffs = [_abs_diff(ref["per_class_iou"].get(k), emu["per_class_iou"].get(k)) for k in ref["per_class_iou"]]
    schema = schema_differences(reference.document, emulated.document)
    if agreement < min_agreement:
        failures.append(f"pixel agreement {agreement:.6f} < {min_agreement}")
    if miou_diff is None or miou_diff > max_miou_diff:
        failures.append(f"mIoU differs by {miou_diff} (limit {max_miou_diff})")
    if schema:
        failures.append(f"{reference.env.get('runner')} JSON schema differs: {'; '.join(schema[:5])}")
    if reference.env.get("runner") != emulated.env.get("runner"):
        failures.append(f"different bundle runners: {reference.env.get('runner')} vs {emulated.env.get('runner')}")
    if emulated.env.get("machine") != "aarch64":
        failures.append(f"the emulated process reported machine {emulated.env.get('machine')!r}, expected 'aarch64'")
    if emulated.env.get("cpu_parts") != [CORTEX_A72_PART]:
        failures.append(f"the emulated process saw CPU parts {emulated.env.get('cpu_parts')}, "
                        f"expected [{CORTEX_A72_PART!r}]")
    for side, probe in (("x86", reference), ("emulated", emulated)):
        used = {str(probe.env.get("deploy_package"))}
        if probe.document.get("deploy_package"):  # run.py records it too
            used.add(str(probe.document["deploy_package"]))
        if not all(path.startswith(str(probe.bundle) + os.sep) for path in used):
            failures.append(f"the {side} run used roverlite.deploy from {sorted(used)}, not from its bundle")
        for name in ("numpy", RUNTIME_DISTRIBUTIONS.get(str(ref["runtime"]), "")):
            wanted, got = (pins or {}).get(name), (probe.env.get("versions") or {}).get(name)
            if wanted is not None and got != wanted:
                failures.append(f"the {side} run imported {name} {got}, the bundle pins {wanted}")
    return {
        "runtime": ref["runtime"],
        "format": ref["format"],
        "artifact": Path(str(ref["artifact"])).name,
        "sha256": ref["sha256"],
        "bundle_runner": reference.env.get("runner"),
        "testpack_images": ref["images"],
        "pixel_agreement": agreement,
        "pixels": int(reference.masks.size),
        "differing_pixels": differing,
        "logits_max_abs_diff": logit_diff,
        "logits_bit_identical": bool(same_logit_shape and np.array_equal(reference.logits, emulated.logits)),
        "miou_x86": ref["miou"],
        "miou_emulated": emu["miou"],
        "miou_abs_diff": miou_diff,
        "max_class_iou_abs_diff": max((d for d in class_diffs if d is not None), default=None),
        "confusion_matrix_equal": (None if ref["confusion_matrix"] is None or emu["confusion_matrix"] is None
                                   else ref["confusion_matrix"] == emu["confusion_matrix"]),
        "schema_matches": not schema,
        "schema_differences": schema,
        "backend_x86": ref["backend"],
        "backend_emulated": emu["backend"],
        "machine_emulated": emulated.env.get("machine"),
        "cpu_parts_emulated": emulated.env.get("cpu_parts"),
        "python_emulated": emulated.env.get("python"),
        "versions_x86": reference.env.get("versions"),
        "versions_emulated": emulated.env.get("versions"),
        "latency_ms_x86": ref["latency_ms"],
        "latency_ms_emulated": {**(emu["latency_ms"] or {}), "emulated": True},
        "wall_s_x86": round(reference.wall_s, 2),
        "wall_s_emulated": round(emulated.wall_s, 2),
        "passed": not failures,
        "failures": failures,
    }


def _abs_diff(a: float | None, b: float | None) -> float | None:
    if a is None and b is None:
        return 0.0
    if a is None or b is None:
        return None
    return abs(float(a) - float(b))


# === The end-to-end check ===

MODEL_NAME = "unet_xxs"
MODEL_SIZE = (64, 64)        # the student's input
TESTPACK_SIZE = (128, 128)   # test images are larger, so the device-side numpy resize runs too
TRAIN_IMAGES = 480
TESTPACK_IMAGES = 20
EPOCHS = 10


@dataclass(frozen=True)
class Student:
    """The trained student's artifacts and the data they were checked on."""

    artifacts: Mapping[str, Path]
    testpack: Any  # roverlite.data.loader.SegmentationArrays at TESTPACK_SIZE
    info: Mapping[str, Any]


def train_and_export(datasets: Path, out_dir: Path, formats: Sequence[str], seed: int = 0) -> Student:
    """Train ``unet_xxs`` briefly on AI4Mars at 64x64 and export it to ``formats``."""
    import dataclasses

    from roverlite.config import load_config
    from roverlite.data.loader import load_split, normalize
    from roverlite.export import export_model

    cfg = load_config(REPO / "configs" / "mars.yaml").data
    base = dataclasses.replace(cfg, path=str(datasets), image_size=MODEL_SIZE)
    started = time.perf_counter()
    train = load_split(dataclasses.replace(base, max_images=TRAIN_IMAGES), "train")
    check = load_split(dataclasses.replace(base, max_images=TESTPACK_IMAGES), "val")
    testpack = load_split(dataclasses.replace(base, max_images=TESTPACK_IMAGES, image_size=TESTPACK_SIZE), "val")
    if check.ids != testpack.ids:
        raise EmulationError(f"Expected the same {TESTPACK_IMAGES} validation ids at both sizes. Received: different ids.")
    loaded = time.perf_counter()

    model = _fit(base, normalize(train.images, base.mean, base.std), train.masks, seed)
    fitted = time.perf_counter()
    results = export_model(
        model, list(formats), out_dir, base, calibration_images=train.images[:100], check_images=check.images,
        check_masks=check.masks, name=f"{MODEL_NAME}_aarch64check", recipe={"tool": "tools/emulate_aarch64.py"},
    )
    info = {
        "name": MODEL_NAME,
        "image_size": list(MODEL_SIZE),
        "train_images": len(train),
        "epochs": EPOCHS,
        "seed": seed,
        "export_self_check_passed": {r.format: r.passed for r in results},
        "seconds": {"load": round(loaded - started, 1), "fit": round(fitted - loaded, 1),
                    "export": round(time.perf_counter() - fitted, 1)},
    }
    return Student(artifacts={r.format: r.path for r in results}, testpack=testpack, info=info)


def _fit(data_cfg: Any, x: np.ndarray, masks: np.ndarray, seed: int) -> Any:
    from roverlite._tf import keras
    from roverlite.train.models import create_model

    keras.utils.set_random_seed(seed)
    model = create_model(MODEL_NAME, input_shape=(*MODEL_SIZE, data_cfg.channels), num_classes=data_cfg.num_classes)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9  # a few hundred steps: let the moving statistics settle
    valid = masks != data_cfg.ignore_index
    counts = np.bincount(masks[valid].ravel(), minlength=data_cfg.num_classes).astype(np.float64)
    class_weight = 1.0 / np.sqrt(np.maximum(counts / counts.sum(), 1e-4))  # inverse-sqrt frequency, as in training
    class_weight /= class_weight[counts > 0].mean()
    weights = np.where(valid, class_weight[np.where(valid, masks, 0)], 0.0).astype(np.float32)
    labels = np.where(valid, masks, 0)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, labels, sample_weight=weights, batch_size=16, epochs=EPOCHS, shuffle=True, verbose=0)
    return model


def constant_baseline_miou(masks: np.ndarray, num_classes: int, ignore_index: int | None, eval_ids: Sequence[int]) -> float:
    """The best mIoU a model predicting one class everywhere could reach on ``masks``.

    Predicting class ``c`` everywhere gives IoU ``share(c)`` for ``c`` and 0 for every other class
    present, so a model scoring above this has learned something from the pixels.
    """
    valid = masks != ignore_index if ignore_index is not None else np.ones(masks.shape, bool)
    counts = np.bincount(masks[valid].ravel(), minlength=num_classes)[:num_classes]
    shares = counts / max(counts.sum(), 1)
    return float(max(shares[c] for c in eval_ids) / len(eval_ids))


def run_check(
    datasets: Path, work_dir: Path, cache: Path | None = None, json_out: Path | None = RESULTS_JSON,
    formats: Sequence[str] = CHECK_FORMATS, threads: int = 1, repeat: int = 10, rebuild: bool = False,
    command: str = "python tools/emulate_aarch64.py --check", setup_s: float | None = None, cold: bool | None = None,
) -> dict[str, Any]:
    """Train, export, bundle; run every bundle on x86 and emulated aarch64; compare; write the JSON.

    ``setup_s`` and ``cold`` let the CLI report a ``--setup`` that ran just before (its time, and
    whether the cache was empty before it); by default the cache state at the call is reported.

    Raises:
        EmulationError: the host cannot emulate (see :func:`support_problem`) or a step failed.
    """
    from roverlite.deploy import make_bundle, unpack_bundle

    cache = default_cache_dir() if cache is None else cache
    problem = support_problem(cache)
    if problem:
        raise EmulationError(problem)
    timings: dict[str, float] = {} if setup_s is None else {"setup": setup_s}
    started = time.perf_counter()
    cold = not (cache / "root.json").is_file() if cold is None else cold

    student = train_and_export(datasets, work_dir / "exports", formats)
    timings["train_export"] = time.perf_counter() - started

    bundles = {}
    for fmt, artifact in student.artifacts.items():
        pack = student.testpack
        archive = make_bundle(artifact, work_dir / f"{artifact.stem}.tar.gz", pack.images, pack.masks, pack.ids)
        bundles[fmt] = archive
    requirements = parse_requirements(_member_text(next(iter(bundles.values())), "requirements-device.txt"))

    mark = time.perf_counter()
    userland = ensure_userland(cache, requirements, constraints=_host_constraints(), rebuild=rebuild)
    timings["userland"] = time.perf_counter() - mark

    runs, probes = [], {}
    for fmt, archive in bundles.items():
        x86_dir = unpack_bundle(archive, work_dir / "x86" / fmt)
        arm_dir = unpack_bundle(archive, work_dir / "aarch64" / fmt)
        logger.info("%s: running the bundle on x86-64", fmt)
        reference = probe_bundle(x86_dir, work_dir / "out-x86" / fmt, threads, repeat)
        logger.info("%s: running the bundle under %s -cpu %s", fmt, QEMU, QEMU_CPU)
        emulated = probe_bundle(arm_dir, work_dir / "out-aarch64" / fmt, threads, repeat, userland=userland)
        probes[fmt] = reference
        entry = compare_runs(reference, emulated, pins=_pins(requirements))
        logger.info("%s: pixel agreement %.6f, mIoU %s vs %s", fmt, entry["pixel_agreement"], entry["miou_x86"],
                    entry["miou_emulated"])
        runs.append(entry)
    timings["runs"] = time.perf_counter() - mark - timings["userland"]
    timings["total"] = time.perf_counter() - started + (setup_s or 0.0)

    report = _report(student, probes, runs, userland, cache, cold, timings, command, threads, repeat)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = json_out.with_name(f".{json_out.name}.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, json_out)
        logger.info("wrote %s", json_out)
    return report


def _report(
    student: Student, probes: Mapping[str, ProbeOutput], runs: list[dict[str, Any]], userland: Userland, cache: Path,
    cold: bool, timings: Mapping[str, float], command: str, threads: int, repeat: int,
) -> dict[str, Any]:
    from roverlite.config import load_config

    cfg = load_config(REPO / "configs" / "mars.yaml").data
    pack = student.testpack
    baseline = constant_baseline_miou(pack.masks, cfg.num_classes, cfg.ignore_index, cfg.eval_class_ids)
    trained = {}
    for fmt, probe in probes.items():
        predicted = sorted(int(c) for c in np.unique(probe.masks))
        miou = probe.summary["miou"] or 0.0
        trained[fmt] = {"miou_x86": miou, "classes_predicted": predicted,
                        "non_trivial": miou > baseline and len(predicted) >= 2}
        if not trained[fmt]["non_trivial"]:
            for run in runs:
                if run["format"] == fmt:
                    run["failures"].append(f"the student's masks are trivial (mIoU {miou:.3f} <= constant {baseline:.3f})")
                    run["passed"] = False
    first = runs[0]
    return {
        "schema_version": SCHEMA_VERSION,
        "what": "roverlite device bundles run on x86-64 and under qemu-user aarch64 emulation, masks and mIoU compared",
        "command": command,
        "command_fresh_machine": "python tools/emulate_aarch64.py --setup --check",
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "passed": all(run["passed"] for run in runs),
        # Top-level fields repeat runs[0], the LiteRT int8 run (the Raspberry Pi path).
        "runtime": first["runtime"],
        "format": first["format"],
        "pixel_agreement": first["pixel_agreement"],
        "miou_abs_diff": first["miou_abs_diff"],
        "wheels": dict(userland.wheels),
        "debs": dict(userland.debs),
        "thresholds": {"min_pixel_agreement": MIN_PIXEL_AGREEMENT, "max_miou_abs_diff": MAX_MIOU_ABS_DIFF},
        "emulator": {
            "qemu": qemu_version(),
            "cpu": QEMU_CPU,
            "cpuinfo": f"Cortex-A72 (part {CORTEX_A72_PART}) x {host_cpu_count()}, from the sysroot's proc/cpuinfo",
            "platform_tags": list(userland.platform_tags[:1]) + ["..."] + list(userland.platform_tags[-1:]),
            "timings_note": "latency_ms_emulated is qemu TCG time: recorded, never compared, no meaning for real silicon",
        },
        "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "model": {**student.info, "constant_baseline_miou": baseline, "trained": trained},
        "testpack": {"dataset": "ai4mars-msl", "split": "val", "images": len(pack), "image_size": list(TESTPACK_SIZE),
                     "ids": list(pack.ids)},
        "settings": {"threads": threads, "repeat": repeat},
        "runs": runs,
        "cache": {"dir": _tilde(cache), "cold": cold, "site": userland.site.name},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }


def _tilde(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if text.startswith(home + "/") else text


def _pins(requirements: Sequence[str]) -> dict[str, str]:
    """``{"numpy": "2.4.6", ...}`` from requirement lines (unpinned ones left out)."""
    pairs = (line.split("==", 1) for line in requirements if "==" in line)
    return {name.strip().lower(): version.strip() for name, version in pairs}


def _host_constraints() -> list[str]:
    """This host's versions of every installed distribution (pins transitive wheels to match)."""
    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name and re.fullmatch(r"[A-Za-z0-9._-]+", name) and re.fullmatch(r"[A-Za-z0-9.+!_-]+", dist.version):
            pins[name.lower()] = dist.version
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def _member_text(archive: Path, name: str) -> str:
    import tarfile

    with tarfile.open(archive, "r:*") as tar:
        member = tar.extractfile(name)
        if member is None:
            raise EmulationError(f"Expected {name} in bundle {archive}. Received: no such member.")
        return member.read().decode()


def run_bundle(bundle: Path, cache: Path, threads: int, repeat: int, json_out: Path | None) -> int:
    """Run one bundle's benchmark with accuracy under emulation and print it (``--bundle``).

    The bundle's ``bench.py`` when it has one, else its ``run.py``; both score the test pack.
    """
    from roverlite.deploy import unpack_bundle

    problem = support_problem(cache)
    if problem:
        raise EmulationError(problem)
    with tempfile.TemporaryDirectory(prefix="roverlite-aarch64-") as tmp:
        folder = unpack_bundle(bundle, Path(tmp) / "bundle") if bundle.is_file() else bundle.resolve()
        requirements = parse_requirements((folder / "requirements-device.txt").read_text())
        userland = ensure_userland(cache, requirements)
        if (folder / "bench.py").is_file():
            args = [str(folder / "bench.py"), "--threads", str(threads), "--runs", str(repeat), "--end-to-end"]
        else:
            args = [str(folder / "run.py"), "--threads", str(threads), "--repeat", str(repeat)]
        if json_out is not None:
            args += ["--json", str(json_out.resolve())]
        proc = run_emulated(userland, args, cwd=Path(tmp))
    print(proc.stdout, end="")
    print(f"(emulated: {QEMU} -cpu {QEMU_CPU}; timings above are emulation time, not device time)")
    return 0


# === CLI ===


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true", help="install qemu-user-static with apt-get (root) and build the cache")
    parser.add_argument("--check", action="store_true", help="train, export, bundle, run on x86 and emulated aarch64, compare")
    parser.add_argument("--bundle", type=Path, help="run this bundle (.tar.gz or folder) under emulation")
    parser.add_argument("--support", action="store_true", help="print whether this host can emulate; exit 77 when not")
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets",
                        help="folder holding ai4mars-msl (default: ../shared/datasets)")
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"userland cache (default: {_tilde(default_cache_dir())})")
    parser.add_argument("--json", type=Path, default=None,
                        help=f"results file (--check default: {RESULTS_JSON.relative_to(REPO)}; --bundle: none)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep exports, bundles and outputs here")
    parser.add_argument("--threads", type=int, default=1, help="runtime threads on both machines (default 1)")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per bundle (default 10)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached userland")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and every command")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    if not (args.setup or args.check or args.bundle or args.support):
        parser.error("Expected at least one of --setup, --check, --bundle, --support.")
    if args.threads < 1 or args.repeat < 1:
        parser.error(f"Expected --threads and --repeat >= 1. Received: {args.threads}, {args.repeat}.")
    cache = args.cache_dir or default_cache_dir()
    cold, setup_s = not (cache / "root.json").is_file(), None
    try:
        if args.setup:
            started = time.perf_counter()
            install_qemu()
            problem = support_problem(cache)
            if problem:
                print(f"skipped: {problem}", file=sys.stderr)
                return SKIP_EXIT
            ensure_userland(cache, host_requirements(), constraints=_host_constraints(), rebuild=args.rebuild)
            setup_s = time.perf_counter() - started
        problem = support_problem(cache)
        if problem:
            print(f"skipped: {problem}", file=sys.stderr)
            return SKIP_EXIT
        if args.support:
            print(f"ok: {qemu_version()}; cache {cache}")
        if args.bundle:
            return run_bundle(args.bundle, cache, args.threads, args.repeat, args.json)
        if args.check:
            return _check_command(args, cache, cold, setup_s)
    except (EmulationError, ValueError, FileNotFoundError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _check_command(args: argparse.Namespace, cache: Path, cold: bool, setup_s: float | None) -> int:
    command = "python tools/emulate_aarch64.py --check"
    if args.threads != 1 or args.repeat != 10:
        command += f" --threads {args.threads} --repeat {args.repeat}"
    json_out = args.json or RESULTS_JSON
    with tempfile.TemporaryDirectory(prefix="roverlite-aarch64-check-") as tmp:
        work_dir = Path(tmp) if args.work_dir is None else args.work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        report = run_check(
            args.datasets / "ai4mars-msl", work_dir, cache, json_out, threads=args.threads, repeat=args.repeat,
            rebuild=args.rebuild and setup_s is None, command=command, setup_s=setup_s, cold=cold,
        )
    for run in report["runs"]:
        status = "ok" if run["passed"] else "FAILED: " + "; ".join(run["failures"])
        print(f"{run['runtime']:<12} {run['format']:<12} pixel agreement {run['pixel_agreement']:.6f}  "
              f"mIoU x86 {run['miou_x86']} aarch64 {run['miou_emulated']} (|diff| {run['miou_abs_diff']})  {status}")
    print(f"{'passed' if report['passed'] else 'FAILED'} in {report['timings_s']['total']:.0f} s "
          f"(cache {'cold' if report['cache']['cold'] else 'warm'}); results in {json_out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
