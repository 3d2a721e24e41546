"""Workstation glue between dataset splits and artifacts: one function per CLI command.

``roverlite export``, ``roverlite eval ARTIFACT`` and ``roverlite bundle`` need images from a
split, which only the workstation can decode (``roverlite.data.loader`` uses Pillow). These
functions load the split and hand arrays to :func:`roverlite.export.export_model` and to
``roverlite.deploy``, which never read datasets themselves.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from roverlite.config import DataConfig
from roverlite.data.loader import cap_images, load_split
from roverlite.deploy.bundle import make_bundle
from roverlite.deploy.evaluate import evaluate_artifact
from roverlite.deploy.segmenter import Segmenter
from roverlite.export import export_model
from roverlite.export.formats import get_format
from roverlite.export.verify import DEFAULT_CHECK_IMAGES, check_image_count, choose_check_images

__all__ = ["bundle_from_split", "evaluate_artifact_on_split", "export_from_config"]

logger = logging.getLogger(__name__)


def export_from_config(
    model_path: str | os.PathLike,
    formats: Sequence[str],
    out_dir: str | os.PathLike,
    data_cfg: DataConfig,
    calibration_split: str = "train",
    check_split: str = "val",
    max_check_images: int | None = DEFAULT_CHECK_IMAGES,
    representative_count: int = 100,
    int8_io: bool = True,
    name: str | None = None,
    recipe: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> list[Any]:
    """Export ``model_path`` with calibration images from one split and check images from another.

    The calibration split is loaded only when a format needs it; the self-check scores
    ``check_split`` against its masks: every image up to ``max_check_images`` (``None``: no cap;
    a memory cap still applies, see :func:`~roverlite.export.verify.check_image_count`), else a
    seeded uniform subset of that many.

    Returns:
        ``list[ExportResult]`` from :func:`roverlite.export.export_model`.

    Raises:
        ValueError: unknown format (checked before loading any data), bad data or model.
    """
    formats = [formats] if isinstance(formats, str) else list(formats)
    needs_calibration = any(get_format(f).needs_calibration for f in formats)
    calibration = None
    if needs_calibration:
        capped = cap_images(data_cfg, representative_count)
        calibration = load_split(capped, calibration_split, progress=progress).images
    check = load_split(data_cfg, check_split, progress=progress)
    values = data_cfg.image_size[0] * data_cfg.image_size[1] * data_cfg.num_classes
    chosen = choose_check_images(len(check.ids), check_image_count(len(check.ids), max_check_images, values))
    return export_model(
        model_path,
        formats,
        out_dir,
        data_cfg,
        calibration_images=calibration,
        check_images=check.images[chosen],
        check_masks=check.masks[chosen],
        name=name,
        recipe={**dict(recipe or {}), "calibration_split": calibration_split, "check_split": check_split},
        int8_io=int8_io,
        representative_count=representative_count,
    )


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
