"""The deliverable: the one artifact a run hands over, its gate verdict and headline numbers.

``roverlite pipeline`` delivers its recipe's last artifact and judges it with the recipe's gate;
the report opens with it. The caller describes it as a mapping (see :class:`Deliverable`); its
numbers come from the report's row holding that file:

* mIoU and Δ mIoU against the report's reference (the teacher float row), and each rare class's
  IoU with its ratio to the reference's, when the rare classes are known (the gate's
  ``rare_classes`` / ``rare_class_drops``, or the recipe gate in the artifact's sidecar);
* p50 latency on the deliverable file's own runtime, and its file size;
* speed-up against the teacher float and teacher int8 rows: each teacher row's fastest measured
  p50 over the deliverable's.

Example:
    >>> spec = {"artifact": "compress/3_export/r-3-export_tflite_int8.tflite", "label": "student int8",
    ...         "gate": {"passed": True, "reasons": []}, "enforced": True}
    >>> facts = deliverable_summary(spec, rows, summary, reference)  # doctest: +SKIP
    >>> facts["verdict"], facts["speedup_vs_teacher_float"]  # doctest: +SKIP
    ('passed', 4.1)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roverlite.report.html import Section, Table, Verdict
from roverlite.report.labels import read_sidecar_entry
from roverlite.report.tables import RuntimeLatency, VariantRow, format_bytes, format_signed

__all__ = ["Deliverable", "deliverable_section", "deliverable_summary"]

_KEYS = ("artifact", "label", "gate", "enforced", "step")


@dataclass(frozen=True)
class Deliverable:
    """What the caller says about the deliverable.

    Attributes:
        artifact: the delivered file (``.tflite`` / ``.onnx``).
        label: its human name; ``None``: the label of its report row.
        gate: ``{"passed": bool, "reasons": [str, ...]}`` (a full gate report is accepted);
            ``None``: not gated.
        enforced: whether a failed gate fails the run (``False``: recorded only, e.g. ``--no-gate``).
        step: the recipe step that exported it (``3_export``), when the caller knows it.
    """

    artifact: str
    label: str | None = None
    gate: Mapping[str, Any] | None = None
    enforced: bool = False
    step: str | int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.artifact, (str, os.PathLike)) or not str(self.artifact).strip():
            raise ValueError(f"Expected deliverable['artifact'] as a file path. Received: {self.artifact!r}.")
        object.__setattr__(self, "artifact", str(self.artifact))
        if self.label is not None and (not isinstance(self.label, str) or not self.label.strip()):
            raise ValueError(f"Expected deliverable['label'] as a non-empty string or None. Received: {self.label!r}.")
        if not isinstance(self.enforced, bool):
            raise ValueError(f"Expected deliverable['enforced'] as true/false. Received: {self.enforced!r}.")
        if self.gate is not None:
            _check_gate(self.gate)
        if self.step is not None and (isinstance(self.step, bool) or not isinstance(self.step, (str, int))):
            raise ValueError(f"Expected deliverable['step'] as a step name or index, or None. Received: {self.step!r}.")

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any]) -> Deliverable:
        """Read the ``deliverable`` argument of :func:`roverlite.report.build.build_report`.

        Raises:
            ValueError: not a mapping, unknown keys, or invalid values.
        """
        if not isinstance(value, Mapping):
            raise ValueError(  # noqa: TRY004
                f"Expected the deliverable as a mapping with keys {list(_KEYS)}. Received: {type(value).__name__}."
            )
        unknown = sorted(set(value) - set(_KEYS))
        if unknown:
            raise ValueError(f"Unknown deliverable keys. Expected some of {list(_KEYS)}. Received: {unknown}.")
        if "artifact" not in value:
            raise ValueError(f"Expected deliverable['artifact']. Received: keys {sorted(value)}.")
        return cls(**dict(value))

    @property
    def verdict(self) -> str:
        """``passed``, ``failed`` or ``not gated``."""
        if self.gate is None:
            return "not gated"
        return "passed" if self.gate["passed"] else "failed"

    @property
    def reasons(self) -> list[str]:
        return [str(r) for r in (self.gate or {}).get("reasons") or []]


def _check_gate(gate: Any) -> None:
    if not isinstance(gate, Mapping) or not isinstance(gate.get("passed"), bool):
        raise ValueError(
            "Expected deliverable['gate'] as {'passed': bool, 'reasons': [...]} or None. "
            f"Received: {gate!r}."
        )
    reasons = gate.get("reasons")
    if reasons is not None and (isinstance(reasons, str) or not isinstance(reasons, Sequence)):
        raise ValueError(f"Expected deliverable['gate']['reasons'] as a list of strings. Received: {reasons!r}.")


# === Numbers ===


def deliverable_summary(
    deliverable: Deliverable | Mapping[str, Any],
    rows: Sequence[VariantRow],
    summary: Sequence[Mapping[str, Any]],
    reference: VariantRow | None,
) -> dict[str, Any]:
    """The ``deliverable`` object of ``summary.json``: the caller's facts plus its row's numbers.

    Args:
        deliverable: a :class:`Deliverable` or its mapping.
        rows, summary: the report's rows and their ``summary.json`` entries, in the same order.
        reference: the Δ mIoU reference row.

    Raises:
        ValueError: an invalid deliverable mapping.
    """
    spec = deliverable if isinstance(deliverable, Deliverable) else Deliverable.from_mapping(deliverable)
    index = _row_index(spec.artifact, rows)
    row = None if index is None else rows[index]
    entry = None if row is None else _entry_for(spec.artifact, row)
    p50 = None if entry is None else entry.p50_ms
    out: dict[str, Any] = {
        "artifact": spec.artifact,
        "file": Path(spec.artifact).name,
        "label": spec.label or (row.display_name if row is not None else Path(spec.artifact).stem),
        "variant": None if row is None else row.name,
        "step": spec.step,
        "verdict": spec.verdict,
        "passed": None if spec.gate is None else spec.gate["passed"],
        "enforced": spec.enforced,
        "reasons": spec.reasons,
        "gate": None if spec.gate is None else dict(spec.gate),
        "miou": None if row is None else row.miou,
        "delta_miou": None if index is None else summary[index].get("delta_miou"),
        "reference": None if reference is None else reference.display_name,
        "accuracy_source": None if row is None else row.accuracy_source,
        "rare_classes": {} if row is None else _rare_iou(spec, row, reference),
        "runtime": None if entry is None else entry.runtime,
        "p50_ms": p50,
        "size_bytes": _size(spec.artifact, row),
    }
    for kind, key in (("teacher float", "teacher_float"), ("teacher int8", "teacher_int8")):
        teacher = _fastest_teacher(rows, kind, exclude=row)
        out[f"{key}_p50_ms"] = None if teacher is None else teacher.p50_ms
        out[f"speedup_vs_{key}"] = None if teacher is None or not p50 else round(teacher.p50_ms / p50, 3)
    return out


def _row_index(artifact: str, rows: Sequence[VariantRow]) -> int | None:
    """The row holding ``artifact`` (as its primary file or a runtime's): by path, else by file name."""
    target = Path(artifact)
    for same in (lambda p: _resolved(p) == _resolved(target), lambda p: p.name == target.name):
        for i, row in enumerate(rows):
            if any(same(Path(p)) for p in _files(row)):
                return i
    return None


def _files(row: VariantRow) -> list[str]:
    return [p for p in [row.artifact, *(e.artifact for e in row.latency)] if p]


def _resolved(path: Path) -> str:
    try:
        return str(path.resolve())
    except OSError:
        return str(path)


def _entry_for(artifact: str, row: VariantRow) -> RuntimeLatency | None:
    """The latency of the deliverable file itself, else the row's fastest runtime."""
    name = Path(artifact).name
    own = [e for e in row.latency if e.artifact and Path(e.artifact).name == name]
    candidates = own or list(row.latency)
    return min(candidates, key=lambda e: e.p50_ms) if candidates else None


def _size(artifact: str, row: VariantRow | None) -> int | None:
    path = Path(artifact)
    if path.is_file():
        return path.stat().st_size
    if row is not None and row.artifact and Path(row.artifact).name == path.name:
        return row.size_bytes
    return None


def _fastest_teacher(rows: Sequence[VariantRow], kind: str, exclude: VariantRow | None) -> RuntimeLatency | None:
    """The fastest measured runtime of any ``teacher float`` / ``teacher int8`` row."""
    int8 = kind.endswith("int8")
    entries = [
        e for row in rows if row is not exclude and row.is_teacher and _is_int8(row) == int8 for e in row.latency
    ]
    return min(entries, key=lambda e: e.p50_ms) if entries else None


def _is_int8(row: VariantRow) -> bool:
    return row.precision == "int8" or "int8" in row.kind.lower() or (row.format or "").endswith("int8")


def _rare_iou(spec: Deliverable, row: VariantRow, reference: VariantRow | None) -> dict[str, dict[str, Any]]:
    out = {}
    for name in _rare_classes(spec, row):
        iou = row.per_class_iou.get(name)
        ref = None if reference is None else reference.per_class_iou.get(name)
        ratio = round(iou / ref, 3) if iou is not None and ref else None
        out[name] = {"iou": iou, "reference_iou": ref, "ratio": ratio}
    return out


def _rare_classes(spec: Deliverable, row: VariantRow) -> list[str]:
    """Rare classes named by the gate (the caller's, then the row's), else by the sidecar's recipe gate."""
    for gate in (spec.gate, row.gate):
        if not isinstance(gate, Mapping):
            continue
        limits = gate.get("limits") if isinstance(gate.get("limits"), Mapping) else {}
        for names in (gate.get("rare_classes"), limits.get("rare_classes"), gate.get("rare_class_drops")):
            if isinstance(names, (list, tuple, Mapping)) and names:
                return [str(n) for n in names]
    entry = read_sidecar_entry(spec.artifact)
    gate = (entry[1].get("gate") if entry else None) or {}
    names = gate.get("rare_classes") if isinstance(gate, Mapping) else None
    return [str(n) for n in names] if isinstance(names, (list, tuple)) else []


# === Section ===


def deliverable_section(facts: Mapping[str, Any]) -> Section:
    """The report's opening section from :func:`deliverable_summary`'s output."""
    blocks: list[Any] = [Verdict(_verdict_text(facts), facts["verdict"])]
    if facts["verdict"] == "failed":
        blocks += [f"Reason: {reason}" for reason in facts["reasons"]] or ["Reason: not given."]
    if facts["variant"] is None:
        blocks.append("This file is not among the reported variants: no measured numbers to show.")
        return Section("Deliverable", blocks)
    headers, cells = _headline(facts)
    blocks.append(Table(headers, [cells]))
    if facts.get("accuracy_source"):
        blocks.append(f"Accuracy measured on {facts['accuracy_source']}; speed-ups use each teacher row's fastest "
                      "measured runtime.")
    return Section("Deliverable", blocks)


def _verdict_text(facts: Mapping[str, Any]) -> str:
    step = f", step {facts['step']}" if facts.get("step") is not None else ""
    name = f"{facts['label']} ({facts['file']}{step})"
    if facts["verdict"] == "not gated":
        return f"{name}: not gated"
    if facts["verdict"] == "passed":
        return f"{name}: PASSED its gate"
    how = "enforced: the run fails" if facts["enforced"] else "not enforced: recorded only"
    return f"{name}: FAILED its gate ({how})"


def _headline(facts: Mapping[str, Any]) -> tuple[list[str], list[str | None]]:
    reference = facts["reference"] or "the teacher"
    headers = ["mIoU", f"Δ mIoU vs {reference}"]
    cells = [_num(facts["miou"], 4), format_signed(facts["delta_miou"])]
    for name, value in facts["rare_classes"].items():
        headers.append(f"{name} IoU")
        ratio = f" ({value['ratio']:.2f}x {reference})" if value["ratio"] is not None else ""
        cells.append(None if value["iou"] is None else f"{value['iou']:.4f}{ratio}")
    runtime = f" ({facts['runtime']})" if facts["runtime"] else ""
    headers += [f"p50 ms{runtime}", "size"]
    cells += [_num(facts["p50_ms"], 3), format_bytes(facts["size_bytes"])]
    for key, title in (("teacher_float", "teacher float"), ("teacher_int8", "teacher int8")):
        if facts[f"{key}_p50_ms"] is not None:
            headers.append(f"speed-up vs {title}")
            speedup = facts[f"speedup_vs_{key}"]
            cells.append(None if speedup is None else f"{speedup:.2f}x")
    return headers, cells


def _num(value: float | None, digits: int) -> str | None:
    return None if value is None else f"{value:.{digits}f}"
