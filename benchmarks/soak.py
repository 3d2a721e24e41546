"""Soak test: the robot's loop (Pi on LiteRT, or Jetson on ONNX Runtime CPU) for many frames, watching memory.

    python benchmarks/soak.py --loop pi --frames 100000 --threads 1          # builds an untrained unet_xs first
    python benchmarks/soak.py --loop jetson --frames 100000 --threads 1      # the same model as ONNX, ORT CPU
    python benchmarks/soak.py --loop pi --artifact exports/unet_xs_tflite_int8.tflite --frames 10000

What runs is the robot's loop, not a re-implementation: ``roverlite.deploy.edgeloop`` (what
``raspberry_pi/pi_loop.py`` and ``jetson/jetson_loop.py`` run), with a ``roverlite.deploy.Segmenter``
built as those scripts build it (``--loop jetson``: the providers from ``jetson_loop.choose_providers``
for ``cpu``), frames from edgeloop's ``FolderSource`` looping over camera-sized ``.npy`` frames
(``--images DIR --loop``), colour frames fed to the grayscale model as luma, overlays every 30th
frame keeping the newest 100, a progress line every 10 s (the systemd service's settings), every
mask published with its data on a ``UnixSocketPublisher`` to a consumer process that reads it
(reconnecting if dropped), and the loop's thermal monitor (``VcgencmdMonitor`` / ``SysfsThermalMonitor``;
a simulated ``vcgencmd`` / thermal zone where the host has none), and every mask also written as a PNG
by edgeloop's ``MaskPngPublisher`` keeping the newest 1,000 (the loops' ``--publish png:DIR`` with its
``--keep-masks`` default). One ``run_loop`` call runs every frame.

Every ``--window`` frames the monitor hook samples the resident set (``VmRSS``) twice: as the process
holds it (``rss_mib``), then right after ``malloc_trim(0)`` has handed glibc's free heap pages back
(``rss_trimmed_mib``, live memory), and closes a latency window (frame cycle and model call). The
probe's own records live in arrays allocated before the first frame, so the measurement does not
grow the memory it measures.

Pass needs three things: no exception; live memory at the last sample less than 5 % above the
first sample at or after ``--warmup-frames`` (the end-point rule); and the slope rule, which is
what catches a slow leak: a least-squares line through the trimmed samples after warm-up, whose
slope times 1,000,000 frames (``projected_growth_mib``, a multi-day run at 10 frames/s is a few
million frames) must stay within ``--budget-mib`` (5 MiB). The warm-up (3,000 frames) is left out
of both rules: the first frames pay one-off allocations (XNNPACK's packed weights, ORT's arena,
NumPy's and glibc's buffers, the overlay encoder), and live memory then creeps by 0.1-0.3 MiB
until about frame 2,500 before it stays flat (measured with and without each loop part). The held RSS jumps up and down by ~12 MiB as
glibc keeps or returns freed frame buffers, which says nothing about leaks, so the rules read the
trimmed value where glibc is present; the raw values are reported beside them.

A loop whose memory is flat after warm-up has a fitted slope of a few kB per 1,000 frames at
most (page-sized noise); 5 MiB per million frames is 5 bytes per frame, so a publisher that keeps
one mask, one log record or one Python float per frame fails it. ``--trace`` also traces Python
and NumPy allocations (``tracemalloc``; slower) and fits the same line through the traced bytes,
which names the growth without RSS's page granularity.

Steps are charged, never excused. A one-off bounded step (a hash table that doubles once) is not a
leak, but within one soak it cannot be told from a leak that grows in steps rarer than the soak is
long, and any step-robust estimate (Theil-Sen, or requiring the two halves' slopes to agree) would
pass that leak too. So the line is fitted straight through a step: a step of s MiB in the middle of
a fit spanning L frames costs about 1.5 s x 1,000,000 / L MiB of projection (a longer soak only
dilutes it as 1 / L: 0.52 MiB still projects ~3.9 MiB over a 200,000-frame soak). What the report
adds is ``rss.largest_step``: the largest rise between two samples, its frame, and the projection
with it taken out, so a failure says whether growth was steady or one step, whose cause is then
found and removed. Session 12's Jetson soak (76,000 frames, 11.3 MiB per million, FAIL) was such a
step: +0.52 MiB at frame 49,500, flat before and after. Its cause: pathlib interns every new path
part (``sys.intern``), so each ``overlay_<frame>.png`` name (two per overlay: write and expire)
was a new entry in CPython's interned-string table, which resized once after ~10,600 names
(reproduced alone: +0.52 MiB then flat for 400,000 names; none with ``os.path`` strings). The loop
and its PNG writers now name files with ``os.path`` strings, so no per-frame name is interned.

Without ``--artifact`` the default student (``unet_xs``, 128x128x1 -> 4 classes, as in
``configs/mars.yaml``) is built untrained and exported (int8 TFLite for ``pi``, float32 ONNX for
``jetson``) with ``roverlite.export`` in a child process, so TensorFlow is never imported by the
process being measured. Memory and speed do not depend on the weights' values.

Writes the loop's entry (``loops.pi`` / ``loops.jetson``) of ``benchmarks/results/soak.json``,
keeping the other loop's entry: command, host, threads, runtime and version, frames, RSS samples,
end-point growth, slope and projected growth, pass/fail, latency per window and the load average
at start and end (other processes on the machine slow the loop; they do not change its memory).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import logging
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FIRMWARE = REPO / "firmware_examples"

SCHEMA_VERSION = 2
STUDENT = "unet_xs"
STUDENT_SIZE = (128, 128)
CALIBRATION_IMAGES = 8
FRAME_FILES = 8
# firmware_examples/raspberry_pi/roverlite-seg.service: --overlay-every 30 --overlay-keep 100 --log-every 10
OVERLAY_EVERY, OVERLAY_KEEP, LOG_EVERY_S = 30, 100, 10.0
THERMAL_EVERY_S = 10.0  # pi_loop.py / jetson_loop.py --thermal-every default
# Warm-up, measured: live memory settles within ~2,500 frames (0.1-0.3 MiB of allocator and runtime
# steady state, with or without the socket and thermal parts), then stays flat to the page.
GROWTH_FROM_FRAME = 3000
GROWTH_LIMIT_PERCENT = 5.0
PROJECTION_FRAMES = 1_000_000
BUDGET_MIB = 5.0  # projected growth over PROJECTION_FRAMES: 5 bytes per frame
MIN_FIT_SAMPLES = 3
CONSUMER_WAIT_S = 30.0
MASK_PNG_KEEP = 1000  # edgeloop.publish.DEFAULT_KEEP_MASKS, the loops' --keep-masks default

logger = logging.getLogger("soak")


@dataclass(frozen=True)
class LoopSpec:
    """One robot loop: its script, the artifact format it runs, and its thermal monitor."""

    script: str
    export_format: str
    suffix: str
    thermal: str


LOOPS = {
    "pi": LoopSpec("raspberry_pi/pi_loop.py", "tflite_int8", "_tflite_int8.tflite", "vcgencmd"),
    "jetson": LoopSpec("jetson/jetson_loop.py", "onnx", "_onnx.onnx", "sysfs"),
}


# === Pure helpers ===


def _after_baseline(samples: list[dict[str, Any]], from_frame: int, key: str) -> list[float]:
    """The ``key`` values of the samples at or after ``from_frame`` (missing ones skipped)."""
    return [s[key] for s in samples if s["frame"] >= from_frame and s.get(key) is not None]


def rss_growth_percent(samples: list[dict[str, Any]], from_frame: int = GROWTH_FROM_FRAME,
                       key: str = "rss_mib") -> float | None:
    """Growth of ``key`` from the first sample at or after ``from_frame`` to the last sample, in %.

    ``None`` when no sample comes after the baseline (too few frames to judge).

    Example:
        >>> rss_growth_percent([{"frame": 0, "rss_mib": 50}, {"frame": 3000, "rss_mib": 100},
        ...                     {"frame": 4000, "rss_mib": 103}])
        3.0
    """
    values = _after_baseline(samples, from_frame, key)
    if len(values) < 2 or values[0] <= 0:
        return None
    return round(100.0 * (values[-1] - values[0]) / values[0], 3)


def rss_peak_growth_percent(samples: list[dict[str, Any]], from_frame: int = GROWTH_FROM_FRAME,
                            key: str = "rss_mib") -> float | None:
    """Highest ``key`` after the baseline sample (see :func:`rss_growth_percent`) over it, in %.

    Reported beside the end-to-end growth: a leak could hide behind a heap trim that happens to
    fall just before the last sample.
    """
    values = _after_baseline(samples, from_frame, key)
    if len(values) < 2 or values[0] <= 0:
        return None
    return round(100.0 * (max(values[1:]) - values[0]) / values[0], 3)


def memory_slope(samples: list[dict[str, Any]], from_frame: int = GROWTH_FROM_FRAME, key: str = "rss_trimmed_mib",
                 projection_frames: int = PROJECTION_FRAMES) -> dict[str, Any] | None:
    """Least-squares line of ``key`` (MiB) against frame number, over the samples at or after ``from_frame``.

    Returns the slope in MiB per 1,000 frames, its standard error, the growth the line projects
    over ``projection_frames`` and the residuals' spread, or ``None`` with fewer than
    ``MIN_FIT_SAMPLES`` samples (too few frames to judge a slope).

    Example:
        >>> fit = memory_slope([{"frame": f, "rss_trimmed_mib": 60 + f / 1e5} for f in range(0, 5000, 500)])
        >>> fit["slope_mib_per_1k_frames"], fit["projected_growth_mib"]
        (0.01, 10.0)
    """
    points = _points(samples, from_frame, key)
    if points is None:
        return None
    x, y = points
    line = _line(x, y)
    if line is None:
        return None
    slope, stderr, residuals = line
    return {
        "key": key,
        "from_frame": int(x[0]),
        "to_frame": int(x[-1]),
        "samples": len(x),
        "slope_mib_per_1k_frames": round(1000.0 * slope, 6),
        "slope_stderr_mib_per_1k_frames": round(1000.0 * stderr, 6),
        "bytes_per_frame": round(slope * 2**20, 2),
        "projection_frames": projection_frames,
        "projected_growth_mib": round(projection_frames * slope, 3),
        "residual_std_mib": round(float(residuals.std()), 4),
    }


def largest_step(samples: list[dict[str, Any]], from_frame: int = GROWTH_FROM_FRAME, key: str = "rss_trimmed_mib",
                 projection_frames: int = PROJECTION_FRAMES) -> dict[str, Any] | None:
    """The largest rise of ``key`` between two consecutive samples after ``from_frame``, and the fit without it.

    A diagnostic, not a rule (see the module docstring: steps are charged): it says whether a
    slope came from steady growth (``projected_growth_without_step_mib`` close to the full
    projection) or from one step (the projection without it near zero), and at which frame.
    ``None`` with fewer than ``MIN_FIT_SAMPLES`` + 1 samples.

    Example:
        >>> flat_then_step = [{"frame": f, "rss_trimmed_mib": 60.0 + (0.5 if f >= 6000 else 0.0)}
        ...                   for f in range(3000, 9001, 500)]
        >>> step = largest_step(flat_then_step)
        >>> step["frame"], step["mib"], step["projected_growth_without_step_mib"]
        (6000, 0.5, 0.0)
    """
    points = _points(samples, from_frame, key)
    if points is None or len(points[0]) < MIN_FIT_SAMPLES + 1:
        return None
    x, y = points
    rises = np.diff(y)
    k = int(np.argmax(rises))
    without = y.copy()
    without[k + 1:] -= rises[k]
    line = _line(x, without)
    return {
        "frame": int(x[k + 1]),
        "mib": round(float(rises[k]), 3),
        "projected_growth_without_step_mib": None if line is None else round(projection_frames * line[0], 3),
    }


def _points(samples: list[dict[str, Any]], from_frame: int, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Frames and ``key`` values of the samples at or after ``from_frame``; None under ``MIN_FIT_SAMPLES``."""
    points = [(s["frame"], s[key]) for s in samples if s["frame"] >= from_frame and s.get(key) is not None]
    if len(points) < MIN_FIT_SAMPLES:
        return None
    x, y = (np.asarray(v, dtype=np.float64) for v in zip(*points))
    return x, y


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray] | None:
    """Least-squares slope of ``y`` on ``x``, its standard error and the residuals (None: one distinct x)."""
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if sxx <= 0:
        return None
    slope = float(dx @ (y - y.mean())) / sxx
    residuals = y - (y.mean() + slope * dx)
    stderr = math.sqrt(float(residuals @ residuals) / (len(x) - 2) / sxx) if len(x) > 2 else math.nan
    return slope, stderr, residuals


def percentiles(values_ms: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """p50 and p99 (linear interpolation, as the loop's own statistics) of ``values_ms``."""
    if len(values_ms) == 0:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(np.asarray(values_ms, dtype=np.float64), [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3)}


def window_row(index: int, first_frame: int, frame_ms: Sequence[float] | np.ndarray,
               model_ms: Sequence[float] | np.ndarray, rss: float | None) -> dict[str, Any]:
    """One window: frame-cycle and model latency percentiles, FPS, and the RSS sampled at its end."""
    seconds = float(np.sum(frame_ms)) / 1000.0
    return {
        "window": index,
        "frames": [first_frame, first_frame + len(frame_ms)],
        "fps": round(len(frame_ms) / seconds, 3) if seconds > 0 else None,
        "rss_mib": rss,
        "frame_ms": percentiles(frame_ms),
        "model_ms": percentiles(model_ms),
    }


def latency_drift(windows: list[dict[str, Any]], stage: str = "frame") -> float | None:
    """p50 of the last window over p50 of the first, for ``stage`` (1.0 = no drift)."""
    values = [w[f"{stage}_ms"]["p50"] for w in windows if w.get(f"{stage}_ms", {}).get("p50")]
    return round(values[-1] / values[0], 3) if len(values) >= 2 else None


def verdict(growth_percent: float | None, projected_mib: float | None, error: str | None,
            limit: float = GROWTH_LIMIT_PERCENT, budget_mib: float = BUDGET_MIB) -> dict[str, bool]:
    """Each rule's result and the overall pass (see the module docstring).

    A rule without a measurement (too few frames after warm-up) fails: a soak that could not
    judge memory does not pass.
    """
    def measured(value: float | None) -> bool:
        return value is not None and math.isfinite(value)

    endpoint = measured(growth_percent) and growth_percent < limit
    slope = measured(projected_mib) and projected_mib <= budget_mib
    return {"endpoint_ok": endpoint, "slope_ok": slope, "passed": error is None and endpoint and slope}


def malloc_trim() -> bool:
    """Hand glibc's free heap pages back to the system (``malloc_trim(0)``); False without glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def rss_mib() -> float | None:
    """Resident set now, from ``VmRSS`` in ``/proc/self/status`` (Linux), in MiB."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 3)  # kB
    return None


# === The student artifact ===


def export_student(out_dir: Path, export_format: str) -> Path:
    """Export an untrained ``unet_xs`` as ``export_format`` in ``out_dir`` with roverlite's exporter."""
    from roverlite.config import DataConfig
    from roverlite.export import ExportSettings, export_model
    from roverlite.train.models import create_model

    data_cfg = DataConfig(image_size=STUDENT_SIZE, mean=(0.5,), std=(0.25,))
    model = create_model(STUDENT, input_shape=(*STUDENT_SIZE, 1), num_classes=data_cfg.num_classes)
    calibration = np.random.default_rng(0).integers(0, 256, (CALIBRATION_IMAGES, *STUDENT_SIZE, 1), dtype=np.uint8)
    (result,) = export_model(model, ExportSettings(
        [export_format], out_dir, data_cfg, calibration_images=calibration, name=STUDENT,
        recipe={"source": "benchmarks/soak.py", "trained": False}, representative_count=CALIBRATION_IMAGES,
    ))
    return result.path


def _export_in_child(out_dir: Path, spec: LoopSpec) -> Path:
    """Run :func:`export_student` in a child process: TensorFlow stays out of the measured one."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--export-student", str(out_dir),
                           "--export-format", spec.export_format], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"exporting the student failed:\n{done.stderr[-3000:]}")
    return out_dir / f"{STUDENT}{spec.suffix}"


def write_frames(folder: Path, size_wh: tuple[int, int], count: int = FRAME_FILES) -> tuple[int, ...]:
    """``count`` smooth RGB camera-sized frames as ``.npy`` (different content, same size)."""
    width, height = size_wh
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for k in range(count):
        base = 128 + 100 * np.sin(xx / (23 + 5 * k)) * np.cos(yy / (31 + 3 * k))
        frame = np.stack([base, base * 0.9 + 10, base * 0.8 + 20], axis=-1)
        np.save(folder / f"frame_{k:02d}.npy", np.clip(frame, 0, 255).astype(np.uint8))
    return (height, width, 3)


# === The loop's parts ===


def _load_script(relative: str) -> Any:
    """A firmware script as a module (it imports ``roverlite.deploy.edgeloop``)."""
    path = FIRMWARE / relative
    spec = importlib.util.spec_from_file_location(f"soak_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_segmenter(loop: str, artifact: Path, threads: int | None) -> tuple[Any, dict[str, Any]]:
    """The ``Segmenter`` the loop script builds, and what it reports about it."""
    from roverlite.deploy import Segmenter

    if loop == "pi":
        return Segmenter(artifact, threads=threads), {}  # pi_loop.py's make_segmenter
    import onnxruntime as ort

    jetson = _load_script(LOOPS["jetson"].script)
    providers = jetson.choose_providers(ort.get_available_providers(), "cpu")
    segmenter = Segmenter(artifact, threads=threads, providers=providers)  # jetson_loop.py's make_segmenter
    return segmenter, {"providers_requested": [str(p) for p in providers],
                       "providers_active": segmenter.runner.backend.split(":", 1)[-1].split(",")}


def make_thermal(loop: str, work_dir: Path) -> tuple[Any, str]:
    """The loop's thermal monitor: the real one when the host has its source, else a simulated source."""
    from roverlite.deploy.edgeloop.thermal import SysfsThermalMonitor, VcgencmdMonitor

    if loop == "pi":
        monitor = VcgencmdMonitor.if_available(THERMAL_EVERY_S)
        if monitor is not None:
            return monitor, "vcgencmd"

        def fake_vcgencmd(command: list[str], **_: Any) -> SimpleNamespace:
            return SimpleNamespace(stdout="throttled=0x0\n" if command[1] == "get_throttled" else "temp=51.2'C\n")

        return VcgencmdMonitor(THERMAL_EVERY_S, run=fake_vcgencmd), "vcgencmd (simulated: this host has none)"
    monitor = SysfsThermalMonitor.if_available(THERMAL_EVERY_S)
    if monitor is not None:
        return monitor, "sysfs"
    zone = work_dir / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("51200\n")
    return SysfsThermalMonitor(THERMAL_EVERY_S, root=str(zone.parent)), "sysfs (simulated zone: this host has none)"


# A mask consumer in its own process, as the robot's planner would be: reads every line, reconnects
# when the publisher drops it as too slow, and exits when the socket is gone (the loop shut down).
_CONSUMER = """
import socket, sys, time
path, lines, connects, deadline = sys.argv[1], 0, 0, time.monotonic() + float(sys.argv[2])
while True:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
    except OSError:
        client.close()
        if connects or time.monotonic() > deadline:
            break
        time.sleep(0.05)
        continue
    connects += 1
    with client:
        try:
            while chunk := client.recv(1 << 16):
                lines += chunk.count(b"\\n")
        except OSError:
            pass
print(lines)
"""


class MaskConsumer:
    """A :class:`edgeloop.publish.UnixSocketPublisher` and a consumer process connected to it."""

    def __init__(self, path: Path, classes: Sequence[str]) -> None:
        from roverlite.deploy.edgeloop.publish import UnixSocketPublisher

        self.publisher = UnixSocketPublisher(path, classes, include_mask=True)
        self._process = subprocess.Popen([sys.executable, "-c", _CONSUMER, str(path), str(CONSUMER_WAIT_S)],
                                         stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + CONSUMER_WAIT_S
        while self.publisher.clients == 0:
            self.publisher.accept()
            if time.monotonic() > deadline or self._process.poll() is not None:
                self.close()
                raise RuntimeError(f"the mask consumer did not connect within {CONSUMER_WAIT_S:.0f} s")
            time.sleep(0.02)

    def close(self) -> dict[str, Any]:
        """Close the publisher (idempotent), wait for the consumer and return what it received."""
        self.publisher.close()
        try:
            out, _ = self._process.communicate(timeout=CONSUMER_WAIT_S)
            lines = int(out.split()[0])
        except (subprocess.TimeoutExpired, ValueError):
            self._process.kill()
            self._process.wait()
            lines = None
        return {"kind": "unix socket, mask data included", "messages_received": lines,
                "dropped_as_too_slow": self.publisher.dropped}


# === The soak ===


class _TimedRunner:
    """``segmenter.runner`` with each ``run`` call timed (the loop's ``model`` stage) into a fixed array."""

    def __init__(self, runner: Any, window: int) -> None:
        self._runner = runner
        self.ms = np.zeros(window, np.float64)
        self.count = 0

    def run(self, batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        out = self._runner.run(batch)
        if self.count < len(self.ms):
            self.ms[self.count] = 1000.0 * (time.perf_counter() - started)
            self.count += 1
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


class SoakProbe:
    """``run_loop``'s monitor hook: ``poll()`` runs before the first frame and after every frame.

    Times every frame cycle (poll to poll), and every ``window`` frames samples the RSS (and, with
    ``trace``, tracemalloc's traced bytes) and closes a latency window. Everything it records goes
    into arrays sized for ``frames`` before the loop starts, so the probe itself does not grow.
    ``status`` and ``summary`` are the wrapped thermal monitor's, and its ``poll`` runs every frame
    as in the loop scripts.
    """

    _SAMPLE = ("frame", "rss_mib", "rss_trimmed_mib", "traced_mib")
    _WINDOW = ("first", "last", "fps", "frame_p50", "frame_p99", "model_p50", "model_p99", "rss_mib")

    def __init__(self, frames: int, window: int, timed: _TimedRunner, thermal: Any = None, trace: bool = False,
                 stop: Any = None, max_seconds: float | None = None) -> None:
        self.window, self.timed, self.thermal, self.trace = window, timed, thermal, trace
        self.stop, self._deadline = stop, None if max_seconds is None else time.monotonic() + max_seconds
        rows = frames // window + 2
        self._samples = np.full((rows, len(self._SAMPLE)), np.nan)
        self._windows = np.full((rows, len(self._WINDOW)), np.nan)
        self._n_samples = self._n_windows = 0
        self._frame_ms = np.zeros(window, np.float64)
        self._in_window = 0
        self.frames = 0
        self._last: float | None = None
        self._sample(0)

    def poll(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.frames += 1
            self._frame_ms[self._in_window] = 1000.0 * (now - self._last)
            self._in_window += 1
            if self._in_window == self.window:
                self.close_window()
                if self._deadline is not None and time.monotonic() > self._deadline:
                    self.stop.set("max_minutes")  # at a window's end, so every window is whole
        if self.thermal is not None:
            self.thermal.poll()
        self._last = time.perf_counter()  # the probe's own work stays out of the next frame's time

    def close_window(self) -> None:
        if not self._in_window:
            return
        raw = self._sample(self.frames)
        frame_ms, model_ms = self._frame_ms[: self._in_window], self.timed.ms[: self.timed.count]
        seconds = float(frame_ms.sum()) / 1000.0
        row = self._windows[self._n_windows]
        row[:3] = self.frames - self._in_window, self.frames, self._in_window / seconds if seconds > 0 else np.nan
        row[3:5] = np.percentile(frame_ms, [50, 99])
        row[5:7] = np.percentile(model_ms, [50, 99]) if len(model_ms) else np.nan
        row[7] = np.nan if raw is None else raw
        self._n_windows += 1
        self._in_window, self.timed.count = 0, 0
        logger.info("frames %6d  rss %7.2f MiB (trimmed %7.2f)  frame p50 %.2f p99 %.2f ms  model p50 %.2f ms  "
                    "%.1f fps", self.frames, *self._samples[self._n_samples - 1, 1:3], *row[3:6], row[2])

    def _sample(self, frame: int) -> float | None:
        raw = rss_mib()
        trimmed = rss_mib() if malloc_trim() else None
        traced = tracemalloc.get_traced_memory()[0] / 2**20 if self.trace else None
        self._samples[self._n_samples] = [frame, *(np.nan if v is None else v for v in (raw, trimmed, traced))]
        self._n_samples += 1
        return raw

    def status(self) -> str:
        return self.thermal.status() if self.thermal is not None else ""

    def summary(self) -> dict[str, Any] | None:
        return self.thermal.summary() if self.thermal is not None else None

    def samples(self) -> list[dict[str, Any]]:
        """The RSS samples as JSON rows (``None`` where a value was not measured)."""
        rows = []
        for values in self._samples[: self._n_samples]:
            row = {name: (None if np.isnan(v) else round(float(v), 4)) for name, v in zip(self._SAMPLE, values)}
            row["frame"] = int(values[0])
            if not self.trace:
                del row["traced_mib"]
            rows.append(row)
        return rows

    def windows(self) -> list[dict[str, Any]]:
        """The latency windows as JSON rows."""
        def num(v: float) -> float | None:
            return None if np.isnan(v) else round(float(v), 3)

        return [
            {"window": k, "frames": [int(w[0]), int(w[1])], "fps": num(w[2]), "rss_mib": num(w[7]),
             "frame_ms": {"p50": num(w[3]), "p99": num(w[4])}, "model_ms": {"p50": num(w[5]), "p99": num(w[6])}}
            for k, w in enumerate(self._windows[: self._n_windows])
        ]


def soak(artifact: Path, frames: int, threads: int | None, window: int, frame_size: tuple[int, int],
         work_dir: Path, loop: str = "pi", warmup_frames: int = GROWTH_FROM_FRAME, budget_mib: float = BUDGET_MIB,
         trace: bool = False, extra_publishers: Sequence[Any] = (), max_minutes: float | None = None) -> dict[str, Any]:
    """Run ``frames`` frames through one ``run_loop``; return the measurements (see module docstring).

    ``max_minutes`` stops the loop earlier, at the end of the first window past that time.
    ``extra_publishers`` are added after the mask socket and the mask PNGs (a test plugs a leaking one in here).
    """
    from roverlite.deploy.edgeloop.frames import FolderSource
    from roverlite.deploy.edgeloop.loop import LoopOptions, StopFlag, run_loop
    from roverlite.deploy.edgeloop.publish import MaskPngPublisher

    from roverlite.deploy.hostinfo import runtime_version

    frame_dir, overlay_dir = work_dir / "frames", work_dir / "overlays"
    frame_dir.mkdir()
    frame_shape = write_frames(frame_dir, frame_size)
    segmenter, runtime_extra = make_segmenter(loop, artifact, threads)
    backend = segmenter.runner.backend
    timed = _TimedRunner(segmenter.runner, window)
    segmenter.runner = timed
    thermal, thermal_source = make_thermal(loop, work_dir)
    if trace:
        tracemalloc.start()
    consumer = MaskConsumer(work_dir / "masks.sock", segmenter.classes)
    mask_dir = work_dir / "masks"
    mask_pngs = MaskPngPublisher(mask_dir, keep=MASK_PNG_KEEP)
    stop = StopFlag()
    probe = SoakProbe(frames, window, timed, thermal, trace, stop, None if max_minutes is None else 60.0 * max_minutes)
    options = LoopOptions(max_frames=frames, warmup=1, overlay_dir=overlay_dir, overlay_every=OVERLAY_EVERY,
                          overlay_keep=OVERLAY_KEEP, log_every_s=LOG_EVERY_S, color_to_gray=True)
    summary, error = None, None
    started = time.perf_counter()
    try:
        summary = run_loop(segmenter, FolderSource(frame_dir, loop=True), options,
                           [consumer.publisher, mask_pngs, *extra_publishers], monitor=probe, stop=stop)
        if summary["frames"] != frames and summary["stopped_by"] != "max_minutes":
            raise RuntimeError(f"the loop ran {summary['frames']} frames, expected {frames} ({summary['stopped_by']})")
    except Exception as err:  # noqa: BLE001 - any exception fails the soak and is recorded
        error = f"{type(err).__name__}: {' '.join(str(err).split())}"
        logger.error("soak stopped after %d frames: %s", probe.frames, error)
    wall_s = time.perf_counter() - started
    probe.close_window()  # a last, shorter window (nothing when frames is a multiple of window)
    if trace:
        tracemalloc.stop()
    published = consumer.close()
    samples = probe.samples()
    # The rules read live memory (RSS after malloc_trim) where glibc allows it; see the module docstring.
    basis = "rss_trimmed_mib" if all(x["rss_trimmed_mib"] is not None for x in samples) else "rss_mib"
    growth = rss_growth_percent(samples, warmup_frames, key=basis)
    fit = memory_slope(samples, warmup_frames, key=basis)
    result = verdict(growth, fit["projected_growth_mib"] if fit else None, error, budget_mib=budget_mib)
    s = segmenter.sidecar
    return {
        "loop": loop,
        "script": f"firmware_examples/{LOOPS[loop].script}",
        "artifact": {
            "path": str(artifact), "name": s.name, "format": s.format, "size_bytes": s.size_bytes,
            "sha256": s.sha256, "input": list(s.input.shape[1:]), "recipe": dict(s.recipe),
        },
        "runtime": {"runtime": timed.runtime, "backend": backend, "version": runtime_version(backend),
                    "threads": threads, **runtime_extra},
        "frames": {
            "requested": frames, "max_minutes": max_minutes, "run": probe.frames,
            "stopped_by": summary["stopped_by"] if summary else None, "window": window, "frame_shape": list(frame_shape),
            "fps": round(probe.frames / wall_s, 2) if wall_s > 0 else None,
            "source": f"edgeloop FolderSource(loop=True) over {FRAME_FILES} .npy frames",
            "color_to_gray": True,
            "overlays": {"every": OVERLAY_EVERY, "keep": OVERLAY_KEEP,
                         "written": summary["overlays_written"] if summary else None,
                         "on_disk": len(list(overlay_dir.glob("*.png"))) if overlay_dir.exists() else 0},
            "publisher": published,
            "mask_png": {"keep": MASK_PNG_KEEP, "on_disk": len(list(mask_dir.glob("mask_*.png")))},
            "thermal": {"monitor": thermal_source, "every_s": THERMAL_EVERY_S},
        },
        "rss": {
            "source": f"/proc/self/status VmRSS every {window} frames: rss_mib as held, rss_trimmed_mib "
                      "right after glibc malloc_trim(0)" + ("; traced_mib: tracemalloc's traced bytes" if trace else ""),
            "samples": samples,
            "warmup_frames": warmup_frames,
            "basis": basis,
            "growth_percent": growth,
            "peak_growth_percent": rss_peak_growth_percent(samples, warmup_frames, key=basis),
            "raw_growth_percent": rss_growth_percent(samples, warmup_frames),
            "limit_percent": GROWTH_LIMIT_PERCENT,
            "slope": fit,
            "raw_slope": memory_slope(samples, warmup_frames, key="rss_mib"),
            "traced_slope": memory_slope(samples, warmup_frames, key="traced_mib") if trace else None,
            "largest_step": largest_step(samples, warmup_frames, key=basis),
            "budget_mib": budget_mib,
            **{k: v for k, v in result.items() if k != "passed"},
        },
        "latency_windows": probe.windows(),
        "frame_p50_drift": latency_drift(probe.windows()),
        "loop_summary": summary,
        "wall_s": round(wall_s, 2),
        "error": error,
        "passed": result["passed"],
        "tensorflow_imported": sys.modules.get("tensorflow") is not None,  # None: blocked, as on a robot
    }


# === The results file ===


def update_results(path: Path, loop: str, report: dict[str, Any]) -> dict[str, Any]:
    """Put ``report`` in ``path`` as ``loops[loop]``, keeping the other loops' entries (under a lock).

    A file in the old one-run layout (schema 1) is replaced.
    """
    from roverlite.io import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(path.parent, os.O_RDONLY)  # the folder itself: no lock file left behind
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two soaks (pi and jetson) may finish at the same time
        document: dict[str, Any] = {}
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            document = json.loads(path.read_text())
        if document.get("schema_version") != SCHEMA_VERSION:
            document = {}
        loops = {**document.get("loops", {}), loop: report}
        document = {
            "schema_version": SCHEMA_VERSION,
            "rules": {
                "warmup_frames": "samples before this frame are left out of both rules",
                "endpoint": f"trimmed RSS at the last sample under {GROWTH_LIMIT_PERCENT} % above the first after warm-up",
                "slope": f"least-squares slope of trimmed RSS after warm-up x {PROJECTION_FRAMES:,} frames "
                         "within budget_mib",
                "steps": "charged by the slope, never excused; rss.largest_step names the largest one",
            },
            "passed": all(entry.get("passed") is True for entry in loops.values()),
            "loops": dict(sorted(loops.items())),
        }
        atomic_write_json(path, document)
    finally:
        os.close(lock)  # releases the lock
    return document


def _frame_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"Expected WxH, e.g. 640x480. Received: {text!r}.") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"Expected a positive WxH. Received: {text!r}.")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=sorted(LOOPS), default="pi",
                        help="pi: pi_loop on LiteRT (.tflite); jetson: jetson_loop on ONNX Runtime CPU (.onnx)")
    parser.add_argument("--artifact", type=Path,
                        help="a .tflite (pi) / .onnx (jetson) with its sidecar (default: build unet_xs)")
    parser.add_argument("--frames", type=int, default=10_000, help="frames to run (default 10000)")
    parser.add_argument("--max-minutes", type=float,
                        help="stop earlier, at the first window end after this many minutes (a busy host)")
    parser.add_argument("--threads", type=int, default=2, help="runtime threads, as the loops' --threads (default 2)")
    parser.add_argument("--window", type=int, default=500,
                        help="frames per RSS sample and latency window (default 500)")
    parser.add_argument("--warmup-frames", type=int, default=GROWTH_FROM_FRAME,
                        help=f"frames left out of the memory rules (default {GROWTH_FROM_FRAME})")
    parser.add_argument("--budget-mib", type=float, default=BUDGET_MIB,
                        help=f"allowed projected growth over {PROJECTION_FRAMES:,} frames (default {BUDGET_MIB})")
    parser.add_argument("--trace", action="store_true", help="also fit tracemalloc's traced bytes (slower)")
    parser.add_argument("--frame-size", type=_frame_size, default=(640, 480),
                        help="camera frame WxH (default 640x480, the loops' --camera-size)")
    parser.add_argument("--json", type=Path, default=RESULTS / "soak.json",
                        help="results file; this loop's entry is replaced, the other's kept")
    parser.add_argument("--export-student", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--export-format", default="tflite_int8", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s", stream=sys.stderr)
    if args.export_student is not None:
        print(export_student(args.export_student, args.export_format))
        return 0
    if args.frames < 1 or args.window < 1 or args.warmup_frames < 0 or args.budget_mib <= 0:
        print("error: Expected --frames >= 1, --window >= 1, --warmup-frames >= 0 and --budget-mib > 0. "
              f"Received: {args.frames}, {args.window}, {args.warmup_frames}, {args.budget_mib}.", file=sys.stderr)
        return 2

    from roverlite.deploy.hostinfo import host_info, load_average

    spec = LOOPS[args.loop]
    command = shlex.join(["python", "benchmarks/soak.py", *(sys.argv[1:] if argv is None else argv)])
    load_start, started_at = load_average(), datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="soak_") as tmp:
        work = Path(tmp)
        if args.artifact is None:
            logger.info("building %s %s (untrained) in a child process", STUDENT, spec.export_format)
            artifact, built = _export_in_child(work / "artifact", spec), True
        else:
            artifact, built = args.artifact, False
        if not artifact.name.endswith(Path(spec.suffix).suffix):
            print(f"error: Expected a {Path(spec.suffix).suffix} artifact for --loop {args.loop}. "
                  f"Received: {str(artifact)!r}.", file=sys.stderr)
            return 2
        try:
            result = soak(artifact, args.frames, args.threads, args.window, args.frame_size, work, loop=args.loop,
                          warmup_frames=args.warmup_frames, budget_mib=args.budget_mib, trace=args.trace,
                          max_minutes=args.max_minutes)
        except (ValueError, FileNotFoundError, ImportError) as err:  # a bad artifact: nothing was soaked
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
    report = {
        "command": command,
        "started": started_at,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": host_info(),
        "load_avg_start": load_start,
        "load_avg_end": load_average(),
        "threads": args.threads,
        **result,
        "note": (
            (f"artifact built by this script: {STUDENT} untrained (random init), {spec.export_format} via "
             "roverlite.export; weights do not change memory or latency. " if built else "")
            + "Latency is inflated by whatever else runs on the machine (see load_avg_*); RSS is not."
        ),
    }
    report["artifact"]["trained"] = False if built else None
    update_results(args.json, args.loop, report)
    rss, fit = report["rss"], report["rss"]["slope"]
    growth = rss["growth_percent"]
    print(f"{args.loop}: {report['frames']['run']} frames at {report['frames']['fps']} fps; live memory after "
          f"frame {args.warmup_frames}: "
          + ("slope n/a" if fit is None else f"{fit['slope_mib_per_1k_frames']:+.4f} MiB per 1k frames, "
             f"projected {fit['projected_growth_mib']:+.2f} MiB per {PROJECTION_FRAMES:,} frames")
          + f" (budget {args.budget_mib} MiB)"
          + ("" if rss["largest_step"] is None else f", largest step {rss['largest_step']['mib']:+.3f} MiB at frame "
             f"{rss['largest_step']['frame']}")
          + f", end point {'n/a' if growth is None else f'{growth:+.2f} %'} "
          f"(limit {GROWTH_LIMIT_PERCENT} %), error: {report['error']}, {'PASS' if report['passed'] else 'FAIL'}; "
          f"written to {args.json}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
