"""Benchmark exported artifacts on this machine: latency percentiles, start-up, memory, accuracy.

What one benchmark measures, in order, on one loaded model:

1. **init**: from the file path to a runner ready to invoke. With a sidecar (the normal case) this
   is building a :class:`~roverlite.deploy.Segmenter`: read the file, check its sha256 against the
   sidecar, load it into the runtime and allocate tensors, which is what a robot pays at start-up.
   Without a sidecar: read, load, allocate.
2. **first inference**: the first ``invoke`` alone (XNNPACK packs weights, ONNX Runtime picks
   kernels on it).
3. **warm-up** runs, not recorded.
4. **timed runs**: at least ``runs`` and, with ``min_seconds``, until that much time has passed.
   Each is one model call (set input, invoke, copy the output), the input already normalised and
   quantized, so pre/post-processing is not in it; the garbage collector is paused meanwhile.
   Reported as p50/p90/p99/mean/std/min/max in ms.
5. optional **end-to-end** runs: ``Segmenter.predict`` on a uint8 image (resize, normalise,
   quantize, invoke, dequantize, argmax, resize back).
6. optional **accuracy** on a test pack, scored with the *same* loaded runner that was timed (the
   MLPerf rule: the numbers describe one artifact in one state).
7. optional **profile**, a separate pass (see :mod:`roverlite.deploy.profile`).

Thread count: ``threads=None`` means every core this process may use, passed explicitly to the
runtime, so every row of a comparison runs with the same count (LiteRT's own default is 1 thread,
ONNX Runtime's is all physical cores). Memory, read after the timed runs: ``peak_rss_mb`` is the
process's high-water mark (it includes anything benchmarked earlier in the same process, and
TensorFlow if the caller imported it) unless ``isolate=True`` runs each artifact in a process of its
own; ``model_rss_mb`` is the growth of the resident set while the model was loaded.

numpy, Pillow (end-to-end resizing) and the runtime only; runs on a robot, inside a bundle (``python bench.py``) and as
``python -m roverlite.deploy.bench ARTIFACT... [--runs N] [--threads T] [--json OUT]``.

The steps run in :mod:`roverlite.deploy.bench_session`; statistics are in
:mod:`roverlite.deploy.latency`, rows, comparisons and their JSON in :mod:`roverlite.deploy.bench_result`,
the table in :mod:`roverlite.deploy.bench_table`. Their public names are re-exported here.

Example:
    >>> results = bench_many(["exports/unet_xs_tflite_int8.tflite", "exports/unet_xs_onnx_int8.onnx"],
    ...                      runs=200, testpack="testpack.npz")              # doctest: +SKIP
    >>> print(format_bench_table(results))                                    # doctest: +SKIP
    >>> write_bench_json(results, "bench.json")                               # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import difflib
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.deploy.bench_result import (  # re-exported
    BENCH_SCHEMA_VERSION,
    BenchResult,
    bench_report,
    compare_runtimes,
    failed_result,
    read_bench_json,
    write_bench_json,
)
from roverlite.deploy.bench_isolated import bench_isolated
from roverlite.deploy.bench_session import BenchSession, bench_settings
from roverlite.deploy.bench_table import format_bench_table  # re-exported
from roverlite.deploy.latency import (  # re-exported
    LatencyStats,
    latency_stats,
    percentile,
)
from roverlite.deploy.sidecar import SUFFIX_RUNTIME

__all__ = [
    "BENCH_SCHEMA_VERSION",
    "BenchResult",
    "LatencyStats",
    "bench_artifact",
    "bench_many",
    "bench_report",
    "compare_runtimes",
    "failed_result",
    "format_bench_table",
    "latency_stats",
    "main",
    "percentile",
    "read_bench_json",
    "write_bench_json",
]

logger = logging.getLogger(__name__)

RUNTIMES = tuple(dict.fromkeys(SUFFIX_RUNTIME.values()))  # ("litert", "onnxruntime")
# bench_artifact: one runtime, or "auto" = the one the file suffix names.
ARTIFACT_RUNTIME_CHOICES = ("auto", *RUNTIMES)
# bench_many: "all" = every runtime present that can read each file.
MANY_RUNTIME_CHOICES = ("all", "auto", *RUNTIMES)


# === Benchmarking ===


def bench_artifact(
    path: str | os.PathLike,
    runtime: str = "auto",
    threads: int | None = None,
    warmup: int = 10,
    runs: int = 100,
    min_seconds: float | None = None,
    end_to_end: bool = False,
    profile: bool = False,
    testpack: str | os.PathLike | None = None,
    providers: Sequence[str] | None = None,
    image: np.ndarray | None = None,
) -> BenchResult:
    """Benchmark one artifact on one runtime (see the module docstring for what is measured).

    Args:
        path: a ``.tflite`` or ``.onnx`` file, normally with its sidecar beside it.
        runtime: ``auto`` (from the suffix), ``litert`` or ``onnxruntime``.
        threads: CPU threads for the runtime (``None`` = every core this process may use).
        warmup: untimed runs after the first inference.
        runs: timed runs (at least this many).
        min_seconds: keep timing until this many seconds have passed, too.
        end_to_end: also time ``Segmenter.predict`` on a uint8 image (needs the sidecar).
        profile: add a per-op profile (a separate pass; see :mod:`roverlite.deploy.profile`).
        testpack: a test pack ``.npz``; its per-class IoU, scored by the timed runner, goes into
            ``accuracy`` (needs the sidecar).
        providers: ONNX Runtime providers in priority order (default: TensorRT, CUDA, CPU as available).
        image: the uint8 image ``(H, W[, C])`` whose preprocessed form is the timed input and
            which end-to-end runs predict (default: seeded noise at the model's size).

    Returns:
        A measured :class:`BenchResult`.

    Raises:
        ValueError: bad arguments, a runtime that cannot read the file, a damaged model or one
            refused by its sidecar.
        FileNotFoundError: no such artifact, or no sidecar where one is needed.
        ImportError: the runtime is not installed.
    """
    settings = bench_settings(threads, warmup, runs, min_seconds, end_to_end, profile, testpack, providers, image)
    runtime = _check_choice(runtime, ARTIFACT_RUNTIME_CHOICES, "runtime")
    path = Path(path)
    resolved, problem = _runtime_for(path, runtime)
    if problem:
        raise ValueError(problem)
    session = BenchSession(path, resolved, settings)
    session.start()
    session.time(settings.runs, settings.min_seconds)
    return session.finish()


def bench_many(
    paths: Sequence[str | os.PathLike],
    runtime: str = "all",
    threads: int | None = None,
    warmup: int = 10,
    runs: int = 100,
    min_seconds: float | None = None,
    end_to_end: bool = False,
    profile: bool = False,
    testpack: str | os.PathLike | None = None,
    providers: Sequence[str] | None = None,
    rounds: int = 1,
    image: np.ndarray | None = None,
    isolate: bool = False,
) -> list[BenchResult]:
    """Benchmark every artifact on every runtime present for it, with the same settings.

    A ``.tflite`` runs on LiteRT and an ``.onnx`` on ONNX Runtime; give both exports of one model
    to compare the runtimes side by side (:func:`compare_runtimes`, :func:`format_bench_table`).
    An artifact that cannot be benchmarked (missing, damaged, refused by its sidecar, runtime not
    installed, or not readable by the runtime asked for) becomes a failed row with the error;
    the others still run.

    Args:
        paths: artifact files; results keep this order.
        runtime: ``all`` (= ``auto``: each file on the runtime of its suffix), ``litert`` or
            ``onnxruntime`` (files of the other kind become failed rows).
        rounds: with more than 1, every model is loaded first and the timed runs are split into
            ``rounds`` interleaved rounds (model A, B, C, A, B, C, ...), so slow drifts in machine
            load hit every model alike; ``runs`` and ``min_seconds`` are totals over the rounds.
        threads, warmup, runs, min_seconds, end_to_end, profile, testpack, providers, image:
            as in :func:`bench_artifact`.
        isolate: benchmark each artifact in a process of its own that imports numpy and the
            runtime only (:mod:`roverlite.deploy.bench_isolated`), so each row's ``peak_rss_mb``
            is that artifact's footprint, not this process's high-water mark. One round only.

    Returns:
        One :class:`BenchResult` per (artifact, runtime).

    Raises:
        ValueError: bad arguments (before anything runs).
        FileNotFoundError: ``testpack`` does not exist.
    """
    settings = bench_settings(threads, warmup, runs, min_seconds, end_to_end, profile, testpack, providers, image)
    runtime = _check_choice(runtime, MANY_RUNTIME_CHOICES, "runtime")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"Expected rounds to be a positive integer. Received: rounds={rounds!r}.")
    if not isinstance(isolate, bool):
        raise ValueError(f"Expected isolate to be True or False. Received: isolate={isolate!r}.")  # noqa: TRY004
    if isolate and (rounds > 1 or settings.image is not None):
        raise ValueError("Expected isolated benchmarks to run one round on the built-in input. Received: "
                         f"rounds={rounds}{' and a custom image' if settings.image is not None else ''}.")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("Expected at least one artifact to benchmark. Received: none.")
    jobs = [(Path(p), *_runtime_for(Path(p), "auto" if runtime == "all" else runtime)) for p in paths]
    if isolate:
        return [failed_result(path, resolved, problem) if problem else bench_isolated(path, resolved, settings)
                for path, resolved, problem in jobs]
    results: list[BenchResult | None] = [None] * len(jobs)

    def fail(index: int, err: BaseException | str) -> None:
        path, resolved, _ = jobs[index]
        logger.warning("benchmark of %s on %s failed: %s", path, resolved, err)
        results[index] = failed_result(path, resolved, err)

    per_round = math.ceil(settings.runs / rounds)
    seconds = None if settings.min_seconds is None else settings.min_seconds / rounds
    # One round: one model in memory at a time. Several: all loaded, their timed runs interleaved.
    batches = [[index] for index in range(len(jobs))] if rounds == 1 else [list(range(len(jobs)))]
    for batch in batches:
        sessions: dict[int, BenchSession] = {}
        for index in batch:
            path, resolved, problem = jobs[index]
            if problem:
                fail(index, problem)
                continue
            try:
                session = BenchSession(path, resolved, settings)
                session.start()
            except Exception as err:  # noqa: BLE001 - any failure of one artifact becomes its row
                fail(index, err)
                continue
            sessions[index] = session
        for _ in range(rounds):
            for index, session in list(sessions.items()):
                try:
                    session.time(per_round, seconds)
                except Exception as err:  # noqa: BLE001
                    fail(index, err)
                    del sessions[index]
        for index, session in sessions.items():
            try:
                results[index] = session.finish()
            except Exception as err:  # noqa: BLE001
                fail(index, err)
    return [r for r in results if r is not None]


def _check_choice(value: Any, choices: Sequence[str], name: str) -> str:
    if isinstance(value, str) and value in choices:
        return value
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f' Did you mean "{close[0]}"?' if close else ""
    raise ValueError(f"Unknown {name}. Expected one of {list(choices)}. Received: {value!r}.{hint}")


def _runtime_for(path: Path, runtime: str) -> tuple[str, str | None]:
    """``(runtime, problem)``: the runtime that runs ``path``, and why it cannot (``None`` if it can)."""
    native = SUFFIX_RUNTIME.get(path.suffix.lower())
    if native is None:
        return (runtime if runtime in RUNTIMES else "unknown"), (
            f"Unknown model file type. Expected a .tflite or .onnx file. Received: {str(path)!r}."
        )
    if runtime in ("auto", "all") or runtime == native:
        return native, None
    wanted = [suffix for suffix, r in SUFFIX_RUNTIME.items() if r == runtime]
    return runtime, (
        f"Runtime {runtime!r} cannot run {str(path)!r}. Expected a {' or '.join(wanted)} file for {runtime}. "
        f"Received: {path.suffix!r} (a {native} model)."
    )


# === Command line ===


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m roverlite.deploy.bench",
        description="Benchmark .tflite / .onnx artifacts: latency percentiles, start-up, memory, accuracy.",
    )
    parser.add_argument("artifacts", nargs="+", type=Path, help=".tflite / .onnx files (with their sidecars)")
    parser.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs after the first (default 10)")
    parser.add_argument("--min-seconds", type=float, default=None, help="keep timing at least this long")
    parser.add_argument("--threads", type=int, default=None, help="runtime threads (default: all usable cores)")
    parser.add_argument("--runtime", default="all", choices=MANY_RUNTIME_CHOICES, help="default: each file's own")
    parser.add_argument("--providers", default=None, help="comma-separated ONNX Runtime providers, in priority order")
    parser.add_argument("--rounds", type=int, default=1, help="interleave the timed runs of all artifacts in rounds")
    parser.add_argument("--with-accuracy", type=Path, default=None, metavar="TESTPACK",
                        help="score the timed runner on this test pack .npz")
    parser.add_argument("--end-to-end", action="store_true", help="also time Segmenter.predict on a uint8 image")
    parser.add_argument("--profile", action="store_true", help="per-op profile (a separate pass)")
    parser.add_argument("--isolate", action="store_true",
                        help="benchmark each artifact in its own process (its own peak memory)")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark command line; 0 = all measured, 1 = a failed row, 2 = bad arguments."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    try:
        results = bench_many(
            args.artifacts, runtime=args.runtime, threads=args.threads, warmup=args.warmup, runs=args.runs,
            min_seconds=args.min_seconds, end_to_end=args.end_to_end, profile=args.profile,
            testpack=args.with_accuracy, providers=args.providers.split(",") if args.providers else None,
            rounds=args.rounds, isolate=args.isolate,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_bench_table(results))
    if args.json:
        command = " ".join(["python -m roverlite.deploy.bench", *(argv if argv is not None else sys.argv[1:])])
        write_bench_json(results, args.json, command=command)
        print(f"results written to {args.json}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
