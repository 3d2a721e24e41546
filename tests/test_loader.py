"""load_split: splits, quarantine, caps, per-sample validation, resizing, and the real datasets."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from roverlite.config import DataConfig
from roverlite.data.formats import FolderSource, NpzSource
from roverlite.data.loader import GRAY_TOLERANCE, channel_spread, load_split, normalize, split_ids
from roverlite.data.source import DataError
from roverlite.data.splits import write_splits


def _cfg(root, **changes) -> DataConfig:
    return DataConfig(**{"format": "folder", "path": str(root), "image_size": (8, 12), **changes})


# === Happy path ===


def test_load_split_resizes_images_bilinear_and_masks_nearest(tiny_folder_dataset):
    root = tiny_folder_dataset(n=6)
    arrays = load_split(_cfg(root), "all")
    assert arrays.images.shape == (6, 8, 12, 1) and arrays.images.dtype == np.uint8
    assert arrays.masks.shape == (6, 8, 12) and arrays.masks.dtype == np.uint8
    assert arrays.ids == [f"s{k:03d}" for k in range(6)]
    source = FolderSource(root)
    for k, sample_id in enumerate(arrays.ids):
        image, mask = source.read(sample_id)
        expected_image = Image.fromarray(image[..., 0]).resize((12, 8), Image.Resampling.BILINEAR)
        expected_mask = Image.fromarray(mask).resize((12, 8), Image.Resampling.NEAREST)
        np.testing.assert_array_equal(arrays.images[k, ..., 0], np.asarray(expected_image))
        np.testing.assert_array_equal(arrays.masks[k], np.asarray(expected_mask))


def test_loading_with_one_worker_or_several_gives_the_same_arrays(tiny_folder_dataset):
    cfg = _cfg(tiny_folder_dataset(n=6))
    one, three = load_split(cfg, "all", workers=1), load_split(cfg, "all", workers=3, progress=True)
    np.testing.assert_array_equal(one.images, three.images)
    np.testing.assert_array_equal(one.masks, three.masks)


def test_grayscale_config_accepts_three_equal_channels(tiny_folder_dataset):
    root = tiny_folder_dataset(n=2, size=(8, 12))
    gray = np.asarray(Image.open(root / "images" / "s000.png"))
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(root / "images" / "s000.png")
    arrays = load_split(_cfg(root), "all")
    np.testing.assert_array_equal(arrays.images[0, ..., 0], gray)


def test_rgb_config_loads_three_channel_images(tiny_folder_dataset):
    root = tiny_folder_dataset(n=2, channels=3)
    arrays = load_split(_cfg(root, color_mode="rgb", mean=(0.5,), std=(0.25,)), "all")
    assert arrays.images.shape == (2, 8, 12, 3)


def test_normalize_scales_to_unit_range_then_standardises_per_channel():
    images = np.array([[[[0, 255, 51]]]], np.uint8)
    out = normalize(images, mean=(0.0, 0.5, 0.2), std=(1.0, 0.5, 0.1))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(normalize(images, (0.5,), (0.5,))[0, 0, 0], [-1.0, 1.0, -0.6], atol=1e-6)
    with pytest.raises(ValueError, match="Expected 1 or 3 mean values"):
        normalize(images, (0.1, 0.2), (1.0,))


# === Splits, quarantine, cap ===


def test_predefined_splits_are_used_as_is(tiny_folder_dataset):
    root = tiny_folder_dataset(n=6)
    write_splits(root / "splits.json", {"train": ["s005", "s001"], "val": ["s002"]})
    assert load_split(_cfg(root), "train").ids == ["s001", "s005"]
    assert load_split(_cfg(root), "val").ids == ["s002"]


def test_unknown_split_lists_the_available_ones(tiny_folder_dataset):
    root = tiny_folder_dataset(n=4)
    write_splits(root / "splits.json", {"train": ["s000"], "holdout": ["s001"]})
    with pytest.raises(DataError, match=r"split 'val' is not defined.*\['holdout', 'train', 'all'\]"):
        load_split(_cfg(root), "val")


def test_empty_split_is_a_data_error(tiny_folder_dataset):
    root = tiny_folder_dataset(n=4)
    write_splits(root / "splits.json", {"train": ["s000", "s001"], "val": []})
    with pytest.raises(DataError, match="split 'val' is empty"):
        load_split(_cfg(root), "val")


def test_splits_naming_ids_absent_from_the_folder_are_refused(tiny_folder_dataset):
    root = tiny_folder_dataset(n=2)
    write_splits(root / "splits.json", {"train": ["s000", "ghost"]})
    with pytest.raises(DataError, match="ghost"):
        load_split(_cfg(root), "train")


def test_split_id_whose_mask_is_missing_is_skipped_with_a_warning(tiny_folder_dataset, caplog):
    root = tiny_folder_dataset(n=3)
    write_splits(root / "splits.json", {"train": ["s000", "s001", "s002"]})
    (root / "masks" / "s001.png").unlink()
    with caplog.at_level(logging.WARNING):
        assert load_split(_cfg(root), "train").ids == ["s000", "s002"]
    assert "s001" in caplog.text


def test_without_splits_json_a_stratified_split_covers_every_id_once(tiny_folder_dataset):
    root = tiny_folder_dataset(n=12)
    cfg = _cfg(root, val_fraction=0.25)
    train, val = load_split(cfg, "train"), load_split(cfg, "val")
    assert sorted(train.ids + val.ids) == [f"s{k:03d}" for k in range(12)]
    assert not set(train.ids) & set(val.ids)
    assert split_ids(FolderSource(root), cfg, "val") == val.ids


def test_quarantined_ids_are_skipped_from_a_file_or_a_list(tiny_folder_dataset, tmp_path):
    root = tiny_folder_dataset(n=5)
    quarantine = tmp_path / "quarantine.json"
    quarantine.write_text(json.dumps({"entries": [{"id": "s001", "reasons": ["test"]}]}))
    assert load_split(_cfg(root, quarantine=str(quarantine)), "all").ids == ["s000", "s002", "s003", "s004"]
    assert load_split(_cfg(root), "all", quarantine=["s000", "images/s004.png"]).ids == ["s001", "s002", "s003"]


def test_missing_quarantine_file_raises_file_not_found(tiny_folder_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="Quarantine file not found"):
        load_split(_cfg(tiny_folder_dataset(n=2)), "all", quarantine=tmp_path / "nope.json")


def test_max_images_caps_each_split_deterministically(tiny_folder_dataset):
    root = tiny_folder_dataset(n=10)
    cfg = _cfg(root, max_images=4)
    first = load_split(cfg, "all").ids
    assert len(first) == 4 and first == load_split(cfg, "all").ids
    assert first != load_split(_cfg(root, max_images=4, split_seed=1), "all").ids


def test_quarantining_one_capped_id_swaps_in_exactly_one_other(tiny_folder_dataset):
    root = tiny_folder_dataset(n=10)
    cfg = _cfg(root, max_images=4)
    before = load_split(cfg, "all").ids
    after = load_split(cfg, "all", quarantine=[before[0]]).ids
    assert len(set(before) & set(after)) == 3 and before[0] not in after


# === Bad samples: each is a DataError naming the file ===


def test_truncated_jpeg_is_a_data_error_naming_the_file(tiny_folder_dataset):
    root = tiny_folder_dataset(n=3, size=(64, 64), image_ext=".jpg")
    jpeg = root / "images" / "s002.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    with pytest.raises(DataError, match=r"images/s002\.jpg"):
        load_split(_cfg(root), "all")


def test_image_mask_size_mismatch_is_a_data_error_naming_both_files(tiny_folder_dataset):
    root = tiny_folder_dataset(n=3)
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(root / "masks" / "s001.png")
    with pytest.raises(DataError, match=r"images/s001\.png.*masks/s001\.png.*image \(16, 24\), mask \(16, 20\)"):
        load_split(_cfg(root), "all")


def test_mask_id_out_of_range_is_a_data_error_naming_the_mask(tiny_folder_dataset):
    root = tiny_folder_dataset(n=3, num_classes=4)
    mask = np.asarray(Image.open(root / "masks" / "s001.png")).copy()
    mask[0, 0] = 7
    Image.fromarray(mask).save(root / "masks" / "s001.png")
    with pytest.raises(DataError, match=r"masks/s001\.png.*0\.\.3 or 255.*ids \[7\]"):
        load_split(_cfg(root), "all")


def test_colour_image_under_grayscale_config_is_a_data_error_naming_the_file(tiny_folder_dataset):
    root = tiny_folder_dataset(n=2, channels=3)
    with pytest.raises(DataError, match=r"images/s000\.png.*grayscale.*differ by up to"):
        load_split(_cfg(root), "all")


def test_single_channel_image_under_rgb_config_is_a_data_error_naming_the_file(tiny_folder_dataset):
    root = tiny_folder_dataset(n=2, channels=1)
    with pytest.raises(DataError, match=r"images/s000\.png.*Expected 3 channels.*Received: 1 channel"):
        load_split(_cfg(root, color_mode="rgb"), "all")


# === Real data ===


def test_ai4mars_jpegs_are_grayscale_within_tolerance(shared_datasets):
    source = FolderSource(shared_datasets / "ai4mars-msl")
    spreads = [channel_spread(source.read_image(i)) for i in source.ids()[::60]]
    # Measured 0 on all 6,000: JPEG keeps neutral chroma exact, so the tolerance is pure headroom.
    assert max(spreads) <= GRAY_TOLERANCE


def test_ai4mars_subset_loads_as_grayscale_at_the_config_size(shared_datasets):
    cfg = DataConfig(format="folder", path=str(shared_datasets / "ai4mars-msl"), image_size=(128, 128), max_images=48)
    train, val = load_split(cfg, "train"), load_split(cfg, "val")
    assert train.images.shape == (48, 128, 128, 1) and val.masks.shape == (48, 128, 128)
    assert not set(train.ids) & set(val.ids)
    assert set(np.unique(np.concatenate([train.masks, val.masks])).tolist()) <= {0, 1, 2, 3, 255}


def test_cwfid_loads_as_rgb_with_three_classes(shared_datasets):
    cfg = DataConfig(
        format="folder", path=str(shared_datasets / "cwfid"), classes=("soil", "crop", "weed"),
        ignore_index=None, color_mode="rgb", mean=(0.5,), std=(0.25,), image_size=(120, 160), max_images=6,
    )
    train, val = load_split(cfg, "train"), load_split(cfg, "val")
    assert train.images.shape == (6, 120, 160, 3) and len(val) == 6
    assert set(np.unique(train.masks).tolist()) <= {0, 1, 2}
    assert channel_spread(train.images[0]) > GRAY_TOLERANCE


def test_an2dl_npz_written_from_ai4mars_pairs_loads_back(shared_datasets, tmp_path):
    source = FolderSource(shared_datasets / "ai4mars-msl")
    ids = source.ids()[:10]
    # The AN2DL layout: float images in [0, 1], masks with 255 -> 0 (background) and k -> k + 1.
    to_an2dl = np.arange(256, dtype=np.uint8)
    to_an2dl[:4] += 1
    to_an2dl[255] = 0
    pairs = [(source.read_image(i)[..., 0] / 255.0, to_an2dl[source.read_mask(i)].astype(np.float64)) for i in ids]
    np.savez(tmp_path / "mars.npz", training_set=np.stack([np.stack(p) for p in pairs]).astype(np.float32))

    npz = NpzSource(tmp_path / "mars.npz")
    for n, sample_id in enumerate(ids):
        image, mask = npz.read(f"train_{n:05d}")
        np.testing.assert_array_equal(image[..., 0], source.read_image(sample_id)[..., 0])
        np.testing.assert_array_equal(mask, to_an2dl[source.read_mask(sample_id)])
    cfg = DataConfig(
        format="npz", path=str(tmp_path / "mars.npz"), classes=("background", "soil", "bedrock", "sand", "big_rock"),
        ignore_index=None, image_size=(64, 128),
    )
    arrays = load_split(cfg, "all")
    assert arrays.images.shape == (10, 64, 128, 1) and set(np.unique(arrays.masks).tolist()) <= {0, 1, 2, 3, 4}
