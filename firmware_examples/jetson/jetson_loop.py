#!/usr/bin/env python3
"""Segment camera frames on a Jetson with a roverlite bundle's .onnx on ONNX Runtime (TensorRT -> CUDA -> CPU).

The same loop as the Raspberry Pi example (overlays, mask publishing, FPS and p50/p90/p99
latency, the out-of-distribution score and flag of every frame, JSON summary, clean SIGINT/SIGTERM
shutdown); frames come from an OpenCV device, URL or
GStreamer pipeline (CSI cameras through ``nvarguscamerasrc``), or a folder. The execution
providers are TensorRT, CUDA and CPU, whichever this onnxruntime build has, in that order, unless
``--providers`` names them; the chosen and the actually active providers are logged and go into
the summary. TensorRT engines are cached (``--trt-cache``) so only the first start pays the build.

Examples:
    python3 jetson_loop.py --bundle ~/bundles/unet_s_onnx --video 0 --overlay-dir /tmp/ov --overlay-every 30
    python3 jetson_loop.py --bundle ~/bundles/unet_s_onnx --images ~/frames --max-frames 500 --summary bench.json
    python3 jetson_loop.py --bundle ~/bundles/unet_s_onnx --providers cuda,cpu --images ~/frames

See README.md next to this file for TensorRT engines (trtexec), int8 calibration and the Nano.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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
from roverlite.deploy.edgeloop.thermal import SysfsThermalMonitor  # noqa: E402

SOURCES = ("auto", "opencv", "folder")
TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PROVIDER_ORDER = (TENSORRT, CUDA, CPU)
SHORT_NAMES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}


def choose_providers(
    available: Sequence[str],
    requested: str = "auto",
    trt_fp16: bool = True,
    trt_cache: Path | None = None,
) -> list[Any]:
    """ONNX Runtime ``providers`` argument: names, with TensorRT's options attached.

    Args:
        available: ``onnxruntime.get_available_providers()``.
        requested: ``auto`` (TensorRT, CUDA, CPU: those available, in that order) or a comma list
            of ``tensorrt``/``cuda``/``cpu`` or full provider names, in priority order.
        trt_fp16: let TensorRT run layers in fp16 (the Jetson Nano's fastest mode).
        trt_cache: folder for serialized TensorRT engines (None: rebuild at every start).

    Raises:
        ValueError: an unknown name, or a requested provider this onnxruntime build lacks.
    """
    if requested == "auto":
        names = [p for p in PROVIDER_ORDER if p in available or p == CPU]
    else:
        names = []
        for item in (part.strip() for part in requested.split(",") if part.strip()):
            name = SHORT_NAMES.get(item.lower(), item)
            if name not in PROVIDER_ORDER and name not in available:
                raise ValueError(
                    "Unknown ONNX Runtime provider. Expected tensorrt, cuda, cpu or one of "
                    f"{list(available)}. Received: {item!r}."
                )
            if name not in available:
                raise ValueError(
                    f"Provider {name} is not in this onnxruntime build. Expected one of {list(available)} "
                    "(on a Jetson install the onnxruntime-gpu wheel for your JetPack). Received: " + repr(item) + "."
                )
            names.append(name)
        if not names:
            raise ValueError(f"Expected at least one provider in --providers. Received: {requested!r}.")
    providers: list[Any] = []
    for name in names:
        if name == TENSORRT:
            options: dict[str, Any] = {"trt_fp16_enable": bool(trt_fp16)}
            if trt_cache is not None:
                options.update({"trt_engine_cache_enable": True, "trt_engine_cache_path": str(trt_cache)})
            providers.append((TENSORRT, options))
        else:
            providers.append(name)
    return providers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Jetson camera segmentation loop (ONNX Runtime). " + __doc__.split("\n\n")[1].replace("\n", " ").replace("``", ""),
    )
    app.add_arguments(parser, SOURCES)
    parser.add_argument(
        "--providers", default="auto", help="auto (TensorRT, CUDA, CPU as available) or a comma list, e.g. cuda,cpu"
    )
    parser.add_argument("--no-trt-fp16", dest="trt_fp16", action="store_false", help="keep TensorRT in fp32")
    parser.add_argument(
        "--trt-cache", type=Path, default=Path.home() / ".cache" / "roverlite-trt", help="TensorRT engine cache folder"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU provider threads")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    app.setup_logging(args.log_level)
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = choose_providers(available, args.providers, args.trt_fp16, args.trt_cache)
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    if TENSORRT in names:
        args.trt_cache.mkdir(parents=True, exist_ok=True)
    app.logger.info("onnxruntime %s, available providers %s, requested %s", ort.__version__, available, names)
    if names == [CPU]:
        app.logger.warning("running on the CPU provider only: no TensorRT/CUDA in this onnxruntime build")

    def make_segmenter(segmenter_class: Any, artifact: Path) -> Any:
        segmenter = segmenter_class(artifact, threads=args.threads, providers=providers)
        active = segmenter.runner.backend.split(":", 1)[-1].split(",")
        app.logger.info("active providers: %s", active)
        extra["providers_active"] = active
        return segmenter

    extra: dict[str, Any] = {"device": "jetson", "providers_requested": names, "threads": args.threads}
    return app.run(args, make_segmenter, monitor=SysfsThermalMonitor.if_available(args.thermal_every), extra=extra)


if __name__ == "__main__":
    sys.exit(app.main_guard(main))
