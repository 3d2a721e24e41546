"""Workstation glue between dataset splits and artifacts: one function per CLI command.

``roverlite eval ARTIFACT`` and ``roverlite bundle`` need images from a split, which only the
workstation can decode (``roverlite.data.loader`` uses Pillow). These functions load the split and
hand arrays to ``roverlite.deploy``, which never reads datasets itself (``roverlite export`` loads
its splits through :meth:`roverlite.export.ExportSettings.from_run`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from roverlite.config import DataConfig
from roverlite.data.loader import cap_images, load_split
from roverlite.deploy.bundle import make_bundle
from roverlite.deploy.evaluate import evaluate_artifact
from roverlite.deploy.segmenter import Segmenter

__all__ = ["bundle_from_split", "evaluate_artifact_on_split"]

logger = logging.getLogger(__name__)


def evaluate_artifact_on_split(
    artifact: str | os.PathLike,
    data_cfg: DataConfig,
    split: str = "val",
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Per-class IoU / mIoU of an exported artifact on a split, run through ``roverlite.deploy``.

    Raises:
        ValueError: the artifact's classes differ from ``data_cfg.classes``, or it is refused
            (hash mismatch, damaged file).
        FileNotFoundError: artifact or sidecar missing.
    """
    segmenter = Segmenter(artifact, threads=threads, providers=providers)
    if tuple(segmenter.classes) != tuple(data_cfg.classes):
        raise ValueError(
            f"Artifact {str(artifact)!r} was exported for other classes. Expected {list(data_cfg.classes)} "
            f"(data.classes). Received: {list(segmenter.classes)}."
        )
    arrays = load_split(data_cfg, split, progress=progress)
    logger.info("evaluating %s on %d images of split %r", artifact, len(arrays), split)
    result = evaluate_artifact(segmenter, arrays.images, arrays.masks)
    result["split"] = split
    return result


def bundle_from_split(
    artifact: str | os.PathLike,
    out: str | os.PathLike,
    data_cfg: DataConfig,
    split: str = "val",
    max_images: int | None = 32,
    progress: bool = False,
) -> Path:
    """A device bundle of ``artifact`` whose test pack holds the first ``max_images`` of ``split``."""
    arrays = load_split(cap_images(data_cfg, max_images), split, progress=progress)
    return make_bundle(artifact, out, arrays.images, arrays.masks, arrays.ids)
