"""The quantized self-check judges drops with a paired bootstrap over images: noise passes, real drops fail."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from export_helpers import DATA_CFG, band_scenes, trained_tiny_model

from roverlite.config import DataConfig
from roverlite.export import ExportSettings, Tolerances, export_model
from roverlite.export.verify import (
    DEFAULT_CHECK_IMAGES,
    _iou_deltas,
    _iou_failures,
    check_image_count,
    choose_check_images,
)

TWO_CLASSES = DataConfig(classes=("ground", "rock"), image_size=(8, 8), ignore_index=None)


def _scenes(n: int, rock_images: int) -> np.ndarray:
    """``n`` 8x8 masks; the first ``rock_images`` hold a 4x4 rock (16 pixels) in one corner."""
    masks = np.zeros((n, 8, 8), np.uint8)
    masks[:rock_images, :4, :4] = 1
    return masks


def _logits(predicted: np.ndarray) -> np.ndarray:
    return np.eye(2, dtype=np.float32)[predicted] * 4.0


def _judge(truth: np.ndarray, artifact_pred: np.ndarray, tol: Tolerances) -> tuple[dict, list[str]]:
    result = _iou_deltas(_logits(truth), _logits(artifact_pred), truth, TWO_CLASSES, tol)
    result["images"] = len(truth)
    return result, _iou_failures(result, tol)


def test_a_systematic_drop_on_every_image_fails_with_a_tight_interval():
    truth = _scenes(40, rock_images=20)
    pred = truth.copy()
    pred[:20, :2, :4] = 0  # the artifact misses half of every rock
    result, failures = _judge(truth, pred, Tolerances(max_class_iou_drop=0.10, max_miou_drop=0.03))
    low, high = result["class_iou_drop_interval"]["rock"]
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)
    assert any("IoU of 'rock' drop 0.5000" in f for f in failures)


def test_a_drop_carried_by_one_image_is_inconclusive_not_a_failure(caplog):
    truth = _scenes(40, rock_images=8)
    pred = truth.copy()
    pred[0, :4, :4] = 0  # one of eight rocky images loses its rock: point estimate 1/8
    with caplog.at_level(logging.WARNING, logger="roverlite.export.verify"):
        result, failures = _judge(truth, pred, Tolerances(max_class_iou_drop=0.10, max_miou_drop=0.10))
    assert result["per_class_iou_delta"]["rock"] == pytest.approx(-0.125)
    low, high = result["class_iou_drop_interval"]["rock"]
    assert low < 0.10 < high
    assert failures == []
    assert any("rock" in text for text in result["inconclusive"])
    assert "self-check inconclusive" in caplog.text


def test_a_class_held_by_too_few_images_is_never_failed_but_reported():
    truth = _scenes(40, rock_images=2)
    pred = truth.copy()
    pred[:2, :4, :4] = 0  # both rocky images lose everything: a drop of 1.0, on two images
    result, failures = _judge(truth, pred, Tolerances(min_class_images=5))
    assert result["class_images"]["rock"] == 2
    assert not any("rock" in f for f in failures)
    assert any("too few images" in text for text in result["inconclusive"])


def test_nothing_lost_passes_with_a_zero_interval():
    truth = _scenes(12, rock_images=6)
    result, failures = _judge(truth, truth.copy(), Tolerances())
    assert failures == [] and result["inconclusive"] == []
    assert result["miou_drop_interval"] == [0.0, 0.0]


def test_int8_export_calibrated_on_blank_images_still_fails_its_check(tmp_path):
    calibration = np.zeros((32, 32, 32, 1), np.uint8)  # a broken calibration set: every pixel 0
    images, masks = band_scenes(24, seed=2)
    [result] = export_model(trained_tiny_model(), ExportSettings(
        ["tflite_int8"], tmp_path, DATA_CFG, calibration_images=calibration,
        check_images=images, check_masks=masks, name="blank", representative_count=32,
    ))
    assert result.passed is False
    assert result.check["miou_drop_interval"][0] > Tolerances().max_miou_drop
    assert any("mIoU drop" in f for f in result.check["failures"])


def test_well_calibrated_int8_export_passes_and_records_its_interval(tmp_path):
    calibration, _ = band_scenes(32, seed=1)
    images, masks = band_scenes(24, seed=2)
    [result] = export_model(trained_tiny_model(), ExportSettings(
        ["tflite_int8"], tmp_path, DATA_CFG, calibration_images=calibration,
        check_images=images, check_masks=masks, name="good", representative_count=32,
    ))
    assert result.passed is True
    low, high = result.check["miou_drop_interval"]
    assert low <= high and result.check["confidence"] == 0.95
    assert set(result.check["class_images"]) == set(DATA_CFG.classes)


def test_check_image_count_takes_the_whole_small_split_and_caps_large_ones():
    assert check_image_count(48, DEFAULT_CHECK_IMAGES, 128 * 128 * 4) == 48
    assert check_image_count(1800, DEFAULT_CHECK_IMAGES, 128 * 128 * 4) == DEFAULT_CHECK_IMAGES
    assert check_image_count(1800, None, 128 * 128 * 4) == 1024  # 2**26 logits at 65,536 per image
    assert check_image_count(1800, 10, 1) == 10
    with pytest.raises(ValueError, match="positive integer"):
        check_image_count(10, 0, 1)


def test_chosen_check_images_are_all_or_a_seeded_sorted_subset():
    assert choose_check_images(5, 5).tolist() == [0, 1, 2, 3, 4]
    subset = choose_check_images(1800, 512)
    assert len(set(subset.tolist())) == 512 and np.all(np.diff(subset) > 0)
    assert subset.max() > 1500  # spread over the split, not its first images
    assert np.array_equal(subset, choose_check_images(1800, 512))


@pytest.mark.parametrize("bad", [{"confidence": 1.0}, {"confidence": 0.0}, {"bootstrap_resamples": 10},
                                 {"min_class_images": 0}])
def test_tolerances_reject_bad_statistics_settings(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Tolerances(**bad)

