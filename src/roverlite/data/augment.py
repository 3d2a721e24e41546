"""Paired image/mask augmentations for training, written in TensorFlow for ``tf.data`` ``map``.

Every geometric change (flips, 90-degree turns, the affine warp, copy-paste) moves the image and
its mask together, so labels stay on the pixels they describe: one matrix warps both, the image
sampled bilinearly and the mask by nearest neighbour, both filled by reflection at the borders.
Photometric changes touch the image only.

Images are float32 ``(H, W, C)`` already normalised as ``(x / 255 - mean) / std``; the valid range
of a channel is therefore ``[(0 - mean) / std, (1 - mean) / std]``, and photometric changes clip
to it. Masks are ``(H, W)`` integer label ids (uint8 or int32; the dtype is kept).

All randomness is stateless and derived from one seed: pass ``seed`` (a ``[2]`` int tensor, as
``tf.data.Dataset.random(...).batch(2)`` yields) for order-independent, parallel-safe
reproducibility, or leave it out and a ``tf.random.Generator`` seeded at build time supplies one.

Example:
    >>> augment = build_augmenter(cfg.augment, cfg.data.classes, train.images, train.masks, seed=0,
    ...                           mean=cfg.data.mean, std=cfg.data.std)
    >>> ds = ds.map(lambda x, y, s: augment(x, y, seed=s))
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from roverlite._tf import tf
from roverlite.config import AffineConfig, AugmentConfig, PhotometricConfig, did_you_mean
from roverlite.core.preprocessing import normalize

logger = logging.getLogger(__name__)

# A step takes (image, mask, seed) and returns (image, mask).
Step = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]

# Bank limits: specks below this many pixels are label noise rather than objects worth pasting, and
# the cap bounds the bank's memory when a common class is chosen by mistake.
MIN_INSTANCE_PIXELS = 8
MAX_INSTANCES = 1024


# === Entry point ===


class Augmenter:
    """The composed augmentation: ``augment(image, mask, seed=None) -> (image, mask)``.

    Args:
        steps: ``(name, step)`` pairs applied in order.
        seed: seeds the generator used when a call passes no ``seed``.
    """

    def __init__(self, steps: Sequence[tuple[str, Step]], seed: int = 0) -> None:
        self.steps = tuple(steps)
        self.seed = int(seed)
        # Created here, eagerly: tf.data map functions cannot create variables while tracing.
        self._generator = tf.random.Generator.from_seed(self.seed) if self.steps else None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.steps)

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __call__(
        self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Augment one ``(image, mask)`` pair; the identity when nothing is enabled."""
        if not self.steps:
            return image, mask
        if seed is None:
            seed = self._generator.make_seeds(1)[:, 0]
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=len(self.steps))
        for k, (_, step) in enumerate(self.steps):
            image, mask = step(image, mask, seeds[k])
        return image, mask

    def __repr__(self) -> str:
        return f"Augmenter(steps={list(self.names)}, seed={self.seed})"


def build_augmenter(
    aug_cfg: AugmentConfig | None,
    class_names: Sequence[str],
    train_images: np.ndarray | None = None,
    train_masks: np.ndarray | None = None,
    seed: int = 0,
    *,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
) -> Augmenter:
    """Compose the augmentations ``aug_cfg`` enables into one callable.

    Order: copy-paste (in the source frame), flips, 90-degree turns, affine warp, photometric.
    Oversampling is a dataset-level change: see :func:`oversample_indices`.

    Args:
        aug_cfg: the ``augment`` section; None means no augmentation.
        class_names: ``data.classes``, to turn class names in ``aug_cfg`` into ids.
        train_images: uint8 ``(N, H, W, C)`` training images; needed only for copy-paste.
        train_masks: uint8 ``(N, H, W)`` training masks; needed only for copy-paste.
        seed: seeds every random choice.
        mean, std: the normalisation the augmented images carry (``data.mean`` / ``data.std``).

    Returns:
        An :class:`Augmenter`; falsy (and the identity) when nothing is enabled.

    Raises:
        ValueError: a class name is unknown, or copy-paste is enabled without training arrays.
    """
    if aug_cfg is None:
        return Augmenter((), seed)
    mean_arr, std_arr = _channel_values(mean, "mean"), _channel_values(std, "std")
    steps: list[tuple[str, Step]] = []
    if aug_cfg.copy_paste.enabled:
        if train_images is None or train_masks is None:
            raise ValueError(
                "augment.copy_paste needs the training arrays. Expected train_images and train_masks. "
                "Received: None."
            )
        ids = class_ids(aug_cfg.copy_paste.classes, class_names, "augment.copy_paste.classes")
        bank = build_instance_bank(train_images, train_masks, ids, seed=seed, mean=mean_arr, std=std_arr)
        if len(bank):
            steps.append(("copy_paste", copy_paste_step(bank, aug_cfg.copy_paste.probability)))
        else:
            logger.warning("Copy-paste disabled: no instance of %s with >= %d pixels in the training masks.",
                           list(aug_cfg.copy_paste.classes), MIN_INSTANCE_PIXELS)
    if aug_cfg.hflip:
        steps.append(("hflip", random_flip(axis=1)))
    if aug_cfg.vflip:
        steps.append(("vflip", random_flip(axis=0)))
    if aug_cfg.rot90:
        steps.append(("rot90", random_rot90))
    if aug_cfg.affine.enabled:
        steps.append(("affine", random_affine(aug_cfg.affine)))
    if aug_cfg.photometric.enabled:
        steps.append(("photometric", random_photometric(aug_cfg.photometric, mean_arr, std_arr)))
    augmenter = Augmenter(steps, seed)
    logger.debug("Built %r.", augmenter)
    return augmenter


def class_ids(names: Sequence[str], class_names: Sequence[str], where: str = "classes") -> tuple[int, ...]:
    """Map class names to their ids in ``class_names``, refusing unknown names with a suggestion."""
    ids = []
    for name in names:
        if name not in class_names:
            raise ValueError(
                f"{where} names a class that is not in data.classes. Expected one of {list(class_names)}. "
                f"Received: {name!r}." + did_you_mean(name, class_names)
            )
        ids.append(list(class_names).index(name))
    return tuple(ids)


# === Oversampling ===


def oversample_indices(masks: np.ndarray, class_ids: Sequence[int], factor: int, min_pixels: int = 1) -> np.ndarray:
    """Indices of one epoch where images rich in ``class_ids`` appear ``factor`` times.

    Args:
        masks: ``(N, H, W)`` label ids.
        class_ids: the rare classes to favour.
        factor: how many times a qualifying image appears (1 = no oversampling).
        min_pixels: pixels of those classes an image needs to qualify.

    Returns:
        int64 indices in ascending order, e.g. ``[0, 1, 1, 1, 2]`` when only image 1 qualifies
        and ``factor`` is 3.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"Expected masks of shape (N, H, W). Received: shape={masks.shape}.")
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise ValueError(f"Expected factor to be an integer >= 1. Received: factor={factor!r}.")
    if min_pixels < 1:
        raise ValueError(f"Expected min_pixels >= 1. Received: min_pixels={min_pixels!r}.")
    n = len(masks)
    if factor == 1 or not len(class_ids):
        return np.arange(n, dtype=np.int64)
    counts = np.zeros(n, np.int64)
    # Chunked so a large split never needs a full (N, H, W) boolean copy.
    for start in range(0, n, 256):
        counts[start:start + 256] = np.isin(masks[start:start + 256], list(class_ids)).sum(axis=(1, 2))
    repeats = np.where(counts >= min_pixels, int(factor), 1)
    return np.repeat(np.arange(n, dtype=np.int64), repeats)


# === Flips and turns ===


def random_flip(axis: int) -> Step:
    """Flip image and mask together along ``axis`` (1 = left-right, 0 = up-down) half of the time."""

    def step(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        flip = tf.random.stateless_uniform([], seed) < 0.5
        return tf.cond(
            flip,
            lambda: (tf.reverse(image, [axis]), tf.reverse(mask, [axis])),
            lambda: (image, mask),
        )

    return step


def random_rot90(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Turn image and mask by k quarter turns: any k for square images, k in {0, 2} otherwise.

    Odd k would swap height and width, which a fixed-size model input cannot take.
    """
    k_any = tf.random.stateless_uniform([], seed, minval=0, maxval=4, dtype=tf.int32)
    shape = tf.shape(image)
    h, w = image.shape[0], image.shape[1]
    if h is not None and w is not None:
        square = tf.constant(h == w)
    else:
        square = tf.equal(shape[0], shape[1])
    k = tf.where(square, k_any, 2 * (k_any // 2))
    out_image = tf.image.rot90(image, k)
    out_mask = tf.image.rot90(mask[..., None], k)[..., 0]
    out_image.set_shape(image.shape)
    out_mask.set_shape(mask.shape)
    return out_image, out_mask


# === Affine warp ===


def random_affine(cfg: AffineConfig) -> Step:
    """Random shift, zoom, shear and rotation about the centre; one matrix warps image and mask.

    Shift is a fraction of the size, zoom a scale in ``[1 - zoom, 1 + zoom]``, shear the tangent of
    the shear angle in ``[-shear, shear]``, rotation uniform in ``±rotate_degrees``.
    """

    def step(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        shape = tf.shape(image)
        h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        u = tf.random.stateless_uniform([5], seed, minval=-1.0, maxval=1.0)
        transform = affine_transform(
            height=h,
            width=w,
            shift=(u[0] * cfg.shift * h, u[1] * cfg.shift * w),
            zoom=1.0 + u[2] * cfg.zoom,
            shear=u[3] * cfg.shear,
            angle=u[4] * (cfg.rotate_degrees * math.pi / 180.0),
        )
        return warp(image, mask, transform)

    return step


def affine_transform(
    height: tf.Tensor,
    width: tf.Tensor,
    shift: tuple[tf.Tensor, tf.Tensor],
    zoom: tf.Tensor,
    shear: tf.Tensor,
    angle: tf.Tensor,
) -> tf.Tensor:
    """The ``[8]`` output-to-input transform of ``ImageProjectiveTransformV3`` for an affine warp.

    The forward map (input to output, in pixel coordinates ``(x, y)``) is
    ``p_out = c + t + R(angle) @ Shear(shear) @ zoom * (p_in - c)`` with ``c`` the image centre and
    ``t = (shift_x, shift_y)`` in pixels; the op wants its inverse,
    ``p_in = c + A^-1 @ (p_out - c - t)``.

    Args:
        height, width: image size in pixels.
        shift: ``(dy, dx)`` in pixels.
        zoom: scale factor (> 1 magnifies).
        shear: tangent of the horizontal shear angle.
        angle: rotation in radians (positive turns clockwise on screen, y pointing down).
    """
    cos, sin = tf.cos(angle), tf.sin(angle)
    zero, one = tf.zeros_like(cos), tf.ones_like(cos)
    rotate_inv = tf.stack([[cos, sin], [-sin, cos]])
    shear_inv = tf.stack([[one, -shear], [zero, one]])
    a_inv = shear_inv @ rotate_inv / zoom
    centre = tf.stack([(width - 1.0) / 2.0, (height - 1.0) / 2.0])
    moved = centre + tf.stack([shift[1], shift[0]])
    offset = centre - tf.linalg.matvec(a_inv, moved)
    return tf.stack([a_inv[0, 0], a_inv[0, 1], offset[0], a_inv[1, 0], a_inv[1, 1], offset[1], 0.0, 0.0])


def warp(image: tf.Tensor, mask: tf.Tensor, transform: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Apply one ``[8]`` projective transform to image (bilinear) and mask (nearest), reflect-filled."""
    size = tf.shape(image)[:2]
    transforms = tf.reshape(tf.cast(transform, tf.float32), [1, 8])
    out_image = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transforms, output_shape=size, fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT",
    )[0]
    # NEAREST keeps masks to existing label ids; int32 because the op has no uint8-safe fill path
    # worth relying on across versions.
    out_mask = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(mask, tf.int32)[None, ..., None], transforms=transforms, output_shape=size,
        fill_value=0.0, interpolation="NEAREST", fill_mode="REFLECT",
    )[0, ..., 0]
    out_image.set_shape(image.shape)
    out_mask.set_shape(mask.shape)
    return out_image, tf.cast(out_mask, mask.dtype)


# === Photometric ===


def random_photometric(cfg: PhotometricConfig, mean: np.ndarray, std: np.ndarray) -> Step:
    """Brightness (additive), contrast (about the image mean) and gamma, on the image only.

    Works in ``[0, 1]`` pixel units: undoes the normalisation, changes the image, clips to
    ``[0, 1]`` and normalises again, so outputs stay in the valid normalised range.
    """
    mean_t, std_t = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)

    def step(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        u = tf.random.stateless_uniform([3], seed, minval=-1.0, maxval=1.0)
        x = image * std_t + mean_t
        x = x + u[0] * cfg.brightness
        average = tf.reduce_mean(x, axis=[0, 1], keepdims=True)
        x = (x - average) * (1.0 + u[1] * cfg.contrast) + average
        x = tf.clip_by_value(x, 0.0, 1.0) ** (1.0 + u[2] * cfg.gamma)
        x = tf.clip_by_value(x, 0.0, 1.0)
        return (x - mean_t) / std_t, mask

    return step


# === Copy-paste ===


@dataclass(frozen=True)
class InstanceBank:
    """Connected regions of rare classes cut from training images, ready to paste.

    Each instance is its bounding-box crop, stored flattened and concatenated.

    Attributes:
        pixels: float32 ``(P, C)`` normalised image pixels of all crops.
        inside: bool ``(P,)``, True where a crop pixel belongs to the instance.
        offsets: int64 ``(K,)`` start of each crop in ``pixels``.
        shapes: int32 ``(K, 2)`` crop ``(height, width)``.
        labels: int32 ``(K,)`` class id of each instance.
    """

    pixels: np.ndarray
    inside: np.ndarray
    offsets: np.ndarray
    shapes: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def build_instance_bank(
    images: np.ndarray,
    masks: np.ndarray,
    class_ids: Sequence[int],
    seed: int = 0,
    *,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    min_pixels: int = MIN_INSTANCE_PIXELS,
    max_instances: int = MAX_INSTANCES,
) -> InstanceBank:
    """Collect every 4-connected region of each class in ``class_ids`` as a pasteable instance.

    Args:
        images: uint8 ``(N, H, W, C)``.
        masks: ``(N, H, W)`` label ids.
        class_ids: classes to collect.
        seed: picks which instances to keep when there are more than ``max_instances``.
        mean, std: normalisation applied to the stored pixels (that of the augmented images).
        min_pixels: smaller regions are skipped.
        max_instances: at most this many instances are kept, chosen at random.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"Expected train_images as uint8 (N, H, W, C). Received: {images.dtype} {images.shape}.")
    if masks.shape != images.shape[:3]:
        raise ValueError(
            f"Expected train_masks of shape {images.shape[:3]} to match the images. Received: {masks.shape}."
        )
    found = []  # (image index, y0, y1, x0, x1, class id, region mask in the crop)
    for n in range(len(masks)):
        for cid in class_ids:
            binary = masks[n] == cid
            if binary.sum() < min_pixels:
                continue
            labels, count = label_regions(binary)
            for region in _region_boxes(labels, count, min_pixels):
                y0, y1, x0, x1, inside = region
                found.append((n, y0, y1, x0, x1, int(cid), inside))
    if len(found) > max_instances:
        keep = np.sort(np.random.default_rng(seed).choice(len(found), max_instances, replace=False))
        found = [found[k] for k in keep]
    channels = images.shape[-1]
    mean_arr, std_arr = _channel_values(mean, "mean"), _channel_values(std, "std")
    crops = [images[n, y0:y1, x0:x1].reshape(-1, channels) for n, y0, y1, x0, x1, _, _ in found]
    sizes = np.array([len(c) for c in crops], np.int64)
    pixels = np.concatenate(crops) if crops else np.zeros((0, channels), np.uint8)
    return InstanceBank(
        pixels=normalize(pixels, mean_arr, std_arr),  # as the pipeline normalises the images they are pasted into
        inside=np.concatenate([f[6].reshape(-1) for f in found]) if found else np.zeros(0, bool),
        offsets=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if found else np.zeros(0, np.int64),
        shapes=np.array([(f[2] - f[1], f[4] - f[3]) for f in found], np.int32).reshape(-1, 2),
        labels=np.array([f[5] for f in found], np.int32),
    )


def copy_paste_step(bank: InstanceBank, probability: float) -> Step:
    """With ``probability``, paste one random bank instance at a random position.

    Only the instance's own pixels are written (not its bounding box), and the mask takes the
    instance's class there. A crop larger than the image is cut to fit.
    """
    if not len(bank):
        raise ValueError("Expected a non-empty instance bank for copy-paste. Received: 0 instances.")
    pixels, inside = tf.constant(bank.pixels), tf.constant(bank.inside)
    offsets, shapes, labels = tf.constant(bank.offsets), tf.constant(bank.shapes), tf.constant(bank.labels)
    count = len(bank)

    def paste(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pick_seed, y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        k = tf.random.stateless_uniform([], pick_seed, minval=0, maxval=count, dtype=tf.int32)
        size = tf.shape(image)[:2]
        ph, pw = shapes[k, 0], shapes[k, 1]
        start, length = offsets[k], tf.cast(ph * pw, tf.int64)
        crop = tf.reshape(pixels[start:start + length], [ph, pw, -1])
        crop_inside = tf.reshape(inside[start:start + length], [ph, pw])
        ch, cw = tf.minimum(ph, size[0]), tf.minimum(pw, size[1])
        crop, crop_inside = crop[:ch, :cw], crop_inside[:ch, :cw]
        y = tf.random.stateless_uniform([], y_seed, minval=0, maxval=size[0] - ch + 1, dtype=tf.int32)
        x = tf.random.stateless_uniform([], x_seed, minval=0, maxval=size[1] - cw + 1, dtype=tf.int32)
        pads = [[y, size[0] - y - ch], [x, size[1] - x - cw]]
        placed = tf.pad(crop, pads + [[0, 0]])
        where = tf.pad(crop_inside, pads)
        new_image = tf.where(where[..., None], tf.cast(placed, image.dtype), image)
        new_mask = tf.where(where, tf.cast(labels[k], mask.dtype), mask)
        new_image.set_shape(image.shape)
        new_mask.set_shape(mask.shape)
        return new_image, new_mask

    def step(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        coin_seed, paste_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        apply = tf.random.stateless_uniform([], coin_seed) < probability
        return tf.cond(apply, lambda: paste(image, mask, paste_seed), lambda: (image, mask))

    return step


# === Connected regions (numpy) ===


def label_regions(binary: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 4-connected regions of a 2-D boolean array (no scipy).

    Works on horizontal runs: runs in neighbouring rows that overlap are joined with a vectorised
    union-find (hook larger roots onto smaller ones, then compress paths), so the cost grows with
    the number of runs, not pixels.

    Returns:
        ``(labels, count)``: int32 labels, 0 for background and 1..count in order of first
        appearance (row-major).
    """
    binary = np.asarray(binary, bool)
    if binary.ndim != 2:
        raise ValueError(f"Expected a 2-D boolean array. Received: shape={binary.shape}.")
    h, w = binary.shape
    edges = np.diff(np.pad(binary.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # row-major order pairs every start with its end
    labels = np.zeros((h, w), np.int32)
    if not len(rows):
        return labels, 0
    u, v = _overlapping_runs(rows, starts, ends, h)
    root = _union_find(len(rows), u, v)
    _, component = np.unique(root, return_inverse=True)  # roots are the smallest run index: row-major
    lengths = ends - starts
    run_of_pixel = np.repeat(np.arange(len(rows)), lengths)
    cols = starts[run_of_pixel] + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    labels[rows[run_of_pixel], cols] = component[run_of_pixel] + 1
    return labels, int(component.max()) + 1


def _overlapping_runs(
    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, h: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (u, v) of runs in rows r and r + 1 that share at least one column."""
    first = np.searchsorted(rows, np.arange(h + 1))
    us, vs = [], []
    for r in range(h - 1):
        a0, a1, b1 = first[r], first[r + 1], first[r + 2]
        if a0 == a1 or a1 == b1:
            continue
        below_starts, below_ends = starts[a1:b1], ends[a1:b1]
        # Runs in a row are sorted and disjoint, so the runs above that overlap a run below form a
        # contiguous range: those ending after its start and starting before its end.
        lo = a0 + np.searchsorted(ends[a0:a1], below_starts, side="right")
        hi = a0 + np.searchsorted(starts[a0:a1], below_ends, side="left")
        counts = np.maximum(hi - lo, 0)
        below = np.repeat(np.arange(a1, b1), counts)
        above = np.repeat(lo, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        us.append(above)
        vs.append(below)
    if not us:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    return np.concatenate(us), np.concatenate(vs)


def _union_find(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Root (smallest member) of every node's component, given undirected edges (u, v)."""
    parent = np.arange(n)
    while True:
        pu, pv = parent[u], parent[v]
        low, high = np.minimum(pu, pv), np.maximum(pu, pv)
        joined = low != high
        if not joined.any():
            return parent
        # Roots only ever point to smaller indices, so no cycles can form.
        np.minimum.at(parent, high[joined], low[joined])
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def _region_boxes(labels: np.ndarray, count: int, min_pixels: int) -> list[tuple[int, int, int, int, np.ndarray]]:
    """``(y0, y1, x0, x1, inside)`` bounding box and in-box membership of each large enough region."""
    sizes = np.bincount(labels.reshape(-1), minlength=count + 1)
    ys, xs = np.nonzero(labels)
    ids = labels[ys, xs]
    low = np.full((2, count + 1), max(labels.shape), np.intp)
    high = np.zeros((2, count + 1), np.intp)
    for axis, coords in enumerate((ys, xs)):
        np.minimum.at(low[axis], ids, coords)
        np.maximum.at(high[axis], ids, coords + 1)
    (y0, x0), (y1, x1) = low, high
    boxes = []
    for k in range(1, count + 1):
        if sizes[k] >= min_pixels:
            inside = labels[y0[k]:y1[k], x0[k]:x1[k]] == k
            boxes.append((int(y0[k]), int(y1[k]), int(x0[k]), int(x1[k]), inside))
    return boxes


def _channel_values(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, np.float32).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"Expected at least one {name} value. Received: {list(values)}.")
    if name == "std" and (arr <= 0).any():
        raise ValueError(f"Expected std > 0. Received: {list(arr)}.")
    return arr
