"""Stratified train/val splits and k folds: deterministic, class-balanced, and written atomically."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roverlite.data.formats import FolderSource
from roverlite.data.source import DataError
from roverlite.data.splits import dominant_class, fold_split, make_folds, make_splits, write_splits


def _ids_with_classes(per_class: dict[int | None, int]) -> tuple[list[str], list[int | None]]:
    ids, dominant = [], []
    for label, count in per_class.items():
        for n in range(count):
            ids.append(f"c{label}_{n:04d}")
            dominant.append(label)
    return ids, dominant


def test_dominant_class_ignores_the_ignore_label():
    mask = np.full((4, 4), 255, np.uint8)
    mask[0, :3] = 2
    mask[1, 0] = 1
    assert dominant_class(mask, 255) == 2
    assert dominant_class(mask, None) == 255


def test_dominant_class_of_an_all_ignored_mask_is_none():
    assert dominant_class(np.full((3, 3), 255, np.uint8), 255) is None


def test_dominant_class_ties_go_to_the_lowest_id():
    assert dominant_class(np.array([[3, 3, 1, 1]], np.uint8), 255) == 1


def test_make_splits_is_deterministic_and_independent_of_input_order():
    ids, dominant = _ids_with_classes({0: 40, 1: 25, 3: 7})
    first = make_splits(ids, dominant, 0.3, seed=7)
    reordered = make_splits(ids[::-1], dominant[::-1], 0.3, seed=7)
    assert first == reordered == make_splits(ids, dict(zip(ids, dominant)), 0.3, seed=7)
    assert first != make_splits(ids, dominant, 0.3, seed=8)


def test_each_class_share_in_val_is_close_to_val_fraction():
    ids, dominant = _ids_with_classes({0: 200, 1: 120, 2: 50, 3: 10, None: 20})
    splits = make_splits(ids, dominant, 0.3, seed=0)
    label = dict(zip(ids, dominant))
    in_val = Counter(label[i] for i in splits["val"])
    for cls, total in Counter(dominant).items():
        assert in_val[cls] / total == pytest.approx(0.3, abs=0.05)


def test_every_class_with_two_images_appears_in_both_splits_and_a_single_one_trains():
    ids, dominant = _ids_with_classes({0: 30, 1: 2, 2: 3, 3: 1})
    splits = make_splits(ids, dominant, 0.2, seed=0)
    label = dict(zip(ids, dominant))
    for cls in (0, 1, 2):
        assert any(label[i] == cls for i in splits["train"])
        assert any(label[i] == cls for i in splits["val"])
    assert "c3_0000" in splits["train"]


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=5),
    fraction=st.floats(min_value=0.05, max_value=0.95),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_splits_partition_the_ids(counts, fraction, seed):
    ids, dominant = _ids_with_classes(dict(enumerate(counts)))
    if len(ids) < 2:
        return
    splits = make_splits(ids, dominant, fraction, seed)
    assert sorted(splits["train"] + splits["val"]) == sorted(ids)
    assert not set(splits["train"]) & set(splits["val"])


def test_make_splits_refuses_duplicate_ids_and_misaligned_classes():
    with pytest.raises(DataError, match="unique"):
        make_splits(["a", "a", "b"], [0, 0, 1], 0.3, 0)
    with pytest.raises(DataError, match="one dominant class per id"):
        make_splits(["a", "b", "c"], [0, 1], 0.3, 0)
    with pytest.raises(DataError, match="fewer than 2"):
        make_splits(["a"], [0], 0.3, 0)
    with pytest.raises(ValueError, match="val_fraction"):
        make_splits(["a", "b"], [0, 0], 1.0, 0)


def test_written_splits_are_read_back_as_is_by_the_folder_source(tiny_folder_dataset):
    root = tiny_folder_dataset(n=4)
    splits = {"train": ["s000", "s002"], "val": ["s001"], "extra": ["s003"]}
    write_splits(root / "splits.json", splits)
    assert json.loads((root / "splits.json").read_text()) == splits
    assert FolderSource(root).splits() == splits
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def test_write_splits_refuses_overlapping_splits(tmp_path):
    with pytest.raises(DataError, match="'a' in 'train' and 'val'"):
        write_splits(tmp_path / "splits.json", {"train": ["a", "b"], "val": ["a"]})
    assert not (tmp_path / "splits.json").exists()


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=25), min_size=1, max_size=5),
    folds=st.integers(min_value=2, max_value=6),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_folds_partition_the_ids_into_near_equal_parts(counts, folds, seed):
    ids, dominant = _ids_with_classes(dict(enumerate(counts)))
    if len(ids) < folds:
        return
    parts = make_folds(ids, dominant, folds, seed)
    assert len(parts) == folds
    assert sorted(i for p in parts for i in p) == sorted(ids)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_every_class_with_at_least_k_images_is_in_every_fold():
    ids, dominant = _ids_with_classes({0: 23, 1: 4, 2: 9, None: 5})
    label = dict(zip(ids, dominant))
    for part in make_folds(ids, dominant, 4, seed=3):
        present = Counter(label[i] for i in part)
        assert all(present[c] >= 1 for c in (0, 1, 2, None))


def test_folds_are_deterministic_and_independent_of_input_order():
    ids, dominant = _ids_with_classes({0: 30, 1: 10, 2: 3})
    first = make_folds(ids, dominant, 4, seed=1)
    assert first == make_folds(ids[::-1], dominant[::-1], 4, seed=1) == make_folds(ids, dict(zip(ids, dominant)), 4, 1)
    assert first != make_folds(ids, dominant, 4, seed=2)


def test_fold_split_validates_on_one_fold_and_trains_on_the_rest():
    ids, dominant = _ids_with_classes({0: 20, 1: 20})
    parts = make_folds(ids, dominant, 4, seed=0)
    for k in range(4):
        split = fold_split(ids, dominant, 4, k, seed=0)
        assert split["val"] == parts[k]
        assert sorted(split["train"] + split["val"]) == sorted(ids)
        assert not set(split["train"]) & set(split["val"])


@pytest.mark.parametrize("folds", [1, 0, True, 2.0])
def test_make_folds_refuses_a_fold_count_below_two_or_not_an_integer(folds):
    with pytest.raises(ValueError, match="folds to be an integer >= 2"):
        make_folds(["a", "b", "c"], [0, 0, 0], folds, 0)


def test_make_folds_refuses_more_folds_than_images_and_fold_split_a_fold_out_of_range():
    with pytest.raises(DataError, match="Cannot make 4 folds of 3 samples"):
        make_folds(["a", "b", "c"], [0, 0, 0], 4, 0)
    with pytest.raises(ValueError, match=r"fold in 0\.\.2. Received: fold=3"):
        fold_split(["a", "b", "c"], [0, 0, 0], 3, 3, 0)
