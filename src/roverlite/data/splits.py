"""Train/validation splits stratified by each image's dominant class.

Used only when a dataset has no ``splits.json`` of its own. Stratifying by dominant class keeps a
rare class (AI4Mars big rock) in both splits in the same proportion, so validation mIoU is not
decided by which few images happened to land in ``val``.

Example:
    >>> dominant = [dominant_class(source.read_mask(i), 255) for i in ids]
    >>> splits = make_splits(ids, dominant, val_fraction=0.3, seed=0)
    >>> write_splits("data/splits.json", splits)
    >>> fold_split(ids, dominant, folds=4, fold=0, seed=0)   # k-fold cross-validation
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from roverlite.data.source import DataError
from roverlite.io import atomic_write_json


def dominant_class(mask: np.ndarray, ignore_index: int | None) -> int | None:
    """The most frequent id in ``mask`` other than ``ignore_index`` (lowest id on ties).

    Returns:
        The id, or None when every pixel is ``ignore_index`` (or the mask is empty).
    """
    return dominant_from_counts(np.bincount(np.asarray(mask, dtype=np.uint8).ravel(), minlength=256), ignore_index)


def dominant_from_counts(counts: np.ndarray, ignore_index: int | None) -> int | None:
    """:func:`dominant_class` from a mask's ``np.bincount`` (saves a second pass when counts exist)."""
    counts = np.array(counts, copy=True)
    if ignore_index is not None and ignore_index < counts.size:
        counts[ignore_index] = 0
    return int(counts.argmax()) if counts.any() else None


def make_splits(
    ids: Sequence[str],
    dominant: Sequence[int | None] | Mapping[str, int | None],
    val_fraction: float,
    seed: int,
) -> dict[str, list[str]]:
    """Split ``ids`` into train and val, stratified by dominant class, deterministically.

    Each stratum (images sharing a dominant class; all-ignore images form their own) sends
    ``round(n * val_fraction)`` of its images to val, clamped to 1..n-1 so that every class with
    at least 2 images appears in both splits; a class with a single image goes to train. The result
    depends only on the set of (id, class) pairs and ``seed``, not on the input order.

    Args:
        ids: unique sample ids.
        dominant: one dominant class per id (aligned with ``ids``, or a mapping id -> class).
        val_fraction: share of each stratum sent to val, in (0, 1).
        seed: shuffling seed.

    Returns:
        ``{"train": [...], "val": [...]}``, each sorted.

    Raises:
        DataError: fewer than 2 ids, duplicate ids, or ``dominant`` not matching ``ids``.
        ValueError: ``val_fraction`` outside (0, 1).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1). Received: {val_fraction}.")
    rng = np.random.default_rng(seed)
    train: list[str] = []
    val: list[str] = []
    for members in _strata(_aligned(ids, dominant)):
        order = rng.permutation(len(members))
        n_val = 0 if len(members) < 2 else min(max(round(len(members) * val_fraction), 1), len(members) - 1)
        val += [members[i] for i in order[:n_val]]
        train += [members[i] for i in order[n_val:]]
    return {"train": sorted(train), "val": sorted(val)}


def make_folds(
    ids: Sequence[str],
    dominant: Sequence[int | None] | Mapping[str, int | None],
    folds: int,
    seed: int,
) -> list[list[str]]:
    """Partition ``ids`` into ``folds`` disjoint folds stratified by dominant class, deterministically.

    Each stratum is shuffled with ``seed`` and dealt round-robin into the folds, the deal going on
    from stratum to stratum, so fold sizes differ by at most one and every class with at least
    ``folds`` images is in every fold. Like :func:`make_splits`, the result depends only on the set
    of (id, class) pairs and ``seed``.

    Returns:
        ``folds`` lists of ids, each sorted; together they hold every id once.

    Raises:
        DataError: fewer ids than folds, duplicate ids, or ``dominant`` not matching ``ids``.
        ValueError: ``folds`` is not an integer >= 2.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"Expected folds to be an integer >= 2. Received: folds={folds!r}.")
    classes = _aligned(ids, dominant)
    if len(ids) < folds:
        raise DataError(f"Cannot make {folds} folds of {len(ids)} samples. Expected at least one sample per fold.")
    rng = np.random.default_rng(seed)
    out: list[list[str]] = [[] for _ in range(folds)]
    dealt = 0
    for members in _strata(classes):
        for i in rng.permutation(len(members)):
            out[dealt % folds].append(members[i])
            dealt += 1
    return [sorted(f) for f in out]


def fold_split(
    ids: Sequence[str],
    dominant: Sequence[int | None] | Mapping[str, int | None],
    folds: int,
    fold: int,
    seed: int,
) -> dict[str, list[str]]:
    """Train/val split for fold ``fold`` of :func:`make_folds`: val is that fold, train the rest.

    Raises:
        ValueError: ``fold`` is not in ``0..folds-1`` (or ``folds`` < 2).
    """
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise ValueError(f"Expected fold in 0..{folds - 1}. Received: fold={fold!r}.")
    parts = make_folds(ids, dominant, folds, seed)
    train = sorted(i for k, part in enumerate(parts) if k != fold for i in part)
    return {"train": train, "val": parts[fold]}


def _strata(classes: Mapping[str, int | None]) -> list[list[str]]:
    """The ids grouped by dominant class, each group sorted, groups in class order.

    All-ignored images (class ``None``) form a group of their own, sorted first (as -1), so they
    shuffle like any other stratum.
    """
    strata: dict[int, list[str]] = defaultdict(list)
    for sample_id in sorted(classes):
        label = classes[sample_id]
        strata[-1 if label is None else int(label)].append(sample_id)
    return [strata[label] for label in sorted(strata)]


def _aligned(
    ids: Sequence[str], dominant: Sequence[int | None] | Mapping[str, int | None]
) -> dict[str, int | None]:
    if len(ids) < 2:
        raise DataError(f"Cannot split fewer than 2 samples. Expected >= 2 ids. Received: {len(ids)}.")
    if len(set(ids)) != len(ids):
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)[:5]
        raise DataError(f"Sample ids must be unique. Expected no repeats. Received: repeated {repeated}.")
    if isinstance(dominant, Mapping):
        missing = [i for i in ids if i not in dominant]
        if missing:
            raise DataError(f"No dominant class for some ids. Expected one per id. Received: missing {missing[:5]}.")
        return {i: dominant[i] for i in ids}
    if len(dominant) != len(ids):
        raise DataError(
            f"Expected one dominant class per id ({len(ids)}). Received: {len(dominant)} dominant classes."
        )
    return dict(zip(ids, dominant))


def write_splits(path: str | os.PathLike, splits: Mapping[str, Sequence[str]]) -> Path:
    """Write ``{split: [ids]}`` as ``splits.json`` atomically (a reader never sees half a file).

    Raises:
        DataError: an id appears in more than one split.
    """
    seen: dict[str, str] = {}
    for name, members in splits.items():
        for sample_id in members:
            if sample_id in seen:
                raise DataError(
                    f"Splits must not overlap. Expected each id in one split. Received: {sample_id!r} in "
                    f"{seen[sample_id]!r} and {name!r}."
                )
            seen[sample_id] = name
    return atomic_write_json(path, {str(name): list(members) for name, members in splits.items()})
