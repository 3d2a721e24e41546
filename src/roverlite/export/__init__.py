"""Export a tf_keras U-Net to TFLite / ONNX artifacts, each with a sidecar and its own self-check.

:func:`export_model` is the one front door: ``export_model(model, ExportSettings(...))``. It
converts the model to every requested format (the table in :mod:`roverlite.export.formats`,
whose rows also own their finishing step), writes each artifact and its ``<file>.json`` sidecar
atomically, runs the artifact through ``roverlite.deploy`` on check images and compares it with
the Keras model (:mod:`roverlite.export.verify`). A failed check still leaves the artifact on disk
with ``passed=False`` in its result and sidecar, and logs a warning: whether to ship it is the
compression recipe's decision.

TensorFlow, tf2onnx and ONNX Runtime's quantizer are imported only when a conversion runs.

Example:
    >>> settings = ExportSettings(["tflite", "tflite_int8", "onnx"], "exports", cfg.data,
    ...                           calibration_images=train.images[:200],
    ...                           check_images=val.images[:32], check_masks=val.masks[:32])  # doctest: +SKIP
    >>> results = export_model("runs/mars/model.h5", settings)                               # doctest: +SKIP
    >>> settings = ExportSettings.from_run(["tflite_int8", "c_array"], "exports", cfg.data)  # doctest: +SKIP
    >>> [(r.format, r.passed, r.size_bytes) for r in results]                              # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.config import DataConfig
from roverlite.core.preprocessing import normalize
from roverlite.deploy.runtime import load_runner
from roverlite.deploy.sidecar import matching_pending_sidecar, pending_sidecar_path, sidecar_path
from roverlite.export.formats import FORMATS, ExportFormat, get_format, list_formats
from roverlite.export.metadata import build_sidecar, collect_versions, write_sidecar
from roverlite.export.result import ExportResult
from roverlite.export.settings import ExportSettings, check_name
from roverlite.export.source import (
    check_exportable,
    check_model_fits_config,
    load_source_model,
    model_file_sha256,
)
from roverlite.export.verify import Tolerances, keras_logits, self_check
from roverlite.io import commit_pair, ensure_writable_dir, staged_path, write_staged

__all__ = [
    "FORMATS", "ExportFormat", "ExportResult", "ExportSettings", "Tolerances", "export_model", "get_format", "list_formats",
]

logger = logging.getLogger(__name__)

# Check images used when the caller gives none: the first calibration images, else seeded noise
# (enough for a logit comparison of float formats, not for an accuracy claim).
_FALLBACK_CHECK_IMAGES = 8


def export_model(model_or_path: Any, settings: ExportSettings, *extra_args: Any, **extra_kwargs: Any) -> list[Any]:
    """Export a model to each of ``settings.formats`` and self-check every artifact.

    For each format, in the order given: convert, write the artifact and its sidecar under
    temporary names, run the self-check, rename both into place, then run the format's own
    ``finish`` step (``c_array``: the TFLite-Micro check and the C sources).

    Args:
        model_or_path: a functional tf_keras model, or a ``model.h5`` / run folder.
        settings: an :class:`ExportSettings` (formats, output folder, data, recipe, tolerances...),
            the only other argument. ``extra_args`` / ``extra_kwargs`` exist only to refuse the
            removed form ``export_model(model, formats, out_dir, data_cfg, ...)`` with a clear error.

    Returns:
        One result per format, in the order given: an :class:`ExportResult`, or what the format's
        ``finish`` returns (``c_array``: a :class:`~roverlite.export.micro_finish.MicroExportResult`).

    Raises:
        ValueError: ``settings`` is not an :class:`ExportSettings` or more arguments are given (the
            removed keyword form), unknown format (with did-you-mean), a model that does not match ``data_cfg``,
            missing / empty / wrong-shape calibration or check data (all before any conversion),
            or a conversion producing non-builtin ops.
        FileNotFoundError: ``model_or_path`` names no model file.
        PermissionError: ``out_dir`` is not writable.
    """
    if not isinstance(settings, ExportSettings) or extra_args or extra_kwargs:
        raise ValueError(  # noqa: TRY004 - the CLI and callers treat argument errors as ValueErrors
            "Expected export_model(model, ExportSettings(...)); the keyword form export_model(model, formats, "
            f"out_dir, data_cfg, ...) was removed. Received: {_describe_call(settings, extra_args, extra_kwargs)}."
        )
    fmts = settings.export_formats
    data_cfg = settings.data_cfg
    model, source_path, source_sha = _resolve_model(model_or_path)
    hwc = check_exportable(model)
    check_model_fits_config(model, data_cfg)
    calibration = None
    if any(f.needs_calibration for f in fmts):
        calibration = _check_uint8(settings.calibration_images, hwc, "calibration_images")
        calibration = _normalised(calibration[: settings.representative_count], data_cfg)
    images, masks, check_source = _check_set(settings.check_images, settings.check_masks, settings.calibration_images, hwc)
    name = check_name(settings.name if settings.name is not None else model.name)
    out_dir = ensure_writable_dir(settings.out_dir)

    reference = keras_logits(model, _normalised(images, data_cfg))
    shared = {
        "name": name,
        "data_cfg": data_cfg,
        "source_path": source_path,
        "source_sha256": source_sha,
        "versions": collect_versions(),
        "cost": dict(settings.cost) if settings.cost is not None else _count_cost(model),
        "allow_gray_to_rgb": settings.allow_gray_to_rgb,
    }
    export_settings = {
        "int8_io": settings.int8_io,
        "calibration_images": 0 if calibration is None else len(calibration),
        "check_images": len(images),
        "check_images_source": check_source,
    }
    results = []
    for fmt in fmts:
        content = fmt.convert(model, calibration, settings.int8_io)
        recipe_fmt = {**dict(settings.recipe or {}), "export": {**export_settings, "format": fmt.name}}
        result = _write_and_check(
            fmt, content, out_dir, reference, images, masks, settings.tolerances, recipe_fmt, shared
        )
        results.append(fmt.finish(result, settings))
    return results


def _write_and_check(
    fmt: ExportFormat,
    content: bytes,
    out_dir: Path,
    reference: np.ndarray,
    images: np.ndarray,
    masks: np.ndarray | None,
    tolerances: Tolerances,
    recipe: Mapping[str, Any],
    shared: Mapping[str, Any],
) -> ExportResult:
    path = out_dir / f"{shared['name']}{fmt.suffix}"
    _finish_interrupted_commit(path)
    # The new pair is written and checked under temporary names and renamed over the old one only
    # when complete: an interrupted or failed export leaves the previous artifact and sidecar as
    # they were (issue 23). The staged artifact keeps the suffix, so its sidecar is its stem + .json.
    staged = None
    try:
        staged = staged_path(path)
        write_staged(staged, path, lambda fh: fh.write(content))
        runner = load_runner(staged, content=content)
        sidecar = build_sidecar(
            staged, format_name=fmt.name, runtime=fmt.runtime, input_info=runner.input, output_info=runner.output,
            recipe=recipe, **shared,
        )
        sidecar = dataclasses.replace(sidecar, artifact_file=path.name)
        # The device-side check reads the sidecar (and verifies the hash), so it is written first and
        # rewritten with the check's result.
        write_sidecar(staged, sidecar, final=path)
        check = self_check(fmt, str(staged), reference, images, masks, shared["data_cfg"], tolerances)
        ood = check.pop("ood", None)  # the OOD monitor calibrated on the check images has a field of its own
        sidecar = dataclasses.replace(sidecar, self_check=check, ood=ood)
        write_sidecar(staged, sidecar, final=path)
        commit_pair(staged, path, sidecar_path(staged), sidecar_path(path), pending_sidecar_path(path))
    except BaseException:
        for leftover in () if staged is None else (staged, sidecar_path(staged)):
            leftover.unlink(missing_ok=True)
        raise
    sidecar_file = sidecar_path(path)
    if check["passed"]:
        logger.info("%s: %s (%d bytes), self-check passed", fmt.name, path, sidecar.size_bytes)
    else:
        logger.warning("%s: %s self-check FAILED: %s", fmt.name, path, "; ".join(check.get("failures", [])))
    return ExportResult(
        format=fmt.name, path=path, sidecar_path=sidecar_file, size_bytes=sidecar.size_bytes,
        sha256=sidecar.sha256, check=check, passed=bool(check["passed"]),
    )


def _finish_interrupted_commit(path: Path) -> None:
    """Finish or drop what an export killed while renaming a pair into place left for ``path``.

    A pending sidecar that describes the artifact now in place (the process died between the
    last two renames of :func:`roverlite.io.commit_pair`) becomes its sidecar; any other pending
    sidecar belongs to an artifact that never replaced this one and is removed.
    """
    pending = pending_sidecar_path(path)
    if not pending.is_file():
        return
    if path.is_file() and matching_pending_sidecar(path) is not None:
        os.replace(pending, sidecar_path(path))
        logger.warning("finished an interrupted export: %s has its sidecar again", path)
    else:
        pending.unlink(missing_ok=True)


# === Argument checks ===


def _describe_call(settings: Any, extra_args: tuple[Any, ...], extra_kwargs: Mapping[str, Any]) -> str:
    if isinstance(settings, str):
        what = f"a format name {settings!r}"
    elif isinstance(settings, (list, tuple)):
        what = f"a list of formats {list(settings)!r}"
    else:
        what = f"a {type(settings).__name__}"
    extras = [f"{len(extra_args)} more positional argument(s)"] if extra_args else []
    extras += [f"keyword(s) {sorted(extra_kwargs)}"] if extra_kwargs else []
    return what + "".join(f" and {e}" for e in extras)


def _resolve_model(model_or_path: Any) -> tuple[Any, str | None, str | None]:
    if isinstance(model_or_path, (str, os.PathLike)):
        model = load_source_model(model_or_path)
        path, sha = model_file_sha256(model_or_path)
        return model, path, sha
    return model_or_path, None, None


def _check_uint8(images: Any, hwc: tuple[int, int, int], what: str) -> np.ndarray:
    if images is None:
        raise ValueError(f"Expected {what} as uint8 (N, {hwc[0]}, {hwc[1]}, {hwc[2]}). Received: None.")
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[0] == 0 or tuple(array.shape[1:]) != hwc:
        raise ValueError(
            f"Wrong {what}. Expected a non-empty uint8 array of shape (N, {hwc[0]}, {hwc[1]}, {hwc[2]}) at the "
            f"model's input size. Received: dtype={array.dtype}, shape={array.shape}."
        )
    return array


def _check_set(
    check_images: Any, check_masks: Any, calibration_images: Any, hwc: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray | None, str]:
    if check_images is None:
        if check_masks is not None:
            raise ValueError("Expected check_images with check_masks. Received: masks without images.")
        if calibration_images is not None:
            images = _check_uint8(calibration_images, hwc, "calibration_images")[:_FALLBACK_CHECK_IMAGES]
            return images, None, "calibration_images"
        logger.warning("no check images given: self-check compares logits on seeded noise images only")
        noise = np.random.default_rng(0).integers(0, 256, (4, *hwc), dtype=np.uint8)
        return noise, None, "noise"
    images = _check_uint8(check_images, hwc, "check_images")
    if check_masks is None:
        return images, None, "check_images"
    masks = np.asarray(check_masks)
    if masks.shape != images.shape[:3] or masks.dtype.kind not in "iu":
        raise ValueError(
            f"Wrong check_masks. Expected integer masks of shape {images.shape[:3]} (one per check image). "
            f"Received: dtype={masks.dtype}, shape={masks.shape}."
        )
    return images, masks, "check_images"


def _normalised(images: np.ndarray, data_cfg: DataConfig) -> np.ndarray:
    return normalize(images, data_cfg.mean, data_cfg.std)


def _count_cost(model: Any) -> dict[str, int] | None:
    # imports TensorFlow: roverlite.export stays TF-free until a conversion runs
    from roverlite.train.macs import count_macs

    try:
        cost = count_macs(model)
    except ValueError as err:  # e.g. an open spatial size; the sidecar then records no cost
        logger.debug("MACs not counted: %s", err)
        return None
    return {"macs": int(cost.macs), "params": int(cost.params)}
