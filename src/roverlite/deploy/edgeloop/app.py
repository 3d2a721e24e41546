"""Command-line plumbing shared by ``pi_loop.py`` and ``jetson_loop.py``: arguments, model, summary.

The model comes from a bundle folder (``--bundle``, made by ``roverlite bundle``: its own copy of
``roverlite.deploy``, this package included, is put first on ``sys.path`` by the entry script
before it imports this module, as the bundle's ``run.py`` does) or from an
artifact path (``--model``, with ``roverlite[device]`` installed). Logs go to stderr; stdout
carries only JSON lines (published masks, if asked for, and the final summary), so it can be
piped into another process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import roverlite.deploy
from roverlite.deploy import Segmenter
from roverlite.deploy.edgeloop.frames import open_source
from roverlite.deploy.edgeloop.loop import LoopOptions, StopFlag, install_signal_handlers, run_loop
from roverlite.deploy.edgeloop.publish import DEFAULT_KEEP_MASKS, make_publishers

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "add_arguments", "artifact_path", "main_guard", "run", "setup_logging"]

logger = logging.getLogger("roverlite.deploy.edgeloop")

EXIT_FAILURE = 1  # failed while running: systemd's Restart=on-failure restarts the service
EXIT_USAGE = 2  # bad arguments, model or source: restarting would not help


def add_arguments(parser: argparse.ArgumentParser, sources: tuple[str, ...]) -> None:
    """The options every loop script has."""
    model = parser.add_argument_group("model").add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--bundle", type=Path, help="bundle folder from `roverlite bundle` (uses its roverlite.deploy copy)"
    )
    model.add_argument(
        "--model", type=Path, help="a .tflite/.onnx artifact with its .json sidecar (needs roverlite[device])"
    )

    src = parser.add_argument_group("frames")
    src.add_argument(
        "--source",
        choices=sources,
        default="auto",
        help="auto: --images or --video when given, else "
        + ("picamera2 if importable" if "picamera2" in sources else "error"),
    )
    src.add_argument("--images", type=Path, help="folder of .png/.jpg (needs Pillow) or .npy/.npz frames")
    src.add_argument("--video", help="OpenCV source: device index (0), file, URL (rtsp://...) or GStreamer pipeline")
    src.add_argument("--gstreamer", action="store_true", help="open --video with OpenCV's GStreamer backend")
    src.add_argument("--camera-size", default="640x480", help="camera capture size WxH (default 640x480)")
    src.add_argument("--loop", action="store_true", help="repeat the --images folder until stopped (soak tests)")
    src.add_argument(
        "--color-to-gray",
        choices=("auto", "yes", "no"),
        default="auto",
        help="feed colour frames to a grayscale model as luma (auto: for cameras only; default auto)",
    )

    out = parser.add_argument_group("outputs")
    out.add_argument("--max-frames", type=int, help="stop after N frames")
    out.add_argument("--warmup", type=int, default=1, help="frames left out of the latency statistics (default 1)")
    out.add_argument("--overlay-dir", type=Path, help="write overlay_<frame>.png (class colours over the frame) here")
    out.add_argument("--overlay-every", type=int, default=1, help="overlay every Nth frame (default 1)")
    out.add_argument("--overlay-alpha", type=float, default=0.5, help="colour opacity (default 0.5)")
    out.add_argument("--overlay-keep", type=int, default=0, help="keep only the newest N overlays (default 0: all)")
    out.add_argument(
        "--publish",
        action="append",
        default=[],
        metavar="TARGET",
        help="publish masks: png:DIR, stdout (JSON lines) or unix:PATH (repeatable)",
    )
    out.add_argument("--publish-mask-data", action="store_true", help="include the zlib+base64 mask in JSON messages")
    out.add_argument("--keep-masks", type=int, default=DEFAULT_KEEP_MASKS,
                     help=f"png:DIR keeps only the newest N masks (default {DEFAULT_KEEP_MASKS}; 0: all)")
    out.add_argument("--summary", type=Path, help="also write the final JSON summary to this file")
    out.add_argument("--log-every", type=float, default=5.0, help="seconds between progress log lines (0: none)")
    out.add_argument("--fps-limit", type=float, help="run no faster than this many frames per second")
    out.add_argument("--thermal-every", type=float, default=10.0, help="seconds between thermal readings (default 10)")
    out.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level), format="%(asctime)s %(levelname).1s %(name)s: %(message)s", stream=sys.stderr
    )


def artifact_path(args: argparse.Namespace) -> Path:
    """The artifact to run: ``--model``, or the artifact named by ``--bundle``'s manifest.

    The entry script has already put the bundle first on ``sys.path`` (its ``_bundle_first``).

    Raises:
        FileNotFoundError: no bundle manifest or artifact.
    """
    if args.bundle is None:
        return Path(args.model)
    manifest_file = Path(args.bundle) / "bundle.json"
    if not manifest_file.is_file():
        raise FileNotFoundError(
            f"Not a bundle folder: {str(args.bundle)!r}. Expected bundle.json inside (unpack a .tar.gz with "
            "`mkdir b && tar -xzf bundle.tar.gz -C b` first). Received: no bundle.json."
        )
    manifest = json.loads(manifest_file.read_text())
    return Path(args.bundle) / manifest["artifact"]


def run(
    args: argparse.Namespace,
    make_segmenter: Callable[[Any, Path], Any],
    monitor: Any = None,
    extra: dict[str, Any] | None = None,
) -> int:
    """Load the model, open the source and publishers, run the loop, print and write the summary."""
    artifact = artifact_path(args)

    segmenter = make_segmenter(Segmenter, artifact)
    s = segmenter.sidecar
    logger.info(
        "model %s (%s, %s) input %dx%dx%d, deploy package %s",
        artifact.name,
        s.format,
        segmenter.runner.backend,
        *segmenter.input_size,
        segmenter.channels,
        Path(roverlite.deploy.__file__).parent,
    )
    options = LoopOptions(  # validated before a camera is opened
        max_frames=args.max_frames,
        warmup=args.warmup,
        overlay_dir=args.overlay_dir,
        overlay_every=args.overlay_every,
        overlay_alpha=args.overlay_alpha,
        overlay_keep=args.overlay_keep,
        log_every_s=args.log_every,
        fps_limit=args.fps_limit,
    )
    source = open_source(
        args.source,
        images=args.images,
        video=args.video,
        gstreamer=args.gstreamer,
        size=_size(args.camera_size),
        loop=args.loop,
    )
    color_to_gray = source.is_camera if args.color_to_gray == "auto" else args.color_to_gray == "yes"
    options = dataclasses.replace(options, color_to_gray=color_to_gray)
    try:
        publishers = make_publishers(args.publish, segmenter.classes, args.publish_mask_data, args.keep_masks)
    except BaseException:
        source.close()
        raise
    stop = StopFlag()
    restore = install_signal_handlers(stop)
    try:
        summary = run_loop(segmenter, source, options, publishers, monitor=monitor, stop=stop)
    finally:
        restore()
    summary.update(
        {
            "artifact": artifact.name,
            "format": s.format,
            "backend": segmenter.runner.backend,
            "input": {
                "height": segmenter.input_size[0],
                "width": segmenter.input_size[1],
                "channels": segmenter.channels,
            },
            "source": source.kind,
            "color_to_gray": color_to_gray,
            **(extra or {}),
        }
    )
    line = json.dumps(summary)
    if args.summary is not None:
        _write_atomically(Path(args.summary), json.dumps(summary, indent=2) + "\n")
    print(line, flush=True)
    latency = summary["latency_ms"].get("predict", {})
    logger.info(
        "done: %d frames, %.2f fps, predict p50 %s ms (%s)",
        summary["frames"],
        summary["fps"],
        latency.get("p50", "n/a"),
        summary["stopped_by"],
    )
    return 0


def main_guard(main: Callable[[], int]) -> int:
    """Run ``main``: usage errors print one line and exit 2, crashes log a traceback and exit 1."""
    try:
        return main()
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception:  # a service should log why it died before systemd restarts it
        logger.exception("loop failed")
        return EXIT_FAILURE


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"Expected --camera-size as WIDTHxHEIGHT, e.g. 640x480. Received: {text!r}.") from None
    return width, height


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
