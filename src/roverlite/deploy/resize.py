"""Image resizing and channel conversion in pure numpy, matching what the training loader does.

The training loader resizes with Pillow (``BILINEAR`` for images, ``NEAREST`` for masks) and
converts near-gray RGB to one channel with Pillow's ``convert("L")``. A robot has no Pillow, so
these helpers reproduce Pillow's arithmetic: its bilinear filter is a triangle whose support
widens with the downscale factor (it antialiases, unlike OpenCV's ``INTER_LINEAR``), applied
horizontally then vertically with rounding to uint8 after each pass. Results equal Pillow's up to
a level of rounding (Pillow uses 22-bit fixed-point weights), so a model sees on the robot the
pixels it was trained on.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["gray_to_rgb", "resize_bilinear", "resize_nearest", "rgb_to_gray"]


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W)`` or ``(H, W, C)`` image to ``size=(height, width)`` like Pillow's BILINEAR.

    uint8 input gives uint8 output (rounded after each pass, as Pillow does); float input gives
    float32 output without rounding.
    """
    height, width = _check_size(size)
    if image.ndim not in (2, 3):
        raise ValueError(f"Expected an (H, W) or (H, W, C) image. Received: shape={image.shape}.")
    squeeze = image.ndim == 2
    pixels = image[..., None] if squeeze else image
    rounding = pixels.dtype == np.uint8
    # float64 for uint8 so rounding lands where Pillow's fixed point does; float32 is enough otherwise.
    out = pixels.astype(np.float64 if rounding else np.float32)
    if out.shape[1] != width:
        index, weight = _triangle_taps(out.shape[1], width)
        # Each output pixel reads only its few taps: a gather, not a dense (out x in) product
        # (3x-10x faster on a 640x480 camera frame, where the dense einsum cost more than the model).
        out = (out[:, index, :] * weight.astype(out.dtype)[None, :, :, None]).sum(axis=2)
        out = _round_uint8(out) if rounding else out
    if out.shape[0] != height:
        index, weight = _triangle_taps(out.shape[0], height)
        out = (out[index, :, :] * weight.astype(out.dtype)[:, :, None, None]).sum(axis=1)
        out = _round_uint8(out) if rounding else out
    out = out.astype(np.uint8) if rounding else out.astype(np.float32, copy=False)
    return out[..., 0] if squeeze else out


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label mask ``(H, W)`` (or an image) to ``size`` by nearest neighbour, like Pillow.

    Output pixel ``i`` takes input pixel ``floor((i + 0.5) * in / out)``: pixel centres map onto
    pixel centres, so labels never shift by half a pixel. The position is accumulated step by step
    as Pillow does, so ties at exact pixel borders fall the same way as in the training masks.
    """
    height, width = _check_size(size)
    rows = _nearest_index(mask.shape[0], height)
    cols = _nearest_index(mask.shape[1], width)
    return mask[rows[:, None], cols[None, :]]


def rgb_to_gray(image: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of an ``(H, W, 3)`` image as ``(H, W, 1)``, with Pillow's rounding for uint8."""
    if image.dtype == np.uint8:
        r, g, b = (image[..., c].astype(np.uint32) for c in range(3))
        # Pillow's convert("L") fixed point: L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16.
        luma = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
        return luma.astype(np.uint8)[..., None]
    weights = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    return (image.astype(np.float32) @ weights)[..., None]


def gray_to_rgb(image: np.ndarray) -> np.ndarray:
    """Replicate an ``(H, W, 1)`` image to three equal channels."""
    return np.repeat(image, 3, axis=-1)


@functools.lru_cache(maxsize=32)
def _triangle_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(index, weight)``, each ``(out, taps)``: the non-zero entries of each row of
    :func:`_triangle_weights`, padded with weight 0 (cached: a camera loop resizes one size)."""
    dense = _triangle_weights(in_size, out_size)
    nonzero = dense != 0
    taps = max(int(nonzero.sum(axis=1).max()), 1)
    index = np.zeros((out_size, taps), np.int64)
    weight = np.zeros((out_size, taps), np.float64)
    for row in range(out_size):
        cols = np.flatnonzero(nonzero[row])
        index[row, : len(cols)] = cols
        weight[row, : len(cols)] = dense[row, cols]
    index.setflags(write=False)
    weight.setflags(write=False)
    return index, weight


def _triangle_weights(in_size: int, out_size: int) -> np.ndarray:
    """``(out, in)`` matrix of Pillow's normalised bilinear (triangle) filter weights."""
    scale = in_size / out_size
    # Downscaling widens the filter so every input pixel contributes (antialiasing).
    filter_scale = max(scale, 1.0)
    support = filter_scale
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        # int() truncates toward zero like the C cast in Pillow's precompute_coeffs.
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi, dtype=np.float64)
        w = np.clip(1.0 - np.abs((taps - center + 0.5) / filter_scale), 0.0, None)
        total = w.sum()
        if total > 0:
            weights[i, lo:hi] = w / total
    return weights


def _round_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(values + 0.5), 0, 255)


def _nearest_index(in_size: int, out_size: int) -> np.ndarray:
    step = in_size / out_size
    # np.cumsum adds sequentially, reproducing Pillow's `xo += a[0]` float accumulation exactly.
    positions = np.cumsum(np.concatenate([[0.5 * step], np.full(out_size - 1, step)]))
    return np.clip(positions.astype(np.int64), 0, in_size - 1)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
        raise ValueError(f"Expected size=(height, width) with both >= 1. Received: size={tuple(size)}.")
    return int(size[0]), int(size[1])
