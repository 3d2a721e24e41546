"""Input rules shared by the training loader, the export sidecar and the device ``Segmenter``.

Written once here so the three sides cannot drift apart. :class:`Preprocessing` holds the numbers
(input size, colour mode, normalisation, the gray tolerance, the resize method) and the NumPy
operations every side applies with them; resizing itself needs Pillow, which this bottom layer
does not import, so it lives in :func:`roverlite.deploy.resize.to_model_pixels`.

Example:
    >>> pre = Preprocessing(image_size=(128, 128), color_mode="grayscale", mean=(0.5,), std=(0.25,))
    >>> Preprocessing.from_dict(pre.to_dict()) == pre
    True
    >>> x = pre.normalize(pixels_uint8)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np

from roverlite.core.errors import ConfigError, did_you_mean

__all__ = [
    "COLOR_MODES",
    "DATA_CONFIG_KEYS",
    "GRAY_TOLERANCE",
    "NORMALIZATION_KEYS",
    "PIXEL_SCALE",
    "RESIZE_METHODS",
    "Preprocessing",
    "channel_problem",
    "channel_spread",
    "normalize",
]

# Largest channel spread (max - min over R, G, B at one pixel) still read as grayscale. Measured:
# all 6,000 AI4Mars JPEGs decode with spread 0 (chroma is exactly neutral), re-encoding them at
# quality 50-95 keeps 0, and adding +-1 per-channel noise before JPEG gives at most 2; real colour
# images reach 130+ (CWFID). 8 leaves room for other encoders while refusing any colour photo.
# The loader applies it to training images, the sidecar records it, the device applies it to frames.
GRAY_TOLERANCE = 8
PIXEL_SCALE = 1.0 / 255.0
COLOR_MODES: Mapping[str, int] = {"grayscale": 1, "rgb": 3}
# Images only: masks are always resized nearest, so labels never blend.
RESIZE_METHODS = ("bilinear",)
# The keys of to_dict() that a sidecar writes in its "normalization" block (the rest go in "input").
NORMALIZATION_KEYS = ("pixel_scale", "mean", "std")
# The DataConfig fields a Preprocessing is made from (and gives back for an artifact's data config).
DATA_CONFIG_KEYS = ("image_size", "color_mode", "mean", "std")


class _DataConfigLike(Protocol):
    image_size: Sequence[int]
    color_mode: str
    mean: Sequence[float]
    std: Sequence[float]


@dataclass(frozen=True)
class Preprocessing:
    """How a uint8 image becomes a model input: ``x = (pixel * pixel_scale - mean) / std`` per channel.

    Attributes:
        image_size: the model's input ``(height, width)``.
        color_mode: ``grayscale`` (1 channel) or ``rgb`` (3 channels).
        mean, std: one value, or one per channel.
        pixel_scale: maps pixels to [0, 1] before ``mean`` and ``std`` apply.
        gray_tolerance: a 3-channel image is accepted by a grayscale model when its channels differ
            by at most this many levels at every pixel; ``-1`` refuses every 3-channel image.
        allow_gray_to_rgb: an RGB model accepts a 1-channel image (replicated to 3 after resizing).
        resize: how images are resized to ``image_size`` (masks are always resized nearest).

    Raises:
        ConfigError: (a ``ValueError``) naming the first impossible value, "Expected ... Received: ...".
    """

    image_size: tuple[int, int]
    color_mode: str = "grayscale"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    pixel_scale: float = PIXEL_SCALE
    gray_tolerance: int = GRAY_TOLERANCE
    allow_gray_to_rgb: bool = False
    resize: str = RESIZE_METHODS[0]

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", _size(self.image_size))
        object.__setattr__(self, "mean", _floats(self.mean, "mean"))
        object.__setattr__(self, "std", _floats(self.std, "std"))
        _check_choice(self.color_mode, tuple(COLOR_MODES), "color_mode")
        _check_choice(self.resize, RESIZE_METHODS, "resize")
        counts = "1 value" if self.channels == 1 else f"1 or {self.channels} values"
        for key in ("mean", "std"):
            values = getattr(self, key)
            if len(values) not in (1, self.channels):
                raise ConfigError(
                    f"Expected {counts} of {key} for color_mode={self.color_mode!r}. Received: {key}={list(values)}."
                )
        if min(self.std) <= 0:
            raise ConfigError(f"Expected std > 0. Received: std={list(self.std)}.")
        if not _finite_positive(self.pixel_scale):
            raise ConfigError(f"Expected a finite pixel_scale > 0. Received: pixel_scale={self.pixel_scale!r}.")
        if not _is_int(self.gray_tolerance) or not -1 <= self.gray_tolerance <= 255:
            raise ConfigError(
                f"Expected gray_tolerance an integer in -1..255. Received: gray_tolerance={self.gray_tolerance!r}."
            )
        if not isinstance(self.allow_gray_to_rgb, bool):
            raise ConfigError(
                f"Expected allow_gray_to_rgb true or false. Received: allow_gray_to_rgb={self.allow_gray_to_rgb!r}."
            )

    # === Config ===

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.color_mode]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, read back by :meth:`from_dict`."""
        return {
            "image_size": list(self.image_size),
            "color_mode": self.color_mode,
            "resize": self.resize,
            "gray_tolerance": self.gray_tolerance,
            "allow_gray_to_rgb": self.allow_gray_to_rgb,
            "pixel_scale": self.pixel_scale,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Preprocessing:
        """The inverse of :meth:`to_dict`; missing keys other than ``image_size`` take their defaults.

        Raises:
            ConfigError: (a ``ValueError``) not a mapping, an unknown key (the closest known one
                suggested), or an invalid value.
        """
        if not isinstance(value, Mapping):
            raise ConfigError(f"Expected preprocessing as a mapping. Received: {type(value).__name__}.")
        known = [f.name for f in fields(cls)]
        for key in value:
            if key not in known:
                raise ConfigError(
                    f"Unknown preprocessing key. Expected one of {known}. Received: {key!r}." + did_you_mean(key, known)
                )
        if "image_size" not in value:
            raise ConfigError(f"Expected preprocessing with an image_size. Received: keys {list(value)}.")
        return cls(**value)

    @classmethod
    def from_data_config(cls, data_cfg: _DataConfigLike, allow_gray_to_rgb: bool = False) -> Preprocessing:
        """The preprocessing of a run's ``data`` section (any object with :data:`DATA_CONFIG_KEYS`)."""
        return cls(**{key: getattr(data_cfg, key) for key in DATA_CONFIG_KEYS}, allow_gray_to_rgb=allow_gray_to_rgb)

    def data_config_fields(self) -> dict[str, Any]:
        """The ``data`` section fields this preprocessing defines (:data:`DATA_CONFIG_KEYS`), as plain lists."""
        plain = self.to_dict()
        return {key: plain[key] for key in DATA_CONFIG_KEYS}

    # === Operations ===

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """``(pixels * pixel_scale - mean) / std`` as float32 over the last axis (see :func:`normalize`)."""
        return normalize(pixels, self.mean, self.std, self.pixel_scale)

    def channel_problem(self, image: np.ndarray) -> str | None:
        """Why an ``(H, W, C)`` image does not fit this input, or ``None`` (see :func:`channel_problem`)."""
        return channel_problem(image, self.channels, self.gray_tolerance, self.allow_gray_to_rgb)


def channel_problem(
    image: np.ndarray, channels: int, gray_tolerance: int = GRAY_TOLERANCE, allow_gray_to_rgb: bool = False
) -> str | None:
    """Why an ``(H, W, C)`` image does not fit a ``channels``-channel input, or ``None`` when it does.

    A grayscale input takes 1 channel, or 3 equal within ``gray_tolerance`` levels (gray JPEGs
    decode as three equal channels; ``-1`` refuses them); an RGB input takes 3, or 1 when
    ``allow_gray_to_rgb``.
    """
    have = image.shape[-1] if image.ndim == 3 else 0
    if have == channels or (channels == 3 and have == 1 and allow_gray_to_rgb):
        return None
    if channels == 3:
        why = " (gray images are not allowed for this input)" if have == 1 else ""
        return f"Expected 3 channels for color_mode='rgb'{why}. Received: {have} channel(s)"
    if have != 3:
        return f"Expected 1 channel (or 3 equal ones) for color_mode='grayscale'. Received: {have} channels"
    spread = channel_spread(image)
    if gray_tolerance < 0 or spread > gray_tolerance:
        return (
            f"Expected 1 channel, or 3 channels equal within {max(gray_tolerance, 0)} levels, for "
            f"color_mode='grayscale'. Received: a colour image (channels differ by up to {spread:g})"
        )
    return None


def normalize(
    pixels: np.ndarray, mean: Sequence[float], std: Sequence[float], pixel_scale: float = PIXEL_SCALE
) -> np.ndarray:
    """``(pixels * pixel_scale - mean) / std`` as float32, per channel (the last axis).

    Always the same float32 operations in the same order, so the loader, the tf.data pipeline's
    cache and the device give bit-identical model inputs.

    Args:
        pixels: ``(..., C)`` uint8 pixels (or numbers on the same scale).
        mean, std: one value, or one per channel.
        pixel_scale: applied first (``1 / 255`` maps uint8 to [0, 1]).

    Raises:
        ValueError: mean/std length is neither 1 nor C, or a std is not positive.
    """
    channels = pixels.shape[-1]
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(-1)
    std_arr = np.asarray(std, dtype=np.float32).reshape(-1)
    for name, values in (("mean", mean_arr), ("std", std_arr)):
        if values.size not in (1, channels):
            raise ValueError(
                f"Expected 1 or {channels} {name} values for {channels}-channel images. Received: {list(values)}."
            )
    if (std_arr <= 0).any():
        raise ValueError(f"Expected std > 0. Received: {list(std_arr)}.")
    out = pixels.astype(np.float32)
    out *= np.float32(pixel_scale)
    out -= mean_arr
    out /= std_arr
    return out


def channel_spread(image: np.ndarray) -> int | float:
    """Largest difference between channels at any pixel (0 for one channel or equal channels).

    In the image's own dtype (``high - low`` cannot wrap, since high >= low): an int for integer
    images, a float for float ones.
    """
    if image.shape[-1] == 1 or image.size == 0:
        return 0
    # Elementwise over channel views: 20x faster than a max/min reduction over a length-3 axis.
    planes = [image[..., c] for c in range(image.shape[-1])]
    high, low = np.maximum(planes[0], planes[1]), np.minimum(planes[0], planes[1])
    for plane in planes[2:]:
        np.maximum(high, plane, out=high)
        np.minimum(low, plane, out=low)
    np.subtract(high, low, out=high)
    return high.max().item()


# === Validation helpers ===


def _size(value: Any) -> tuple[int, int]:
    items = tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(items) != 2 or not all(_is_number(v) and float(v).is_integer() and v >= 1 for v in items):
        raise ConfigError(f"Expected image_size=(height, width), both integers >= 1. Received: image_size={value!r}.")
    return int(items[0]), int(items[1])


def _floats(value: Any, key: str) -> tuple[float, ...]:
    items = tuple(value) if isinstance(value, (list, tuple)) else ()
    ok = bool(items) and all(_is_number(v) for v in items)
    if not ok or not all(math.isfinite(v) for v in items):
        raise ConfigError(f"Expected {key} as a non-empty list of finite numbers. Received: {key}={value!r}.")
    return tuple(float(v) for v in items)


def _check_choice(value: Any, options: tuple[str, ...], key: str) -> None:
    if value not in options:
        raise ConfigError(
            f"Expected {key} in {list(options)}. Received: {key}={value!r}." + did_you_mean(str(value), options)
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _finite_positive(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and value > 0
