"""The ``c_array`` format's finishing step: the C sources and their check under TFLite-Micro.

:func:`finish_c_array` takes the exported int8 ``.tflite`` (already self-checked under LiteRT),

* measures the smallest tensor arena the model allocates in (binary search over ``arena_size``),
* runs the check images under TFLite-Micro and under LiteRT's reference kernels and compares the
  int8 outputs (the two share the reference kernels, so they agree bit for bit),
* writes ``<artifact stem>/`` beside the artifact: ``model_data.cc`` / ``model_data.h``,
  ``model_ops.h`` (the op resolver and arena size) and ``test_image.h`` (the first check image),
* adds a ``tflite_micro`` section (ops, arena bytes, C files, the comparison) to the sidecar.

The format table (:mod:`roverlite.export.formats`) names :func:`finish_c_array_format` as the
``c_array`` row's ``finish``, so :func:`roverlite.export.export_model` runs it with no branch of its
own. Nothing here imports :mod:`roverlite.export` itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.deploy.segmenter import Segmenter
from roverlite.deploy.sidecar import sidecar_path
from roverlite.export.c_array import model_data_sources, model_ops_header, parse_c_array, test_image_header
from roverlite.export.micro_probe import (
    DEFAULT_ARENA_MARGIN,
    check_inputs,
    check_micro_ops,
    compare_outputs,
    measured_arena,
    probe_micro,
    probe_outputs,
    recommended_arena,
    run_reference,
)
from roverlite.export.result import ExportResult
from roverlite.io import atomic_write_json, atomic_write_text, sha256_file

__all__ = ["C_ARRAY_FORMAT", "MicroExportResult", "finish_c_array", "finish_c_array_format"]

logger = logging.getLogger(__name__)

C_ARRAY_FORMAT = "c_array"


# === Result ===


@dataclass(frozen=True)
class MicroExportResult(ExportResult):
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
        s.preprocessing,
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




def finish_c_array_format(result: Any, settings: Any) -> MicroExportResult:
    """The ``c_array`` row's ``finish(result, settings)``: :func:`finish_c_array` with the settings'
    ``finish_images`` (default: ``check_images``, else ``calibration_images``), ids and arena margin."""
    images = settings.finish_images
    if images is None:
        images = settings.check_images if settings.check_images is not None else settings.calibration_images
    return finish_c_array(result, images, arena_margin=settings.arena_margin, check_ids=settings.finish_ids)
