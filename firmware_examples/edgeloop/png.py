"""PNG writing with numpy and zlib only: a robot may have no Pillow and no OpenCV.

8-bit grayscale (``(H, W)``) and RGB (``(H, W, 3)``) images, no interlacing; rows use the "Up"
filter, which makes overlays and class-id masks compress several times better than unfiltered rows
at the same zlib level. Files are written to a temporary name and renamed into place, so a reader
(a web page polling the folder) never sees half a PNG.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["encode_png", "write_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (0 gray, 2 RGB)
_FILTER_UP = 2


def encode_png(image: np.ndarray, level: int = 3) -> bytes:
    """PNG bytes of a uint8 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` image.

    Raises:
        ValueError: another dtype or shape.
    """
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in _COLOR_TYPES or 0 in pixels.shape:
        raise ValueError(
            f"Expected a uint8 image of shape (H, W), (H, W, 1) or (H, W, 3). Received: dtype={pixels.dtype}, "
            f"shape={pixels.shape}."
        )
    height, width, channels = pixels.shape
    rows = pixels.reshape(height, width * channels)
    # "Up" filter: each row minus the row above (the first row minus zeros), modulo 256.
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = _FILTER_UP
    filtered[0, 1:] = rows[0]
    filtered[1:, 1:] = rows[1:] - rows[:-1]  # uint8 arithmetic wraps, as PNG wants
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (
            _SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(filtered.tobytes(), level)),
            _chunk(b"IEND", b""),
        )
    )


def write_png(path: str | os.PathLike, image: np.ndarray, level: int = 3) -> Path:
    """Write ``image`` as a PNG at ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    data = encode_png(image, level)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
