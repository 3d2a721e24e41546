"""Writing the JSON sidecar beside an artifact.

The schema, the parser and the checks live in :mod:`roverlite.deploy.sidecar`, which a robot can
import without TensorFlow; this module only gathers what the workstation knows (the data config,
the runtime's view of the artifact's tensors, package versions, MACs) into a
:class:`~roverlite.deploy.sidecar.Sidecar` and writes it atomically. Building the ``Sidecar``
runs the reader's validation, so nothing is written that the device would refuse.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from roverlite.config import DataConfig
from roverlite.deploy.runtime import TensorInfo
from roverlite.deploy.sidecar import (
    Quantization,
    Sidecar,
    TensorSpec,
    parse_sidecar,
    read_sidecar,
    sidecar_path,
)
from roverlite.core.preprocessing import Preprocessing
from roverlite.io import atomic_write_json, sha256_file, write_staged_json

__all__ = ["VERSIONED_PACKAGES", "build_sidecar", "collect_versions", "parse_sidecar", "read_sidecar", "write_sidecar"]

logger = logging.getLogger(__name__)

# Distribution names recorded in every sidecar when installed.
VERSIONED_PACKAGES = (
    "roverlite", "tensorflow", "tf-keras", "tensorflow-model-optimization", "tf2onnx", "onnx",
    "onnxruntime", "ai-edge-litert", "numpy",
)


def collect_versions() -> dict[str, str]:
    """Installed versions of the packages that shape an artifact (missing ones are left out)."""
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_sidecar(
    artifact: str | os.PathLike,
    *,
    name: str,
    format_name: str,
    runtime: str,
    data_cfg: DataConfig,
    input_info: TensorInfo,
    output_info: TensorInfo,
    source_path: str | None = None,
    source_sha256: str | None = None,
    recipe: Mapping[str, Any] | None = None,
    versions: Mapping[str, str] | None = None,
    cost: Mapping[str, Any] | None = None,
    self_check: Mapping[str, Any] | None = None,
    allow_gray_to_rgb: bool = False,
    ood: Mapping[str, Any] | None = None,
) -> Sidecar:
    """Describe the written ``artifact`` (size and sha256 are read from the file).

    Args:
        artifact: the artifact file, already written.
        name, format_name, runtime: model name, format table key and device runtime.
        data_cfg: classes, colours, ignore label, eval classes, hazards, colour mode and normalisation.
        input_info, output_info: the tensors as the device runtime reports them.
        source_path, source_sha256: the Keras model file, when exported from one.
        recipe: free-form description of how the model was made (compression steps, ...).
        versions: package versions (default :func:`collect_versions`).
        cost: ``{"macs": int, "params": int}`` when known.
        self_check: the export's self-check result.
        allow_gray_to_rgb: let an RGB model accept gray images on the device.
        ood: the out-of-distribution monitor calibrated on the check images
            (``OodMonitor.to_dict()``; the self-check computes it, see :mod:`roverlite.export.verify`).

    Raises:
        ValueError: the result would not be a valid sidecar (e.g. tensors that do not match the
            config's classes).
    """
    artifact = Path(artifact)
    rules = Preprocessing.from_data_config(data_cfg, allow_gray_to_rgb=allow_gray_to_rgb)
    return Sidecar(
        name=name,
        format=format_name,
        runtime=runtime,
        artifact_file=artifact.name,
        size_bytes=artifact.stat().st_size,
        sha256=sha256_file(artifact),
        classes=tuple(data_cfg.classes),
        class_colors=tuple(tuple(int(v) for v in c) for c in data_cfg.class_colors),
        ignore_index=data_cfg.ignore_index,
        eval_class_ids=tuple(data_cfg.eval_class_ids),
        input=_tensor_spec(input_info),
        output=_tensor_spec(output_info),
        **_sidecar_rules(rules),
        source_path=source_path,
        source_sha256=source_sha256,
        recipe=dict(recipe or {}),
        versions=dict(collect_versions() if versions is None else versions),
        cost=None if cost is None else dict(cost),
        self_check=None if self_check is None else dict(self_check),
        hazards=None if not data_cfg.hazards else {k: tuple(v) for k, v in data_cfg.hazards.items()},
        ood=None if ood is None else dict(ood),
    )


def write_sidecar(artifact: str | os.PathLike, sidecar: Sidecar, final: str | os.PathLike | None = None) -> Path:
    """Write ``sidecar`` atomically to ``<artifact>.json`` and return that path.

    With ``final``, ``artifact`` is a staged file that will be renamed to ``final`` (see
    :func:`roverlite.io.commit_pair`): the sidecar is staged beside it, without a rename, and
    errors name ``final``'s sidecar.
    """
    if final is None:
        return atomic_write_json(sidecar_path(artifact), sidecar.to_dict())
    return write_staged_json(sidecar_path(artifact), sidecar_path(final), sidecar.to_dict())


def _sidecar_rules(rules: Preprocessing) -> dict[str, Any]:
    """The Sidecar fields of ``rules``: all but the size, which the input tensor's shape carries."""
    fields = rules.to_dict()
    del fields["image_size"]
    return {key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()}


def _tensor_spec(info: TensorInfo) -> TensorSpec:
    quantization = None if info.scale is None else Quantization(scale=float(info.scale), zero_point=int(info.zero_point))
    return TensorSpec(shape=tuple(int(s) for s in info.shape), dtype=info.dtype, quantization=quantization)
