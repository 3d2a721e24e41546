"""Running commands under ``qemu-aarch64-static`` in the userland, and probing a bundle there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aarch64.host import BLOCKED_MODULES, EmulationError, QEMU, QEMU_CPU, run_command
from aarch64.userland import Userland


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
    return run_command(argv, "emulated python3.11", cwd=cwd, env=env, timeout=timeout)


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
        run_command([sys.executable, "-s", *args], f"probe of {bundle.name} on this host", cwd=out, timeout=600)
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
