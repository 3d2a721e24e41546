#!/usr/bin/env python3
"""Read trtexec's performance summary into JSON.

trtexec (TensorRT 8.x / 10.x) ends a benchmark with lines such as::

    [I] === Performance summary ===
    [I] Throughput: 1203.55 qps
    [I] Latency: min = 0.78 ms, max = 1.91 ms, mean = 0.82 ms, median = 0.81 ms, percentile(90%) = 0.85 ms, percentile(95%) = 0.87 ms, percentile(99%) = 0.95 ms
    [I] Enqueue Time: ...
    [I] H2D Latency: ...
    [I] GPU Compute Time: ...
    [I] D2H Latency: ...
    [I] Total Host Walltime: 3.00 s
    [I] Total GPU Compute Time: 2.91 s

(TensorRT 8.2, the Jetson Nano's, prints one percentile, 99 % by default; 8.4 and later print 90,
95 and 99 %.) Every "min = ..." line becomes ``{"min", "max", "mean", "median", "p90", ...}`` in
milliseconds under a snake_case key with ``_ms`` (``latency_ms``, ``gpu_compute_time_ms``, ...).

Usage:
    python3 parse_trtexec.py engine.log --out engine.json
    trtexec --onnx=model.onnx --fp16 | python3 parse_trtexec.py -
"""

# ruff: noqa: UP006, UP035, UP045 - typing generics on purpose: Python 3.6 (see below)

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

# Python 3.6 compatible on purpose: JetPack 4.6 on the Jetson Nano ships Python 3.6.

__all__ = ["parse_trtexec"]

_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)*")
_STATS_LINE = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9 \-]*?):\s*(?P<values>min = .*)$")
_STAT = re.compile(
    r"(?P<name>min|max|mean|median|percentile\((?P<q>[\d.]+)%\))\s*=\s*(?P<value>[-\d.eE+]+)\s*(?P<unit>ms|s|us)"
)
_UNIT_TO_MS = {"ms": 1.0, "s": 1000.0, "us": 0.001}


def parse_trtexec(text: str) -> Dict[str, Any]:
    """The performance summary of a trtexec log as a JSON-ready dict.

    Raises:
        ValueError: the text has no "Latency: min = ..." line (trtexec failed, or only built).
    """
    result = {}  # type: Dict[str, Any]
    for raw in text.splitlines():
        line = _PREFIX.sub("", raw.strip())
        if line.startswith("TensorRT version:"):
            result["tensorrt_version"] = line.split(":", 1)[1].strip()
        elif line.startswith("Precision:") and "precision" not in result:
            result["precision"] = line.split(":", 1)[1].strip()
        elif line.startswith("Throughput:"):
            result["throughput_qps"] = float(line.split(":", 1)[1].split()[0])
        elif line.startswith("Total Host Walltime:"):
            result["total_host_walltime_s"] = float(line.split(":", 1)[1].split()[0])
        elif line.startswith("Total GPU Compute Time:"):
            result["total_gpu_compute_time_s"] = float(line.split(":", 1)[1].split()[0])
        elif line.startswith("&&&& PASSED"):
            result["passed"] = True
        elif line.startswith("&&&& FAILED"):
            result["passed"] = False
        else:
            match = _STATS_LINE.match(line)
            if match:
                key = re.sub(r"[^a-z0-9]+", "_", match.group("key").lower()).strip("_") + "_ms"
                result[key] = _stats(match.group("values"))
    if "latency_ms" not in result:
        raise ValueError(
            "No trtexec performance summary found. Expected a line like 'Latency: min = 0.8 ms, max = ..., "
            "percentile(99%) = ...' (did trtexec fail, or run with --skipInference?). Received: "
            f"{len(text.splitlines())} lines without one."
        )
    return result


def _stats(values: str) -> Dict[str, float]:
    out = {}  # type: Dict[str, float]
    for match in _STAT.finditer(values):
        name = match.group("name")
        if match.group("q") is not None:
            q = float(match.group("q"))
            name = f"p{q:g}"
        out[name] = float(match.group("value")) * _UNIT_TO_MS[match.group("unit")]
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Parse trtexec's performance summary into JSON.")
    parser.add_argument("log", help="trtexec output file, or - for stdin")
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.log == "-" else Path(args.log).read_text(errors="replace")
    summary = json.dumps(parse_trtexec(text), indent=2) + "\n"
    if args.out is not None:
        args.out.write_text(summary)
    else:
        sys.stdout.write(summary)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
