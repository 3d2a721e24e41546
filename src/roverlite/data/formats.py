"""Concrete dataset formats behind :class:`~roverlite.data.source.DataSource`, and the table that opens them.

* ``folder``: ``images/`` + ``masks/`` matched by file stem, with an optional ``splits.json``.
* ``npz``: the AN2DL course layout, ``training_set`` (N, 2, H, W) and optional ``test_set`` (N, H, W).
* ``synthetic``: the procedural generator in :mod:`roverlite.data.synthetic` (imported lazily).

Every source returns masks with the config's ``palette`` and ``label_map`` already applied, so the
loader and the audit see final label ids whatever the storage format.

Example:
    >>> source = open_source(cfg.data)
    >>> image, mask = source.read(source.ids()[0])
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from roverlite.config import DataConfig
from roverlite.data.source import DataError, DataSource

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_SUFFIX = ".png"
SPLITS_FILE = "splits.json"

# PIL modes read as stored; the others are converted to the nearest of these, never colour-managed.
_IMAGE_MODES = {"L": "L", "RGB": "RGB", "1": "L", "LA": "L", "RGBA": "RGB", "P": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}


# === Shared helpers ===


def _require_path(path: str | os.PathLike | None, expected: str) -> Path:
    if path is None or not Path(path).exists():
        raise FileNotFoundError(f"Dataset path not found. Expected {expected}. Received: {str(path)!r}.")
    return Path(path)


def label_lut(label_map: Mapping[int, int] | None) -> np.ndarray | None:
    """A 256-entry lookup table for ``label_map`` (ids not in the map stay as they are), or None."""
    if not label_map:
        return None
    lut = np.arange(256, dtype=np.uint8)
    for src, dst in label_map.items():
        lut[int(src)] = int(dst)
    return lut


def _open_pil(path: Path, what: str) -> "Image.Image":
    # Pillow is imported here, not at the top, so NpzSource works on a numpy-only install.
    from PIL import Image

    try:
        with Image.open(path) as im:
            # load() decodes the whole file now, so a truncated JPEG fails here rather than later;
            # the decoded pixels stay usable after the file is closed.
            im.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(
            f"Cannot read {what} {str(path)!r}. Expected a complete, readable image file. Received: {err}."
        ) from None
    return im


def decode_image(path: Path) -> np.ndarray:
    """Read an image file as uint8 (H, W, C) with C = 1 or 3; alpha and palettes are dropped."""
    im = _open_pil(path, "image")
    target = _IMAGE_MODES.get(im.mode)
    if target is None:
        raise DataError(
            f"Unsupported image mode in {str(path)!r}. Expected an 8-bit grayscale or RGB image. "
            f"Received: mode {im.mode!r}."
        )
    if im.mode != target:
        im = im.convert(target)
    pixels = np.asarray(im, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def decode_mask(
    path: Path,
    palette: Sequence[Sequence[int]] | None = None,
    lut: np.ndarray | None = None,
) -> np.ndarray:
    """Read a mask PNG as uint8 ids (H, W): 8-bit ids as is, RGB colours through ``palette``."""
    im = _open_pil(path, "mask")
    if im.mode in ("RGB", "RGBA") or (im.mode == "P" and palette):
        if not palette:
            raise DataError(
                f"Mask {str(path)!r} is a colour image but data.palette is not set. Expected an 8-bit id "
                f"PNG, or data.palette entries [r, g, b, id]. Received: mode {im.mode!r}."
            )
        mask = _map_colours(np.asarray(im.convert("RGB")), palette, path)
    elif im.mode in ("L", "P", "1"):
        # P masks (VOC style) store ids as palette indices; the palette only colours them for viewers.
        mask = np.asarray(im).astype(np.uint8)
    elif im.mode in ("I", "I;16", "I;16B", "I;16L"):
        wide = np.asarray(im)
        if wide.size and (wide.min() < 0 or wide.max() > 255):
            raise DataError(
                f"Mask {str(path)!r} has ids beyond 8 bits. Expected ids in 0..255. "
                f"Received: {int(wide.min())}..{int(wide.max())}."
            )
        mask = wide.astype(np.uint8)
    else:
        raise DataError(
            f"Unsupported mask mode in {str(path)!r}. Expected an 8-bit id PNG. Received: mode {im.mode!r}."
        )
    return lut[mask] if lut is not None else mask


def _map_colours(rgb: np.ndarray, palette: Sequence[Sequence[int]], path: Path) -> np.ndarray:
    keys = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colours, inverse = np.unique(keys.ravel(), return_inverse=True)
    table = {(r << 16) | (g << 8) | b: i for r, g, b, i in palette}
    ids = np.empty(len(colours), dtype=np.uint8)
    for n, key in enumerate(colours.tolist()):
        if key not in table:
            colour = [key >> 16, (key >> 8) & 255, key & 255]
            raise DataError(
                f"Mask {str(path)!r} has a colour that is not in data.palette. Expected one of "
                f"{[list(p[:3]) for p in palette]}. Received: colour {colour}."
            )
        ids[n] = table[key]
    return ids[inverse].reshape(rgb.shape[:2])


# === Folder ===


class FolderSource(DataSource):
    """``images/`` + ``masks/`` matched by file stem, with an optional ``splits.json``.

    Images may be PNG, JPEG, BMP or TIFF; masks are PNG, either 8-bit ids or RGB colours mapped by
    ``palette``. An image without a mask (or a mask without an image) is not an error: it is left
    out of :meth:`ids` and listed in :attr:`unmatched` so reports can show it.

    Args:
        root: the dataset folder.
        palette: ``[r, g, b, id]`` entries for colour masks.
        label_map: raw id -> id remapping applied after the palette.

    Raises:
        FileNotFoundError: ``root``, ``root/images`` or ``root/masks`` is missing.
        DataError: no image/mask pair at all, or two images (or masks) share a stem.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        palette: Sequence[Sequence[int]] | None = None,
        label_map: Mapping[int, int] | None = None,
    ) -> None:
        folder = _require_path(root, "a folder with images/ and masks/")
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Dataset path is not a folder. Expected a folder with images/ and masks/. Received: {str(folder)!r}."
            )
        for sub in ("images", "masks"):
            if not (folder / sub).is_dir():
                raise FileNotFoundError(
                    f"Dataset folder has no {sub}/ subfolder. Expected {str(folder / sub)!r}. "
                    f"Received: {sorted(p.name for p in folder.iterdir())}."
                )
        # Absolute, so reports and quarantine files still point at the data from another directory.
        self.root = str(folder.resolve())
        self._folder = folder
        self._palette = tuple(tuple(int(v) for v in p) for p in palette) if palette else None
        self._lut = label_lut(label_map)
        images = _index_files(folder / "images", IMAGE_SUFFIXES)
        masks = _index_files(folder / "masks", (MASK_SUFFIX,))
        self._images = {k: images[k] for k in sorted(images.keys() & masks.keys())}
        self._masks = {k: masks[k] for k in self._images}
        self.unmatched_images = sorted(f"images/{images[k]}" for k in images.keys() - masks.keys())
        self.unmatched_masks = sorted(f"masks/{masks[k]}" for k in masks.keys() - images.keys())
        if self.unmatched_images or self.unmatched_masks:
            logger.warning(
                "%s: %d images without a mask and %d masks without an image are left out (e.g. %s)",
                self.root, len(self.unmatched_images), len(self.unmatched_masks),
                (self.unmatched_images + self.unmatched_masks)[:3],
            )
        if not self._images:
            raise DataError(
                f"No image/mask pairs in {self.root!r}. Expected images/<id>{{{','.join(IMAGE_SUFFIXES)}}} "
                f"with masks/<id>.png. Received: {len(images)} images, {len(masks)} masks, none matching."
            )

    @property
    def unmatched(self) -> dict[str, list[str]]:
        """Files without a partner: ``{"images": [...], "masks": [...]}`` (paths relative to root)."""
        return {"images": list(self.unmatched_images), "masks": list(self.unmatched_masks)}

    def ids(self) -> list[str]:
        return list(self._images)

    def splits(self) -> dict[str, list[str]] | None:
        path = self._folder / SPLITS_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"Cannot read {str(path)!r}. Expected JSON {{split: [ids]}}. Received: {err}.") from None
        if not isinstance(raw, dict) or not all(
            isinstance(v, list) and all(isinstance(i, str) for i in v) for v in raw.values()
        ):
            raise DataError(
                f"Malformed {str(path)!r}. Expected a JSON object {{split name: [id, ...]}}. "
                f"Received: {type(raw).__name__}."
            )
        return {str(name): list(ids) for name, ids in raw.items()}

    def read(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        return self.read_image(sample_id), self.read_mask(sample_id)

    def read_image(self, sample_id: str) -> np.ndarray:
        """The image alone, uint8 (H, W, C) as stored."""
        return decode_image(self._folder / "images" / self._file(self._images, sample_id))

    def read_mask(self, sample_id: str) -> np.ndarray:
        """The mask alone, uint8 (H, W) after palette and label_map."""
        return decode_mask(self._folder / "masks" / self._file(self._masks, sample_id), self._palette, self._lut)

    def image_name(self, sample_id: str) -> str:
        return f"images/{self._file(self._images, sample_id)}"

    def mask_name(self, sample_id: str) -> str:
        return f"masks/{self._file(self._masks, sample_id)}"

    def _file(self, table: dict[str, str], sample_id: str) -> str:
        try:
            return table[sample_id]
        except KeyError:
            raise DataError(
                f"Unknown sample id in {self.root!r}. Expected an id with both an image and a mask. "
                f"Received: {sample_id!r}."
            ) from None


def _index_files(folder: Path, suffixes: Sequence[str]) -> dict[str, str]:
    """Map file stem -> file name for files with one of ``suffixes`` (case-insensitive)."""
    found: dict[str, str] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        stem, suffix = os.path.splitext(entry.name)
        if suffix.lower() not in suffixes or entry.name.startswith(".") or not entry.is_file():
            continue
        if stem in found:
            raise DataError(
                f"Two files share the id {stem!r} in {str(folder)!r}. Expected one file per id. "
                f"Received: {found[stem]!r} and {entry.name!r}."
            )
        found[stem] = entry.name
    return found


# === NPZ (AN2DL layout) ===


class NpzSource(DataSource):
    """The AN2DL course ``.npz``: ``training_set`` (N, 2, H, W) and optional ``test_set`` (N, H, W).

    The archive is read with ``allow_pickle=False``: an archive holding pickled (object) arrays is
    refused, never unpickled, because unpickling runs arbitrary code.

    Image values are converted to uint8 by one rule per array, decided on the whole array so a dark
    image is not rescaled differently from its neighbours:

    * integer dtypes: values must lie in 0..255 and are kept;
    * float dtypes with every value in [0, 1]: scaled, ``round(x * 255)``;
    * float dtypes with values in [0, 255] (some above 1): ``round(x)``;
    * NaN, Inf, negative values or values above 255: DataError.

    Masks (channel 1 of ``training_set``) must hold whole numbers in 0..255 (never rescaled), then
    ``label_map`` applies. Ids are ``train_00000``... and ``test_00000``...

    Args:
        path: the ``.npz`` file.
        label_map: raw id -> id remapping applied to masks.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: not an npz, pickled content, missing ``training_set``, wrong shape, bad values,
            or no samples.
    """

    def __init__(self, path: str | os.PathLike, label_map: Mapping[int, int] | None = None) -> None:
        file = _require_path(path, "an AN2DL .npz file with a training_set array")
        self.root = str(file.resolve())
        arrays, stored = _load_npz(file, ("training_set", "test_set"))
        if "training_set" not in arrays:
            raise DataError(
                f"{self.root!r} has no training_set array. Expected keys training_set [, test_set]. "
                f"Received: {sorted(stored)}."
            )
        train = arrays["training_set"]
        if train.ndim != 4 or train.shape[1] != 2:
            raise DataError(
                f"training_set in {self.root!r} has the wrong shape. Expected (N, 2, H, W) (image, mask). "
                f"Received: shape {tuple(train.shape)}."
            )
        if train.shape[0] == 0:
            raise DataError(f"training_set in {self.root!r} is empty. Expected N >= 1. Received: shape {train.shape}.")
        self._images = to_uint8_images(train[:, 0], f"{self.root}:training_set images")[..., None]
        masks = _to_uint8_ids(train[:, 1], f"{self.root}:training_set masks")
        lut = label_lut(label_map)
        self._masks = lut[masks] if lut is not None else masks
        self._ids = _numbered("train", len(self._images))
        self._index = {k: n for n, k in enumerate(self._ids)}
        self._test = self._read_test(arrays.get("test_set"))

    def _read_test(self, test: np.ndarray | None) -> np.ndarray:
        h, w = self._images.shape[1:3]
        if test is None:
            return np.zeros((0, h, w, 1), dtype=np.uint8)
        if test.ndim != 3:
            raise DataError(
                f"test_set in {self.root!r} has the wrong shape. Expected (N, H, W) (images only). "
                f"Received: shape {tuple(test.shape)}."
            )
        return to_uint8_images(test, f"{self.root}:test_set")[..., None]

    def ids(self) -> list[str]:
        return list(self._ids)

    def read(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        n = self._position(sample_id)
        return self._images[n], self._masks[n]

    def read_image(self, sample_id: str) -> np.ndarray:
        return self._images[self._position(sample_id)]

    def read_mask(self, sample_id: str) -> np.ndarray:
        return self._masks[self._position(sample_id)]

    def test_images(self) -> tuple[list[str], np.ndarray]:
        """The unlabelled ``test_set``: ids ``test_00000``... and uint8 images (N, H, W, 1).

        Returns an empty (0, H, W, 1) array when the archive has no ``test_set``.
        """
        return _numbered("test", len(self._test)), self._test

    def _position(self, sample_id: str) -> int:
        try:
            return self._index[sample_id]
        except KeyError:
            raise DataError(
                f"Unknown sample id in {self.root!r}. Expected train_00000..{self._ids[-1]}. Received: {sample_id!r}."
            ) from None


def _load_npz(file: Path, keys: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays named ``keys`` that the archive holds, and the names of all it holds."""
    pickled = (
        f"{str(file)!r} contains pickled objects; roverlite never unpickles data files (unpickling can "
        "run arbitrary code). Expected plain numeric arrays saved with np.savez. Received: object arrays."
    )
    try:
        with open(file, "rb") as fh:
            magic = fh.read(6)
        if magic.startswith(b"\x80"):  # the PROTO opcode that starts a pickle (protocol 2 and later)
            raise DataError(pickled)
        if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
            # np.load would take any other file for a pickle and say so; it is not an archive at all.
            raise DataError(
                f"{str(file)!r} is not an .npz archive. Expected np.savez output (a zip of .npy arrays). "
                f"Received: a file starting with {magic!r}."
            )
        archive = np.load(file, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(
                f"{str(file)!r} is not an .npz archive. Expected np.savez output. Received: a single .npy array."
            )
        with archive:
            extra = [k for k in archive.files if k not in keys]
            if extra:
                logger.info("%s: ignoring arrays %s (only %s are used)", file, extra, list(keys))
            # Members are read eagerly inside the try: NpzFile refuses object arrays only on access.
            arrays = {k: archive[k] for k in keys if k in archive.files}
            names = list(archive.files)
        raw = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
        if raw:  # NpzFile returns a member without the .npy header as bytes
            raise DataError(
                f"{str(file)!r} holds members that are not .npy arrays. Expected np.savez output. Received: {raw}."
            )
        return arrays, names
    except ValueError as err:
        if isinstance(err, DataError):
            raise
        if "pickle" in str(err).lower() or "object arrays" in str(err).lower():
            raise DataError(pickled) from None
        raise DataError(
            f"Cannot read {str(file)!r}. Expected an .npz archive of numeric arrays. Received: {err}."
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as err:
        # zlib.error: a damaged deflate stream; NotImplementedError: zipfile meets an unknown
        # compression method or zip feature.
        raise DataError(f"Cannot read {str(file)!r}. Expected a complete .npz archive. Received: {err}.") from None
    except MemoryError:
        raise DataError(
            f"Cannot read {str(file)!r}. Expected arrays that fit in memory. Received: an array header "
            "claiming more memory than this machine has."
        ) from None


def _numbered(prefix: str, count: int) -> list[str]:
    width = max(5, len(str(max(count - 1, 0))))
    return [f"{prefix}_{n:0{width}d}" for n in range(count)]


def to_uint8_images(values: np.ndarray, where: str) -> np.ndarray:
    """Convert an image array to uint8 by the rule documented in :class:`NpzSource`.

    Raises:
        DataError: non-numeric dtype, NaN/Inf, or values outside 0..255.
    """
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind not in "iuf":
        raise DataError(
            f"{where}: unsupported dtype. Expected uint8, integer or float images. Received: {values.dtype}."
        )
    if values.size == 0:
        return values.astype(np.uint8)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise DataError(
            f"{where} holds NaN or Inf. Expected finite pixel values. Received: {_count_nonfinite(values)}."
        )
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 255:
        raise DataError(f"{where}: pixel values out of range. Expected 0..1 or 0..255. Received: {low:g}..{high:g}.")
    if values.dtype.kind == "f" and high <= 1.0:
        logger.info("%s: float values in [0, 1], scaled by 255 to uint8", where)
        values = values * 255.0
    return np.rint(values).astype(np.uint8) if values.dtype.kind == "f" else values.astype(np.uint8)


def _to_uint8_ids(values: np.ndarray, where: str) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind not in "iuf":
        raise DataError(f"{where}: unsupported dtype. Expected integer label ids. Received: {values.dtype}.")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise DataError(f"{where} holds NaN or Inf. Expected whole label ids. Received: {_count_nonfinite(values)}.")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise DataError(
            f"{where}: label ids out of range. Expected 0..255. Received: {values.min():g}..{values.max():g}."
        )
    if values.dtype.kind == "f" and not np.array_equal(values, np.rint(values)):
        example = float(values[values != np.rint(values)].flat[0])
        raise DataError(
            f"{where}: fractional label values. Expected whole ids (masks are never rescaled). "
            f"Received: e.g. {example:g}."
        )
    return values.astype(np.uint8)


def _count_nonfinite(values: np.ndarray) -> str:
    return f"{int(np.isnan(values).sum())} NaN and {int(np.isinf(values).sum())} Inf values"


# === Opening a source by format name ===


def _open_folder(cfg: DataConfig) -> DataSource:
    return FolderSource(cfg.path, palette=cfg.palette, label_map=cfg.label_map)


def _open_npz(cfg: DataConfig) -> DataSource:
    return NpzSource(cfg.path, label_map=cfg.label_map)


def _open_synthetic(cfg: DataConfig) -> DataSource:
    # Imported lazily: the generator is only needed when a config asks for it.
    from roverlite.data.synthetic import SyntheticSource

    return SyntheticSource(count=cfg.synthetic_count, image_size=cfg.image_size, seed=cfg.split_seed)


SOURCES: dict[str, Callable[[DataConfig], DataSource]] = {
    "folder": _open_folder,
    "npz": _open_npz,
    "synthetic": _open_synthetic,
}


def open_source(data_cfg: DataConfig) -> DataSource:
    """Open the dataset a config describes, by its ``format`` name.

    Args:
        data_cfg: the run's data section.

    Returns:
        A :class:`DataSource` whose masks already have the palette and label_map applied.

    Raises:
        FileNotFoundError: ``data_cfg.path`` does not exist.
        DataError: the data is unreadable or empty.
        ValueError: the format is not one of :data:`SOURCES`.
    """
    try:
        opener = SOURCES[data_cfg.format]
    except KeyError:
        raise ValueError(
            f"Unknown data format. Expected one of {sorted(SOURCES)}. Received: {data_cfg.format!r}."
        ) from None
    return opener(data_cfg)
