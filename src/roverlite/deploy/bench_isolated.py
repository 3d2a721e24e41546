"""Benchmark one artifact in a process of its own, so its memory is its own.

A process that has imported TensorFlow (a workstation running ``roverlite pipeline``) sits at
1-2 GB before it loads any model, and ``ru_maxrss`` only grows: benchmarked in that process, every
artifact reports the same "peak" (the workstation's). Here each artifact runs in a fresh
``python -m roverlite.deploy.bench`` child that imports numpy and the runtime only, as a robot
would, and its JSON row comes back with ``isolated=True``: ``peak_rss_mb`` is then the whole
footprint of running that artifact (interpreter, runtime, model, arena), ``model_rss_mb`` the
resident growth while it loaded.

numpy and the standard library only; the runtime is imported by the child.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from roverlite.deploy.bench_result import BenchResult, failed_result, read_bench_json
from roverlite.deploy.bench_session import BenchSettings

__all__ = ["bench_command", "bench_isolated"]

logger = logging.getLogger(__name__)

# A child that outlives this many seconds beyond its own timing budget is stopped.
_TIMEOUT_S = 900.0
_STDERR_CHARS = 400


def bench_command(path: Path, runtime: str, settings: BenchSettings, json_out: Path) -> list[str]:
    """The child's command line: the same settings, one artifact, JSON to ``json_out``."""
    command = [sys.executable, "-m", "roverlite.deploy.bench", str(path), "--runtime", runtime,
               "--runs", str(settings.runs), "--warmup", str(settings.warmup), "--threads", str(settings.threads),
               "--json", str(json_out)]
    if settings.min_seconds is not None:
        command += ["--min-seconds", repr(float(settings.min_seconds))]
    if settings.testpack is not None:
        command += ["--with-accuracy", str(settings.testpack)]
    if settings.end_to_end:
        command.append("--end-to-end")
    if settings.profile:
        command.append("--profile")
    if settings.providers:
        command += ["--providers", ",".join(settings.providers)]
    return command


def bench_isolated(path: Path, runtime: str, settings: BenchSettings) -> BenchResult:
    """Benchmark ``path`` on ``runtime`` in a fresh child process; a failed row if the child fails.

    Raises:
        ValueError: ``settings.image`` is set (a custom input cannot be handed to the child).
    """
    if settings.image is not None:
        raise ValueError("Expected no custom image for an isolated benchmark (the child builds its own input). "
                         "Received: an image; benchmark in-process instead.")
    with tempfile.TemporaryDirectory(prefix="roverlite-bench-") as tmp:
        json_out = Path(tmp) / "bench.json"
        command = bench_command(path, runtime, settings, json_out)
        logger.debug("isolated benchmark: %s", " ".join(command))
        timeout = _TIMEOUT_S + (settings.min_seconds or 0.0)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_child_env(),
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            return failed_result(path, runtime, f"isolated benchmark did not finish within {timeout:.0f} s")
        if not json_out.is_file():
            tail = " ".join(done.stderr.split())[-_STDERR_CHARS:] or f"exit code {done.returncode}"
            return failed_result(path, runtime, f"isolated benchmark failed: {tail}")
        [row] = read_bench_json(json_out)
    return dataclasses.replace(row, isolated=True) if row.ok else row


def _child_env() -> dict[str, str]:
    """This environment, with the parent's source folder importable (an uninstalled checkout)."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])  # .../src, holding the roverlite package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env
