"""What machine a benchmark ran on: CPU model, OS, cores, load, memory, runtime versions.

Standard library only (plus numpy's version string), so it runs on a robot and inside a bundle.
Every function degrades to ``None`` or a best guess instead of failing: a missing
``/proc/cpuinfo`` (macOS) or ``resource`` module (Windows) must not stop a benchmark.

Example:
    >>> info = host_info()
    >>> sorted(info)[:3]
    ['arch', 'cpu', 'cpu_count']
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "cpu_model",
    "current_rss_mb",
    "host_info",
    "load_average",
    "peak_rss_mb",
    "runtime_version",
    "simd_features",
    "usable_cpus",
]

# ARM "CPU part" ids of the cores found on rovers' boards (Raspberry Pi 3/4/5, Jetson Nano/Orin).
_ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd0b": "Cortex-A76",
    "0xd42": "Cortex-A78AE",
}
# CPU flags that decide int8 vs float speed: x86 VNNI (int8 dot products), ARM dot product / i8mm.
_SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "asimd", "asimddp", "i8mm", "sve")
# Which distribution provides each TFLite backend module of roverlite.deploy.runtime.
_BACKEND_DISTRIBUTIONS = {
    "ai_edge_litert": "ai-edge-litert",
    "tflite_runtime": "tflite-runtime",
    "tensorflow": "tensorflow",
}


def cpu_model(cpuinfo: str | None = None) -> str:
    """A readable CPU name: x86 ``model name``, else the board model and ARM core type, else platform.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (read from the system when ``None``; for tests).
    """
    if cpuinfo is None:
        cpuinfo = _read_text("/proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields and value.strip():
            fields[key.strip()] = value.strip()
    if "model name" in fields and fields["model name"] not in ("", "unknown"):
        return fields["model name"]
    board = fields.get("Model") or (_read_text("/proc/device-tree/model") or "").strip("\x00\n ")
    core = _ARM_PARTS.get(fields.get("CPU part", "").lower(), "")
    name = " / ".join(part for part in (board, core) if part)
    return name or platform.processor() or platform.machine() or "unknown"


def simd_features(cpuinfo: str | None = None) -> list[str]:
    """The SIMD flags of :data:`_SIMD_FLAGS` this CPU has (x86 ``flags`` / ARM ``Features``).

    int8 kernels are fast where the CPU has int8 dot products (AVX-512 VNNI / AVX-VNNI on x86,
    ``asimddp`` on ARMv8.2+, e.g. Cortex-A76 in the Raspberry Pi 5, not the Pi 4's A72); without
    them XNNPACK's int8 convolutions can be no faster than float32.
    """
    if cpuinfo is None:
        cpuinfo = _read_text("/proc/cpuinfo") or ""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            present = set(value.split())
            return [flag for flag in _SIMD_FLAGS if flag in present]
    return []


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or ``None`` where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def peak_rss_mb() -> float | None:
    """The process's peak resident memory in MiB: a high-water mark, never lower later.

    Linux: ``VmHWM`` of ``/proc/self/status``, the peak of this program's own address space.
    ``ru_maxrss`` is not that: a child started by ``subprocess`` (vfork + exec) inherits its
    parent's peak there, so a benchmark child of a 1 GB TensorFlow process would "peak" at 1 GB.
    Elsewhere ``ru_maxrss``.
    """
    for line in (_read_text("/proc/self/status") or "").splitlines():
        if line.startswith("VmHWM:"):
            try:
                return round(int(line.split()[1]) / 1024, 2)  # kB
            except (IndexError, ValueError):
                break
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 2)


def current_rss_mb() -> float | None:
    """Resident memory now, from ``/proc/self/statm`` (Linux), in MiB; ``None`` elsewhere."""
    text = _read_text("/proc/self/statm")
    if not text:
        return None
    try:
        pages = int(text.split()[1])
    except (IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024), 2)


def runtime_version(backend: str) -> str | None:
    """Version of the package behind a runner's ``backend`` (``ai_edge_litert.interpreter``,
    ``onnxruntime:CPUExecutionProvider``, ...), read from package metadata without importing it."""
    module = backend.split(":", 1)[0].split(".", 1)[0]
    distribution = _BACKEND_DISTRIBUTIONS.get(module, module)
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        loaded = sys.modules.get(module)
        return getattr(loaded, "__version__", None)


def host_info() -> dict[str, Any]:
    """Everything that makes two benchmark numbers comparable or not, as a JSON-ready dict."""
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = None
    return {
        "cpu": cpu_model(),
        "simd": simd_features(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "os": platform.platform(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "numpy": numpy_version,
        "load_avg": load_average(),
    }


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None
