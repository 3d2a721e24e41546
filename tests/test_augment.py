"""Tests for paired image/mask augmentation (roverlite.data.augment).

The alignment tests use images whose every pixel value is an exact function of its mask label
(piecewise-constant regions). After any geometric augmentation, a pixel whose value is still
exactly one of the codes (bilinear sampling did not blend two regions there) must carry the label
that code stands for. Region borders are included whenever they are unblended, so even a
one-pixel offset between image and mask fails these tests.
"""

from __future__ import annotations

import numpy as np
import pytest

from roverlite._tf import tf
from roverlite.config import AffineConfig, AugmentConfig, CopyPasteConfig, PhotometricConfig
from roverlite.data.augment import (
    build_augmenter,
    build_instance_bank,
    label_regions,
    oversample_indices,
)
from roverlite.data.synthetic import generate_scene

CLASSES = ("soil", "bedrock", "sand", "big_rock")
LABELS = np.array([0, 1, 2, 3, 255])
# Image value of each label, in LABELS order; uneven gaps so blends of two rarely equal a third.
CODES = np.array([20, 70, 115, 190, 245], np.uint8)
NO_AUG = AugmentConfig(hflip=False)
SEEDS = 24


# === Helpers ===


def _coded_pair(size: tuple[int, int] = (48, 48), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic terrain mask and a uint8 image whose value encodes each pixel's label."""
    _, mask = generate_scene(np.random.default_rng(seed), size)
    image = CODES[np.searchsorted(LABELS, mask)][..., None]
    return image, mask


def _label_of(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(implied label, is unblended) for a normalised (mean 0, std 1) coded image.

    A pixel is unblended when its value is exactly one code: bilinear sampling read it from a
    single region. Blends of two codes can hit a third only by coincidence, which is rare with
    uneven codes and is what the 1 % tolerance absorbs.
    """
    x = image[..., 0] * 255.0
    nearest = np.abs(x[..., None] - CODES.astype(np.float32)).argmin(axis=-1)
    return LABELS[nearest], np.abs(x - CODES[nearest]) < 1e-3


def _alignment(outputs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, float]:
    """Share of unblended pixels whose mask label matches their code, the same share among
    unblended pixels on a mask border (where a one-pixel offset shows), and the unblended share."""
    agree = total = border_agree = border_total = pixels = 0
    for image_out, mask_out in outputs:
        implied, unblended = _label_of(image_out)
        match = implied == mask_out
        padded = np.pad(mask_out, 1, mode="edge")
        on_border = np.zeros(mask_out.shape, bool)
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            on_border |= padded[1 + dy: 1 + dy + mask_out.shape[0], 1 + dx: 1 + dx + mask_out.shape[1]] != mask_out
        agree += int(match[unblended].sum())
        total += int(unblended.sum())
        border_agree += int(match[unblended & on_border].sum())
        border_total += int((unblended & on_border).sum())
        pixels += mask_out.size
    return agree / total, border_agree / max(border_total, 1), total / pixels


def _runner(augment):
    """Trace the augmenter once and call it with explicit integer seeds."""
    fn = tf.function(lambda image, mask, seed: augment(image, mask, seed=seed))
    return lambda image, mask, k: [t.numpy() for t in fn(image, mask, tf.constant([k, 11], tf.int64))]


def _augmented(cfg: AugmentConfig, size=(48, 48), seeds=SEEDS, mask_dtype=tf.int32):
    image_u8, mask = _coded_pair(size)
    augment = build_augmenter(cfg, CLASSES, image_u8[None], mask[None], seed=0)
    run = _runner(augment)
    image = tf.constant(image_u8.astype(np.float32) / 255.0)
    mask_t = tf.cast(tf.constant(mask), mask_dtype)
    return image_u8, mask, [run(image, mask_t, k) for k in range(seeds)]


# === Alignment under every geometric augmentation ===


@pytest.mark.parametrize(
    "name, cfg",
    [
        ("hflip", AugmentConfig(hflip=True)),
        ("vflip", AugmentConfig(hflip=False, vflip=True)),
        ("rot90", AugmentConfig(hflip=False, rot90=True)),
    ],
)
def test_flips_and_rot90_keep_image_and_mask_exactly_aligned(name: str, cfg: AugmentConfig) -> None:
    _, mask, outputs = _augmented(cfg)
    changed = 0
    for image_out, mask_out in outputs:
        implied, _ = _label_of(image_out)
        np.testing.assert_array_equal(implied, mask_out, err_msg=name)
        changed += not np.array_equal(mask_out, mask)
    assert changed >= SEEDS // 4, f"{name} almost never changed the sample"


def test_rot90_on_non_square_images_only_turns_by_0_or_180_degrees() -> None:
    _, mask, outputs = _augmented(AugmentConfig(hflip=False, rot90=True), size=(32, 48))
    turned = 0
    for image_out, mask_out in outputs:
        assert mask_out.shape == (32, 48) and image_out.shape == (32, 48, 1)
        assert np.array_equal(mask_out, mask) or np.array_equal(mask_out, mask[::-1, ::-1])
        turned += np.array_equal(mask_out, mask[::-1, ::-1])
    assert 0 < turned < SEEDS


@pytest.mark.parametrize(
    "part, affine",
    [
        ("shift", AffineConfig(enabled=True, shift=0.2, zoom=0.0, shear=0.0, rotate_degrees=0.0)),
        ("zoom", AffineConfig(enabled=True, shift=0.0, zoom=0.3, shear=0.0, rotate_degrees=0.0)),
        ("shear", AffineConfig(enabled=True, shift=0.0, zoom=0.0, shear=0.3, rotate_degrees=0.0)),
        ("rotation", AffineConfig(enabled=True, shift=0.0, zoom=0.0, shear=0.0, rotate_degrees=30.0)),
        ("all", AffineConfig(enabled=True, shift=0.1, zoom=0.2, shear=0.1, rotate_degrees=20.0)),
    ],
)
def test_affine_keeps_image_and_mask_aligned(part: str, affine: AffineConfig) -> None:
    _, mask, outputs = _augmented(AugmentConfig(hflip=False, affine=affine))
    overall, border, unblended_share = _alignment(outputs)
    # Unblended pixels must be most of the image, or the check would measure nothing.
    assert unblended_share > 0.5
    assert overall >= 0.99, f"{part}: {overall:.4f} of unblended pixels aligned"
    assert border >= 0.99, f"{part}: {border:.4f} of unblended border pixels aligned"
    moved = sum(float((m != mask).mean()) > 0.02 for _, m in outputs)
    assert moved >= SEEDS // 2, f"{part} almost never moved the sample"


def test_copy_paste_keeps_image_and_mask_aligned_and_adds_rare_class_pixels() -> None:
    cfg = AugmentConfig(hflip=False, copy_paste=CopyPasteConfig(enabled=True, classes=("big_rock",), probability=1.0))
    _, mask, outputs = _augmented(cfg)
    before = int((mask == 3).sum())
    for image_out, mask_out in outputs:
        implied, _ = _label_of(image_out)
        np.testing.assert_array_equal(implied, mask_out)
        assert mask_out.shape == mask.shape and mask_out.dtype == np.int32
        assert image_out.shape == (*mask.shape, 1) and image_out.dtype == np.float32
    added = [int((m == 3).sum()) - before for _, m in outputs]
    assert min(added) >= 0 and np.mean(added) > 0


def test_geometric_augmentations_compose_and_stay_aligned_with_uint8_masks() -> None:
    cfg = AugmentConfig(
        hflip=True, vflip=True, rot90=True,
        affine=AffineConfig(enabled=True, shift=0.1, zoom=0.1, shear=0.05, rotate_degrees=15.0),
        copy_paste=CopyPasteConfig(enabled=True, classes=("big_rock", "sand"), probability=0.5),
    )
    _, _, outputs = _augmented(cfg, mask_dtype=tf.uint8)
    assert all(mask_out.dtype == np.uint8 for _, mask_out in outputs)
    overall, border, _ = _alignment(outputs)
    assert overall >= 0.99 and border >= 0.99, (overall, border)


# === Photometric ===


def test_photometric_changes_image_only_and_stays_in_normalised_range() -> None:
    mean, std = (0.4,), (0.25,)
    photometric = PhotometricConfig(enabled=True, brightness=0.3, contrast=0.3, gamma=0.3)
    cfg = AugmentConfig(hflip=False, photometric=photometric)
    augment = build_augmenter(cfg, CLASSES, seed=0, mean=mean, std=std)
    image_u8, mask = _coded_pair()
    image = tf.constant((image_u8 / 255.0 - mean[0]) / std[0], tf.float32)
    run = _runner(augment)
    low, high = (0.0 - mean[0]) / std[0], (1.0 - mean[0]) / std[0]
    for k in range(8):
        image_out, mask_out = run(image, tf.constant(mask, tf.int32), k)
        np.testing.assert_array_equal(mask_out, mask)
        assert not np.allclose(image_out, image.numpy())
        assert image_out.min() >= low - 1e-5 and image_out.max() <= high + 1e-5


# === Identity, seeding and configuration ===


@pytest.mark.parametrize("cfg", [None, NO_AUG])
def test_disabled_augmenter_is_identity(cfg: AugmentConfig | None) -> None:
    augment = build_augmenter(cfg, CLASSES, seed=0)
    image, mask = tf.random.uniform([16, 16, 1]), tf.zeros([16, 16], tf.int32)
    image_out, mask_out = augment(image, mask)
    assert not augment and augment.names == ()
    assert image_out is image and mask_out is mask


def test_same_seed_reproduces_augmentation_and_other_seeds_differ() -> None:
    cfg = AugmentConfig(hflip=True, vflip=True, affine=AffineConfig(enabled=True, rotate_degrees=10.0))
    image_u8, mask = _coded_pair()
    image, mask_t = tf.constant(image_u8 / 255.0, tf.float32), tf.constant(mask, tf.int32)
    run_a, run_b = _runner(build_augmenter(cfg, CLASSES, seed=0)), _runner(build_augmenter(cfg, CLASSES, seed=0))
    np.testing.assert_array_equal(run_a(image, mask_t, 5)[0], run_b(image, mask_t, 5)[0])
    assert not np.array_equal(run_a(image, mask_t, 5)[0], run_a(image, mask_t, 6)[0])
    # Without an explicit seed, the build seed fixes the whole sequence of draws.
    first, second = build_augmenter(cfg, CLASSES, seed=3), build_augmenter(cfg, CLASSES, seed=3)
    for _ in range(3):
        np.testing.assert_array_equal(first(image, mask_t)[1].numpy(), second(image, mask_t)[1].numpy())


def test_unknown_copy_paste_class_is_refused_with_suggestion() -> None:
    cfg = AugmentConfig(copy_paste=CopyPasteConfig(enabled=True, classes=("big_rok",)))
    image, mask = _coded_pair()
    with pytest.raises(ValueError, match='Did you mean "big_rock"'):
        build_augmenter(cfg, CLASSES, image[None], mask[None], seed=0)


def test_copy_paste_without_training_arrays_is_refused() -> None:
    cfg = AugmentConfig(copy_paste=CopyPasteConfig(enabled=True, classes=("big_rock",)))
    with pytest.raises(ValueError, match="Expected train_images"):
        build_augmenter(cfg, CLASSES, seed=0)


# === Instance bank and region labelling ===


def test_instance_bank_holds_each_rock_with_its_pixels() -> None:
    mask = np.zeros((1, 12, 12), np.uint8)
    mask[0, 1:4, 1:5] = 3  # 12-pixel rock
    mask[0, 8:11, 7:10] = 3  # 9-pixel rock
    mask[0, 6, 0] = 3  # speck, below the size limit
    image = (np.arange(144, dtype=np.uint8).reshape(1, 12, 12, 1))
    bank = build_instance_bank(image, mask, [3])
    assert len(bank) == 2
    assert bank.shapes.tolist() == [[3, 4], [3, 3]] and bank.labels.tolist() == [3, 3]
    np.testing.assert_allclose(bank.pixels[:12, 0] * 255.0, image[0, 1:4, 1:5, 0].reshape(-1), atol=1e-4)
    assert bank.inside.all()


def test_label_regions_matches_a_flood_fill() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        binary = rng.random((rng.integers(1, 14), rng.integers(1, 14))) < rng.uniform(0.2, 0.7)
        labels, count = label_regions(binary)
        expected, expected_count = _flood_fill(binary)
        assert count == expected_count
        np.testing.assert_array_equal(labels, expected)


def _flood_fill(binary: np.ndarray) -> tuple[np.ndarray, int]:
    labels, count = np.zeros(binary.shape, np.int32), 0
    for start in zip(*np.nonzero(binary)):
        if labels[start]:
            continue
        count += 1
        labels[start], stack = count, [start]
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < binary.shape[0] and 0 <= nx < binary.shape[1] and binary[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = count
                    stack.append((ny, nx))
    return labels, count


# === Oversampling ===


def test_oversample_repeats_images_with_enough_rare_pixels() -> None:
    masks = np.zeros((4, 8, 8), np.uint8)
    masks[1, :2, :2] = 3  # 4 rock pixels
    masks[2, 0, 0] = 3  # 1 rock pixel: below min_pixels
    masks[3, :3, :3] = 2  # 9 sand pixels
    np.testing.assert_array_equal(oversample_indices(masks, [3], factor=3, min_pixels=2), [0, 1, 1, 1, 2, 3])
    np.testing.assert_array_equal(
        oversample_indices(masks, [2, 3], factor=2, min_pixels=1), [0, 1, 1, 2, 2, 3, 3]
    )
    np.testing.assert_array_equal(oversample_indices(masks, [3], factor=1), [0, 1, 2, 3])


def test_oversample_refuses_bad_factor() -> None:
    with pytest.raises(ValueError, match="Expected factor"):
        oversample_indices(np.zeros((2, 4, 4), np.uint8), [3], factor=0)
