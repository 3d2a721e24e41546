"""Dataset audit: class shares, broken files, duplicates and copy-pasted masks, plus a quarantine list.

The audit reads every sample once (on a thread pool), never stops at a bad file, and returns an
:class:`AuditReport`. Its ``quarantine`` list can be written beside the data and handed to
:func:`roverlite.data.loader.load_split` (``data.quarantine`` in a config) to skip those samples.

Repeated-mask rule: a group of at least ``min_repeats`` (default 5) images whose decoded masks are
byte-identical AND hold at least two labelled classes is flagged as outliers; the AN2DL "alien"
set, 110 different images sharing one drawn mask, is what this catches. Labelled classes are the
config's ``eval_classes`` (so AN2DL's class 0 "background", the old unlabelled pixels, does not
count), or every id but 255 without a config. Measured on AI4Mars MSL (6,000 masks): at 256x256
no two masks are identical; resampled (nearest) to 64x128, 32x64 and 16x32, masks with two or
more labelled classes still never repeat, while "simple" masks (one class, perhaps under an
unlabelled sky/far-range band) repeat legitimately, in groups of up to 4, 15 and 61 images. Simple
masks are therefore never flagged; their repeated groups are listed for information only
(``repeated_simple_mask_groups``). A threshold of 5 leaves room for the odd legitimate pair or
triple (a re-shot frame with its label copied).

Example:
    >>> report = audit(open_source(cfg.data), cfg.data)
    >>> logger.info("%s", report.summary_text())
    >>> write_audit(report, "audit.json", quarantine_path="quarantine.json")
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from roverlite.config import DataConfig
from roverlite.data.formats import FolderSource, NpzSource, open_source
from roverlite.core.preprocessing import channel_problem
from roverlite.data.loader import allowed_ids, progress_bar
from roverlite.data.source import DataSource
from roverlite.data.splits import dominant_from_counts
from roverlite.io import atomic_write_json

logger = logging.getLogger(__name__)

MIN_REPEATS = 5
# Without a config, masks are read as AI4Mars-style ids: every 8-bit id is a class, 255 is ignored.
DEFAULT_IGNORE = 255


@dataclass(frozen=True)
class AuditReport:
    """What an audit found. File names are as the source names them (``images/x.jpg``, ``masks/x.png``).

    Attributes:
        root: the audited dataset.
        num_samples: image/mask pairs inspected.
        num_pixels: mask pixels counted in ``class_shares`` (readable masks, stored size).
        class_shares: class name (or id as a string without a config) -> fraction of all pixels;
            the ignore label is its own entry.
        dominant: sample id -> its dominant class name (None when all pixels are ignored).
        unreadable: files that could not be decoded.
        size_mismatch: images whose mask has another height x width.
        invalid_ids: masks holding ids outside the classes and ignore label.
        channel_mismatch: images whose channels do not fit ``color_mode`` (config only).
        unmatched: ``{"images": [...], "masks": [...]}`` files without a partner.
        exact_duplicate_images: groups of images with identical decoded pixels.
        repeated_mask_outliers: images in a group of >= ``min_repeats`` sharing one mask that has
            two or more labelled classes.
        repeated_mask_groups: those groups, one list of image names per shared mask.
        repeated_simple_mask_groups: groups of >= ``min_repeats`` sharing a simple mask (at most one
            labelled class); legitimate in most data, so informational and never quarantined.
        simple_masks: labelled class name (the ignore name when none) -> number of simple masks.
        quarantine: ``{"id", "image", "mask", "reasons"}`` for every sample to skip.
        details: file name -> what is wrong with it (invalid ids listed here per mask).
        min_repeats: the repeated-mask threshold used.
        seconds: wall time of the audit.
    """

    root: str
    num_samples: int
    num_pixels: int
    class_shares: dict[str, float]
    dominant: dict[str, str | None]
    unreadable: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    invalid_ids: list[str] = field(default_factory=list)
    channel_mismatch: list[str] = field(default_factory=list)
    unmatched: dict[str, list[str]] = field(default_factory=lambda: {"images": [], "masks": []})
    exact_duplicate_images: list[list[str]] = field(default_factory=list)
    repeated_mask_outliers: list[str] = field(default_factory=list)
    repeated_mask_groups: list[list[str]] = field(default_factory=list)
    repeated_simple_mask_groups: list[list[str]] = field(default_factory=list)
    simple_masks: dict[str, int] = field(default_factory=dict)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)
    min_repeats: int = MIN_REPEATS
    seconds: float = 0.0

    @property
    def has_unusable_samples(self) -> bool:
        """True when a sample would make ``load_split`` fail: unreadable, size, ids or channels."""
        return bool(self.unreadable or self.size_mismatch or self.invalid_ids or self.channel_mismatch)

    @property
    def dominant_counts(self) -> dict[str, int]:
        """Images per dominant class (``"none"`` for all-ignored masks)."""
        return dict(sorted(Counter(str(v) if v is not None else "none" for v in self.dominant.values()).items()))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, including ``dominant_counts`` and ``has_unusable_samples``."""
        return dataclasses.asdict(self) | {
            "dominant_counts": self.dominant_counts,
            "has_unusable_samples": self.has_unusable_samples,
        }

    def summary_text(self) -> str:
        """A readable multi-line table of class shares, dominant classes and problems."""
        lines = [f"Audit of {self.root}: {self.num_samples} samples, {self.num_pixels:,} pixels, {self.seconds:.1f} s"]
        lines += ["", f"{'class':<16}{'pixel share':>12}{'dominant in':>13}"]
        counts = self.dominant_counts
        for name, share in self.class_shares.items():
            lines.append(f"{name:<16}{100 * share:>10.2f} %{counts.get(name, 0):>13}")
        problems = {
            "unreadable": len(self.unreadable),
            "size mismatch": len(self.size_mismatch),
            "invalid ids": len(self.invalid_ids),
            "channel mismatch": len(self.channel_mismatch),
            "unmatched images": len(self.unmatched.get("images", [])),
            "unmatched masks": len(self.unmatched.get("masks", [])),
            "duplicate groups": len(self.exact_duplicate_images),
            f"repeated masks (>= {self.min_repeats})": len(self.repeated_mask_outliers),
            "quarantined": len(self.quarantine),
        }
        lines += ["", f"{'problem':<28}{'files':>8}"]
        lines += [f"{name:<28}{count:>8}" for name, count in problems.items()]
        return "\n".join(lines)


@dataclass
class _Sample:
    """What one worker learned about one sample."""

    id: str
    image: str
    mask: str
    errors: dict[str, str] = field(default_factory=dict)
    image_key: bytes | None = None
    mask_key: bytes | None = None
    counts: np.ndarray | None = None
    dominant: int | None = None
    size_problem: str | None = None
    invalid: list[int] = field(default_factory=list)
    channel_problem: str | None = None


# === Public entry points ===


def audit(
    source: DataSource | str | os.PathLike,
    data_cfg: DataConfig | None = None,
    workers: int = 2,
    min_repeats: int = MIN_REPEATS,
    progress: bool = False,
) -> AuditReport:
    """Inspect every sample of ``source`` and report problems without stopping at any of them.

    Args:
        source: an opened source, or a dataset folder (images/ + masks/) or AN2DL ``.npz`` path.
        data_cfg: class names, ignore label, eval classes and color mode; without it ids 0..254 are
            classes named by their number and 255 is the ignore label.
        workers: decoding threads.
        min_repeats: smallest group of identical masks (two or more labelled classes) flagged (>= 2).
        progress: show a tqdm progress bar.

    Returns:
        The :class:`AuditReport`.

    Raises:
        ValueError: ``min_repeats`` < 2.
        FileNotFoundError, DataError: the dataset itself cannot be opened (no file is read yet).
    """
    if min_repeats < 2:
        raise ValueError(f"min_repeats must be >= 2 (a group needs two images). Received: {min_repeats}.")
    started = time.perf_counter()
    if not isinstance(source, DataSource):
        source = _open(source, data_cfg)
    ignore = data_cfg.ignore_index if data_cfg else DEFAULT_IGNORE
    allowed = allowed_ids(data_cfg) if data_cfg else np.ones(256, dtype=bool)
    channels = data_cfg.channels if data_cfg else None
    ids = source.ids()
    bar = progress_bar(len(ids), progress, "audit")
    samples = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for sample in pool.map(lambda i: _inspect(source, i, ignore, allowed, channels), ids):
            samples.append(sample)
            bar.update(1)
    bar.close()
    report = _assemble(source, samples, data_cfg, ignore, min_repeats, time.perf_counter() - started)
    logger.info("Audited %d samples of %s in %.1f s: %d quarantined", len(samples), source.root, report.seconds,
                len(report.quarantine))
    return report


def run_audit(
    path: str | os.PathLike | None = None,
    data_cfg: DataConfig | None = None,
    json_path: str | os.PathLike | None = None,
    quarantine_path: str | os.PathLike | None = None,
    min_repeats: int | None = None,
    workers: int = 2,
    progress: bool = False,
) -> AuditReport:
    """Open a dataset, audit it and write the report files: what ``roverlite data audit`` runs.

    Args:
        path: dataset folder or ``.npz``; default ``data_cfg.path`` (or the synthetic defaults when
            both are None).
        data_cfg: names, ignore label and colour mode; its palette and label_map apply on read.
        json_path: where to write the full report (skipped when None).
        quarantine_path: where to write the quarantine list (skipped when None).
        min_repeats: repeated-mask threshold; default :data:`MIN_REPEATS`.
        workers: decoding threads.
        progress: show a progress bar.

    Returns:
        The :class:`AuditReport`.
    """
    if path is None and data_cfg is None:
        data_cfg = DataConfig()
    source = _open(path, data_cfg)
    report = audit(source, data_cfg, workers=workers, min_repeats=min_repeats or MIN_REPEATS, progress=progress)
    if json_path is not None:
        write_audit(report, json_path, quarantine_path)
    elif quarantine_path is not None:
        atomic_write_json(quarantine_path, _quarantine_file(report))
    return report


def write_audit(
    report: AuditReport, json_path: str | os.PathLike, quarantine_path: str | os.PathLike | None = None
) -> Path:
    """Write the report as JSON and, optionally, the quarantine list that ``load_split`` reads.

    The quarantine file is ``{"root", "entries": [{"id", "image", "mask", "reasons"}]}``.

    Returns:
        The report path.
    """
    path = atomic_write_json(json_path, report.to_dict())
    if quarantine_path is not None:
        atomic_write_json(quarantine_path, _quarantine_file(report))
    return path


def _quarantine_file(report: AuditReport) -> dict[str, Any]:
    return {"root": report.root, "entries": report.quarantine}


def _open(path: str | os.PathLike | None, data_cfg: DataConfig | None) -> DataSource:
    """The source at ``path`` (format from its suffix), read with ``data_cfg``'s palette and label_map."""
    if path is None:
        return open_source(data_cfg)
    is_npz = str(path).lower().endswith(".npz")
    if data_cfg is not None:
        return open_source(dataclasses.replace(data_cfg, format="npz" if is_npz else "folder", path=str(path)))
    return NpzSource(path) if is_npz else FolderSource(path)


# === One sample ===


def _inspect(
    source: DataSource, sample_id: str, ignore: int | None, allowed: np.ndarray, channels: int | None
) -> _Sample:
    sample = _Sample(sample_id, source.image_name(sample_id), source.mask_name(sample_id))
    image, mask = _read_parts(source, sample)
    if mask is not None and mask.dtype != np.uint8:
        sample.errors[sample.mask] = f"Expected a uint8 mask from the source. Received: {mask.dtype}."
        mask = None
    if image is not None:
        sample.image_key = _digest(image)
        if channels is not None:
            sample.channel_problem = channel_problem(image, channels)
    if mask is not None:
        sample.mask_key = _digest(mask)
        sample.counts = np.bincount(mask.ravel(), minlength=256)
        sample.dominant = dominant_from_counts(sample.counts, ignore)
        sample.invalid = np.flatnonzero((sample.counts > 0) & ~allowed).tolist()
    if image is not None and mask is not None and image.shape[:2] != mask.shape:
        sample.size_problem = f"image {image.shape[0]}x{image.shape[1]} but mask {mask.shape[0]}x{mask.shape[1]}"
    return sample


def _read_parts(source: DataSource, sample: _Sample) -> tuple[np.ndarray | None, np.ndarray | None]:
    # Image and mask are read apart so that a broken image still lets its mask be counted.
    parts: list[np.ndarray | None] = []
    for name, reader in ((sample.image, source.read_image), (sample.mask, source.read_mask)):
        try:
            parts.append(reader(sample.id))
        except (OSError, ValueError) as err:  # DataError is a ValueError
            sample.errors[name] = str(err)
            parts.append(None)
    return parts[0], parts[1]


def _digest(pixels: np.ndarray) -> bytes:
    # The shape is hashed too: equal bytes in different shapes are different pictures.
    # SHA-1 only groups identical pixels (no security role) and is the fastest hashlib digest here.
    digest = hashlib.sha1(str(pixels.shape).encode(), usedforsecurity=False)
    digest.update(np.ascontiguousarray(pixels).data)
    return digest.digest()


# === The whole dataset ===


def _assemble(
    source: DataSource,
    samples: list[_Sample],
    data_cfg: DataConfig | None,
    ignore: int | None,
    min_repeats: int,
    seconds: float,
) -> AuditReport:
    name = _namer(data_cfg)
    totals = sum((s.counts for s in samples if s.counts is not None), np.zeros(256, dtype=np.int64))
    reasons, details = _file_problems(samples)
    duplicates = _groups(samples, lambda s: s.image_key, 2)
    for group in duplicates:
        for s in group[1:]:
            reasons[s.id].append(f"duplicate image of {group[0].image}")
    simple = _simple_masks(samples, _labelled_ids(data_cfg))
    repeated = _groups(samples, lambda s: s.mask_key if s.id not in simple else None, min_repeats)
    repeated_simple = _groups(samples, lambda s: s.mask_key if s.id in simple else None, min_repeats)
    for group in repeated:
        for s in group:
            reasons[s.id].append(f"repeated mask: one of {len(group)} images sharing the mask of {group[0].mask}")
    by_id = {s.id: s for s in samples}
    unmatched = getattr(source, "unmatched", None) or {"images": [], "masks": []}
    return AuditReport(
        root=source.root,
        num_samples=len(samples),
        num_pixels=int(totals.sum()),
        class_shares=_shares(totals, data_cfg, name),
        dominant={s.id: (name(s.dominant) if s.dominant is not None else None) for s in samples},
        unreadable=sorted(file for s in samples for file in s.errors),
        size_mismatch=sorted(s.image for s in samples if s.size_problem),
        invalid_ids=sorted(s.mask for s in samples if s.invalid),
        channel_mismatch=sorted(s.image for s in samples if s.channel_problem),
        unmatched={k: list(v) for k, v in unmatched.items()},
        exact_duplicate_images=[[s.image for s in g] for g in duplicates],
        repeated_mask_outliers=sorted(s.image for g in repeated for s in g),
        repeated_mask_groups=[[s.image for s in g] for g in repeated],
        repeated_simple_mask_groups=[[s.image for s in g] for g in repeated_simple],
        simple_masks=dict(sorted(Counter(_label(c, ignore, name) for c in simple.values()).items())),
        quarantine=[
            {"id": i, "image": by_id[i].image, "mask": by_id[i].mask, "reasons": reasons[i]} for i in sorted(reasons)
        ],
        details={file: "; ".join(notes) for file, notes in sorted(details.items())},
        min_repeats=min_repeats,
        seconds=round(seconds, 3),
    )


def _file_problems(samples: list[_Sample]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Quarantine reasons per sample id, and notes per file, for the per-file checks."""
    reasons: dict[str, list[str]] = defaultdict(list)
    details: dict[str, list[str]] = defaultdict(list)
    for s in samples:
        for file, message in s.errors.items():
            details[file].append(message)
            reasons[s.id].append(f"unreadable {file}: {message}")
        if s.size_problem:
            details[s.image].append(f"size mismatch: {s.size_problem}")
            reasons[s.id].append(f"size mismatch: {s.size_problem}")
        if s.invalid:
            details[s.mask].append(f"invalid ids {s.invalid}")
            reasons[s.id].append(f"invalid ids {s.invalid} in {s.mask}")
        if s.channel_problem:
            details[s.image].append(s.channel_problem)
            reasons[s.id].append(f"channels: {s.channel_problem}")
    return reasons, details


def _labelled_ids(data_cfg: DataConfig | None) -> np.ndarray:
    """A 256-entry table of the ids that count as labelled classes for the repeated-mask rule."""
    labelled = np.zeros(256, dtype=bool)
    if data_cfg is None:
        labelled[:DEFAULT_IGNORE] = True
    else:
        labelled[list(data_cfg.eval_class_ids)] = True
    return labelled


def _simple_masks(samples: list[_Sample], labelled: np.ndarray) -> dict[str, int | None]:
    """Sample id -> the one labelled class of each mask holding at most one (None when it has none).

    Such masks (a single class, perhaps under an unlabelled band) legitimately repeat.
    """
    simple: dict[str, int | None] = {}
    for s in samples:
        if s.counts is None:
            continue
        present = np.flatnonzero((s.counts > 0) & labelled)
        if present.size <= 1:
            simple[s.id] = int(present[0]) if present.size else None
    return simple


def _label(class_id: int | None, ignore: int | None, name: Callable[[int], str]) -> str:
    """The name of a simple mask's one labelled class; the ignore label's name when it has none."""
    if class_id is not None:
        return name(class_id)
    return name(ignore) if ignore is not None else "none"


def _groups(
    samples: list[_Sample], key: Callable[[_Sample], bytes | None], min_size: int
) -> list[list[_Sample]]:
    """Samples sharing a non-None key, in groups of at least ``min_size``, each in id order."""
    grouped: dict[bytes, list[_Sample]] = defaultdict(list)
    for s in samples:
        k = key(s)
        if k is not None:
            grouped[k].append(s)
    found = [sorted(g, key=lambda s: s.id) for g in grouped.values() if len(g) >= min_size]
    return sorted(found, key=lambda g: g[0].id)


def _namer(data_cfg: DataConfig | None) -> Callable[[int], str]:
    def name(class_id: int) -> str:
        if data_cfg is None:
            return str(class_id)
        if class_id < data_cfg.num_classes:
            return data_cfg.classes[class_id]
        return data_cfg.ignore_name if class_id == data_cfg.ignore_index else str(class_id)

    return name


def _shares(totals: np.ndarray, data_cfg: DataConfig | None, name: Callable[[int], str]) -> dict[str, float]:
    total = max(int(totals.sum()), 1)
    present = [int(i) for i in np.flatnonzero(totals)]
    if data_cfg is None:
        order = present
    else:
        # Every class is listed (a 0.0 share shows a class missing from the data), then the ignore
        # label, then any stray ids so the shares still sum to 1.
        order = list(range(data_cfg.num_classes))
        if data_cfg.ignore_index is not None:
            order.append(data_cfg.ignore_index)
        order += [i for i in present if i not in order]
    return {name(i): float(totals[i]) / total for i in order}
