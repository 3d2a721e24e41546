"""``build_report``: one folder with the whole comparison of a model's variants.

Writes, into ``out_dir``:

* ``summary.json``: one entry per variant (name, human label and file, kind, artifact, miou,
  Δ mIoU vs the teacher, per-class IoU, size_bytes, macs, params, p50/p90 and memory per runtime,
  recommended runtime with its p50 and memory, achieved GMAC/s and the fraction of the machine's
  matching peak), the peak itself, and the ``deliverable`` with its verdict when one is named
  (:mod:`roverlite.report.deliverable`; ``null`` otherwise);
* ``pareto.png``: mIoU against p50 latency, marker area by file size
  (:func:`roverlite.report.pareto.plot_pareto`);
* ``overlays.png``: for a few validation images, image | truth | each variant's prediction, in the
  sidecar's class colours (``Segmenter.overlay``), when images are given;
* ``confusion_<variant>.png``: a small row-normalised confusion heat map per variant whose
  accuracy came with its confusion matrix (:func:`roverlite.report.plots.plot_confusion`); the
  "Rover safety" section shows them beside each variant's hazard miss rate;
* ``report.md`` (linking the PNGs) and ``report.html`` (the same, self-contained), opening with
  the deliverable and its verdict when one is named.

Rows are shown by their human label (``teacher float``, ``student int8``: :mod:`roverlite.report.labels`)
with the file name beside it; ``name`` stays the row's key in ``summary.json``.

Example:
    >>> rows = [VariantRow("teacher", "teacher float", miou=0.70, latency={"litert": {"p50_ms": 40.0}}),
    ...         VariantRow("xs_int8", "PTQ int8", miou=0.66, latency={"litert": {"p50_ms": 2.1}})]
    >>> paths = build_report(rows, "reports/mars", overlays="bundle/testpack.npz")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.deploy.evaluate import load_testpack
from roverlite.deploy.peak import PeakResult
from roverlite.deploy.segmenter import Segmenter
from roverlite.core.documents import REPORT_SUMMARY, VERSIONS
from roverlite.io import atomic_write_text, ensure_writable_dir, write_document
from roverlite.report.collect import collect_run_dirs, find_testpack
from roverlite.report.deliverable import Deliverable, deliverable_summary
from roverlite.report.html import render_html, render_markdown
from roverlite.report.labels import with_labels
from roverlite.report.memory import memory_summary
from roverlite.report.pareto import plot_overlay_grid, plot_pareto
from roverlite.report.plots import plot_confusion
from roverlite.report.sections import report_sections
from roverlite.report.tables import VariantRow, find_teacher, recommend_runtime

__all__ = ["REPORT_SCHEMA_VERSION", "ReportPaths", "build_report", "report_run_dirs", "summary_rows"]

logger = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = VERSIONS[REPORT_SUMMARY]
OverlaySource = str | os.PathLike | tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ReportPaths:
    """The files :func:`build_report` wrote (``overlays`` is ``None`` without overlay images)."""

    out_dir: Path
    markdown: Path
    html: Path
    summary: Path
    pareto: Path
    overlays: Path | None
    confusion: tuple[Path, ...] = ()


def build_report(
    rows: Sequence[VariantRow],
    out_dir: str | os.PathLike,
    overlays: OverlaySource | None = None,
    peak: PeakResult | Mapping[str, Any] | None = None,
    teacher: str | None = None,
    title: str = "roverlite variant report",
    overlay_count: int = 4,
    threads: int | None = None,
    notes: Sequence[str] = (),
    deliverable: Mapping[str, Any] | None = None,
) -> ReportPaths:
    """Write the report of ``rows`` into ``out_dir`` (created; existing report files replaced).

    Args:
        rows: the variants, in the order to show them; names must be unique.
        out_dir: the report folder.
        overlays: validation images with truth masks for the prediction grid: a test pack
            ``.npz`` or ``(images, masks)`` arrays. Each variant's ``artifact`` (with its sidecar)
            predicts them through ``roverlite.deploy.Segmenter``; variants without one are skipped.
        peak: this machine's measured peak (:func:`roverlite.export.peak.measure_peak`), for the
            achieved-GMAC/s comparison; ``None`` leaves those columns empty.
        teacher: the variant Δ mIoU is measured against (default: the first ``teacher ...`` row).
        title: the report's heading.
        overlay_count: images in the prediction grid (the first ones).
        threads: runtime threads for the overlay predictions.
        notes: extra lines for the notes section (e.g. the command that built the report).
        deliverable: the artifact the run delivers, ``{"artifact": path, "label": str | None,
            "gate": {"passed": bool, "reasons": [str, ...]} | None, "enforced": bool}`` and
            optionally ``"step"`` (:class:`roverlite.report.deliverable.Deliverable`); the report
            then opens with it.

    Returns:
        :class:`ReportPaths`.

    Raises:
        ValueError: no rows, duplicate names, unknown ``teacher``, bad overlay data, or an invalid
            ``deliverable``.
        PermissionError: ``out_dir`` is not writable.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("Expected at least one variant row for a report. Received: none.")
    names = [row.name for row in rows]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Expected unique variant names. Received: {duplicates} more than once.")
    if isinstance(peak, Mapping):
        peak = PeakResult.from_dict(peak)
    rows = with_labels(rows)
    reference = find_teacher(rows, teacher)
    summary = summary_rows(rows, peak, teacher)
    delivered = None if deliverable is None else deliverable_summary(deliverable, rows, summary, reference)
    out_dir = ensure_writable_dir(out_dir)
    summary_path = write_document(out_dir / "summary.json", REPORT_SUMMARY, {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "teacher": None if reference is None else reference.name,
        "deliverable": delivered,
        "peak": None if peak is None else peak.to_dict(),
        "variants": summary,
    })
    pareto = plot_pareto(rows, out_dir / "pareto.png")
    overlay_path, overlay_notes = None, []
    if overlays is not None:
        overlay_path, overlay_notes = _overlays(rows, overlays, out_dir / "overlays.png", overlay_count, threads)

    confusion = _confusion_maps(rows, out_dir)
    sections = report_sections(rows, summary, reference, peak, overlay_path, [*overlay_notes, *notes], delivered,
                               confusion)
    markdown = atomic_write_text(out_dir / "report.md", render_markdown(title, sections))
    page = atomic_write_text(out_dir / "report.html", render_html(title, sections, out_dir))
    logger.info("report written to %s", out_dir)
    return ReportPaths(out_dir=out_dir, markdown=markdown, html=page, summary=summary_path, pareto=pareto,
                       overlays=overlay_path, confusion=tuple(confusion.values()))


def report_run_dirs(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    testpack: str | os.PathLike | None = None,
    peak: PeakResult | Callable[..., PeakResult] | bool | None = None,
    teacher: str | None = None,
    threads: int | None = None,
    title: str = "roverlite variant report",
    command: str | None = None,
    notes: Sequence[str] = (),
    deliverable: Mapping[str, Any] | None = None,
) -> ReportPaths:
    """``roverlite report RUN_DIR... --out DIR``: collect the run folders' variants and build the report.

    Args:
        run_dirs: folders read by :func:`roverlite.report.collect.collect_run_dirs`.
        out_dir: the report folder.
        testpack: images for the prediction grid (default: the first ``testpack.npz`` found in
            the run folders, e.g. a bundle's; none found = no grid).
        peak: a :class:`PeakResult` measured before, or the function that measures it, called
            with ``threads=`` once the run folders are read (:func:`roverlite.export.peak.measure_peak`,
            needs TensorFlow, about 10 s: the report layer never measures); ``None`` or ``False``
            skips it.
        teacher, threads, title: as in :func:`build_report` (``threads`` also for the peak).
        command: the command line, recorded in the notes.
        notes: further lines for the notes (e.g. the pipeline's student search).
        deliverable: the artifact the run delivers and its gate verdict, as in :func:`build_report`
            (``None``: no deliverable section).

    Raises:
        FileNotFoundError: a run folder or the test pack does not exist.
        ValueError: nothing to report, an invalid row (see :func:`collect_run_dirs`), an invalid
            ``deliverable``, or ``peak=True`` (name the measuring function instead).
    """
    if peak is True:
        raise ValueError(
            "The report reads a measured peak and never measures one. Expected a PeakResult or a function "
            "measuring it (roverlite.export.peak.measure_peak). Received: peak=True."
        )
    if deliverable is not None and not isinstance(deliverable, Deliverable):
        Deliverable.from_mapping(deliverable)  # refused before the collection and the peak measurement
    rows = collect_run_dirs(run_dirs)
    if testpack is None:
        testpack = find_testpack(run_dirs)
    elif not Path(testpack).is_file():
        raise FileNotFoundError(f"Test pack not found. Expected an .npz file. Received: {str(testpack)!r}.")
    if callable(peak):
        peak = peak(threads=threads)
    lines = [f"Run folders: {', '.join(str(d) for d in run_dirs)}."]
    if command:
        lines.append(f"Command: {command}")
    return build_report(rows, out_dir, overlays=testpack, peak=peak or None, teacher=teacher, title=title,
                        threads=threads, notes=[*lines, *notes], deliverable=deliverable)


def summary_rows(
    rows: Sequence[VariantRow], peak: PeakResult | None = None, teacher: str | None = None
) -> list[dict[str, Any]]:
    """One JSON-ready dict per variant (the content of ``summary.json``'s ``variants``).

    ``label`` is the row's human name (its ``name`` when it has no label), ``file`` its primary
    artifact's file name; memory fields are those of the recommended runtime (see
    :mod:`roverlite.report.memory`).
    """
    reference = find_teacher(rows, teacher)
    choices = recommend_runtime(rows)
    out = []
    for row in rows:
        choice = choices.get(row.name)
        best = None if choice is None else row.latency_on(choice.runtime)
        gmacs = None if choice is None else row.gmac_per_s(choice.runtime)
        peak_gmacs, peak_label = (None, None) if peak is None else peak.peak_for(_precision(row))
        out.append({
            "name": row.name,
            "label": row.display_name,
            "file": None if row.artifact is None else Path(row.artifact).name,
            "kind": row.kind,
            "artifact": row.artifact,
            "format": row.format,
            "precision": _precision(row),
            "miou": row.miou,
            "delta_miou": _delta(row, reference),
            "per_class_iou": dict(row.per_class_iou),
            "hazards": dict(row.hazards),
            "accuracy_source": row.accuracy_source,
            "size_bytes": row.size_bytes,
            "macs": row.macs,
            "params": row.params,
            "latency_ms": {e.runtime: {"p50": e.p50_ms, "p90": e.p90_ms, "artifact": e.artifact, "threads": e.threads,
                                       "peak_rss_mb": e.peak_rss_mb, "model_rss_mb": e.model_rss_mb,
                                       "isolated": e.isolated}
                           for e in row.latency},
            "recommended_runtime": None if choice is None else choice.runtime,
            "p50_ms": None if best is None else best.p50_ms,
            "p90_ms": None if best is None else best.p90_ms,
            "gmac_per_s": None if gmacs is None else round(gmacs, 3),
            "peak_gmac_per_s": peak_gmacs,
            "peak": peak_label,
            "peak_fraction": round(gmacs / peak_gmacs, 4) if gmacs and peak_gmacs else None,
            **memory_summary(best),
            "gate": None if row.gate is None else dict(row.gate),
        })
    return out


def _confusion_maps(rows: Sequence[VariantRow], out_dir: Path) -> dict[str, Path]:
    """Variant name -> its confusion heat map PNG, for every row with a confusion matrix."""
    maps = {}
    for row in rows:
        if row.confusion_matrix is None:
            continue
        k = len(row.confusion_matrix)
        names = list(row.per_class_iou) if len(row.per_class_iou) == k else [str(i) for i in range(k)]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", row.name)
        maps[row.name] = plot_confusion(row.confusion_matrix, names, row.display_name, out_dir / f"confusion_{slug}.png")
    return maps


def _precision(row: VariantRow) -> str | None:
    if row.precision:
        return row.precision
    if row.format:
        _, _, rest = row.format.partition("_")
        return rest or "float32"
    return None


def _delta(row: VariantRow, reference: VariantRow | None) -> float | None:
    if reference is None or row.miou is None or reference.miou is None:
        return None
    return round(row.miou - reference.miou, 4)


# === Overlays ===


def _overlays(
    rows: Sequence[VariantRow], source: OverlaySource, path: Path, count: int, threads: int | None
) -> tuple[Path | None, list[str]]:
    images, masks = _overlay_data(source)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"Expected overlay_count >= 1. Received: {count!r}.")
    images, masks = images[:count], masks[:count]
    notes, columns, legend = [], {}, None
    for row in rows:
        if row.artifact is None:
            notes.append(f"{row.display_name}: no artifact, not in the prediction grid")
            continue
        try:
            segmenter = Segmenter(row.artifact, threads=threads)
            tiles = [segmenter.overlay(image, segmenter.predict(image)) for image in images]
        except (ValueError, FileNotFoundError, ImportError) as err:
            notes.append(f"{row.display_name}: predictions failed ({err})")
            continue
        if legend is None:
            legend = segmenter
            columns["truth"] = [segmenter.overlay(image, mask) for image, mask in zip(images, masks)]
        elif tuple(segmenter.classes) != tuple(legend.classes):
            notes.append(f"{row.display_name}: classes {list(segmenter.classes)} differ from {list(legend.classes)}")
        columns[row.display_name] = tiles
    if legend is None:
        notes.append("no variant artifact could predict the overlay images: prediction grid left out")
        return None, notes
    plot_overlay_grid(images, columns, path, legend.classes, legend.sidecar.class_colors)
    return path, notes


def _overlay_data(source: OverlaySource) -> tuple[Sequence[np.ndarray], Sequence[np.ndarray]]:
    if isinstance(source, (str, os.PathLike)):
        pack = load_testpack(source)
        return pack.images, pack.masks
    if isinstance(source, tuple) and len(source) == 2:
        images, masks = source
        if len(images) != len(masks) or len(images) == 0:
            raise ValueError(f"Expected overlay images and masks of equal, non-zero count. Received: "
                             f"{len(images)} images, {len(masks)} masks.")
        return images, masks
    raise ValueError(f"Expected overlays as a test pack path or (images, masks). Received: {type(source).__name__}.")
