"""Memory and time of ``Segmenter.predict`` on large camera frames (issue 23).

    python benchmarks/segmenter_large_frames.py --label after
    git worktree add /tmp/old HEAD && PYTHONPATH=/tmp/old/src python benchmarks/segmenter_large_frames.py --label before

Exports an untrained RGB ``unet_tiny`` at 128x128 as float TFLite (memory and preprocessing time
do not depend on the weights), then, for each frame size, starts a fresh Python process that
imports ``roverlite`` as this one does (so ``PYTHONPATH`` picks the code under test), warms the
segmenter up on a 640x480 frame, builds a random uint8 RGB frame, resets the kernel's peak-RSS
counter (``/proc/self/clear_refs``) and runs ``predict`` ``--repeats`` times. It records the peak
RSS growth of the first call over the RSS just before it (the frame itself excluded), as bytes and
as a multiple of the frame's size, and the wall time of every call.

Results go to ``benchmarks/results/segmenter_large_frames.json`` under the run's ``--label``
(other labels already in the file are kept), with the command, the host (CPU, cores, load average
before and after: a busy machine slows every label alike only if they run close together) and
where the measured ``roverlite`` came from. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "segmenter_large_frames.json"
FRAMES = {"12mp-rgb": (3000, 4000), "8000x8000-rgb": (8000, 8000)}
MODEL_SIZE = (128, 128)

PROBE = """
import json, sys, time
import numpy as np
import roverlite
from roverlite.deploy import Segmenter

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

artifact, height, width, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
segmenter = Segmenter(artifact, threads=1)
segmenter.predict(np.zeros((480, 640, 3), np.uint8))  # imports and runtime buffers, as in a camera loop
frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
seconds, growth = [], None
for run in range(repeats):
    open("/proc/self/clear_refs", "w").write("5")  # peak RSS := current RSS
    before = status("VmRSS")
    started = time.perf_counter()
    mask = segmenter.predict(frame)
    seconds.append(time.perf_counter() - started)
    peak = status("VmHWM") - before
    growth = peak if growth is None else max(growth, peak)
    del mask
print(json.dumps({"frame_bytes": frame.nbytes, "peak_rss_growth_bytes": growth, "seconds": seconds,
                  "roverlite": roverlite.__file__}))
"""


def export_artifact(folder: Path) -> Path:
    from roverlite.config import DataConfig
    from roverlite.export import ExportSettings, export_model
    from roverlite.train.models import create_model

    data_cfg = DataConfig(image_size=MODEL_SIZE, color_mode="rgb", mean=(0.5,), std=(0.25,))
    model = create_model("unet_tiny", input_shape=(*MODEL_SIZE, 3), num_classes=4)
    (result,) = export_model(model, ExportSettings(["tflite"], folder, data_cfg, name="large_frames"))
    return Path(result.path)


def measure(artifact: Path, height: int, width: int, repeats: int) -> dict:
    """One child process: peak RSS growth and wall times of ``predict`` on an ``height x width`` RGB frame."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(artifact), str(height), str(width), str(repeats)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        return {"height": height, "width": width, "failed": proc.stderr.strip().splitlines()[-1:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    seconds = sorted(out["seconds"])
    return {
        "height": height,
        "width": width,
        "frame_bytes": out["frame_bytes"],
        "peak_rss_growth_bytes": out["peak_rss_growth_bytes"],
        "peak_rss_growth_x_frame": round(out["peak_rss_growth_bytes"] / out["frame_bytes"], 2),
        "seconds": [round(s, 4) for s in out["seconds"]],
        "seconds_median": round(seconds[len(seconds) // 2], 4),
        "roverlite": out["roverlite"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="name of this run in the JSON, e.g. before / after")
    parser.add_argument("--frames", nargs="+", choices=sorted(FRAMES), default=sorted(FRAMES))
    parser.add_argument("--repeats", type=int, default=3, help="predict calls per frame (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import roverlite
    from roverlite.deploy.hostinfo import host_info, load_average

    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = export_artifact(Path(tmp))
        frames = {name: measure(artifact, *FRAMES[name], args.repeats) for name in args.frames}
    document = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": {}}
    document["description"] = (
        "Segmenter.predict on large uint8 RGB frames, untrained unet_tiny 128x128x3 float TFLite, 1 thread: "
        "peak RSS growth of a predict call over the RSS before it (frame excluded) and wall time per call."
    )
    document["runs"][args.label] = {
        "command": shlex.join(
            ([f"PYTHONPATH={os.environ['PYTHONPATH']}"] if os.environ.get("PYTHONPATH") else []) + ["python", *sys.argv]
        ),
        "pythonpath_roverlite": str(Path(roverlite.__file__).resolve().parent),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {**host_info(), "load_average_before": load_before, "load_average_after": load_average()},
        "frames": frames,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from roverlite.io import atomic_write_json

    atomic_write_json(args.out, document)
    for name, row in frames.items():
        if "failed" in row:
            print(f"{args.label} {name}: FAILED {row['failed']}")
        else:
            print(f"{args.label} {name}: peak RSS +{row['peak_rss_growth_bytes'] / 2**20:.0f} MiB "
                  f"({row['peak_rss_growth_x_frame']}x the frame), median {row['seconds_median']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
