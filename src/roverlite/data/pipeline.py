"""The ``tf.data`` input pipeline: in-memory uint8 arrays to normalised, batched tensors.

Order of stages: normalise (once, with :meth:`roverlite.core.preprocessing.Preprocessing.normalize`, when ``cache``;
per sample otherwise), then for training only repeat rare-class images (oversampling), shuffle with a seed (a new order every
epoch, the same sequence of orders every run), augment with per-element stateless seeds, and
finally batch (the last batch may be short) and prefetch. Validation data is only normalised,
batched and prefetched, so it is identical on every pass.

Oversampling and shuffling act on sample indices rather than on images: the shuffle buffer holds
integers, so a full-epoch shuffle costs no image copies, and a repeated image is stored once.

Example:
    >>> ds = make_dataset(train.images, train.masks, cfg.data, cfg.augment, training=True, batch_size=16)
    >>> model.fit(ds, epochs=3)
"""

from __future__ import annotations

import logging
import math
import weakref
from typing import Callable

import numpy as np

from roverlite._tf import tf
from roverlite.config import AugmentConfig, DataConfig
from roverlite.data.augment import build_augmenter, class_ids, oversample_indices

logger = logging.getLogger(__name__)


def make_dataset(
    images_uint8: np.ndarray,
    masks_uint8: np.ndarray,
    data_cfg: DataConfig,
    aug_cfg: AugmentConfig | None = None,
    training: bool = False,
    batch_size: int = 16,
    seed: int = 0,
    cache: bool = True,
) -> tf.data.Dataset:
    """Build the dataset of ``(images, masks)`` batches for training or evaluation.

    Args:
        images_uint8: uint8 ``(N, H, W, C)``, C = ``data_cfg.channels``.
        masks_uint8: ``(N, H, W)`` label ids (uint8).
        data_cfg: supplies ``mean``/``std`` and the class names that ``aug_cfg`` refers to.
        aug_cfg: augmentation and oversampling settings; used only when ``training``.
        training: oversample, shuffle and augment (True) or keep order and pixels (False).
        batch_size: samples per batch; the last batch of an epoch may be smaller.
        seed: seeds shuffling and augmentation; the same seed gives the same epochs.
        cache: keep the normalised float32 images (4 bytes a pixel) so normalisation runs once;
            False keeps only the uint8 arrays (1 byte a pixel) and normalises each sample as it
            is read, the same formula in TensorFlow, for splits too large to hold as float32.

    Returns:
        A dataset of ``(float32 (B, H, W, C), int32 (B, H, W))`` with known cardinality, so
        ``dataset.cardinality()`` gives the steps per epoch (oversampling included).

    Raises:
        ValueError: arrays of the wrong dtype, rank or size, or a bad ``batch_size``.
    """
    images_uint8, masks_uint8 = _check_arrays(images_uint8, masks_uint8, data_cfg)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"Expected batch_size to be a positive integer. Received: batch_size={batch_size!r}.")
    n = len(images_uint8)
    read = _reader(images_uint8, masks_uint8, data_cfg, cache)
    if training:
        indices = _epoch_indices(masks_uint8, data_cfg, aug_cfg)
        ds = tf.data.Dataset.from_tensor_slices(indices)
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)
        augment = build_augmenter(
            aug_cfg, data_cfg.classes, images_uint8, masks_uint8, seed, mean=data_cfg.mean, std=data_cfg.std
        )
        if augment:
            # One [2] seed per element, different each epoch but the same sequence every run,
            # and independent of the order in which parallel map calls finish.
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            ds = tf.data.Dataset.zip(ds, seeds).map(
                lambda pair, s: augment(pair[0], pair[1], seed=s),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        logger.info(
            "Training pipeline: %d images -> %d per epoch, augmentations %s.",
            n, len(indices), list(augment.names) or "none",
        )
    else:
        ds = tf.data.Dataset.range(n).map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches in one epoch of ``n`` samples when the last batch is kept: ``ceil(n / batch_size)``."""
    if n < 0 or batch_size < 1:
        raise ValueError(f"Expected n >= 0 and batch_size >= 1. Received: n={n}, batch_size={batch_size}.")
    return math.ceil(n / batch_size)


# === Helpers ===


def _check_arrays(images: np.ndarray, masks: np.ndarray, data_cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    images, masks = np.asarray(images), np.asarray(masks)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"Expected images as uint8 (N, H, W, C). Received: {images.dtype} {images.shape}.")
    if images.shape[-1] != data_cfg.channels:
        raise ValueError(
            f"Expected {data_cfg.channels}-channel images for color_mode={data_cfg.color_mode!r}. "
            f"Received: shape={images.shape}."
        )
    if masks.shape != images.shape[:3] or not np.issubdtype(masks.dtype, np.integer):
        raise ValueError(
            f"Expected integer masks of shape {images.shape[:3]} matching the images. "
            f"Received: {masks.dtype} {masks.shape}."
        )
    if len(images) == 0:
        raise ValueError("Expected at least one sample. Received: 0 images.")
    return images, masks


# (id(images), id(masks), cache, mean, std) -> (weak refs to both arrays, image tensor, mask tensor)
_TENSORS: dict[tuple, tuple[weakref.ref, weakref.ref, tf.Tensor, tf.Tensor]] = {}
_MAX_TENSOR_SETS = 4


def _sample_tensors(images: np.ndarray, masks: np.ndarray, data_cfg: DataConfig, cache: bool):
    """The split's image and mask tensors, made once per pair of arrays and reused.

    Training rebuilds its dataset every epoch (a seeded epoch, for bit-equal resume); without this
    each rebuild normalised and copied the whole split again (~0.35 GB and seconds per epoch on
    AI4Mars at 128x128). The arrays must not be modified in place between calls.
    """
    rules = data_cfg.preprocessing
    key = (id(images), id(masks), cache, rules.pixel_scale, rules.mean, rules.std)
    for stale in [k for k, (ri, rm, _, _) in _TENSORS.items() if ri() is None or rm() is None]:
        del _TENSORS[stale]
    found = _TENSORS.get(key)
    if found is not None and found[0]() is images and found[1]() is masks:
        return found[2], found[3]
    # Masks stay in their compact dtype and widen to int32 per sample.
    images_t = tf.constant(rules.normalize(images) if cache else images)
    masks_t = tf.constant(masks)
    if len(_TENSORS) >= _MAX_TENSOR_SETS:
        del _TENSORS[next(iter(_TENSORS))]
    _TENSORS[key] = (weakref.ref(images), weakref.ref(masks), images_t, masks_t)
    return images_t, masks_t


def _reader(
    images: np.ndarray, masks: np.ndarray, data_cfg: DataConfig, cache: bool
) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """A map function from a sample index to its ``(float32 image, int32 mask)``."""
    images_t, masks_t = _sample_tensors(images, masks, data_cfg, cache)
    if cache:

        def read(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return tf.gather(images_t, i), tf.cast(tf.gather(masks_t, i), tf.int32)

        return read
    rules = data_cfg.preprocessing
    scale = tf.constant(np.float32(rules.pixel_scale))
    mean = tf.constant(np.asarray(rules.mean, np.float32))
    std = tf.constant(np.asarray(rules.std, np.float32))

    def read_and_normalize(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # Preprocessing.normalize's float32 operations, in its order; a test compares the two paths.
        image = (tf.cast(tf.gather(images_t, i), tf.float32) * scale - mean) / std
        return image, tf.cast(tf.gather(masks_t, i), tf.int32)

    return read_and_normalize


def _epoch_indices(masks: np.ndarray, data_cfg: DataConfig, aug_cfg: AugmentConfig | None) -> np.ndarray:
    """Sample indices of one training epoch, rare-class images repeated as ``aug_cfg.oversample`` says."""
    if aug_cfg is None or aug_cfg.oversample.factor == 1 or not aug_cfg.oversample.classes:
        return np.arange(len(masks), dtype=np.int64)
    ids = class_ids(aug_cfg.oversample.classes, data_cfg.classes, "augment.oversample.classes")
    return oversample_indices(masks, ids, aug_cfg.oversample.factor, aug_cfg.oversample.min_pixels)
