"""Confusion-matrix metrics against hand-computed cases."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from roverlite.train.metrics import (
    StreamingConfusion,
    class_iou_dict,
    confusion_matrix,
    hazard_rates,
    hazard_summary,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)

# Two ignored pixels (255) whose predictions (2 and 0) must not count anywhere, and class 2,
# absent from truth and (counted) predictions alike.
Y_TRUE = np.array([[0, 0, 1, 255], [1, 1, 0, 255]], dtype=np.uint8)
Y_PRED = np.array([[0, 1, 1, 2], [1, 0, 0, 0]], dtype=np.int64)


def test_confusion_matrix_excludes_ignored_pixels():
    cm = confusion_matrix(Y_TRUE, Y_PRED, num_classes=3, ignore_index=255)
    np.testing.assert_array_equal(cm, [[2, 1, 0], [1, 2, 0], [0, 0, 0]])
    assert cm.dtype == np.int64


def test_class_absent_from_truth_and_prediction_is_nan_and_excluded_from_miou():
    cm = confusion_matrix(Y_TRUE, Y_PRED, num_classes=3, ignore_index=255)
    iou = iou_per_class(cm)
    # IoU_0 = 2 / (3 + 3 - 2), IoU_1 = 2 / (3 + 3 - 2)
    np.testing.assert_allclose(iou[:2], [0.5, 0.5])
    assert math.isnan(iou[2])
    assert mean_iou(cm) == pytest.approx(0.5)
    assert pixel_accuracy(cm) == pytest.approx(4 / 6)


def test_class_only_predicted_has_iou_zero():
    cm = confusion_matrix([0, 0, 1, 1], [0, 2, 1, 1], num_classes=3)
    np.testing.assert_allclose(iou_per_class(cm), [0.5, 1.0, 0.0])
    assert mean_iou(cm) == pytest.approx(0.5)


def test_truth_ids_out_of_range_are_excluded():
    cm = confusion_matrix([0, 7, -1, 1], [0, 1, 1, 1], num_classes=2)
    np.testing.assert_array_equal(cm, [[1, 0], [0, 1]])


def test_out_of_range_prediction_raises():
    with pytest.raises(ValueError, match=r"Expected predictions in \[0, 3\)"):
        confusion_matrix([0, 1], [0, 3], num_classes=3)


def test_out_of_range_prediction_on_ignored_pixel_is_allowed():
    cm = confusion_matrix([0, 255], [0, 9], num_classes=3, ignore_index=255)
    assert cm.sum() == 1


def test_shape_mismatch_and_float_labels_raise():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros(4, int), num_classes=2)
    with pytest.raises(ValueError, match="integer class ids"):
        confusion_matrix(np.zeros(4, float), np.zeros(4, int), num_classes=2)


def test_mean_iou_over_eval_subset():
    # AN2DL scores classes 1..4 only; class 0 (background) is perfect here and must not count.
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 3, 4, 4])
    y_pred = np.array([0, 0, 0, 1, 2, 2, 2, 3, 4, 1])
    cm = confusion_matrix(y_true, y_pred, num_classes=5)
    iou = iou_per_class(cm)
    # IoU_1 = 1/3, IoU_2 = 2/3, IoU_3 = 1, IoU_4 = 1/2
    np.testing.assert_allclose(iou, [1.0, 1 / 3, 2 / 3, 1.0, 0.5])
    assert mean_iou(cm, class_ids=[1, 2, 3, 4]) == pytest.approx((1 / 3 + 2 / 3 + 1 + 0.5) / 4)
    with pytest.raises(ValueError, match="Expected class ids"):
        mean_iou(cm, class_ids=[5])


def test_empty_matrix_gives_nan_not_error():
    cm = np.zeros((3, 3), np.int64)
    assert math.isnan(mean_iou(cm))
    assert math.isnan(pixel_accuracy(cm))


def test_class_iou_dict_names_and_length_check():
    cm = confusion_matrix(Y_TRUE, Y_PRED, num_classes=3, ignore_index=255)
    out = class_iou_dict(cm, ["soil", "bedrock", "sand"])
    assert list(out) == ["soil", "bedrock", "sand"]
    assert out["soil"] == pytest.approx(0.5) and math.isnan(out["sand"])
    with pytest.raises(ValueError, match="Expected 3 class names"):
        class_iou_dict(cm, ["soil"])


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, size=(6, 16, 16))
    y_true[y_true == 4] = 255
    y_pred = rng.integers(0, 4, size=(6, 16, 16))
    stream = StreamingConfusion(num_classes=4, ignore_index=255)
    for i in range(0, 6, 2):
        stream.update(y_true[i : i + 2], y_pred[i : i + 2])
    np.testing.assert_array_equal(stream.matrix, confusion_matrix(y_true, y_pred, 4, 255))
    stream.reset()
    assert stream.matrix.sum() == 0


def test_streaming_result_is_json_ready_with_none_for_nan():
    stream = StreamingConfusion(num_classes=3, ignore_index=255)
    stream.update(Y_TRUE, Y_PRED)
    result = stream.result(["soil", "bedrock", "sand"], eval_ids=[0, 1, 2])
    json.dumps(result, allow_nan=False)
    assert result["miou"] == pytest.approx(0.5)
    assert result["per_class_iou"] == {"soil": 0.5, "bedrock": 0.5, "sand": None}
    assert result["pixel_accuracy"] == pytest.approx(4 / 6)
    assert result["confusion_matrix"] == [[2, 1, 0], [1, 2, 0], [0, 0, 0]]


def test_metrics_module_imports_without_tensorflow():
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['tf_keras'] = None; import roverlite.train.metrics"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# === Hazard rates ===

# Classes soil 0, bedrock 1, sand 2, big_rock 3; big rock must never be called soil or sand.
HAZARDS = {"big_rock": ["soil", "sand"]}
NAMES = ("soil", "bedrock", "sand", "big_rock")


def _hazard_pixels() -> tuple[np.ndarray, np.ndarray]:
    """Truth and prediction whose counted confusion matrix is, rows truth, columns prediction:

    soil      [5, 1, 2, 1]
    bedrock   [0, 4, 0, 2]
    sand      [1, 0, 3, 0]
    big_rock  [3, 2, 1, 4]
    plus 6 ignore pixels (255) whatever their prediction.
    """
    cm = np.array([[5, 1, 2, 1], [0, 4, 0, 2], [1, 0, 3, 0], [3, 2, 1, 4]])
    truth, pred = [], []
    for t in range(4):
        for p in range(4):
            truth += [t] * int(cm[t, p])
            pred += [p] * int(cm[t, p])
    truth += [255] * 6
    pred += [3, 3, 3, 0, 2, 1]  # ignored pixels predicted as big rock or soil must not count
    return np.array(truth, dtype=np.uint8), np.array(pred, dtype=np.uint8)


def test_hazard_rates_match_a_hand_computed_confusion_matrix_and_skip_ignored_pixels():
    truth, pred = _hazard_pixels()
    cm = confusion_matrix(truth, pred, 4, ignore_index=255)
    assert cm.tolist() == [[5, 1, 2, 1], [0, 4, 0, 2], [1, 0, 3, 0], [3, 2, 1, 4]]
    miss, false = hazard_rates(cm, hazard=3, traversable=[0, 2])
    # big rock row: 10 pixels, 3 called soil + 1 called sand -> 4 / 10 (2 called bedrock are not a miss).
    assert miss == pytest.approx(4 / 10)
    # soil and sand rows: 9 + 4 = 13 pixels, of which 1 + 0 are called big rock -> 1 / 13.
    assert false == pytest.approx(1 / 13)


def test_hazard_summary_is_json_ready_with_counts():
    truth, pred = _hazard_pixels()
    stream = StreamingConfusion(4, ignore_index=255)
    stream.update(truth, pred)
    result = stream.result(NAMES, hazards=HAZARDS)
    assert result["hazards"] == {
        "big_rock": {
            "miss_rate": pytest.approx(0.4),
            "false_rate": pytest.approx(1 / 13),
            "traversable": ["soil", "sand"],
            "hazard_pixels": 10,
            "traversable_pixels": 13,
        }
    }
    json.dumps(result)
    assert "hazards" not in stream.result(NAMES)


def test_hazard_rates_are_undefined_when_hazard_or_traversable_pixels_are_absent():
    # No big rock in the truth (its row is 0): miss rate undefined; no sand either, soil still counts.
    cm = np.array([[6, 0, 0, 2], [0, 3, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    miss, false = hazard_rates(cm, 3, [0, 2])
    assert math.isnan(miss) and false == pytest.approx(2 / 8)
    # Neither soil nor sand in the truth: false-hazard rate undefined, reported as None.
    cm = np.array([[0, 0, 0, 0], [0, 3, 0, 1], [0, 0, 0, 0], [2, 0, 0, 5]])
    summary = hazard_summary(cm, NAMES, HAZARDS)["big_rock"]
    assert summary["miss_rate"] == pytest.approx(2 / 7) and summary["false_rate"] is None


@pytest.mark.parametrize(
    ("hazard", "traversable"), [(3, [3]), (3, []), (4, [0]), (3, [0, 7])]
)
def test_hazard_rates_refuse_impossible_class_ids(hazard, traversable):
    with pytest.raises(ValueError, match="Expected a hazard id"):
        hazard_rates(np.eye(4, dtype=np.int64), hazard, traversable)


def test_hazard_summary_refuses_unknown_class_names():
    with pytest.raises(ValueError, match="big_rok"):
        hazard_summary(np.eye(4, dtype=np.int64), NAMES, {"big_rok": ["soil"]})
