"""PNG writing with Pillow, which ``roverlite[device]`` installs (and Raspberry Pi OS ships).

8-bit grayscale (``(H, W)`` or ``(H, W, 1)``) and RGB (``(H, W, 3)``) images. Files are written to
a temporary name and renamed into place, so a reader (a web page polling the folder) never sees
half a PNG and an interrupted write leaves the previous file as it was.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from typing import Any

import numpy as np

__all__ = ["encode_png", "write_png"]


def encode_png(image: np.ndarray, level: int = 3) -> bytes:
    """PNG bytes of a uint8 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` image (zlib ``level`` 0-9).

    Raises:
        ValueError: another dtype or shape, or a level outside 0-9.
    """
    buffer = io.BytesIO()
    _save(buffer, image, level)
    return buffer.getvalue()


def write_png(path: str | os.PathLike, image: np.ndarray, level: int = 3) -> str | os.PathLike:
    """Write ``image`` as a PNG at ``path`` atomically (temporary file, then rename); returns ``path`` as given.

    Plain ``os.path`` strings, never ``pathlib``: pathlib interns every new file name, and a loop
    writing ``overlay_<frame>.png`` forever grew CPython's interned-string table (a one-off
    +0.52 MiB step after ~10,000 names, measured by ``benchmarks/soak.py``).
    """
    target = os.fspath(path)
    picture = _picture(image, level)  # refuse a bad image before any file exists
    folder, name = os.path.split(target)
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            picture.save(fh, format="PNG", compress_level=level)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _save(fh: Any, image: np.ndarray, level: int) -> None:
    _picture(image, level).save(fh, format="PNG", compress_level=level)


def _picture(image: np.ndarray, level: int) -> Any:
    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.dtype != np.uint8 or not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)) or 0 in pixels.shape:
        raise ValueError(
            f"Expected a uint8 image of shape (H, W), (H, W, 1) or (H, W, 3). Received: dtype={pixels.dtype}, "
            f"shape={np.shape(image)}."
        )
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        raise ValueError(f"Expected a zlib level from 0 to 9. Received: level={level!r}.")
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError(
            f"Writing PNGs needs Pillow. Expected `pip install pillow` (part of roverlite[device]). Received: {err}."
        ) from None
    return Image.fromarray(np.ascontiguousarray(pixels))
