"""Frame sources: a Raspberry Pi camera (picamera2), an OpenCV device/URL/GStreamer pipeline, or a folder.

Every source yields :class:`Frame` objects holding uint8 RGB ``(H, W, 3)`` or gray ``(H, W)``
pixels, and returns ``None`` when it has no more frames. Sources import their library when they
open, never at module import, so a device needs only the one it uses.

Folder frames: ``.png`` / ``.jpg`` / ``.jpeg`` decoded with Pillow when it is installed (Raspberry
Pi OS Lite has no Pillow in a fresh venv); ``.npy`` (one ``(H, W)`` / ``(H, W, 1)`` / ``(H, W, 3)``
uint8 frame) and ``.npz`` (every frame of its ``frames`` or ``images`` array, so a bundle's
``testpack.npz`` works as is) need numpy only. Both are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "NUMPY_SUFFIXES",
    "SOURCE_KINDS",
    "FolderSource",
    "Frame",
    "FrameSource",
    "OpenCVSource",
    "Picamera2Source",
    "open_source",
    "try_import",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NUMPY_SUFFIXES = (".npy", ".npz")
SOURCE_KINDS = ("auto", "picamera2", "opencv", "folder")
_NPZ_KEYS = ("frames", "images")
# A live camera that fails this many reads in a row is treated as gone.
_MAX_FAILED_READS = 30


@dataclass(frozen=True)
class Frame:
    """One captured frame: ``index`` counts from 0, ``source_id`` names it (file name, camera)."""

    index: int
    pixels: np.ndarray
    source_id: str
    timestamp: float


class FrameSource(Protocol):
    kind: str
    is_camera: bool

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


def try_import(module: str) -> tuple[Any | None, str | None]:
    """``(module, None)``, or ``(None, reason)`` when it cannot be imported.

    Any exception counts: picamera2 from apt under a pip NumPy 2 fails with a ``ValueError``
    from simplejpeg, not an ``ImportError``.
    """
    try:
        return importlib.import_module(module), None
    except Exception as err:  # noqa: BLE001 - see above
        return None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


# === Folder ===


class FolderSource:
    """Frames from image / numpy files in a folder, in file-name order (forever with ``loop``)."""

    kind = "folder"
    is_camera = False

    def __init__(self, folder: str | os.PathLike, loop: bool = False) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"Frame folder not found. Expected a folder of images. Received: {str(self.folder)!r}."
            )
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + NUMPY_SUFFIXES)
        if not self.files:
            raise ValueError(
                f"No frames in {str(self.folder)!r}. Expected files ending in {list(IMAGE_SUFFIXES + NUMPY_SUFFIXES)}. "
                "Received: none."
            )
        images = [p for p in self.files if p.suffix.lower() in IMAGE_SUFFIXES]
        self._pil, reason = try_import("PIL.Image") if images else (None, None)
        if images and self._pil is None:
            raise ImportError(
                f"Cannot decode {len(images)} PNG/JPEG file(s) in {str(self.folder)!r}: Pillow is not importable "
                f"({reason}). Expected Pillow (pip install pillow) or frames saved as .npy/.npz."
            )
        self.loop = loop
        self._frames = self._iterate()
        self._index = 0

    def read(self) -> Frame | None:
        try:
            source_id, pixels = next(self._frames)
        except StopIteration:
            return None
        frame = Frame(self._index, pixels, source_id, time.time())
        self._index += 1
        return frame

    def close(self) -> None:
        self._frames.close()

    def _iterate(self) -> Iterator[tuple[str, np.ndarray]]:
        while True:
            for path in self.files:
                yield from self._decode(path)
            if not self.loop:
                return

    def _decode(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        suffix = path.suffix.lower()
        if suffix == ".npy":
            yield path.name, _checked(np.load(path, allow_pickle=False), path.name)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                key = next((k for k in _NPZ_KEYS if k in archive.files), None)
                if key is None:
                    raise ValueError(
                        f"{path.name}: expected an array named one of {list(_NPZ_KEYS)}. Received: {archive.files}."
                    )
                for k, pixels in enumerate(archive[key]):
                    yield f"{path.name}[{k}]", _checked(pixels, f"{path.name}[{k}]")
        else:
            with self._pil.open(path) as image:
                mode = image.mode if image.mode in ("L", "RGB") else "RGB"
                yield path.name, np.asarray(image.convert(mode))


def _checked(pixels: np.ndarray, name: str) -> np.ndarray:
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 3)):
        raise ValueError(
            f"{name}: expected uint8 (H, W), (H, W, 1) or (H, W, 3). Received: {pixels.dtype} {pixels.shape}."
        )
    return pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels


# === OpenCV ===


class OpenCVSource:
    """Frames from ``cv2.VideoCapture``: a device index (``0``), a file, a URL or a GStreamer pipeline."""

    kind = "opencv"
    is_camera = True

    def __init__(self, spec: str, gstreamer: bool = False, size: tuple[int, int] | None = None) -> None:
        cv2, reason = try_import("cv2")
        if cv2 is None:
            raise ImportError(
                f"OpenCV is not importable ({reason}). Expected opencv-python-headless or python3-opencv."
            )
        self._cv2 = cv2
        target: int | str = int(spec) if spec.isdigit() else spec
        backend = cv2.CAP_GSTREAMER if gstreamer else cv2.CAP_ANY
        self._capture = cv2.VideoCapture(target, backend)
        if not self._capture.isOpened():
            raise ValueError(
                f"OpenCV cannot open video source {spec!r} (gstreamer={gstreamer}). Expected a camera, file or URL."
            )
        if size is not None:
            self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # latest frame, not a queue of stale ones
        self.spec = spec
        self._index = 0

    def read(self) -> Frame | None:
        for _ in range(_MAX_FAILED_READS):
            ok, bgr = self._capture.read()
            if ok and bgr is not None:
                pixels = bgr if bgr.ndim == 2 else np.ascontiguousarray(bgr[..., ::-1])  # BGR -> RGB
                frame = Frame(self._index, pixels, f"{self.spec}#{self._index}", time.time())
                self._index += 1
                return frame
        logger.warning("video source %s returned no frame %d times in a row: stopping", self.spec, _MAX_FAILED_READS)
        return None

    def close(self) -> None:
        self._capture.release()


# === picamera2 ===


class Picamera2Source:
    """Frames from a Raspberry Pi camera through picamera2 (libcamera), RGB at ``size``."""

    kind = "picamera2"
    is_camera = True

    def __init__(self, size: tuple[int, int] = (640, 480)) -> None:
        module, reason = try_import("picamera2")
        if module is None:
            raise ImportError(
                f"picamera2 is not importable ({reason}). Expected the apt package python3-picamera2 and a venv made "
                "with --system-site-packages (see raspberry_pi/README.md)."
            )
        self._camera = module.Picamera2()
        # picamera2's "BGR888" is stored R, G, B in memory (libcamera names formats by word order).
        config = self._camera.create_video_configuration(main={"size": tuple(size), "format": "BGR888"})
        self._camera.align_configuration(config)  # sizes the ISP can deliver without padded rows
        self._camera.configure(config)
        self._camera.start()
        self._index = 0
        logger.info("picamera2 started at %s", config["main"]["size"])

    def read(self) -> Frame | None:
        pixels = self._camera.capture_array("main")
        frame = Frame(self._index, np.ascontiguousarray(pixels[..., :3]), f"picamera2#{self._index}", time.time())
        self._index += 1
        return frame

    def close(self) -> None:
        self._camera.stop()
        self._camera.close()


# === Choosing one ===


def open_source(
    kind: str,
    images: str | os.PathLike | None = None,
    video: str | None = None,
    gstreamer: bool = False,
    size: tuple[int, int] | None = None,
    loop: bool = False,
    allowed: tuple[str, ...] = SOURCE_KINDS,
) -> FrameSource:
    """Open the frame source ``kind``; ``auto`` picks one (see below).

    ``auto``: an explicit ``images`` folder or ``video`` device/URL wins; without either, the
    Pi camera when picamera2 imports (and is in ``allowed``).

    Raises:
        ValueError: unknown kind, or a kind without what it needs.
        ImportError: the library for the chosen source is missing (naming why).
    """
    if kind not in allowed:
        raise ValueError(f"Unknown frame source. Expected one of {list(allowed)}. Received: {kind!r}.")
    if kind == "auto":
        if images is not None:
            kind = "folder"
        elif video is not None:
            kind = "opencv"
        elif "picamera2" in allowed and try_import("picamera2")[0] is not None:
            kind = "picamera2"
        else:
            reason = try_import("picamera2")[1] if "picamera2" in allowed else "not used on this device"
            raise ValueError(
                "No frame source. Expected --images DIR, --video DEVICE_OR_URL"
                + (" or an importable picamera2" if "picamera2" in allowed else "")
                + f". Received: none of them (picamera2: {reason})."
            )
    if kind == "folder":
        if images is None:
            raise ValueError("Frame source 'folder' needs --images DIR. Received: no folder.")
        return FolderSource(images, loop=loop)
    if kind == "opencv":
        if video is None:
            raise ValueError("Frame source 'opencv' needs --video DEVICE_OR_URL (e.g. 0). Received: none.")
        return OpenCVSource(video, gstreamer=gstreamer, size=size)
    return Picamera2Source(size or (640, 480))
