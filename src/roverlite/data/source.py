"""The one interface every dataset format implements.

A :class:`DataSource` lists sample ids, knows its predefined splits (if any) and reads one
raw sample as numpy arrays at its stored size, with the config's label remapping already applied.
Resizing, validation against the config and batching happen above it (``roverlite.data.loader``
and ``roverlite.data.pipeline``), so a new format only has to implement these few methods.
"""

from __future__ import annotations

import abc

import numpy as np


class DataError(ValueError):
    """A dataset file or sample is unusable; the message names the file and what was expected."""


class DataSource(abc.ABC):
    """A collection of (image, mask) samples addressed by string ids.

    Attributes:
        root: human-readable location (folder, .npz path, or "synthetic:seed=0").
    """

    root: str

    @abc.abstractmethod
    def ids(self) -> list[str]:
        """All sample ids, in a stable (sorted) order."""

    def splits(self) -> dict[str, list[str]] | None:
        """Predefined splits (e.g. from splits.json), or None when the data has none."""
        return None

    @abc.abstractmethod
    def read(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(image, mask)`` for one sample at its stored size.

        image: uint8, shape (H, W, C) with C in {1, 3}, as stored (no colour conversion).
        mask: uint8, shape (H, W), label ids after the config's palette and label_map.

        Raises:
            DataError: the file is unreadable/truncated or the mask cannot be decoded; the
                message names the file.
        """

    def read_image(self, sample_id: str) -> np.ndarray:
        """The image alone; formats storing images and masks apart override this to skip the mask."""
        return self.read(sample_id)[0]

    def read_mask(self, sample_id: str) -> np.ndarray:
        """The mask alone (stratifying splits reads every mask; decoding images there is waste)."""
        return self.read(sample_id)[1]

    def image_name(self, sample_id: str) -> str:
        """The file (or entry) name used in reports for this sample's image."""
        return sample_id

    def mask_name(self, sample_id: str) -> str:
        return sample_id

    def __len__(self) -> int:
        return len(self.ids())
