"""Dataset audit: shares, every kind of bad file recorded without stopping, repeated masks, quarantine."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from roverlite.config import DataConfig
from roverlite.data.audit import MIN_REPEATS, audit, run_audit, write_audit
from roverlite.data.formats import FolderSource
from roverlite.data.loader import load_split

MARS = DataConfig(format="folder", path="unused", classes=("soil", "bedrock", "sand", "big_rock"))


def _mask(root, sample_id: str) -> np.ndarray:
    return np.asarray(Image.open(root / "masks" / f"{sample_id}.png")).copy()


def _pixel_shares(root) -> dict[int, float]:
    counts = sum(np.bincount(np.asarray(Image.open(p)).ravel(), minlength=256) for p in (root / "masks").iterdir())
    return {int(i): counts[i] / counts.sum() for i in np.flatnonzero(counts)}


# === Clean data ===


def test_audit_without_config_keys_shares_by_id_string_for_ids_that_occur(tiny_folder_dataset):
    root = tiny_folder_dataset(n=6, num_classes=3)
    report = audit(root)
    expected = _pixel_shares(root)
    assert list(report.class_shares) == [str(i) for i in sorted(expected)] == ["0", "1", "2", "255"]
    for class_id, share in expected.items():
        assert report.class_shares[str(class_id)] == pytest.approx(share)
    assert report.quarantine == [] and report.num_samples == 6


def test_audit_with_config_names_classes_and_the_ignore_label(tiny_folder_dataset):
    root = tiny_folder_dataset(n=6, num_classes=3)
    cfg = DataConfig(format="folder", path=str(root), classes=("soil", "rock", "sand", "ice"), ignore_name="void")
    report = audit(FolderSource(root), cfg)
    assert list(report.class_shares) == ["soil", "rock", "sand", "ice", "void"]
    assert report.class_shares["ice"] == 0.0
    assert sum(report.class_shares.values()) == pytest.approx(1.0)
    # Sample k's four stripes are classes k, k+1, k+2, k+3 (mod 3): class k % 3 covers two of them.
    assert report.dominant == {f"s{k:03d}": ("soil", "rock", "sand")[k % 3] for k in range(6)}


def test_summary_text_is_a_table_of_shares_and_problem_counts(tiny_folder_dataset):
    root = tiny_folder_dataset(n=4)
    text = audit(root, DataConfig(format="folder", path=str(root))).summary_text()
    assert "soil" in text and "unlabelled" in text and "%" in text
    assert "quarantined" in text and "unreadable" in text


# === Bad files are recorded, never fatal ===


@pytest.fixture
def damaged(tiny_folder_dataset):
    """A 10-sample dataset with one of each problem the audit must find."""
    root = tiny_folder_dataset(n=10, size=(32, 32))
    (root / "images" / "s001.png").write_bytes((root / "images" / "s001.png").read_bytes()[:60])
    Image.fromarray(np.zeros((32, 30), np.uint8)).save(root / "masks" / "s002.png")
    mask = _mask(root, "s003")
    mask[0, 0] = 9
    Image.fromarray(mask).save(root / "masks" / "s003.png")
    shutil.copy(root / "images" / "s004.png", root / "images" / "s005.png")
    (root / "masks" / "s006.png").unlink()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "masks" / "stray.png")
    return root


def test_audit_records_every_bad_file_and_keeps_going(damaged):
    report = audit(damaged, DataConfig(format="folder", path=str(damaged)))
    assert report.unreadable == ["images/s001.png"]
    assert report.size_mismatch == ["images/s002.png"]
    assert report.invalid_ids == ["masks/s003.png"]
    assert "[9]" in report.details["masks/s003.png"]
    assert report.exact_duplicate_images == [["images/s004.png", "images/s005.png"]]
    assert report.unmatched == {"images": ["images/s006.png"], "masks": ["masks/stray.png"]}
    assert report.num_samples == 9


def test_quarantine_is_the_union_of_problems_with_reasons_keeping_the_first_duplicate(damaged):
    report = audit(damaged, DataConfig(format="folder", path=str(damaged)))
    reasons = {entry["id"]: " ".join(entry["reasons"]) for entry in report.quarantine}
    assert sorted(reasons) == ["s001", "s002", "s003", "s005"]
    assert "unreadable" in reasons["s001"] and "size mismatch" in reasons["s002"]
    assert "invalid ids" in reasons["s003"] and "duplicate image of images/s004.png" in reasons["s005"]


def test_written_quarantine_makes_load_split_skip_the_bad_samples(damaged, tmp_path):
    cfg = DataConfig(format="folder", path=str(damaged), image_size=(16, 16))
    report = audit(damaged, cfg)
    write_audit(report, tmp_path / "audit.json", quarantine_path=tmp_path / "quarantine.json")
    assert json.loads((tmp_path / "audit.json").read_text())["invalid_ids"] == ["masks/s003.png"]
    arrays = load_split(cfg, "all", quarantine=tmp_path / "quarantine.json")
    assert arrays.ids == ["s000", "s004", "s007", "s008", "s009"]
    # The full report is accepted as a quarantine too.
    assert load_split(cfg, "all", quarantine=tmp_path / "audit.json").ids == arrays.ids


def test_unusable_samples_are_flagged_for_the_exit_code_but_duplicates_are_not(damaged, tiny_folder_dataset):
    assert audit(damaged).has_unusable_samples
    clean = tiny_folder_dataset(n=3, name="clean")
    shutil.copy(clean / "images" / "s000.png", clean / "images" / "s001.png")
    report = audit(clean)
    assert report.exact_duplicate_images and not report.has_unusable_samples


def test_run_audit_opens_the_path_and_writes_report_and_quarantine(damaged, tmp_path):
    report = run_audit(damaged, json_path=tmp_path / "a.json", quarantine_path=tmp_path / "q.json", workers=1)
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["unreadable"] == report.unreadable == ["images/s001.png"] and saved["has_unusable_samples"]
    quarantined = [e["id"] for e in json.loads((tmp_path / "q.json").read_text())["entries"]]
    # Without a config every id below 255 is a class, so s003's stray id 9 is not an error here.
    assert quarantined == ["s001", "s002", "s005"]


def test_run_audit_reads_an_npz_path_without_a_config(tmp_path):
    images = np.random.default_rng(0).random((6, 8, 8))
    masks = np.tile(np.arange(8) % 3, (6, 8, 1)).astype(float)
    np.savez(tmp_path / "course.npz", training_set=np.stack([images, masks], axis=1))
    report = run_audit(tmp_path / "course.npz", progress=True)
    assert report.num_samples == 6 and list(report.class_shares) == ["0", "1", "2"]
    # Six copies of one 3-class mask form a repeated group (min_repeats 5).
    assert len(report.repeated_mask_outliers) == 6


def test_audit_reports_channels_that_do_not_fit_the_color_mode(tiny_folder_dataset):
    root = tiny_folder_dataset(n=3, channels=3)
    report = audit(root, DataConfig(format="folder", path=str(root)))
    assert report.channel_mismatch == ["images/s000.png", "images/s001.png", "images/s002.png"]


# === Repeated masks ===


def test_identical_masks_are_flagged_from_min_repeats_on(tiny_folder_dataset):
    root = tiny_folder_dataset(n=8, num_classes=10)  # 10 classes: the 8 factory masks all differ
    for k in range(1, MIN_REPEATS - 1):
        shutil.copy(root / "masks" / "s000.png", root / "masks" / f"s{k:03d}.png")
    assert audit(root).repeated_mask_outliers == []
    shutil.copy(root / "masks" / "s000.png", root / "masks" / f"s{MIN_REPEATS - 1:03d}.png")
    report = audit(root)
    assert report.repeated_mask_outliers == [f"images/s{k:03d}.png" for k in range(MIN_REPEATS)]
    assert report.repeated_mask_groups == [report.repeated_mask_outliers]


def test_repeated_simple_masks_are_legitimate_and_only_listed_for_information(tiny_folder_dataset):
    root = tiny_folder_dataset(n=12)
    # A single class under an unlabelled band (the far-range cut-off) and all-unlabelled frames:
    # the masks that repeat in real data, e.g. AI4Mars resampled to the AN2DL size.
    band = np.zeros((16, 24), np.uint8)
    band[:5] = 255
    for k in range(6):
        Image.fromarray(band).save(root / "masks" / f"s{k:03d}.png")
        Image.fromarray(np.full((16, 24), 255, np.uint8)).save(root / "masks" / f"s{k + 6:03d}.png")
    report = audit(root)
    assert report.repeated_mask_outliers == [] and report.quarantine == []
    assert report.simple_masks == {"0": 6, "255": 6}
    assert len(report.repeated_simple_mask_groups) == 2


def test_background_outside_eval_classes_does_not_count_as_a_labelled_class(tiny_folder_dataset):
    # AN2DL layout: class 0 "background" holds the old unlabelled pixels and is not evaluated, so a
    # soil mask under a background band is as simple (and as legitimately repeated) as in AI4Mars.
    root = tiny_folder_dataset(n=6)
    band = np.ones((16, 24), np.uint8)
    band[:5] = 0
    for k in range(6):
        Image.fromarray(band).save(root / "masks" / f"s{k:03d}.png")
    cfg = DataConfig(
        format="folder", path=str(root), classes=("background", "soil", "bedrock"), ignore_index=None,
        eval_classes=("soil", "bedrock"),
    )
    report = audit(root, cfg)
    assert report.repeated_mask_outliers == [] and report.simple_masks == {"soil": 6}
    assert len(audit(root).repeated_mask_outliers) == 6


def test_min_repeats_below_two_is_refused(tiny_folder_dataset):
    with pytest.raises(ValueError, match="min_repeats"):
        audit(tiny_folder_dataset(n=2), min_repeats=1)


# === Real data ===


def test_planted_group_of_20_repeated_masks_is_found_exactly_and_skipped_by_the_loader(shared_datasets, tmp_path):
    mars = FolderSource(shared_datasets / "ai4mars-msl")
    ids = mars.ids()[:60]
    root = tmp_path / "mars"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for sample_id in ids:
        shutil.copy(shared_datasets / "ai4mars-msl" / mars.image_name(sample_id), root / "images")
        shutil.copy(shared_datasets / "ai4mars-msl" / mars.mask_name(sample_id), root / "masks")
    # One mask from outside the copy pasted onto 20 images: a group of exactly 20, like the AN2DL aliens.
    pasted = next(i for i in mars.ids()[60:] if np.count_nonzero(np.bincount(mars.read_mask(i).ravel())[:255]) >= 2)
    planted = ids[1::3]
    assert len(planted) == 20
    for sample_id in planted:
        shutil.copy(shared_datasets / "ai4mars-msl" / mars.mask_name(pasted), root / "masks" / f"{sample_id}.png")
    cfg = DataConfig(format="folder", path=str(root), image_size=(64, 64))

    report = audit(root, cfg)
    assert report.repeated_mask_outliers == sorted(f"images/{i}.jpg" for i in planted)
    assert sorted(entry["id"] for entry in report.quarantine) == sorted(planted)
    write_audit(report, tmp_path / "audit.json", quarantine_path=tmp_path / "quarantine.json")
    loaded = load_split(cfg, "all", quarantine=tmp_path / "quarantine.json")
    assert sorted(loaded.ids) == sorted(set(ids) - set(planted))


def test_full_ai4mars_audit_matches_published_shares_in_under_60_seconds(shared_datasets):
    cfg = DataConfig(format="folder", path=str(shared_datasets / "ai4mars-msl"))
    started = time.perf_counter()
    report = audit(shared_datasets / "ai4mars-msl", cfg)
    elapsed = time.perf_counter() - started
    published = {"soil": 21.2, "bedrock": 28.5, "sand": 6.7, "big_rock": 0.49, "unlabelled": 43.1}
    for name, percent in published.items():
        assert 100 * report.class_shares[name] == pytest.approx(percent, abs=0.2)
    assert report.num_samples == 6000 and report.quarantine == []
    assert report.repeated_mask_outliers == [] and report.exact_duplicate_images == []
    assert elapsed < 60


def test_cwfid_audit_matches_published_shares(shared_datasets):
    cfg = DataConfig(
        format="folder", path=str(shared_datasets / "cwfid"), classes=("soil", "crop", "weed"), ignore_index=None,
        color_mode="rgb", mean=(0.5,), std=(0.25,),
    )
    report = audit(shared_datasets / "cwfid", cfg)
    for name, percent in {"soil": 92.6, "crop": 1.6, "weed": 5.9}.items():
        assert 100 * report.class_shares[name] == pytest.approx(percent, abs=0.2)
    assert report.num_samples == 40 and report.quarantine == []
