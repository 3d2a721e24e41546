"""The report's sections, in reading order, from its rows and their ``summary.json`` entries.

Deliverable (when one is named), Variants (one table row per variant by its human label, with the
file, accuracy, cost, latency per runtime, the recommended runtime's achieved rate and memory, and
the gate), Per-class IoU, Rover safety (hazard miss and false-hazard rates with Δ against the
teacher, and a confusion heat map per variant), Runtime recommendation, Accuracy vs latency, Predictions, Machine peak,
Notes. :func:`roverlite.report.html.render_markdown` and ``render_html`` turn them into the pages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from roverlite.report.deliverable import deliverable_section
from roverlite.report.html import Image, Section, Table
from roverlite.report.memory import memory_cells, memory_headers, memory_note
from roverlite.deploy.peak import PeakResult
from roverlite.report.tables import RuntimeLatency, VariantRow, format_bytes, format_signed, recommend_runtime

__all__ = ["report_sections"]


def report_sections(
    rows: Sequence[VariantRow],
    summary: Sequence[Mapping[str, Any]],
    reference: VariantRow | None,
    peak: PeakResult | None,
    overlay_path: Path | None,
    notes: Sequence[str],
    deliverable: Mapping[str, Any] | None = None,
    confusion_maps: Mapping[str, Path] | None = None,
) -> list[Section]:
    """The report's sections; ``deliverable`` is :func:`roverlite.report.deliverable.deliverable_summary` output."""
    sections = [] if deliverable is None else [deliverable_section(deliverable)]
    sections.append(_variants_section(rows, summary, reference))
    classes = list(dict.fromkeys(name for row in rows for name in row.per_class_iou))
    if classes:
        iou_rows = [[row.display_name, *[_fmt(row.per_class_iou.get(c), 4) for c in classes], _fmt(row.miou, 4),
                     row.accuracy_source] for row in rows]
        sections.append(Section("Per-class IoU", [Table(["variant", *classes, "mIoU", "measured on"], iou_rows)]))
    safety = _safety_section(rows, reference, confusion_maps or {})
    if safety is not None:
        sections.append(safety)
    lines = _runtime_lines(rows)
    if lines:
        sections.append(Section("Runtime recommendation", lines))
    sections.append(Section("Accuracy vs latency", [Image("pareto.png", "mIoU against p50 latency per variant")]))
    if overlay_path is not None:
        sections.append(Section("Predictions", [Image(overlay_path.name, "image, truth and each variant's prediction")]))
    if peak is not None:
        sections.append(_peak_section(peak))
    all_notes = [*notes, *(f"{row.display_name}: {note}" for row in rows for note in row.notes)]
    if all_notes:
        sections.append(Section("Notes", all_notes))
    return sections


def _variants_section(
    rows: Sequence[VariantRow], summary: Sequence[Mapping[str, Any]], reference: VariantRow | None
) -> Section:
    runtimes = list(dict.fromkeys(e.runtime for row in rows for e in row.latency))
    shown = [_shown_entry(row, s) for row, s in zip(rows, summary)]
    memory = memory_headers(shown)
    headers = ["variant", "file", "kind", "mIoU", "Δ mIoU", "size", "GMAC", "params (M)",
               *[f"{rt} p50 / p90 ms" for rt in runtimes], "runtime", "GMAC/s", "% of peak", *memory, "gate"]
    table = []
    for row, s, entry in zip(rows, summary, shown):
        latency = []
        for rt in runtimes:
            on = row.latency_on(rt)
            p90 = "–" if on is None or on.p90_ms is None else f"{on.p90_ms:.3f}"
            latency.append(None if on is None else f"{on.p50_ms:.3f} / {p90}")
        table.append([
            row.display_name, s["file"], row.kind, _fmt(row.miou, 4), format_signed(s["delta_miou"]),
            format_bytes(row.size_bytes), _fmt(None if row.macs is None else row.macs / 1e9, 4),
            _fmt(None if row.params is None else row.params / 1e6, 3),
            *latency, s["recommended_runtime"], _fmt(s["gmac_per_s"], 1),
            None if s["peak_fraction"] is None else f"{100 * s['peak_fraction']:.1f}%",
            *memory_cells(entry, memory), _gate(row.gate),
        ])
    against = (f"the teacher {reference.display_name!r}." if reference is not None
               else "no teacher (no 'teacher …' row with an mIoU).")
    intro = [f"{len(rows)} variants; Δ mIoU against {against}"]
    hosts = sorted({e.cpu for row in rows for e in row.latency if e.cpu})
    threads = sorted({e.threads for row in rows for e in row.latency if e.threads})
    if hosts:
        intro.append(f"Latency measured on {', '.join(hosts)} with {', '.join(map(str, threads)) or '?'} thread(s); "
                     "the runtime column is the faster measured runtime of each variant.")
    note = memory_note(memory)
    return Section("Variants", [*intro, *([note] if note else []), Table(headers, table)])


def _safety_section(
    rows: Sequence[VariantRow], reference: VariantRow | None, maps: Mapping[str, Path]
) -> Section | None:
    """Hazard miss rate (Δ against the teacher) and false-hazard rate per variant, then the heat maps."""
    hazards = list(dict.fromkeys(name for row in rows for name in row.hazards))
    if not hazards and not maps:
        return None
    parts: list[Any] = []
    if hazards:
        parts.append(
            "Miss rate: share of a hazard's true pixels predicted as a traversable class (the rover drives "
            "onto it); false-hazard rate: share of traversable pixels predicted as the hazard (it detours)."
        )
        headers = ["variant"]
        for name in hazards:
            safe = " / ".join(next((r.hazards[name].get("traversable") for r in rows if name in r.hazards), None) or ())
            headers += [f"{name} miss rate (as {safe})", "Δ vs teacher", f"{name} false-hazard rate"]
        table = []
        for row in rows:
            cells: list[Any] = [row.display_name]
            for name in hazards:
                rates = row.hazards.get(name) or {}
                teacher = ((reference.hazards.get(name) or {}) if reference is not None else {}).get("miss_rate")
                miss = rates.get("miss_rate")
                delta = None if miss is None or teacher is None or row.name == reference.name else miss - teacher
                cells += [_fmt(miss, 4), format_signed(delta), _fmt(rates.get("false_rate"), 4)]
            table.append(cells)
        parts.append(Table(headers, table))
    for row in rows:
        if row.name in maps:
            parts.append(Image(maps[row.name].name, f"{row.display_name}: confusion, rows truth, share of each row"))
    return Section("Rover safety", parts)


def _shown_entry(row: VariantRow, summary: Mapping[str, Any]) -> RuntimeLatency | None:
    """The latency entry of the row's recommended runtime (the one its table row shows)."""
    runtime = summary.get("recommended_runtime")
    return None if runtime is None else row.latency_on(runtime)


def _runtime_lines(rows: Sequence[VariantRow]) -> list[str]:
    choices = recommend_runtime(rows)
    lines = []
    for row in rows:
        choice = choices.get(row.name)
        if choice is None:
            continue
        others = ", ".join(f"{rt} {ms:.3f} ms" for rt, ms in choice.others.items())
        lines.append(f"{row.display_name}: {choice.runtime} ({choice.p50_ms:.3f} ms p50)"
                     + (f", over {others} ({choice.speedup:.2f}x)" if others else ", the only runtime measured"))
    return lines


def _peak_section(peak: PeakResult) -> Section:
    conv = peak.conv or {}
    peak_rows = [
        ["fp32 numpy BLAS matmul", f"{peak.blas_size}³" if peak.blas_size else None, _fmt(peak.fp32_blas_gmacs, 1)],
        ["fp32 LiteRT CONV_2D 3x3", _conv_text(conv), _fmt(peak.fp32_litert_gmacs, 1)],
        ["int8 LiteRT CONV_2D 3x3", _conv_text(conv), _fmt(peak.int8_litert_gmacs, 1)],
    ]
    blocks: list[Any] = [
        (f"Best of {peak.repeats} runs with {peak.threads} thread(s) on {peak.cpu}. '% of peak' above compares each "
         "variant's MACs / p50 with the peak of its precision (int8: the int8 conv; float: the better fp32 one)."),
        Table(["measurement", "size", "GMAC/s"], peak_rows),
    ]
    blocks += [f"failed: {e}" for e in peak.errors]
    return Section("Machine peak", blocks)


def _fmt(value: float | None, digits: int) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def _gate(gate: Mapping[str, Any] | None) -> str | None:
    if gate is None:
        return None
    passed = gate.get("passed")
    reasons = gate.get("reasons") or gate.get("failures") or []
    text = "passed" if passed else ("FAILED" if passed is False else "?")
    return text + (f": {'; '.join(map(str, reasons))}" if reasons and not passed else "")


def _conv_text(conv: Mapping[str, Any]) -> str | None:
    if not conv:
        return None
    shape = "x".join(str(d) for d in conv.get("input", [])[1:])
    return f"{shape} -> {conv.get('filters')} ({conv.get('macs', 0) / 1e9:.2f} GMAC)"
