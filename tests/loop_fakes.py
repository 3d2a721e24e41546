"""Stand-ins for what ``roverlite.deploy.edgeloop.loop.run_loop`` calls, for loop tests without a model."""

from __future__ import annotations

import numpy as np

from roverlite.deploy.edgeloop.frames import Frame


class ConstantSegmenter:
    """Just what ``run_loop`` calls: a 1-channel model whose mask is class 1 everywhere."""

    channels = 1

    def __init__(self) -> None:
        self.runner = self

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        return pixels[None].astype(np.float32)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([np.zeros(batch.shape[1:3]), np.ones(batch.shape[1:3])], axis=-1)[None]

    def overlay(self, image: np.ndarray, mask: np.ndarray, alpha: float) -> np.ndarray:
        return np.repeat(mask[..., None] * 255, 3, axis=-1).astype(np.uint8)


class CountingSource:
    """A frame source that yields ``frames`` black frames of ``shape``, then ends; ``name`` may use ``{index}``."""

    kind, is_camera = "test", False

    def __init__(self, frames: int, shape: tuple[int, int] = (6, 8), name: str = "test") -> None:
        self.frames, self.index, self.shape, self.name = frames, 0, shape, name

    def read(self) -> Frame | None:
        if self.index == self.frames:
            return None
        self.index += 1
        return Frame(self.index - 1, np.zeros(self.shape, np.uint8), self.name.format(index=self.index - 1), 0.0)

    def close(self) -> None:
        pass
