"""Publishing masks to the rest of the robot: PNG files, JSON lines on stdout, or a UNIX socket.

A publisher spec on the command line is ``png:DIR``, ``stdout`` or ``unix:PATH``. Every message is
one JSON object on one line::

    {"type": "mask", "frame": 12, "source": "cam#12", "time": 1767225600.123,
     "height": 480, "width": 640, "classes": ["soil", ...], "counts": {"soil": 201234, ...},
     "mask": {"encoding": "zlib+base64", "dtype": "uint8", "shape": [480, 640], "data": "eJzt..."}}

``mask`` is present only with ``--publish-mask-data``: the class-id mask, row-major uint8,
zlib-compressed, base64. Decode with ``np.frombuffer(zlib.decompress(base64.b64decode(data)),
np.uint8).reshape(shape)``.

The UNIX socket publisher is a server: consumers connect (``socat - UNIX-CONNECT:PATH``) and
each receives every message from then on. A consumer that cannot keep up is disconnected rather
than allowed to stall the loop; it can reconnect.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import socket
import stat
import sys
import zlib
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from roverlite.deploy.edgeloop.frames import Frame
from roverlite.deploy.edgeloop.png import write_png

__all__ = ["MaskPngPublisher", "Publisher", "StdoutPublisher", "UnixSocketPublisher", "make_publishers", "mask_message"]

logger = logging.getLogger(__name__)

PUBLISHER_KINDS = ("png:DIR", "stdout", "unix:PATH")
# png:DIR keeps this many newest masks (--keep-masks): 100 s at 10 frames/s, ~10 MB of 640x480 masks.
DEFAULT_KEEP_MASKS = 1000


class Publisher(Protocol):
    def publish(self, frame: Frame, mask: np.ndarray) -> None: ...

    def close(self) -> None: ...


def mask_message(frame: Frame, mask: np.ndarray, classes: Sequence[str], include_mask: bool = False) -> dict[str, Any]:
    """The JSON-ready message for one frame's mask (see the module docstring)."""
    counts = np.bincount(mask.ravel(), minlength=len(classes))
    message: dict[str, Any] = {
        "type": "mask",
        "frame": frame.index,
        "source": frame.source_id,
        "time": round(frame.timestamp, 6),
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "classes": list(classes),
        "counts": {name: int(counts[k]) for k, name in enumerate(classes)},
        **({"ood": frame.ood} if getattr(frame, "ood", None) is not None else {}),  # edgeloop.loop.ScoredFrame
    }
    if include_mask:
        data = base64.b64encode(zlib.compress(np.ascontiguousarray(mask, dtype=np.uint8).tobytes(), 3)).decode("ascii")
        message["mask"] = {"encoding": "zlib+base64", "dtype": "uint8", "shape": list(mask.shape), "data": data}
    return message


class MaskPngPublisher:
    """Class-id masks as 8-bit gray PNGs ``mask_<frame>.png`` (pixel value = class id), the newest ``keep`` only.

    A robot publishes a mask per frame for days: at 10 frames/s and ~10 kB a 640x480 mask that
    would be 8 GB a day, so only the newest ``keep`` files stay (``--keep-masks``; 0 keeps every
    file). The names written are remembered in a ring of ``keep`` strings and the oldest is deleted
    when a new one arrives, so frames that skip indices leave nothing behind. ``mask_*.png`` files
    already in the folder (a run before a restart) join the ring first, oldest first, so a service
    that restarts stays within ``keep`` files too. Paths are ``os.path`` strings: pathlib interns
    every new file name (see ``roverlite.deploy.edgeloop.png.write_png``).

    Raises:
        ValueError: a negative ``keep``.
    """

    def __init__(self, folder: str | os.PathLike, keep: int = DEFAULT_KEEP_MASKS) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ValueError(f"Expected --keep-masks >= 0 (0: keep every mask). Received: {keep!r}.")
        self.folder, self.keep = Path(folder), keep
        self.folder.mkdir(parents=True, exist_ok=True)
        self._folder = os.fspath(self.folder)
        self._ring: deque[str] = deque()
        self._stale: set[str] = set()  # files of an earlier run that this one may overwrite
        if keep:
            self._adopt_existing()

    def publish(self, frame: Frame, mask: np.ndarray) -> None:
        path = os.path.join(self._folder, f"mask_{frame.index:06d}.png")
        write_png(path, mask.astype(np.uint8, copy=False))
        if not self.keep:
            return
        if path in self._stale:  # an earlier run's file of this name was just overwritten
            self._stale.discard(path)
            self._ring.remove(path)
        self._ring.append(path)
        while len(self._ring) > self.keep:
            self._remove(self._ring.popleft())

    def close(self) -> None:
        pass

    @property
    def on_disk(self) -> int:
        """Mask files this publisher holds now (at most ``keep``, unless ``keep`` is 0)."""
        return len(self._ring)

    def _adopt_existing(self) -> None:
        existing = []
        with os.scandir(self._folder) as entries:
            for entry in entries:
                if entry.name.startswith("mask_") and entry.name.endswith(".png") and entry.is_file():
                    existing.append((entry.stat().st_mtime, entry.name, entry.path))
        existing.sort()
        for _, _, path in existing[: max(0, len(existing) - self.keep)]:
            self._remove(path)
        kept = [path for _, _, path in existing[-self.keep:]]
        self._ring.extend(kept)
        self._stale.update(kept)
        if existing:
            logger.info("mask folder %s: %d earlier mask(s) found, keeping the newest %d", self._folder,
                        len(existing), len(kept))

    @staticmethod
    def _remove(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:  # a mask that cannot be deleted must not stop the robot
            logger.warning("could not remove old mask %s: %s", path, err)


class StdoutPublisher:
    """One JSON line per frame on stdout (pipe it into the robot's own process)."""

    def __init__(self, classes: Sequence[str], include_mask: bool = False, stream: TextIO | None = None) -> None:
        self.classes, self.include_mask = list(classes), include_mask
        self.stream = stream if stream is not None else sys.stdout

    def publish(self, frame: Frame, mask: np.ndarray) -> None:
        self.stream.write(json.dumps(mask_message(frame, mask, self.classes, self.include_mask)) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class UnixSocketPublisher:
    """A UNIX stream socket server broadcasting one JSON line per frame to every connected client."""

    def __init__(self, path: str | os.PathLike, classes: Sequence[str], include_mask: bool = False) -> None:
        self.path = Path(path)
        self.classes, self.include_mask = list(classes), include_mask
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise ValueError(
                    f"Cannot create socket {str(self.path)!r}. Expected a free path. Received: an existing non-socket file."
                )
            self.path.unlink()  # a stale socket left by a killed run
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        self._server.listen(8)
        self._server.setblocking(False)
        self._clients: list[socket.socket] = []
        self.dropped = 0
        logger.info("publishing masks on UNIX socket %s", self.path)

    @property
    def clients(self) -> int:
        """Consumers connected now."""
        return len(self._clients)

    def publish(self, frame: Frame, mask: np.ndarray) -> None:
        self.accept()
        if not self._clients:
            return
        line = (json.dumps(mask_message(frame, mask, self.classes, self.include_mask)) + "\n").encode()
        for client in list(self._clients):
            try:
                sent = client.send(line)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as err:  # the consumer went away
                self._drop(client, err.strerror or str(err))
                continue
            if sent != len(line):  # a partial line would corrupt the stream: drop the slow consumer
                self._drop(client, "too slow (socket buffer full)")

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._server.close()
        try:
            self.path.unlink()
        except OSError as err:
            if err.errno != errno.ENOENT:
                logger.warning("could not remove socket %s: %s", self.path, err)

    def accept(self) -> None:
        """Take every pending connection (``publish`` does this before sending)."""
        while True:
            try:
                client, _ = self._server.accept()
            except (BlockingIOError, InterruptedError):
                return
            client.setblocking(False)
            self._clients.append(client)
            logger.info("mask consumer connected (%d now)", len(self._clients))

    def _drop(self, client: socket.socket, why: str) -> None:
        self._clients.remove(client)
        client.close()
        self.dropped += 1
        logger.warning("mask consumer disconnected: %s", why)


def make_publishers(specs: Sequence[str], classes: Sequence[str], include_mask: bool = False,
                    keep_masks: int = DEFAULT_KEEP_MASKS) -> list[Publisher]:
    """Publishers for ``png:DIR`` / ``stdout`` / ``unix:PATH`` specs; ``png:DIR`` keeps the newest ``keep_masks``.

    Raises:
        ValueError: an unknown spec, naming the accepted forms, or a negative ``keep_masks``.
    """
    publishers: list[Publisher] = []
    for spec in specs:
        kind, _, target = spec.partition(":")
        if kind == "png" and target:
            publishers.append(MaskPngPublisher(target, keep_masks))
        elif spec == "stdout":
            publishers.append(StdoutPublisher(classes, include_mask))
        elif kind == "unix" and target:
            publishers.append(UnixSocketPublisher(target, classes, include_mask))
        else:
            raise ValueError(f"Unknown --publish target. Expected one of {list(PUBLISHER_KINDS)}. Received: {spec!r}.")
    return publishers
