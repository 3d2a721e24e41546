"""Resizing and channel conversion on the device, by the library the training loader uses: Pillow.

The training loader (:func:`roverlite.data.loader.load_split`) converts a near-gray RGB image to
one channel with ``convert("L")``, resizes images with ``BILINEAR`` and masks with ``NEAREST``,
all through these functions, so a model sees on the robot exactly the pixels it was trained on.
Pillow works in uint8 (four bytes a pixel for RGB) and resizes one axis at a time, so resizing
a 12 MP camera frame to the model's size needs little more memory than the frame itself.

Pillow is part of ``roverlite[device]`` (it has aarch64 wheels and ships with Raspberry Pi OS)
and is imported when a function here first runs, so ``import roverlite.deploy`` stays cheap.

:func:`to_model_pixels` is the whole image path, written once for the loader and the device:
channels converted and the image resized as a :class:`~roverlite.core.preprocessing.Preprocessing` says.

Example:
    >>> small = resize_bilinear(frame, (128, 128))          # doctest: +SKIP
    >>> mask = resize_nearest(small_mask, frame.shape[:2])   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from roverlite.core.preprocessing import Preprocessing

__all__ = ["gray_to_rgb", "resize_bilinear", "resize_nearest", "rgb_to_gray", "to_model_pixels"]


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W)`` or ``(H, W, C)`` image to ``size=(height, width)`` with Pillow's BILINEAR.

    uint8 input (1 or 3 channels) gives uint8 output, as the training loader resizes it; float
    input gives float32 output, each channel resized as a 32-bit float image (no rounding).

    Raises:
        ValueError: another shape, a size below 1, or uint8 with a channel count other than 1 or 3.
    """
    return _resize(image, size, "BILINEAR")


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label mask ``(H, W)`` (or an image) to ``size`` with Pillow's NEAREST, as training masks are.

    Output pixel ``i`` takes input pixel ``floor((i + 0.5) * in / out)``: labels never shift by
    half a pixel.
    """
    return _resize(mask, size, "NEAREST")


def rgb_to_gray(image: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of an ``(H, W, 3)`` image as ``(H, W, 1)``: Pillow's ``convert("L")`` for uint8."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"Expected an (H, W, 3) image. Received: shape={image.shape}.")
    if image.dtype == np.uint8:
        return np.asarray(_pil().fromarray(np.ascontiguousarray(image)).convert("L"))[..., None]
    # Float frames never reach training (it reads files); the same weights, without rounding.
    gray = image[..., 0].astype(np.float32) * np.float32(0.299)
    gray += image[..., 1].astype(np.float32) * np.float32(0.587)
    gray += image[..., 2].astype(np.float32) * np.float32(0.114)
    return gray[..., None]


def gray_to_rgb(image: np.ndarray) -> np.ndarray:
    """Replicate an ``(H, W, 1)`` image to three equal channels."""
    return np.repeat(image, 3, axis=-1)


def to_model_pixels(pixels: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """An ``(H, W, C)`` image at the model's size and channels, not yet normalised.

    The channels must already be accepted (``preprocessing.channel_problem(pixels)`` is ``None``).
    Three channels become one by luma before resizing, as training converts them; one channel is
    replicated to three after resizing (bilinear works channel by channel: the same pixels, a third
    of the work).
    """
    if pixels.shape[-1] == 3 and preprocessing.channels == 1:
        pixels = rgb_to_gray(pixels)
    if pixels.shape[:2] != preprocessing.image_size:
        pixels = _RESIZERS[preprocessing.resize](pixels, preprocessing.image_size)
    if pixels.shape[-1] == 1 and preprocessing.channels == 3:
        pixels = gray_to_rgb(pixels)
    return pixels


def _resize(image: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    height, width = _check_size(size)
    if image.ndim not in (2, 3):
        raise ValueError(f"Expected an (H, W) or (H, W, C) image. Received: shape={image.shape}.")
    if image.shape[:2] == (height, width):
        return image.copy()
    resample = getattr(_pil().Resampling, method)
    if image.dtype == np.uint8:
        channels = 1 if image.ndim == 2 else image.shape[2]
        if channels not in (1, 3):
            raise ValueError(f"Expected a uint8 image with 1 or 3 channels. Received: shape={image.shape}.")
        pixels = np.ascontiguousarray(image if image.ndim == 2 else image[..., 0] if channels == 1 else image)
        picture = _pil().fromarray(pixels).resize((width, height), resample)
        out = np.array(picture, dtype=np.uint8)  # a writable copy (np.asarray of an Image is read-only)
        return out if image.ndim == 2 or channels == 3 else out[..., None]
    planes = image[..., None] if image.ndim == 2 else image
    out = np.empty((height, width, planes.shape[2]), np.float32)
    for c in range(planes.shape[2]):
        plane = np.ascontiguousarray(planes[..., c], dtype=np.float32)
        out[..., c] = np.asarray(_pil().fromarray(plane).resize((width, height), resample))
    return out[..., 0] if image.ndim == 2 else out


# One resizer for each of core.preprocessing.RESIZE_METHODS.
_RESIZERS = {"bilinear": resize_bilinear}


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
        raise ValueError(f"Expected size=(height, width) with both >= 1. Received: size={tuple(size)}.")
    return int(size[0]), int(size[1])


def _pil() -> Any:
    """``PIL.Image``, with a message naming the install that provides it when it is missing."""
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError(
            "roverlite.deploy resizes images with Pillow, as training does. Expected Pillow, installed by "
            f"`pip install 'roverlite[device]'` or a bundle's requirements-device.txt. Received: {err}."
        ) from None
    return Image
