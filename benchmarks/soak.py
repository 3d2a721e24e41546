"""Soak test: 10,000 frames through the Raspberry Pi loop's code path, watching memory and latency.

    python benchmarks/soak.py                                   # builds an untrained unet_xs int8 first
    python benchmarks/soak.py --artifact exports/unet_xs_tflite_int8.tflite --frames 10000 --threads 2

What runs is the robot's loop, not a re-implementation: ``firmware_examples/edgeloop`` (what
``raspberry_pi/pi_loop.py`` runs), with a ``roverlite.deploy.Segmenter`` built as pi_loop builds it
(``Segmenter(artifact, threads=...)``), frames from edgeloop's ``FolderSource`` looping over a folder
of camera-sized ``.npy`` frames (``pi_loop.py --images DIR --loop``), colour frames fed to the
grayscale model as luma (as from a camera), overlays every 30th frame keeping the newest 100 and a
progress line every 10 s (the systemd service's settings). One ``run_loop`` call runs every frame,
as the service does. The loop's thermal-monitor hook (``poll()`` after every frame) samples the
process's resident set (``VmRSS``) every 500 frames and times each frame cycle; the model call is
timed by a thin wrapper around ``segmenter.runner``. The loop's own per-stage statistics over the
whole run are kept as ``loop_summary``.

Pass: no exception, and growth of live memory from frame 1,000 to the last frame under 5 %. The
baseline is frame 1,000, not 0: the first frames pay one-off allocations (XNNPACK's packed weights,
NumPy's buffers, the overlay encoder), which are not leaks. Each sample reads VmRSS twice: as the
process holds it (``rss_mib``, what the robot sees), then right after ``malloc_trim(0)`` has handed
glibc's free heap pages back (``rss_trimmed_mib``, live memory). The rule reads the trimmed value
where glibc is present, because the held value jumps up and down by about 12 MiB at unpredictable
frames as glibc keeps or returns the freed frame and overlay buffers (measured here: 69 <-> 81 MiB
while live memory rose smoothly), which says nothing about leaks; the raw growth is reported beside
it, and for both the highest sample after the baseline (``*peak_growth_percent``), since a trim just
before the last sample could hide a rise. Expect live memory to rise by about 0.2-0.3 MiB per 1,000
frames: the loop keeps its last 100,000 latencies per stage for its percentiles (bounded: about
19 MiB when full, after some 100,000 frames).

Without ``--artifact`` the default student (``unet_xs``, 128x128x1 -> 4 classes, as in
``configs/mars.yaml``) is built untrained and exported to int8 TFLite with ``roverlite.export`` in a
child process, so TensorFlow is never imported by the process being measured (its hundreds of MiB
would hide a leak in the percentage). Memory and speed do not depend on the weights' values.

Writes ``benchmarks/results/soak.json``: host, threads, runtime and version, the command, frames,
RSS samples, growth, pass/fail, latency per window and the load average at start and end (other
processes on the machine inflate latency; RSS is unaffected).
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FIRMWARE = REPO / "firmware_examples"

SCHEMA_VERSION = 1
STUDENT = "unet_xs"
STUDENT_SIZE = (128, 128)
CALIBRATION_IMAGES = 8
FRAME_FILES = 8
# firmware_examples/raspberry_pi/roverlite-seg.service: --overlay-every 30 --overlay-keep 100 --log-every 10
OVERLAY_EVERY, OVERLAY_KEEP, LOG_EVERY_S = 30, 100, 10.0
GROWTH_FROM_FRAME = 1000
GROWTH_LIMIT_PERCENT = 5.0

logger = logging.getLogger("soak")


# === Pure helpers ===


def _after_baseline(samples: list[dict[str, Any]], from_frame: int, key: str) -> list[float]:
    """The ``key`` values of the samples at or after ``from_frame`` (missing ones skipped)."""
    return [s[key] for s in samples if s["frame"] >= from_frame and s.get(key) is not None]


def rss_growth_percent(samples: list[dict[str, Any]], from_frame: int = GROWTH_FROM_FRAME,
                       key: str = "rss_mib") -> float | None:
    """Growth of ``key`` from the first sample at or after ``from_frame`` to the last sample, in %.

    ``None`` when no sample comes after the baseline (too few frames to judge).

    Example:
        >>> rss_growth_percent([{"frame": 0, "rss_mib": 50}, {"frame": 1000, "rss_mib": 100},
        ...                     {"frame": 2000, "rss_mib": 103}])
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


def percentiles(values_ms: list[float]) -> dict[str, float | None]:
    """p50 and p99 (linear interpolation, as the loop's own statistics) of ``values_ms``."""
    if not values_ms:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(np.asarray(values_ms, dtype=np.float64), [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3)}


def window_row(index: int, first_frame: int, frame_ms: list[float], model_ms: list[float],
               rss: float | None) -> dict[str, Any]:
    """One window: frame-cycle and model latency percentiles, FPS, and the RSS sampled at its end."""
    seconds = sum(frame_ms) / 1000.0
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


def verdict(growth_percent: float | None, error: str | None, limit: float = GROWTH_LIMIT_PERCENT) -> bool:
    """Pass: no exception and a measured growth below ``limit`` percent."""
    return error is None and growth_percent is not None and math.isfinite(growth_percent) and growth_percent < limit


def malloc_trim() -> bool:
    """Hand glibc's free heap pages back to the system (``malloc_trim(0)``); False without glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def sample_rss(frame: int) -> dict[str, Any]:
    """RSS as the process holds it, then again after :func:`malloc_trim` (live memory only)."""
    raw = rss_mib()
    trimmed = rss_mib() if malloc_trim() else None
    return {"frame": frame, "rss_mib": raw, "rss_trimmed_mib": trimmed}


def rss_mib() -> float | None:
    """Resident set now, from ``VmRSS`` in ``/proc/self/status`` (Linux), in MiB."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 2)  # kB
    return None


# === The student artifact ===


def export_student(out_dir: Path) -> Path:
    """Export an untrained ``unet_xs`` to int8 TFLite in ``out_dir`` with roverlite's exporter."""
    from roverlite.config import DataConfig
    from roverlite.export import export_model
    from roverlite.train.models import create_model

    data_cfg = DataConfig(image_size=STUDENT_SIZE, mean=(0.5,), std=(0.25,))
    model = create_model(STUDENT, input_shape=(*STUDENT_SIZE, 1), num_classes=data_cfg.num_classes)
    calibration = np.random.default_rng(0).integers(0, 256, (CALIBRATION_IMAGES, *STUDENT_SIZE, 1), dtype=np.uint8)
    (result,) = export_model(
        model, ["tflite_int8"], out_dir, data_cfg, calibration_images=calibration, name=STUDENT,
        recipe={"source": "benchmarks/soak.py", "trained": False}, representative_count=CALIBRATION_IMAGES,
    )
    return result.path


def _export_in_child(out_dir: Path) -> Path:
    """Run :func:`export_student` in a child process: TensorFlow stays out of the measured one."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--export-student", str(out_dir)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"exporting the student failed:\n{done.stderr[-3000:]}")
    return out_dir / f"{STUDENT}_tflite_int8.tflite"


def write_frames(folder: Path, size_wh: tuple[int, int], count: int = FRAME_FILES) -> tuple[int, ...]:
    """``count`` smooth RGB camera-sized frames as ``.npy`` (different content, same size)."""
    width, height = size_wh
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for k in range(count):
        base = 128 + 100 * np.sin(xx / (23 + 5 * k)) * np.cos(yy / (31 + 3 * k))
        frame = np.stack([base, base * 0.9 + 10, base * 0.8 + 20], axis=-1)
        np.save(folder / f"frame_{k:02d}.npy", np.clip(frame, 0, 255).astype(np.uint8))
    return (height, width, 3)


# === The soak ===


class _TimedRunner:
    """``segmenter.runner`` with each ``run`` call timed (the loop's ``model`` stage), per window."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        self.ms: list[float] = []

    def run(self, batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        out = self._runner.run(batch)
        self.ms.append(1000.0 * (time.perf_counter() - started))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


class SoakProbe:
    """``run_loop``'s monitor hook: ``poll()`` runs before the first frame and after every frame.

    Times every frame cycle (poll to poll), and every ``window`` frames samples the RSS and closes
    a latency window (taking the model times from ``timed``).
    """

    def __init__(self, window: int, timed: _TimedRunner) -> None:
        self.window, self.timed = window, timed
        self.frames = 0
        self.samples = [sample_rss(0)]
        self.windows: list[dict[str, Any]] = []
        self._frame_ms: list[float] = []
        self._last: float | None = None

    def poll(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.frames += 1
            self._frame_ms.append(1000.0 * (now - self._last))
            if self.frames % self.window == 0:
                self.close_window()
        self._last = time.perf_counter()  # the probe's own work stays out of the next frame's time

    def close_window(self) -> None:
        if not self._frame_ms:
            return
        sample = sample_rss(self.frames)
        rss = sample["rss_mib"]
        row = window_row(len(self.windows), self.frames - len(self._frame_ms), self._frame_ms, self.timed.ms, rss)
        self.windows.append(row)
        self.samples.append(sample)
        self._frame_ms, self.timed.ms = [], []
        logger.info("frames %5d  rss %7.2f MiB (trimmed %7.2f)  frame p50 %.2f p99 %.2f ms  model p50 %.2f ms  "
                    "%.1f fps", self.frames, rss or math.nan, sample["rss_trimmed_mib"] or math.nan,
                    row["frame_ms"]["p50"], row["frame_ms"]["p99"],
                    row["model_ms"]["p50"] or math.nan, row["fps"] or math.nan)

    def status(self) -> str:
        return ""

    def summary(self) -> None:
        return None


def soak(artifact: Path, frames: int, threads: int | None, window: int, frame_size: tuple[int, int],
         work_dir: Path) -> dict[str, Any]:
    """Run ``frames`` frames through one ``run_loop``; return the measurements (see module docstring)."""
    if str(FIRMWARE) not in sys.path:
        sys.path.insert(0, str(FIRMWARE))  # edgeloop, found as pi_loop.py finds it
    from edgeloop.frames import FolderSource
    from edgeloop.loop import LoopOptions, run_loop

    from roverlite.deploy import Segmenter
    from roverlite.deploy.hostinfo import runtime_version

    frame_dir, overlay_dir = work_dir / "frames", work_dir / "overlays"
    frame_dir.mkdir()
    frame_shape = write_frames(frame_dir, frame_size)
    segmenter = Segmenter(artifact, threads=threads)  # as pi_loop.py's make_segmenter
    backend = segmenter.runner.backend
    timed = _TimedRunner(segmenter.runner)
    segmenter.runner = timed
    probe = SoakProbe(window, timed)
    options = LoopOptions(max_frames=frames, warmup=1, overlay_dir=overlay_dir, overlay_every=OVERLAY_EVERY,
                          overlay_keep=OVERLAY_KEEP, log_every_s=LOG_EVERY_S, color_to_gray=True)
    summary, error = None, None
    started = time.perf_counter()
    try:
        summary = run_loop(segmenter, FolderSource(frame_dir, loop=True), options, monitor=probe)
        if summary["frames"] != frames:
            raise RuntimeError(f"the loop ran {summary['frames']} frames, expected {frames} ({summary['stopped_by']})")
    except Exception as err:  # noqa: BLE001 - any exception fails the soak and is recorded
        error = f"{type(err).__name__}: {' '.join(str(err).split())}"
        logger.error("soak stopped after %d frames: %s", probe.frames, error)
    if probe.frames % window:
        probe.close_window()  # a last, shorter window
    # The rule reads live memory (RSS after malloc_trim) where glibc allows it; see the module docstring.
    basis = "rss_trimmed_mib" if all(x["rss_trimmed_mib"] is not None for x in probe.samples) else "rss_mib"
    growth = rss_growth_percent(probe.samples, key=basis)
    s = segmenter.sidecar
    return {
        "artifact": {
            "path": str(artifact), "name": s.name, "format": s.format, "size_bytes": s.size_bytes,
            "sha256": s.sha256, "input": list(s.input.shape[1:]), "recipe": dict(s.recipe),
        },
        "runtime": {"runtime": timed.runtime, "backend": backend, "version": runtime_version(backend),
                    "threads": threads},
        "frames": {
            "requested": frames, "run": probe.frames, "window": window, "frame_shape": list(frame_shape),
            "source": f"edgeloop FolderSource(loop=True) over {FRAME_FILES} .npy frames",
            "color_to_gray": True,
            "overlays": {"every": OVERLAY_EVERY, "keep": OVERLAY_KEEP,
                         "written": summary["overlays_written"] if summary else None,
                         "on_disk": len(list(overlay_dir.glob("*.png"))) if overlay_dir.exists() else 0},
        },
        "rss": {
            "source": f"/proc/self/status VmRSS every {window} frames: rss_mib as held, rss_trimmed_mib "
                      "right after glibc malloc_trim(0)",
            "samples": probe.samples,
            "growth_from_frame": GROWTH_FROM_FRAME,
            "basis": basis,
            "growth_percent": growth,
            "peak_growth_percent": rss_peak_growth_percent(probe.samples, key=basis),
            "raw_growth_percent": rss_growth_percent(probe.samples),
            "raw_peak_growth_percent": rss_peak_growth_percent(probe.samples),
            "limit_percent": GROWTH_LIMIT_PERCENT,
        },
        "latency_windows": probe.windows,
        "frame_p50_drift": latency_drift(probe.windows),
        "loop_summary": summary,
        "wall_s": round(time.perf_counter() - started, 2),
        "error": error,
        "passed": verdict(growth, error),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }


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
    parser.add_argument("--artifact", type=Path, help="a .tflite/.onnx with its sidecar (default: build unet_xs int8)")
    parser.add_argument("--frames", type=int, default=10_000, help="frames to run (default 10000)")
    parser.add_argument("--threads", type=int, default=2, help="runtime threads, as pi_loop --threads (default 2)")
    parser.add_argument("--window", type=int, default=500,
                        help="frames per RSS sample and latency window (default 500)")
    parser.add_argument("--frame-size", type=_frame_size, default=(640, 480),
                        help="camera frame WxH (default 640x480, pi_loop's --camera-size)")
    parser.add_argument("--json", type=Path, default=RESULTS / "soak.json", help="results file")
    parser.add_argument("--export-student", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s", stream=sys.stderr)
    if args.export_student is not None:
        print(export_student(args.export_student))
        return 0
    if args.frames < 1 or args.window < 1:
        print(f"error: Expected --frames >= 1 and --window >= 1. Received: {args.frames}, {args.window}.",
              file=sys.stderr)
        return 2

    from roverlite.deploy.hostinfo import host_info, load_average
    from roverlite.io import atomic_write_json

    command = shlex.join(["python", "benchmarks/soak.py", *(sys.argv[1:] if argv is None else argv)])
    load_start, started_at = load_average(), datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="soak_") as tmp:
        work = Path(tmp)
        if args.artifact is None:
            logger.info("building %s int8 (untrained) in a child process", STUDENT)
            artifact, built = _export_in_child(work / "artifact"), True
        else:
            artifact, built = args.artifact, False
        try:
            result = soak(artifact, args.frames, args.threads, args.window, args.frame_size, work)
        except (ValueError, FileNotFoundError, ImportError) as err:  # a bad artifact: nothing was soaked
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
    report = {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "started": started_at,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": host_info(),
        "load_avg_start": load_start,
        "load_avg_end": load_average(),
        "threads": args.threads,
        **result,
        "note": (
            (f"artifact built by this script: {STUDENT} untrained (random init), int8 TFLite via "
             "roverlite.export; weights do not change memory or latency. " if built else "")
            + "Latency is inflated by whatever else runs on the machine (see load_avg_*); RSS is not."
        ),
    }
    report["artifact"]["trained"] = False if built else None
    atomic_write_json(args.json, report)
    growth = report["rss"]["growth_percent"]
    print(f"{report['frames']['run']} frames, RSS growth from frame {GROWTH_FROM_FRAME}: "
          f"{'n/a' if growth is None else f'{growth:.2f} %'} (limit {GROWTH_LIMIT_PERCENT} %), "
          f"error: {report['error']}, {'PASS' if report['passed'] else 'FAIL'}; written to {args.json}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
