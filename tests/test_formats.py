"""Dataset formats: folder (ids, colour masks, label maps, unmatched files), AN2DL npz, and open_source."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from roverlite.config import DataConfig
from roverlite.data.formats import SOURCES, FolderSource, NpzSource, open_source
from roverlite.data.source import DataError

# === Folder ===


def test_folder_source_pairs_images_and_masks_by_stem(tiny_folder_dataset):
    root = tiny_folder_dataset(n=3, image_ext=".jpg")
    source = FolderSource(root)
    assert source.ids() == ["s000", "s001", "s002"]
    image, mask = source.read("s001")
    assert image.dtype == np.uint8 and image.shape == (16, 24, 1)
    assert mask.dtype == np.uint8 and mask.shape == (16, 24)
    assert source.image_name("s001") == "images/s001.jpg"
    assert source.mask_name("s001") == "masks/s001.png"
    assert source.splits() is None


def test_image_without_mask_and_mask_without_image_are_listed_not_fatal(tiny_folder_dataset):
    root = tiny_folder_dataset(n=3)
    (root / "masks" / "s000.png").unlink()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "masks" / "orphan.png")
    source = FolderSource(root)
    assert source.ids() == ["s001", "s002"]
    assert source.unmatched == {"images": ["images/s000.png"], "masks": ["masks/orphan.png"]}


def test_colour_masks_are_mapped_to_ids_through_the_palette(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    colours = np.array([[[0, 0, 0], [0, 255, 0], [255, 0, 0]]] * 2, np.uint8)
    Image.fromarray(colours).save(tmp_path / "masks" / "a.png")
    source = FolderSource(tmp_path, palette=[(0, 0, 0, 0), (0, 255, 0, 1), (255, 0, 0, 2)])
    assert source.read("a")[1].tolist() == [[0, 1, 2], [0, 1, 2]]


def test_unknown_palette_colour_is_a_data_error_naming_file_and_colour(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.full((2, 2, 3), (9, 8, 7), np.uint8)).save(tmp_path / "masks" / "a.png")
    source = FolderSource(tmp_path, palette=[(0, 0, 0, 0)])
    with pytest.raises(DataError, match=r"masks/a\.png.*Received: colour \[9, 8, 7\]"):
        source.read("a")


def test_colour_mask_without_palette_is_refused(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DataError, match="palette is not set"):
        FolderSource(tmp_path).read("a")


def test_label_map_remaps_listed_ids_and_keeps_the_others(tiny_folder_dataset):
    root = tiny_folder_dataset(n=1)
    raw = FolderSource(root).read("s000")[1]
    mapped = FolderSource(root, label_map={255: 0, 0: 1, 1: 2}).read("s000")[1]
    expected = raw.copy()
    expected[raw == 255], expected[raw == 0], expected[raw == 1] = 0, 1, 2
    np.testing.assert_array_equal(mapped, expected)


def test_missing_folder_raises_file_not_found_with_expected_and_received(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Expected .*Received: .*nowhere"):
        FolderSource(tmp_path / "nowhere")


def test_folder_without_masks_subfolder_is_reported(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="masks/"):
        FolderSource(tmp_path)


def test_empty_folder_is_a_data_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="No image/mask pairs"):
        FolderSource(tmp_path)


def test_truncated_jpeg_is_a_data_error_naming_the_file(tiny_folder_dataset):
    root = tiny_folder_dataset(n=2, size=(64, 64), image_ext=".jpg")
    jpeg = root / "images" / "s001.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    with pytest.raises(DataError, match=r"s001\.jpg"):
        FolderSource(root).read("s001")


def test_two_images_sharing_one_id_are_refused(tiny_folder_dataset):
    root = tiny_folder_dataset(n=1)
    Image.fromarray(np.zeros((16, 24), np.uint8)).save(root / "images" / "s000.jpg")
    with pytest.raises(DataError, match="s000.jpg.*s000.png|s000.png.*s000.jpg"):
        FolderSource(root)


# === NPZ ===


def _an2dl(tmp_path: Path, training_set: np.ndarray, **extra: np.ndarray) -> Path:
    path = tmp_path / "an2dl.npz"
    np.savez(path, training_set=training_set, **extra)
    return path


def _training_set(n: int = 3, dtype=np.float32, scale: float = 1.0) -> np.ndarray:
    images = np.linspace(0, 1, n * 8 * 8, dtype=np.float64).reshape(n, 8, 8) * scale
    masks = (np.arange(n * 8 * 8).reshape(n, 8, 8) % 5).astype(np.float64)
    return np.stack([images, masks], axis=1).astype(dtype)


def test_npz_training_set_loads_with_numbered_ids_and_separate_test_images(tmp_path):
    test_set = np.zeros((2, 8, 8), np.float32)
    source = NpzSource(_an2dl(tmp_path, _training_set(3), test_set=test_set))
    assert source.ids() == ["train_00000", "train_00001", "train_00002"]
    image, mask = source.read("train_00002")
    assert image.shape == (8, 8, 1) and image.dtype == np.uint8
    assert mask.tolist() == (np.arange(128, 192).reshape(8, 8) % 5).tolist()
    test_ids, test_images = source.test_images()
    assert test_ids == ["test_00000", "test_00001"] and test_images.shape == (2, 8, 8, 1)


def test_npz_without_test_set_gives_no_test_images(tmp_path):
    _, test_images = NpzSource(_an2dl(tmp_path, _training_set(2))).test_images()
    assert test_images.shape == (0, 8, 8, 1)


@pytest.mark.parametrize(
    ("dtype", "scale"),
    [(np.float32, 1.0), (np.float64, 255.0), (np.uint8, 255.0)],
    ids=["unit-float", "255-float", "uint8"],
)
def test_npz_images_in_either_float_range_or_uint8_become_the_same_uint8(tmp_path, dtype, scale):
    reference = np.rint(_training_set(2, np.float64)[:, 0] * 255).astype(np.uint8)
    training = _training_set(2, np.float64, scale)
    training = np.rint(training).astype(dtype) if dtype == np.uint8 else training.astype(dtype)
    source = NpzSource(_an2dl(tmp_path, training))
    np.testing.assert_array_equal(source.read("train_00001")[0][..., 0], reference[1])


def test_npz_with_nan_images_is_refused(tmp_path):
    training = _training_set(2)
    training[1, 0, 3, 3] = np.nan
    with pytest.raises(DataError, match=r"NaN or Inf.*1 NaN"):
        NpzSource(_an2dl(tmp_path, training))


def test_npz_with_fractional_mask_values_is_refused(tmp_path):
    training = _training_set(2)
    training[0, 1, 0, 0] = 0.5
    with pytest.raises(DataError, match="whole ids"):
        NpzSource(_an2dl(tmp_path, training))


def test_npz_with_wrong_shape_states_expected_and_received_shape(tmp_path):
    with pytest.raises(DataError, match=r"Expected \(N, 2, H, W\).*Received: shape \(3, 8, 8\)"):
        NpzSource(_an2dl(tmp_path, np.zeros((3, 8, 8), np.float32)))


def test_npz_without_training_set_lists_the_keys_it_has(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, images=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match=r"no training_set.*\['images'\]"):
        NpzSource(path)


class _Trap:
    """Unpickling this object writes a marker file: proof that a loader unpickled it."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_npz_with_pickled_objects_is_refused_without_unpickling(tmp_path):
    trap = _Trap()
    trap.marker = str(tmp_path / "unpickled")
    path = tmp_path / "evil.npz"
    np.savez(path, training_set=np.array([trap, trap], dtype=object))
    with pytest.raises(DataError, match="contains pickled objects; roverlite never unpickles"):
        NpzSource(path)
    assert not (tmp_path / "unpickled").exists()


def test_pickle_file_named_npz_is_refused_without_unpickling(tmp_path):
    trap = _Trap()
    trap.marker = str(tmp_path / "unpickled")
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps(trap))
    with pytest.raises(DataError, match="contains pickled objects"):
        NpzSource(path)
    assert not (tmp_path / "unpickled").exists()


def test_missing_npz_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Expected an AN2DL \.npz.*Received: .*absent\.npz"):
        NpzSource(tmp_path / "absent.npz")


def test_npz_with_no_samples_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="empty"):
        NpzSource(_an2dl(tmp_path, np.zeros((0, 2, 8, 8), np.float32)))


# === open_source ===


def test_open_source_has_one_entry_per_config_format():
    from roverlite.config import DATA_FORMATS

    assert sorted(SOURCES) == sorted(DATA_FORMATS)


def test_open_source_opens_folder_and_npz_with_palette_and_label_map(tmp_path, tiny_folder_dataset):
    root = tiny_folder_dataset(n=2)
    folder = open_source(DataConfig(format="folder", path=str(root), label_map={255: 3}))
    assert isinstance(folder, FolderSource) and 255 not in folder.read("s000")[1]
    npz = open_source(DataConfig(format="npz", path=str(_an2dl(tmp_path, _training_set(2))), label_map={4: 0}))
    assert isinstance(npz, NpzSource) and 4 not in npz.read("train_00000")[1]


def test_open_source_builds_synthetic_lazily_from_the_config(monkeypatch):
    calls = {}

    class FakeSynthetic:
        def __init__(self, count, image_size, seed):
            calls.update(count=count, image_size=image_size, seed=seed)

    module = types.ModuleType("roverlite.data.synthetic")
    module.SyntheticSource = FakeSynthetic
    monkeypatch.setitem(sys.modules, "roverlite.data.synthetic", module)
    source = open_source(DataConfig(format="synthetic", synthetic_count=9, image_size=(32, 48), split_seed=4))
    assert isinstance(source, FakeSynthetic)
    assert calls == {"count": 9, "image_size": (32, 48), "seed": 4}


def test_open_source_missing_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="Received: .*missing"):
        open_source(DataConfig(format="folder", path=str(tmp_path / "missing")))
