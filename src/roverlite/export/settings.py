"""What one export is asked to do: :class:`ExportSettings`, a frozen, validated value.

:func:`roverlite.export.export_model` takes a model and one ``ExportSettings``; every choice an
export makes (formats, output folder, name, calibration and check data, preprocessing from the
data config, recipe, tolerances, the C array's arena margin) lives here, checked in
``__post_init__`` before any data is loaded or model converted. :meth:`ExportSettings.from_run`
builds the settings from a data config's splits, as ``roverlite export`` does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.config import DataConfig
from roverlite.data.loader import cap_images, load_split
from roverlite.export.formats import ExportFormat, get_format, list_formats
from roverlite.export.micro_probe import DEFAULT_ARENA_MARGIN
from roverlite.export.verify import DEFAULT_CHECK_IMAGES, Tolerances, check_image_count, choose_check_images

__all__ = ["C_ARRAY_FORMAT", "ExportSettings"]

logger = logging.getLogger(__name__)

C_ARRAY_FORMAT = "c_array"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True, eq=False)
class ExportSettings:
    """Everything an export does besides the model (``eq=False``: it holds image arrays).

    Attributes:
        formats: format names from :func:`~roverlite.export.formats.list_formats` (a single name
            is accepted too); stored as a tuple, each once.
        out_dir: output folder (created); artifacts are ``<name><suffix>``.
        data_cfg: classes, colours, ignore label, eval classes, image size, colour mode, mean/std.
        calibration_images: uint8 ``(N, H, W, C)`` at the model's size; required by int8 formats.
        check_images: uint8 ``(N, H, W, C)`` for the self-check (default: the first calibration
            images, else seeded noise).
        check_masks: uint8 ``(N, H, W)`` truth for ``check_images``.
        name: artifact base name (default: the model's name).
        recipe: free-form provenance stored in each sidecar (an ``export`` entry is added).
        int8_io: TFLite full int8 with int8 input/output (``False``: float I/O; refused with ``c_array``).
        representative_count: calibration images used (the first ones).
        tolerances: self-check limits (default :class:`Tolerances`).
        cost: ``{"macs", "params"}`` for the sidecar (default: counted from the model).
        allow_gray_to_rgb: let an RGB artifact accept gray images on the device.
        arena_margin: ``c_array``: fraction added to the measured TFLite-Micro arena.
        finish_images: images a format's finishing step runs (``c_array``: under TFLite-Micro, the
            first becomes ``test_image.h``); default ``check_images``, else ``calibration_images``.
        finish_ids: names of ``finish_images``.
    """

    formats: Sequence[str] | str
    out_dir: str | os.PathLike
    data_cfg: DataConfig
    calibration_images: np.ndarray | None = None
    check_images: np.ndarray | None = None
    check_masks: np.ndarray | None = None
    name: str | None = None
    recipe: Mapping[str, Any] | None = None
    int8_io: bool = True
    representative_count: int = 100
    tolerances: Tolerances | None = None
    cost: Mapping[str, Any] | None = None
    allow_gray_to_rgb: bool = False
    arena_margin: float = DEFAULT_ARENA_MARGIN
    finish_images: np.ndarray | None = field(default=None, repr=False)
    finish_ids: Sequence[str] | None = None

    def __post_init__(self) -> None:
        names = _check_formats(self.formats)
        object.__setattr__(self, "formats", names)
        rc = self.representative_count
        if isinstance(rc, bool) or not isinstance(rc, int) or rc < 1:
            raise ValueError(f"Expected representative_count >= 1. Received: {rc!r}.")
        if not isinstance(self.int8_io, bool):  # a truthy string such as "no" must not silently mean True
            raise ValueError(f"Expected int8_io to be True or False. Received: {self.int8_io!r}.")  # noqa: TRY004 - CLI shows ValueErrors as usage errors
        if C_ARRAY_FORMAT in names and self.int8_io is not True:
            raise ValueError(
                "Format 'c_array' needs int8 input and output. Expected no --float-io with c_array. "
                f"Received: int8_io={self.int8_io!r}."
            )
        if not isinstance(self.data_cfg, DataConfig):
            raise ValueError(f"Expected data_cfg to be a DataConfig. Received: {type(self.data_cfg).__name__}.")  # noqa: TRY004
        if self.name is not None:
            check_name(self.name)
        if self.tolerances is None:
            object.__setattr__(self, "tolerances", Tolerances())
        margin = self.arena_margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < float("inf"):
            raise ValueError(f"Expected arena_margin >= 0. Received: {margin!r}.")

    @property
    def export_formats(self) -> list[ExportFormat]:
        """The format table rows, in the order given."""
        return [get_format(n) for n in self.formats]

    def replace(self, **changes: Any) -> ExportSettings:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_run(
        cls,
        formats: Sequence[str] | str,
        out_dir: str | os.PathLike,
        data_cfg: DataConfig,
        calibration_split: str = "train",
        check_split: str = "val",
        max_check_images: int | None = DEFAULT_CHECK_IMAGES,
        progress: bool = False,
        **settings: Any,
    ) -> ExportSettings:
        """Settings with calibration images from one split and check images from another.

        The calibration split is loaded only when a format needs it; the self-check scores
        ``check_split`` against its masks: every image up to ``max_check_images`` (``None``: no cap;
        a memory cap still applies, see :func:`~roverlite.export.verify.check_image_count`), else a
        seeded uniform subset of that many. With ``c_array``, its TFLite-Micro check runs the first
        ``max_check_images`` images of ``check_split``. ``settings`` are the other fields.

        Raises:
            ValueError: an impossible setting (checked before loading any data), bad data.
        """
        base = cls(formats, out_dir, data_cfg, **settings)  # validates before any data is read
        calibration = None
        if any(f.needs_calibration for f in base.export_formats):
            capped = cap_images(data_cfg, base.representative_count)
            calibration = load_split(capped, calibration_split, progress=progress).images
        check = load_split(data_cfg, check_split, progress=progress)
        values = data_cfg.image_size[0] * data_cfg.image_size[1] * data_cfg.num_classes
        chosen = choose_check_images(len(check.ids), check_image_count(len(check.ids), max_check_images, values))
        finish_images = finish_ids = None
        if C_ARRAY_FORMAT in base.formats:
            first = load_split(cap_images(data_cfg, max_check_images), check_split, progress=progress)
            finish_images, finish_ids = first.images, list(first.ids)
        recipe = {**dict(base.recipe or {}), "calibration_split": calibration_split, "check_split": check_split}
        return base.replace(
            calibration_images=calibration, check_images=check.images[chosen], check_masks=check.masks[chosen],
            recipe=recipe, finish_images=finish_images, finish_ids=finish_ids,
        )


def check_name(name: Any) -> str:
    """``name`` if it is a safe artifact base name (no folders)."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise ValueError(
            f"Expected an artifact name of letters, digits, '.', '_' or '-' (no folders). Received: name={name!r}."
        )
    return name


def _check_formats(formats: Sequence[str] | str) -> tuple[str, ...]:
    names = [formats] if isinstance(formats, str) else list(formats)
    if not names:
        raise ValueError(f"Expected at least one export format from {list_formats()}. Received: none.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Expected each export format once. Received: {duplicates} more than once.")
    return tuple(get_format(n).name for n in names)
