"""Load one split of a dataset into validated uint8 arrays at the config's image size.

:func:`load_split` resolves the split (the dataset's own ``splits.json`` if it has one, else a
stratified split from :mod:`roverlite.data.splits`), drops quarantined ids, applies the
``max_images`` cap, then decodes, validates and resizes every sample on a thread pool (Pillow
releases the GIL while decoding, so threads scale without copying arrays between processes).
Every bad sample raises :class:`DataError` naming its file; nothing is silently dropped.

Example:
    >>> train = load_split(cfg.data, "train", progress=True)
    >>> x = normalize(train.images, cfg.data.mean, cfg.data.std)
"""

from __future__ import annotations

import dataclasses

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from roverlite.config import DataConfig
# Re-exported for the tests and older callers; the package imports these from roverlite.core.preprocessing.
from roverlite.core.preprocessing import GRAY_TOLERANCE, channel_problem, channel_spread, normalize
from roverlite.data.formats import open_source
from roverlite.data.source import DataError, DataSource
from roverlite.data.splits import dominant_class, fold_split, make_splits
from roverlite.deploy.resize import resize_nearest, to_model_pixels

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "all")



@dataclass(frozen=True)
class SegmentationArrays:
    """One loaded split.

    Attributes:
        images: uint8 (N, H, W, C) at ``data_cfg.image_size``, C = ``data_cfg.channels``.
        masks: uint8 (N, H, W) label ids.
        ids: the N sample ids, in array order.
    """

    images: np.ndarray
    masks: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


# === Public entry points ===


def load_split(
    data_cfg: DataConfig,
    split: str = "train",
    source: DataSource | None = None,
    quarantine: str | os.PathLike | Iterable[str] | None = None,
    workers: int = 2,
    progress: bool = False,
) -> SegmentationArrays:
    """Load, validate and resize one split.

    Args:
        data_cfg: the run's data section (size, channels, classes, cap, seed, quarantine).
        split: ``train``, ``val`` (or another name the dataset's splits.json defines) or ``all``.
        source: an already opened source; default ``open_source(data_cfg)``.
        quarantine: a quarantine JSON path (as written by :func:`roverlite.data.audit.write_audit`)
            or ids to skip; default ``data_cfg.quarantine``.
        workers: decoding threads (1 = decode in the calling thread).
        progress: show a tqdm progress bar.

    Returns:
        The split as :class:`SegmentationArrays`.

    Raises:
        DataError: the split is unknown or empty, or a sample is unreadable, has an image/mask
            size mismatch, ids outside the classes, or the wrong channel count (names the file).
    """
    started = time.perf_counter()
    source = source if source is not None else open_source(data_cfg)
    ordered = _shuffled(split_ids(source, data_cfg, split, workers=workers), data_cfg.split_seed)
    skip = read_quarantine(quarantine if quarantine is not None else data_cfg.quarantine)
    kept = _drop_quarantined(ordered, source, skip, split)
    # Shuffling before the quarantine means quarantining one id swaps in the next, not a new sample.
    chosen = sorted(kept[: data_cfg.max_images] if data_cfg.max_images else kept)
    if not chosen:
        raise DataError(
            f"split {split!r} is empty in {source.root!r}. Expected at least one sample. Received: "
            f"{len(ordered)} ids in the split, {len(ordered) - len(kept)} quarantined."
        )
    arrays = _decode_all(source, data_cfg, chosen, workers, progress, f"load {split}")
    logger.info(
        "Loaded %d %s samples from %s in %.1f s", len(chosen), split, source.root, time.perf_counter() - started
    )
    return arrays


def split_ids(source: DataSource, data_cfg: DataConfig, split: str, workers: int = 2) -> list[str]:
    """The ids of ``split``: the source's own splits as is, else a stratified split by dominant class.

    Raises:
        DataError: the source has splits but not ``split`` (the message lists those it has), or
            the splits name ids that are not in the source.
    """
    if split == "all":
        return source.ids()
    predefined = source.splits()
    if predefined is None:
        if split not in ("train", "val"):
            raise DataError(
                f"Unknown split for {source.root!r} (it has no splits.json). Expected one of "
                f"{list(SPLIT_NAMES)}. Received: {split!r}."
            )
        return _stratified(source, data_cfg, workers)[split]
    if data_cfg.folds is not None and split in ("train", "val"):
        raise DataError(
            f"data.folds={data_cfg.folds} makes cross-validation folds for data without splits.json, but "
            f"{source.root!r} has its own splits. Expected data.folds: null for this dataset. Received: "
            f"splits {sorted(predefined)}."
        )
    if split not in predefined:
        raise DataError(
            f"split {split!r} is not defined for {source.root!r}. Expected one of {sorted(predefined) + ['all']}. "
            f"Received: {split!r}."
        )
    return _present(source, predefined[split], split)


def read_quarantine(quarantine: str | os.PathLike | Iterable[str] | None) -> set[str]:
    """Ids (or image file names) to skip, from a quarantine JSON path or an iterable of ids.

    The JSON may be a list of ids, a list of ``{"id": ...}`` entries, or an object holding such a
    list under ``entries`` (quarantine file) or ``quarantine`` (a full audit report).

    Raises:
        FileNotFoundError: the path does not exist.
        DataError: the file is not such JSON.
    """
    if quarantine is None:
        return set()
    if not isinstance(quarantine, (str, os.PathLike)):
        return {str(q) for q in quarantine}
    path = Path(quarantine)
    if not path.is_file():
        raise FileNotFoundError(
            f"Quarantine file not found. Expected a JSON file written by the audit. Received: {str(path)!r}."
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"Cannot read quarantine {str(path)!r}. Expected JSON. Received: {err}.") from None
    entries = raw.get("entries", raw.get("quarantine")) if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise DataError(
            f"Malformed quarantine {str(path)!r}. Expected a list of ids or {{'entries': [{{'id': ...}}]}}. "
            f"Received: {type(raw).__name__}."
        )
    found = {e.get("id") if isinstance(e, dict) else e for e in entries}
    if not all(isinstance(i, str) for i in found):
        raise DataError(
            f"Malformed quarantine {str(path)!r}. Expected string ids. Received: {sorted(map(str, found))[:5]}."
        )
    return found


def cap_images(data_cfg: DataConfig, count: int | None) -> DataConfig:
    """``data_cfg`` loading at most ``count`` images per split (never more than its own cap)."""
    if count is None:
        return data_cfg
    cap = count if data_cfg.max_images is None else min(count, data_cfg.max_images)
    return dataclasses.replace(data_cfg, max_images=cap)


# === Checks shared with the audit ===


def allowed_ids(data_cfg: DataConfig) -> np.ndarray:
    """A 256-entry boolean table: True for ``range(num_classes)`` and the ignore index."""
    allowed = np.zeros(256, dtype=bool)
    allowed[: data_cfg.num_classes] = True
    if data_cfg.ignore_index is not None:
        allowed[data_cfg.ignore_index] = True
    return allowed


def describe(source: DataSource, name: str) -> str:
    """A file's full location for messages: ``root/name`` for folders, ``root:name`` otherwise."""
    return str(Path(source.root) / name) if os.path.isdir(source.root) else f"{source.root}:{name}"


# === Internals ===


def _stratified(source: DataSource, data_cfg: DataConfig, workers: int) -> dict[str, list[str]]:
    ids = source.ids()
    read_mask = source.read_mask
    with ThreadPoolExecutor(max(1, workers)) as pool:
        dominant = list(pool.map(lambda i: dominant_class(read_mask(i), data_cfg.ignore_index), ids))
    if data_cfg.folds is not None:
        splits = fold_split(ids, dominant, data_cfg.folds, data_cfg.fold, data_cfg.split_seed)
        logger.info(
            "%s has no splits.json: fold %d of %d stratified by dominant class (seed=%d) is val: %d train, %d val",
            source.root, data_cfg.fold, data_cfg.folds, data_cfg.split_seed, len(splits["train"]), len(splits["val"]),
        )
        return splits
    splits = make_splits(ids, dominant, data_cfg.val_fraction, data_cfg.split_seed)
    logger.info(
        "%s has no splits.json: stratified split by dominant class (val_fraction=%s, seed=%d): %d train, %d val",
        source.root, data_cfg.val_fraction, data_cfg.split_seed, len(splits["train"]), len(splits["val"]),
    )
    return splits


def _present(source: DataSource, listed: list[str], split: str) -> list[str]:
    known = set(source.ids())
    missing = [i for i in listed if i not in known]
    if not missing:
        return list(listed)
    unmatched = getattr(source, "unmatched", {}) or {}
    partnerless = {Path(name).stem for names in unmatched.values() for name in names}
    unknown = [i for i in missing if i not in partnerless]
    if unknown:
        raise DataError(
            f"splits.json of {source.root!r} lists ids that are not in the dataset. Expected ids with an image "
            f"and a mask. Received: {len(unknown)} unknown ids in split {split!r}, e.g. {unknown[:3]}."
        )
    logger.warning(
        "split %r: skipping %d ids whose image or mask is missing (e.g. %s)", split, len(missing), missing[:3]
    )
    return [i for i in listed if i in known]


def _shuffled(ids: Sequence[str], seed: int) -> list[str]:
    ordered = sorted(ids)
    return [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]


def _drop_quarantined(ids: list[str], source: DataSource, skip: set[str], split: str) -> list[str]:
    if not skip:
        return ids
    dropped = [i for i in ids if i in skip or source.image_name(i) in skip]
    if dropped:
        logger.info("split %r: skipping %d quarantined ids (e.g. %s)", split, len(dropped), sorted(dropped)[:3])
        for sample_id in dropped:
            logger.debug("quarantined: %s", sample_id)
    dropped_set = set(dropped)
    return [i for i in ids if i not in dropped_set]


def _decode_all(
    source: DataSource, data_cfg: DataConfig, ids: list[str], workers: int, progress: bool, label: str
) -> SegmentationArrays:
    height, width = (int(s) for s in data_cfg.image_size)
    images = np.empty((len(ids), height, width, data_cfg.channels), dtype=np.uint8)
    masks = np.empty((len(ids), height, width), dtype=np.uint8)
    allowed = allowed_ids(data_cfg)

    def work(k: int) -> None:
        images[k], masks[k] = _prepare(source, data_cfg, allowed, ids[k])

    bar = progress_bar(len(ids), progress, label)
    pool = ThreadPoolExecutor(max(1, workers))
    try:
        # map() yields in id order, so the first bad sample reported is the same on every run.
        for _ in pool.map(work, range(len(ids))):
            bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return SegmentationArrays(images=images, masks=masks, ids=list(ids))


def _prepare(
    source: DataSource, data_cfg: DataConfig, allowed: np.ndarray, sample_id: str
) -> tuple[np.ndarray, np.ndarray]:
    image, mask = source.read(sample_id)
    image_file = describe(source, source.image_name(sample_id))
    mask_file = describe(source, source.mask_name(sample_id))
    if image.dtype != np.uint8 or image.ndim != 3 or mask.dtype != np.uint8:
        raise DataError(
            f"Source {source.root!r} returned unusable arrays for {sample_id!r}. Expected a uint8 (H, W, C) "
            f"image and a uint8 (H, W) mask. Received: {image.dtype} {image.shape}, {mask.dtype} {mask.shape}."
        )
    if image.shape[:2] != mask.shape:
        raise DataError(
            f"Image and mask sizes differ: {image_file!r} vs {mask_file!r}. Expected the mask to match the "
            f"image's height x width. Received: image {image.shape[:2]}, mask {mask.shape}."
        )
    bad = np.flatnonzero((np.bincount(mask.ravel(), minlength=256) > 0) & ~allowed)
    if bad.size:
        raise DataError(
            f"Mask {mask_file!r} has ids outside the classes. Expected ids in 0..{data_cfg.num_classes - 1}"
            + (f" or {data_cfg.ignore_index}" if data_cfg.ignore_index is not None else "")
            + f". Received: ids {bad.tolist()}."
        )
    rules = data_cfg.preprocessing
    problem = rules.channel_problem(image)
    if problem:
        raise DataError(f"Image {image_file!r} has the wrong channels. {problem}.")
    # The device preprocesses with this same function (roverlite.deploy.Segmenter): one code path.
    image = to_model_pixels(image, rules)
    if mask.shape != rules.image_size:
        mask = resize_nearest(mask, rules.image_size)
    return image, mask


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool, label: str) -> Any:
    """A tqdm bar with ``update``/``close`` (it stays hidden for loops under half a second), or a no-op."""
    if not enabled:
        return _NoBar()
    # tqdm is optional ([train] extra): a numpy-only install loads data without bars
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="img", delay=0.5)
