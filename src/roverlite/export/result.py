"""What an export returns: :class:`ExportResult`, one per artifact (formats may extend it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ExportResult"]


@dataclass(frozen=True)
class ExportResult:
    """One exported artifact and the outcome of its self-check.

    Attributes:
        format: the format table key.
        path: the artifact file.
        sidecar_path: its JSON sidecar (``<path>.json``).
        size_bytes, sha256: of the artifact.
        check: the self-check measurements (also stored in the sidecar).
        passed: whether the self-check passed.
    """

    format: str
    path: Path
    sidecar_path: Path
    size_bytes: int
    sha256: str
    check: Mapping[str, Any]
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "path": str(self.path), "sidecar_path": str(self.sidecar_path)}
