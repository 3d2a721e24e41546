"""Where emulation can run: host checks, qemu-user-static, and the constants every stage shares."""

from __future__ import annotations

import logging
import os
import platform
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger("roverlite.tools.emulate_aarch64")


REPO = Path(__file__).resolve().parents[2]
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
# The CPU part a Cortex-A72 reports in /proc/cpuinfo; the emulated run must see it.
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
    run_command(["apt-get", "-q", "update"], "apt-get update", env=env)
    run_command(["apt-get", "-q", "install", "-y", "--no-install-recommends", "qemu-user-static"], "apt-get install", env=env)
    logger.info("installed %s", qemu_version())


def qemu_version() -> str:
    out = run_command([QEMU, "--version"], f"{QEMU} --version").stdout
    return out.splitlines()[0].strip() if out.strip() else "unknown"


def run_command(
    argv: Sequence[str], what: str, cwd: Path | None = None, env: Mapping[str, str] | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    """Run ``argv``; raise :class:`EmulationError` naming ``what`` when it fails, times out or is missing."""
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
