"""Human names for report rows: ``teacher float``, ``student int8``, ``student int8 (ONNX)``.

A row's label says what its artifact *is*, read from the artifact's sidecar rather than its file
name:

* **who**: ``teacher`` for the pipeline's teacher exports (recipe ``role: teacher``) and a recipe's
  teacher step (``step_kind: teacher``); ``student`` for every other recipe step's artifact
  (``roverlite compress`` provenance: ``step``, ``step_kind``, ``steps``). Only the recipe's last
  step is plain ``student``; an earlier step names itself: ``student float (step 1 structured)``.
* **precision**, from the sidecar's format: float32 ``float``, float16 ``float16``, dynamic
  ``dynamic-range``, int8 ``int8``.
* **runtime**: a row whose artifacts are all ONNX gets ``(ONNX)``; a row holding a TFLite file and
  its ONNX twin (one model, one precision) is named once, without it.

A row without such provenance keeps its ``name`` (for collected rows, built from the file stem);
the file name itself stays in the report's ``file`` column. Two rows that would share a label get
their names appended, so every label stays unique.

Example:
    >>> artifact_label("tflite_int8", {"recipe": "r", "step": 2, "step_kind": "export",
    ...                                "steps": [{"distill": {}}, {"export": {}}]})
    'student int8'
    >>> artifact_label("tflite", {"role": "teacher"})
    'teacher float'
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roverlite.core.formats import get_spec
from roverlite.deploy.sidecar import read_sidecar
from roverlite.report.tables import VariantRow

__all__ = [
    "PRECISION_WORDS",
    "Provenance",
    "SidecarLookup",
    "artifact_label",
    "provenance",
    "read_sidecar_entry",
    "row_label",
    "with_labels",
]

logger = logging.getLogger(__name__)

PRECISION_WORDS = {"float32": "float", "float16": "float16", "dynamic": "dynamic-range", "int8": "int8"}

# path -> (format, recipe) of the artifact's sidecar, or None when it has none readable.
SidecarLookup = Callable[[str], tuple[str | None, Mapping[str, Any]] | None]


@dataclass(frozen=True)
class Provenance:
    """Where an artifact comes from.

    Attributes:
        role: ``teacher`` or ``student``.
        step: the recipe step (from 1) that exported it, when known.
        step_kind: that step's kind (``distill``, ``structured``, ``export``, ...).
        last: whether that step is the recipe's last (or the step count is unknown).
    """

    role: str
    step: int | None = None
    step_kind: str | None = None
    last: bool = True


def provenance(recipe: Mapping[str, Any] | None) -> Provenance | None:
    """The artifact's role from its sidecar ``recipe`` entry; ``None`` when it does not say."""
    recipe = recipe if isinstance(recipe, Mapping) else {}
    step_kind = recipe.get("step_kind")
    if recipe.get("role") == "teacher" or step_kind == "teacher":
        return Provenance("teacher")
    if isinstance(step_kind, str) and step_kind:
        step = recipe.get("step")
        step = step if isinstance(step, int) and not isinstance(step, bool) else None
        steps = recipe.get("steps")
        last = step is None or not isinstance(steps, list) or step >= len(steps)
        return Provenance("student", step, step_kind, last)
    if recipe.get("role") == "student":
        return Provenance("student")
    return None


def artifact_label(fmt: str | None, recipe: Mapping[str, Any] | None) -> str | None:
    """The label of one artifact from its sidecar's format and recipe (``None``: unknown provenance)."""
    origin = provenance(recipe)
    if origin is None:
        return None
    return _compose(origin, _precision(fmt), onnx=_runtime(fmt) == "onnxruntime")


def row_label(row: VariantRow, sidecar_for: SidecarLookup) -> str | None:
    """The label of a row from the sidecars of its files (the primary artifact and each runtime's).

    The teacher wins over a student; of several recipe steps (one model exported by two steps),
    the latest step names the row. ``None`` when no file's sidecar says where it comes from.
    """
    paths = list(dict.fromkeys(p for p in [row.artifact, *(e.artifact for e in row.latency)] if p))
    formats, origins = {}, []
    for path in paths:
        entry = sidecar_for(path)
        if entry is None:
            continue
        formats[path], origin = entry[0], provenance(entry[1])
        if origin is not None:
            origins.append(origin)
    if not origins:
        return None
    teachers = [o for o in origins if o.role == "teacher"]
    origin = teachers[0] if teachers else max(origins, key=_step_order)
    precision = row.precision or _precision(formats.get(paths[0]) or row.format)
    onnx = all(Path(path).suffix.lower() == ".onnx" for path in paths)
    return _compose(origin, precision, onnx=onnx)


def with_labels(rows: Sequence[VariantRow], sidecar_for: SidecarLookup | None = None) -> list[VariantRow]:
    """``rows`` with every missing label derived (:func:`row_label`) and every label unique.

    Args:
        rows: report rows; a row's own ``label`` is kept.
        sidecar_for: path -> ``(format, recipe)`` of its sidecar; default: read beside the file.
    """
    lookup = sidecar_for or read_sidecar_entry
    labelled = [row if row.label else dataclasses.replace(row, label=row_label(row, lookup)) for row in rows]
    counts: dict[str, int] = {}
    for row in labelled:
        counts[row.display_name] = counts.get(row.display_name, 0) + 1
    out = []
    for row in labelled:
        if row.label and counts[row.label] > 1 and row.label != row.name:
            logger.info("label %r names several rows: adding the row name %r", row.label, row.name)
            row = dataclasses.replace(row, label=f"{row.label} [{row.name}]")
        out.append(row)
    return out


# === Helpers ===


def _compose(origin: Provenance, precision: str | None, onnx: bool) -> str:
    word = PRECISION_WORDS.get(precision or "float32", precision or "float")
    details = []
    if origin.role == "student" and not origin.last and origin.step is not None:
        details.append(f"step {origin.step} {origin.step_kind}")
    if onnx:
        details.append("ONNX")
    return f"{origin.role} {word}" + (f" ({', '.join(details)})" if details else "")


def _step_order(origin: Provenance) -> tuple[bool, int]:
    return (origin.last, origin.step if origin.step is not None else -1)


def _precision(fmt: str | None) -> str | None:
    if not fmt:
        return None
    try:
        return get_spec(fmt).precision
    except ValueError:
        _, _, rest = fmt.partition("_")
        return rest or "float32"


def _runtime(fmt: str | None) -> str | None:
    if not fmt:
        return None
    try:
        return get_spec(fmt).runtime
    except ValueError:
        return "onnxruntime" if fmt.startswith("onnx") else None


def read_sidecar_entry(path: str) -> tuple[str | None, Mapping[str, Any]] | None:
    """``(format, recipe)`` of the sidecar beside ``path``; ``None`` when there is none readable."""
    try:
        sidecar = read_sidecar(path)
    except (ValueError, FileNotFoundError, OSError) as err:
        logger.debug("no sidecar for %s: %s", path, err)
        return None
    return sidecar.format, dict(sidecar.recipe or {})
