"""The inference loop: read a frame, segment it, draw and publish it, time every stage.

Per frame, timed separately (milliseconds):

* ``capture``: the source's ``read()`` (camera wait or file decode),
* ``preprocess``: ``Segmenter.preprocess`` (resize to the model, normalise),
* ``model``: the runtime call (quantize in, invoke, dequantize out),
* ``postprocess``: argmax and the nearest-neighbour resize of the mask back to the frame,
* ``ood``: the out-of-distribution monitor (``Segmenter.check_frame``), when the sidecar has one,
* ``predict``: preprocess + model + postprocess + ood, i.e. ``Segmenter.predict``,
* ``frame``: everything, overlay PNG and publishing included.

The first ``warmup`` frames are run but left out of the latency statistics (allocation, kernel
selection, TensorRT engine builds). FPS counts every frame over the wall time of the loop.

Every frame's OOD verdict (score, flag, the feature behind it) travels with the frame to the
publishers (``ood`` in the JSON messages); a flagged frame is logged as a warning (at most once
per log period, with the count), and the summary's ``ood`` holds the flag count, rate and score
percentiles. Without a calibrated monitor the summary says so (``enabled: false``).

SIGINT and SIGTERM finish the current frame, close the source and publishers and return the
summary (a second SIGINT interrupts at once).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.deploy.edgeloop.frames import Frame, FrameSource
from roverlite.deploy.edgeloop.png import write_png
from roverlite.deploy.edgeloop.publish import Publisher
from roverlite.deploy.edgeloop.stats import LatencyStats, RateMeter
from roverlite.deploy.resize import resize_nearest, rgb_to_gray

__all__ = ["LoopOptions", "StopFlag", "install_signal_handlers", "run_loop"]

logger = logging.getLogger(__name__)

STAGES = ("capture", "preprocess", "model", "postprocess", "ood", "predict", "frame")


@dataclass(frozen=True)
class ScoredFrame(Frame):
    """A frame with its OOD verdict (``OodResult.to_dict()``), as the publishers receive it."""

    ood: dict[str, Any] | None = None


@dataclass
class OodTally:
    """The monitor's verdicts over the run, in bounded memory (counters and a fixed ring of scores)."""

    enabled: bool
    status: str
    frames: int = 0
    flagged: int = 0
    flagged_since_log: int = 0
    scores: LatencyStats = field(default_factory=LatencyStats)

    def add(self, verdict: Any) -> None:
        self.frames += 1
        if verdict.flagged:
            self.flagged += 1
            self.flagged_since_log += 1
        if verdict.score == verdict.score:  # NaN scores (broken logits) are flagged, not ranked
            self.scores.add("score", verdict.score)

    def summary(self) -> dict[str, Any]:
        if not self.enabled:
            return {"enabled": False, "status": self.status}
        rate = self.flagged / self.frames if self.frames else None
        return {"enabled": True, "status": self.status, "frames": self.frames, "flagged": self.flagged,
                "flag_rate": rate, "score": self.scores.stage("score")}


@dataclass(frozen=True)
class LoopOptions:
    """What the loop does besides inference.

    Attributes:
        max_frames: stop after this many frames (None = until the source ends or a signal).
        warmup: frames left out of the latency statistics.
        overlay_dir: write ``overlay_<frame>.png`` here (None = no overlays).
        overlay_every: write an overlay for every Nth frame (frame indices 0, N, 2N, ...).
        overlay_alpha: opacity of the class colours.
        overlay_keep: keep only the newest N overlay files (0 = keep all; a service should bound it).
        log_every_s: seconds between periodic log lines (0 = none).
        color_to_gray: convert colour frames to gray (Pillow's luma) before a grayscale model.
        fps_limit: sleep so the loop runs no faster than this (None = as fast as it can).
    """

    max_frames: int | None = None
    warmup: int = 1
    overlay_dir: Path | None = None
    overlay_every: int = 1
    overlay_alpha: float = 0.5
    overlay_keep: int = 0
    log_every_s: float = 5.0
    color_to_gray: bool = False
    fps_limit: float | None = None

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"Expected --max-frames >= 1. Received: {self.max_frames}.")
        if self.warmup < 0 or self.overlay_every < 1 or self.overlay_keep < 0:
            raise ValueError(
                "Expected --warmup >= 0, --overlay-every >= 1 and --overlay-keep >= 0. "
                f"Received: {self.warmup}, {self.overlay_every}, {self.overlay_keep}."
            )
        if not 0.0 <= self.overlay_alpha <= 1.0:
            raise ValueError(f"Expected --overlay-alpha in [0, 1]. Received: {self.overlay_alpha}.")
        if self.log_every_s < 0 or (self.fps_limit is not None and self.fps_limit <= 0):
            raise ValueError(
                f"Expected --log-every >= 0 and --fps-limit > 0. Received: {self.log_every_s}, {self.fps_limit}."
            )


class StopFlag:
    """Set by a signal handler; the loop checks it between frames."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason

    def __bool__(self) -> bool:
        return self.reason is not None


def install_signal_handlers(stop: StopFlag) -> Callable[[], None]:
    """Make SIGINT/SIGTERM set ``stop`` (a second SIGINT raises KeyboardInterrupt); returns an undo."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        logger.info("%s received: finishing the current frame, then shutting down", name)
        stop.set(f"signal:{name}")

    for sig in previous:
        signal.signal(sig, handle)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def run_loop(
    segmenter: Any,
    source: FrameSource,
    options: LoopOptions,
    publishers: Sequence[Publisher] = (),
    monitor: Any = None,
    stop: StopFlag | None = None,
) -> dict[str, Any]:
    """Run until the source ends, ``max_frames``, or ``stop``; return the summary (see module docstring).

    ``segmenter`` is a ``roverlite.deploy.Segmenter``; ``monitor`` anything with ``poll()``,
    ``status()`` and ``summary()`` (see :mod:`roverlite.deploy.edgeloop.thermal`).
    """
    stop = stop if stop is not None else StopFlag()
    stats, rate = LatencyStats(), RateMeter()
    gray_model = segmenter.channels == 1
    overlays = 0
    monitored = getattr(segmenter, "ood_monitor", None) is not None
    tally = OodTally(monitored, getattr(segmenter, "ood_status", "off: this Segmenter has no OOD monitor"))
    if not monitored:
        logger.warning("OOD monitor %s", tally.status)
    # A robot runs this for days, so the loop keeps no per-frame history: LatencyStats' rings are
    # fixed, everything else is a scalar; benchmarks/soak.py fails on a memory slope.
    overlay_dir = None if options.overlay_dir is None else Path(options.overlay_dir)
    if overlay_dir is not None:
        overlay_dir.mkdir(parents=True, exist_ok=True)
    next_log = time.monotonic() + options.log_every_s
    if monitor is not None:
        monitor.poll()
    rate.start()
    try:
        while not stop:
            started = time.perf_counter()
            frame = source.read()
            if frame is None:
                stop.set("end_of_source")
                break
            captured = time.perf_counter()
            pixels = frame.pixels
            if options.color_to_gray and gray_model and pixels.ndim == 3 and pixels.shape[2] == 3:
                pixels = rgb_to_gray(pixels)
            x = segmenter.preprocess(pixels)
            prepared = time.perf_counter()
            logits = segmenter.runner.run(x)[0]
            inferred = time.perf_counter()
            mask = np.argmax(logits, axis=-1).astype(np.uint8)
            if mask.shape != pixels.shape[:2]:
                mask = resize_nearest(mask, pixels.shape[:2])
            postprocessed = time.perf_counter()
            if monitored:
                verdict = segmenter.check_frame(x, logits)
                tally.add(verdict)
                frame = ScoredFrame(frame.index, frame.pixels, frame.source_id, frame.timestamp, verdict.to_dict())
            finished = time.perf_counter()

            if overlay_dir is not None and frame.index % options.overlay_every == 0:
                picture = segmenter.overlay(frame.pixels, mask, options.overlay_alpha)
                # os.path strings: pathlib interns each new name, a table that grew (see png.write_png)
                write_png(os.path.join(overlay_dir, f"overlay_{frame.index:06d}.png"), picture)
                overlays += 1
                if options.overlay_keep:
                    # Overlays go to frames 0, N, 2N, ...: the one that falls out of the newest
                    # overlay_keep is named by arithmetic, so the loop remembers no paths.
                    expired = frame.index - options.overlay_every * options.overlay_keep
                    if expired >= 0:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(overlay_dir, f"overlay_{expired:06d}.png"))
            for publisher in publishers:
                publisher.publish(frame, mask)
            done = time.perf_counter()
            rate.tick(done)

            if rate.frames > options.warmup:
                for stage, seconds in (
                    ("capture", captured - started),
                    ("preprocess", prepared - captured),
                    ("model", inferred - prepared),
                    ("postprocess", postprocessed - inferred),
                    *((("ood", finished - postprocessed),) if monitored else ()),
                    ("predict", finished - captured),
                    ("frame", done - started),
                ):
                    stats.add(stage, 1000.0 * seconds)
            if monitor is not None:
                monitor.poll()
            if options.log_every_s and time.monotonic() >= next_log:
                next_log = time.monotonic() + options.log_every_s
                _log_progress(rate, stats, monitor)
                if tally.flagged_since_log:
                    logger.warning("OOD: %d frame(s) flagged since the last report (%d of %d in all); latest: %s",
                                   tally.flagged_since_log, tally.flagged, tally.frames, frame.ood)
                    tally.flagged_since_log = 0
            if options.max_frames is not None and rate.frames >= options.max_frames:
                stop.set("max_frames")
                break
            if options.fps_limit is not None:
                spare = 1.0 / options.fps_limit - (time.perf_counter() - started)
                if spare > 0:
                    time.sleep(spare)
    finally:
        source.close()
        for publisher in publishers:
            publisher.close()
    return {
        "type": "summary",
        "frames": rate.frames,
        "warmup_frames": min(options.warmup, rate.frames),
        "wall_s": round(rate.elapsed(), 3),
        "fps": round(rate.overall(), 3),
        "latency_ms": stats.summary(),
        "overlays_written": overlays,
        "stopped_by": stop.reason,
        "thermal": monitor.summary() if monitor is not None else None,
        "ood": tally.summary(),
    }


def _log_progress(rate: RateMeter, stats: LatencyStats, monitor: Any) -> None:
    predict, model = stats.stage("predict"), stats.stage("model")
    if not predict.get("count"):
        logger.info("frames=%d fps=%.1f (warming up)", rate.frames, rate.window())
        return
    logger.info(
        "frames=%d fps=%.1f predict p50=%.1f p90=%.1f p99=%.1f ms | model p50=%.1f p90=%.1f p99=%.1f ms%s",
        rate.frames,
        rate.window(),
        predict["p50"],
        predict["p90"],
        predict["p99"],
        model["p50"],
        model["p90"],
        model["p99"],
        monitor.status() if monitor is not None else "",
    )
