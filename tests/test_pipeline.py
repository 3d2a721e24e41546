"""Tests for the tf.data input pipeline (roverlite.data.pipeline)."""

from __future__ import annotations

import numpy as np
import pytest

from roverlite.config import AugmentConfig, DataConfig, OversampleConfig
from roverlite.data.loader import normalize
from roverlite.data.pipeline import make_dataset, steps_per_epoch

DATA = DataConfig(image_size=(16, 16), mean=(0.4,), std=(0.2,))
NO_AUG = AugmentConfig(hflip=False)
HFLIP = AugmentConfig(hflip=True)


@pytest.fixture(scope="module")
def arrays() -> tuple[np.ndarray, np.ndarray]:
    """10 images that differ everywhere (a ramp offset by k) and masks with one rock in images 2 and 5."""
    n, h, w = 10, 16, 16
    ramp = np.arange(h * w).reshape(h, w) % 200
    images = np.stack([(ramp + 5 * k) for k in range(n)]).astype(np.uint8)[..., None]
    masks = np.tile((np.arange(w) // 4 % 3).astype(np.uint8), (n, h, 1))
    masks[2, :3, :3] = 3
    masks[5, 4:8, 4:8] = 3
    return images, masks


def _epoch(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def _source_index(x: np.ndarray, expected: np.ndarray) -> tuple[int, bool]:
    """Which input image ``x`` is, and whether it was flipped left-right."""
    for k, candidate in enumerate(expected):
        if np.allclose(x, candidate):
            return k, False
        if np.allclose(x, candidate[:, ::-1]):
            return k, True
    raise AssertionError("output image matches no input image")


def test_batches_have_documented_shapes_dtypes_and_a_short_last_batch(arrays) -> None:
    images, masks = arrays
    ds = make_dataset(images, masks, DATA, batch_size=4)
    batches = list(ds)
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    assert int(ds.cardinality()) == steps_per_epoch(10, 4) == 3
    x, y = batches[0]
    assert x.dtype.name == "float32" and x.shape == (4, 16, 16, 1)
    assert y.dtype.name == "int32" and y.shape == (4, 16, 16)


@pytest.mark.parametrize("cache", [True, False])
def test_validation_is_normalised_in_order_and_identical_every_pass(arrays, cache: bool) -> None:
    images, masks = arrays
    ds = make_dataset(images, masks, DATA, aug_cfg=HFLIP, training=False, batch_size=3, cache=cache)
    x1, y1 = _epoch(ds)
    x2, y2 = _epoch(ds)
    np.testing.assert_allclose(x1, (images / 255.0 - 0.4) / 0.2, atol=1e-6)
    np.testing.assert_allclose(x1, normalize(images, DATA.mean, DATA.std), atol=1e-6)
    np.testing.assert_array_equal(y1, masks)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)


def test_training_shuffles_differently_each_epoch_and_reproducibly_per_seed(arrays) -> None:
    images, masks = arrays
    expected = normalize(images, DATA.mean, DATA.std)

    def orders(seed: int) -> list[list[int]]:
        ds = make_dataset(images, masks, DATA, aug_cfg=NO_AUG, training=True, batch_size=4, seed=seed)
        return [[_source_index(x, expected)[0] for x in _epoch(ds)[0]] for _ in range(2)]

    first, again, other = orders(0), orders(0), orders(1)
    assert sorted(first[0]) == list(range(10))
    assert first[0] != list(range(10)) and first[0] != first[1]
    assert first == again
    assert first != other


def test_training_augments_and_keeps_masks_with_their_images(arrays) -> None:
    images, masks = arrays
    expected = normalize(images, DATA.mean, DATA.std)
    ds = make_dataset(images, masks, DATA, aug_cfg=HFLIP, training=True, batch_size=5, seed=0)
    assert int(ds.cardinality()) == 2
    flips = []
    for _ in range(3):
        for x, y in zip(*_epoch(ds)):
            k, flipped = _source_index(x, expected)
            np.testing.assert_array_equal(y, masks[k][:, ::-1] if flipped else masks[k])
            flips.append(flipped)
    assert 0 < sum(flips) < len(flips)


def test_oversampling_repeats_rare_class_images_in_training_only(arrays) -> None:
    images, masks = arrays
    aug = AugmentConfig(hflip=False, oversample=OversampleConfig(classes=("big_rock",), factor=3, min_pixels=9))
    train = make_dataset(images, masks, DATA, aug_cfg=aug, training=True, batch_size=4)
    val = make_dataset(images, masks, DATA, aug_cfg=aug, training=False, batch_size=4)
    x_train, _ = _epoch(train)
    expected = normalize(images, DATA.mean, DATA.std)
    counts = np.bincount([_source_index(x, expected)[0] for x in x_train], minlength=10)
    # Image 2 has 9 rock pixels and image 5 has 16: both qualify.
    assert counts.tolist() == [1, 1, 3, 1, 1, 3, 1, 1, 1, 1]
    assert int(train.cardinality()) == steps_per_epoch(14, 4)
    assert len(_epoch(val)[0]) == 10


@pytest.mark.parametrize(
    "images, masks, match",
    [
        (np.zeros((2, 8, 8, 1), np.float32), np.zeros((2, 8, 8), np.uint8), "uint8"),
        (np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8), np.uint8), "1-channel"),
        (np.zeros((2, 8, 8, 1), np.uint8), np.zeros((2, 8, 9), np.uint8), "masks of shape"),
        (np.zeros((0, 8, 8, 1), np.uint8), np.zeros((0, 8, 8), np.uint8), "at least one"),
    ],
)
def test_bad_arrays_are_refused_with_expected_and_received(images, masks, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_dataset(images, masks, DATA)


def test_bad_batch_size_is_refused(arrays) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(*arrays, DATA, batch_size=0)


def test_steps_per_epoch_counts_the_short_last_batch() -> None:
    assert [steps_per_epoch(n, 4) for n in (0, 1, 4, 5, 8)] == [0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="Expected"):
        steps_per_epoch(10, 0)


def test_rebuilding_a_dataset_reuses_the_split_tensors_instead_of_copying_them():
    from roverlite.data.pipeline import _sample_tensors

    images, masks = np.zeros((6, 16, 16, 1), np.uint8), np.zeros((6, 16, 16), np.uint8)
    first = _sample_tensors(images, masks, DATA, True)
    again = _sample_tensors(images, masks, DATA, True)
    assert first[0] is again[0] and first[1] is again[1]
    other = _sample_tensors(images.copy(), masks, DATA, True)  # another array: its own tensors
    assert other[0] is not first[0]
