#!/usr/bin/env python3
"""Segment camera frames on a Raspberry Pi with a roverlite bundle's .tflite (LiteRT, XNNPACK).

Frames come from the Pi camera (picamera2), an OpenCV device/URL, or a folder of images; each is
run through ``roverlite.deploy.Segmenter``. The loop draws class-colour overlays (PNG, every Nth
frame), optionally publishes masks (PNG files, JSON lines on stdout, a UNIX socket), logs FPS and
p50/p90/p99 latency every few seconds (with the Pi's temperature and throttle state when
``vcgencmd`` exists) and prints a JSON summary at the end. SIGINT/SIGTERM stop it cleanly.
Each frame is also scored by the artifact's out-of-distribution monitor (calibrated at export,
in the sidecar): the score and flag go out with every published mask (``ood``), flagged frames
are logged as warnings, and the summary's ``ood`` gives the flag rate and score percentiles.

Examples:
    python3 pi_loop.py --bundle ~/bundles/unet_xs_int8 --threads 4 --overlay-dir /tmp/overlays --overlay-every 30
    python3 pi_loop.py --bundle ~/bundles/unet_xs_int8 --images ~/frames --max-frames 200 --summary bench.json
    python3 pi_loop.py --model unet_xs_tflite_int8.tflite --video 0 --publish unix:/run/roverlite/seg.sock

See README.md next to this file for installation, the systemd service and the benchmark.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _bundle_first(argv: list[str]) -> None:
    """Put a ``--bundle`` folder first on ``sys.path``, so its own ``roverlite.deploy`` (the loop included) runs.

    Done before ``roverlite`` is imported: on the robot the bundle's copy is often the only one, and
    it must win over an installed ``roverlite`` too, as the bundle's ``run.py`` does.
    """
    for i, arg in enumerate(argv):
        if arg == "--bundle" and i + 1 < len(argv):
            folder = argv[i + 1]
        elif arg.startswith("--bundle="):
            folder = arg.partition("=")[2]
        else:
            continue
        if (Path(folder) / "bundle.json").is_file():
            sys.path.insert(0, str(Path(folder).resolve()))
            return


if __name__ == "__main__":
    _bundle_first(sys.argv[1:])

from roverlite.deploy.edgeloop import app  # noqa: E402  (after _bundle_first)
from roverlite.deploy.edgeloop.thermal import VcgencmdMonitor  # noqa: E402

SOURCES = ("auto", "picamera2", "opencv", "folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Raspberry Pi camera segmentation loop (LiteRT). " + __doc__.split("\n\n")[1].replace("\n", " ").replace("``", ""),
    )
    app.add_arguments(parser, SOURCES)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="LiteRT CPU threads (Pi 4/5: 4; leave one free if the robot does other work)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    app.setup_logging(args.log_level)
    monitor = VcgencmdMonitor.if_available(args.thermal_every)
    if monitor is None:
        app.logger.info("vcgencmd not found: temperature and throttling are not logged (not a Raspberry Pi?)")
    return app.run(
        args,
        make_segmenter=lambda segmenter_class, artifact: segmenter_class(artifact, threads=args.threads),
        monitor=monitor,
        extra={"device": "raspberry_pi", "threads": args.threads},
    )


if __name__ == "__main__":
    sys.exit(app.main_guard(main))
