"""Fixtures shared by the test modules: the real datasets, tiny folder datasets built on the fly, and
the tiny model's exports in every format."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

# The datasets live beside the project checkout (../shared/datasets), never inside the repo.
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real datasets folder (AI4Mars, CWFID); the test is skipped when it is absent."""
    if not (SHARED_DATASETS / "ai4mars-msl").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS} (present in CI; integration test skipped)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The trained tiny model (``export_helpers``) exported once per session to every format: ``{format: ExportResult}``.

    Read-only: a test that damages an artifact copies it first.
    """
    from export_helpers import export_every_format

    return export_every_format(tmp_path_factory.mktemp("tiny_exports"))


@pytest.fixture
def tiny_folder_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a small ``images/`` + ``masks/`` dataset into ``tmp_path``.

    Call ``make(n=6, size=(16, 24), channels=1, num_classes=4, ignore_index=255, image_ext=".png",
    name="data")``; sample ``k`` is ``s{k:03d}``, its image a gradient offset by ``k`` (so no two
    images are equal) and its mask stripes of class ``(k + row // 4) % num_classes`` with the
    bottom row set to ``ignore_index`` when that is not None. Returns the dataset folder.
    """

    def make(
        n: int = 6,
        size: tuple[int, int] = (16, 24),
        channels: int = 1,
        num_classes: int = 4,
        ignore_index: int | None = 255,
        image_ext: str = ".png",
        name: str = "data",
    ) -> Path:
        root = tmp_path / name
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        h, w = size
        for k in range(n):
            gray = ((np.arange(h * w).reshape(h, w) * 7 + k * 11) % 256).astype(np.uint8)
            pixels = gray if channels == 1 else np.stack([gray, 255 - gray, gray // 2], axis=-1)
            mask = ((k + np.arange(h)[:, None] // 4) % num_classes).repeat(w, axis=1).astype(np.uint8)
            if ignore_index is not None:
                mask[-1] = ignore_index
            Image.fromarray(pixels).save(root / "images" / f"s{k:03d}{image_ext}")
            Image.fromarray(mask).save(root / "masks" / f"s{k:03d}.png")
        return root

    return make
