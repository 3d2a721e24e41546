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

Modules (``tools/aarch64/``): ``host`` (can this host emulate, qemu, shared constants),
``userland`` (Debian arm64 packages and aarch64 wheels, the cached root and sites), ``qemu``
(running a command and probing a bundle under emulation), ``compare`` (x86 vs emulated run),
``check`` (the end-to-end ``--check`` and ``--bundle``, the results JSON). This file is the
command line.

Exit codes: 0 passed, 1 the emulated run disagrees with x86, 2 an error (bad input, failed
download), 77 this host cannot emulate (the reason on stderr; CI treats it as a skip).
"""


from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

# Run as a script (python tools/emulate_aarch64.py) or loaded by path (the tests): the aarch64
# package sits next to this file, not on any installed path.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from aarch64.check import (  # noqa: E402
    Student, constant_baseline_miou, host_constraints, run_bundle, run_check, tilde, train_and_export,
)
from aarch64.compare import compare_runs, json_schema, schema_differences  # noqa: E402
from aarch64.host import (  # noqa: E402
    CHECK_FORMATS, CORTEX_A72_PART, MAX_MIOU_ABS_DIFF, MIN_PIXEL_AGREEMENT, QEMU, QEMU_CPU, REPO, RESULTS_JSON,
    SKIP_EXIT, EmulationError, default_cache_dir, install_qemu, qemu_version, support_problem,
)
from aarch64.qemu import ProbeOutput, emulated_command, probe_bundle, run_emulated, run_summary  # noqa: E402
from aarch64.userland import (  # noqa: E402
    Userland, cpuinfo_text, ensure_userland, glibc_of, host_requirements, parse_requirements, platform_tags, site_key,
)

__all__ = [
    "CHECK_FORMATS", "CORTEX_A72_PART", "MAX_MIOU_ABS_DIFF", "MIN_PIXEL_AGREEMENT", "QEMU", "QEMU_CPU", "SKIP_EXIT",
    "EmulationError", "ProbeOutput", "Student", "Userland", "compare_runs", "constant_baseline_miou", "cpuinfo_text",
    "default_cache_dir", "emulated_command", "ensure_userland", "glibc_of", "install_qemu", "json_schema", "main",
    "parse_requirements", "platform_tags", "probe_bundle", "qemu_version", "run_bundle", "run_check",
    "run_emulated", "run_summary", "schema_differences", "site_key", "support_problem", "train_and_export",
]


# === CLI ===


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true", help="install qemu-user-static with apt-get (root) and build the cache")
    parser.add_argument("--check", action="store_true", help="train, export, bundle, run on x86 and emulated aarch64, compare")
    parser.add_argument("--bundle", type=Path, help="run this bundle (.tar.gz or folder) under emulation")
    parser.add_argument("--support", action="store_true", help="print whether this host can emulate; exit 77 when not")
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets",
                        help="folder holding ai4mars-msl (default: ../shared/datasets)")
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"userland cache (default: {tilde(default_cache_dir())})")
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
            ensure_userland(cache, host_requirements(), constraints=host_constraints(), rebuild=args.rebuild)
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
