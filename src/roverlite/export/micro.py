"""TFLite-Micro: the ``c_array`` export, an int8 ``.tflite`` proven to run under TFLite-Micro, as C sources.

The format-table converter (:func:`convert_c_array`) is the full-int8 TFLite converter (batch 1,
builtin ops, int8 I/O) followed by a run under TFLite-Micro's own interpreter (the ``tflite-micro``
package): a model using an op TFLite-Micro does not implement (``TILE``, ``TOPK_V2``, ...) is
refused with a ``ValueError`` naming every such op. :func:`export_c_array` then

* measures the smallest tensor arena the model allocates in (binary search over ``arena_size``),
* runs the check images under TFLite-Micro and under LiteRT's reference kernels and compares the
  int8 outputs (the two share the reference kernels, so they agree bit for bit),
* writes ``<artifact stem>/`` beside the artifact: ``model_data.cc`` / ``model_data.h``
  (``alignas(16) const unsigned char g_model_data[]``, ``g_model_data_len`` and the model's I/O
  constants), ``model_ops.h`` (a ``tflite::MicroMutableOpResolver<N>`` registering exactly the
  model's ops, and the arena size) and ``test_image.h`` (the first check image, quantized, with the
  class pixel counts TFLite-Micro produced for it on the host),
* adds a ``tflite_micro`` section (ops, arena bytes, C files, the comparison) to the sidecar.

The runs under TFLite-Micro and the checks live in :mod:`roverlite.export.micro_probe` (with
:mod:`roverlite.export.micro_interpreter`, the child-process side), the C source text in
:mod:`roverlite.export.c_array`, the converter in :mod:`roverlite.export.micro_converter`; their
public names are re-exported here. This module sits above :func:`roverlite.export.export_model`
and :mod:`roverlite.export.dataset`, and nothing below imports it.

The sidecar keeps ``runtime="litert"``: the ``.tflite`` file is what LiteRT reads for the export's
self-check and on a Pi, and the device-side sidecar schema knows ``litert`` and ``onnxruntime``
only. TFLite-Micro facts live in the sidecar's ``tflite_micro`` section, which the reader ignores.

Example:
    >>> result = export_c_array(model, "exports", cfg.data, calibration_images=train_images,
    ...                         check_images=val_images, check_masks=val_masks)  # doctest: +SKIP
    >>> result.arena_bytes, result.ops                                           # doctest: +SKIP
    (297984, ('CONV_2D', 'MAX_POOL_2D', 'CONCATENATION', 'RESIZE_NEAREST_NEIGHBOR'))
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.config import DataConfig
from roverlite.data.loader import load_split
from roverlite.deploy.segmenter import Segmenter
from roverlite.deploy.sidecar import sidecar_path
from roverlite.export import Tolerances, export_model
from roverlite.export.c_array import (  # re-exported
    make_test_image,
    model_data_sources,
    model_ops_header,
    parse_c_array,
    resolver_method,
    test_image_header,
)
from roverlite.export.micro_probe import (  # partly re-exported
    ARENA_ALIGNMENT,
    DEFAULT_ARENA_MARGIN,
    MicroProbe,
    check_inputs,
    check_micro_ops,
    compare_outputs,
    measure_arena,
    measured_arena,
    model_ops,
    probe_micro,
    probe_outputs,
    recommended_arena,
    run_reference,
)
from roverlite.export.dataset import export_from_config
from roverlite.export.micro_converter import convert_c_array  # re-exported: the format table's converter
from roverlite.io import atomic_write_json, atomic_write_text, sha256_file

__all__ = [
    "ARENA_ALIGNMENT",
    "DEFAULT_ARENA_MARGIN",
    "MicroExportResult",
    "MicroProbe",
    "check_micro_ops",
    "convert_c_array",
    "export_c_array",
    "export_with_c_array",
    "finish_c_array",
    "make_test_image",
    "measure_arena",
    "model_data_sources",
    "model_ops",
    "model_ops_header",
    "parse_c_array",
    "probe_micro",
    "recommended_arena",
    "resolver_method",
    "run_reference",
    "test_image_header",
]

logger = logging.getLogger(__name__)

C_ARRAY_FORMAT = "c_array"


# === Result ===


@dataclass(frozen=True)
class MicroExportResult:
    """A ``c_array`` export: the ``.tflite`` (with its LiteRT self-check) plus the C sources.

    Attributes:
        format, path, sidecar_path, size_bytes, sha256, check, passed: as in
            :class:`roverlite.export.ExportResult`; ``passed`` also requires TFLite-Micro to agree
            with LiteRT's reference kernels on every check image.
        c_dir: the folder holding ``model_data.cc``, ``model_data.h``, ``model_ops.h`` and (with
            check images) ``test_image.h``.
        c_files: file name -> path of each written C file.
        ops: builtin ops in order of first use (the resolver's registrations).
        arena_bytes: the arena constant written to ``model_ops.h`` (measured + margin, rounded).
        arena_bytes_measured: the smallest arena the model allocated in, on this host.
        micro_check: the TFLite-Micro vs LiteRT comparison (also in the sidecar).
    """

    format: str
    path: Path
    sidecar_path: Path
    size_bytes: int
    sha256: str
    check: Mapping[str, Any]
    passed: bool
    c_dir: Path
    c_files: Mapping[str, Path]
    ops: tuple[str, ...]
    arena_bytes: int
    arena_bytes_measured: int
    micro_check: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("path", "sidecar_path", "c_dir"):
            out[key] = str(out[key])
        out["c_files"] = {k: str(v) for k, v in self.c_files.items()}
        return out


# === The export ===


def export_c_array(
    model_or_path: Any,
    out_dir: str | os.PathLike,
    data_cfg: DataConfig,
    calibration_images: np.ndarray | None = None,
    check_images: np.ndarray | None = None,
    check_masks: np.ndarray | None = None,
    name: str | None = None,
    recipe: Mapping[str, Any] | None = None,
    representative_count: int = 100,
    tolerances: Tolerances | None = None,
    arena_margin: float = DEFAULT_ARENA_MARGIN,
) -> MicroExportResult:
    """Export ``model_or_path`` as format ``c_array`` and write its C sources.

    Arguments as in :func:`roverlite.export.export_model` (``int8_io`` is always True here), plus
    ``arena_margin``, the fraction added to the measured arena for ``kTensorArenaSize``.

    Raises:
        ValueError: as :func:`roverlite.export.export_model`, plus ops TFLite-Micro lacks.
    """
    (result,) = export_model(
        model_or_path,
        [C_ARRAY_FORMAT],
        out_dir,
        data_cfg,
        calibration_images=calibration_images,
        check_images=check_images,
        check_masks=check_masks,
        name=name,
        recipe=recipe,
        int8_io=True,
        representative_count=representative_count,
        tolerances=tolerances,
    )
    images = check_images if check_images is not None else calibration_images
    return finish_c_array(result, images, arena_margin=arena_margin)


def finish_c_array(
    result: Any,
    check_images: np.ndarray | None,
    arena_margin: float = DEFAULT_ARENA_MARGIN,
    check_ids: Sequence[str] | None = None,
) -> MicroExportResult:
    """Turn an exported ``c_array`` ``.tflite`` into C sources, after checking it under TFLite-Micro.

    Args:
        result: the :class:`~roverlite.export.ExportResult` of format ``c_array``.
        check_images: uint8 images (any size) run under both TFLite-Micro and LiteRT's reference
            kernels; the first becomes ``test_image.h``. ``None`` checks seeded noise and writes no
            test image.
        arena_margin: fraction added to the measured arena.
        check_ids: names of the check images (for ``test_image.h``).

    Raises:
        ValueError: a result of another format, ops TFLite-Micro lacks, or an arena over 64 MiB.
    """
    if getattr(result, "format", None) != C_ARRAY_FORMAT:
        raise ValueError(
            f"Expected an export result of format {C_ARRAY_FORMAT!r}. Received: {getattr(result, 'format', result)!r}."
        )
    path = Path(result.path)
    segmenter = Segmenter(path)
    content = path.read_bytes()
    ops = check_micro_ops(content)
    inputs, ids = check_inputs(segmenter, check_images, check_ids)
    probe = probe_micro(content, inputs=inputs, measure=True)
    arena_measured, outputs = measured_arena(probe), probe_outputs(probe)
    reference = run_reference(content, inputs)
    micro_check = compare_outputs(
        outputs, reference, len(inputs), "check_images" if check_images is not None else "noise"
    )
    arena = recommended_arena(arena_measured, arena_margin)

    provenance = (
        f"Generated by roverlite.export.micro from {path.name} (sha256 {result.sha256[:16]}..., {len(content)} bytes)."
    )
    s = segmenter.sidecar
    io_in, io_out = dict(probe.input), dict(probe.output)
    header, source = model_data_sources(
        content,
        provenance,
        io_in,
        io_out,
        s.classes,
        {"pixel_scale": s.pixel_scale, "mean": s.mean, "std": s.std},
    )
    texts = {
        "model_data.h": header,
        "model_data.cc": source,
        "model_ops.h": model_ops_header(ops, arena, arena_measured, arena_margin, provenance, probe.version),
    }
    if check_images is not None:
        counts = np.bincount(outputs[0].argmax(-1).ravel(), minlength=s.num_classes)
        texts["test_image.h"] = test_image_header(inputs[0], counts.tolist(), ids[0], provenance)
        micro_check["test_image"] = {"id": ids[0], "class_counts": dict(zip(s.classes, counts.tolist()))}
    c_dir = path.with_suffix("")
    files = {file: atomic_write_text(c_dir / file, text) for file, text in texts.items()}
    round_trip = parse_c_array(files["model_data.cc"].read_text()) == content
    micro_check["c_array_round_trip"] = round_trip
    micro_check["passed"] = bool(micro_check["passed"] and round_trip)

    sidecar_file = sidecar_path(path)
    sidecar = json.loads(sidecar_file.read_text())
    sidecar["tflite_micro"] = {
        "version": probe.version,
        "ops": list(ops),
        "resolver": f"tflite::MicroMutableOpResolver<{len(ops)}>",
        "arena_bytes": arena,
        "arena_bytes_measured": arena_measured,
        "arena_margin": arena_margin,
        "arena_measured_on": "host (64-bit), TFLite-Micro Python runtime, reference kernels",
        "c_dir": c_dir.name,
        "c_files": {file: sha256_file(p) for file, p in files.items()},
        "check": micro_check,
    }
    atomic_write_json(sidecar_file, sidecar)
    passed = bool(result.passed and micro_check["passed"])
    log = logger.info if micro_check["passed"] else logger.warning
    log(
        "c_array: %s, arena %d B (measured %d B), ops %s, TFLite-Micro vs LiteRT reference: %s",
        c_dir,
        arena,
        arena_measured,
        ",".join(ops),
        "agree" if micro_check["passed"] else "DIFFER",
    )
    return MicroExportResult(
        format=result.format,
        path=path,
        sidecar_path=sidecar_file,
        size_bytes=result.size_bytes,
        sha256=result.sha256,
        check=result.check,
        passed=passed,
        c_dir=c_dir,
        c_files=files,
        ops=ops,
        arena_bytes=arena,
        arena_bytes_measured=arena_measured,
        micro_check=micro_check,
    )


# === Workstation front door (what `roverlite export --format ... c_array` calls) ===


def export_with_c_array(
    model_path: str | os.PathLike,
    formats: Sequence[str] | str,
    out_dir: str | os.PathLike,
    data_cfg: DataConfig,
    calibration_split: str = "train",
    check_split: str = "val",
    max_check_images: int | None = 32,
    representative_count: int = 100,
    int8_io: bool = True,
    name: str | None = None,
    recipe: Mapping[str, Any] | None = None,
    progress: bool = False,
    arena_margin: float = DEFAULT_ARENA_MARGIN,
) -> list[Any]:
    """:func:`roverlite.export.dataset.export_from_config`, plus the C sources for ``c_array``.

    Same arguments and the same ``list`` of results, in the order given; the ``c_array`` entry is
    a :class:`MicroExportResult` (it has ``format``, ``path``, ``size_bytes`` and ``passed`` like
    every other). Without ``c_array`` in ``formats`` this is exactly ``export_from_config``.

    Raises:
        ValueError: as ``export_from_config``; ``c_array`` with ``int8_io=False``; ops TFLite-Micro lacks.
    """
    names = [formats] if isinstance(formats, str) else list(formats)
    if C_ARRAY_FORMAT in names and int8_io is not True:
        raise ValueError(
            "Format 'c_array' needs int8 input and output. Expected no --float-io with c_array. "
            f"Received: int8_io={int8_io!r}."
        )
    results = export_from_config(
        model_path,
        names,
        out_dir,
        data_cfg,
        calibration_split=calibration_split,
        check_split=check_split,
        max_check_images=max_check_images,
        representative_count=representative_count,
        int8_io=int8_io,
        name=name,
        recipe=recipe,
        progress=progress,
    )
    if C_ARRAY_FORMAT not in names:
        return results
    capped = (
        data_cfg
        if max_check_images is None
        else dataclasses.replace(
            data_cfg,
            max_images=max_check_images if data_cfg.max_images is None else min(max_check_images, data_cfg.max_images),
        )
    )
    check = load_split(capped, check_split, progress=progress)
    return [
        finish_c_array(r, check.images, arena_margin=arena_margin, check_ids=check.ids)
        if r.format == C_ARRAY_FORMAT
        else r
        for r in results
    ]
