"""The on-device out-of-distribution monitor: calibrated at export, stored in the sidecar, run by Segmenter."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from export_helpers import BLOCKED_MODULES, DATA_CFG, band_scenes, run_device_python, trained_tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roverlite.deploy import Segmenter, evaluate_artifact
from roverlite.deploy.evaluate import describe_ood
from roverlite.deploy.ood import MIN_CALIBRATION_IMAGES, OodCollector, OodMonitor
from roverlite.deploy.sidecar import parse_sidecar, read_sidecar, sidecar_path

CHECK_IMAGES = 96


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny band-scene model as int8 TFLite, self-checked (and so OOD-calibrated) on 96 band scenes."""
    from roverlite.export import ExportSettings, export_model

    calibration, _ = band_scenes(32, seed=1)
    check_images, check_masks = band_scenes(CHECK_IMAGES, seed=2)
    results = export_model(trained_tiny_model(), ExportSettings(
        ["tflite_int8"], tmp_path_factory.mktemp("ood_exports"), DATA_CFG,
        calibration_images=calibration, check_images=check_images, check_masks=check_masks, name="tiny_ood",
        representative_count=32,
    ))
    return {r.format: r for r in results}


def _synthetic_monitor(frames: int = 200, seed: int = 0) -> tuple[OodMonitor, np.ndarray, np.ndarray]:
    """A monitor calibrated on noisy mid-gray frames with random logits, and one such frame."""
    rng = np.random.default_rng(seed)
    collector = OodCollector(mean=(0.5,), std=(0.25,))
    for _ in range(frames):
        x = ((rng.integers(60, 200, (1, 32, 32, 1)) / 255 - 0.5) / 0.25).astype(np.float32)
        logits = rng.normal(0, 3, (1, 32, 32, 4)).astype(np.float32)
        collector.add(x, logits)
    return collector.finish(), x, logits


def _copy_without_ood(result, folder):
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / result.path.name
    shutil.copyfile(result.path, target)
    raw = json.loads(result.sidecar_path.read_text())
    raw.pop("ood")
    sidecar_path(target).write_text(json.dumps(raw))
    return target


# === The monitor alone ===


def test_calibrated_thresholds_leave_at_most_their_rate_of_calibration_frames_above_them():
    monitor, _, _ = _synthetic_monitor()
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(200):  # the calibration frames again: same seed, same draws
        x = ((rng.integers(60, 200, (1, 32, 32, 1)) / 255 - 0.5) / 0.25).astype(np.float32)
        scores.append(monitor.score(x, rng.normal(0, 3, (1, 32, 32, 4)).astype(np.float32)).score)
    for rate, flags in monitor.flags(scores).items():
        assert flags.mean() <= rate
    assert monitor.false_alarm_rates == (0.01, 0.05) and monitor.thresholds[0] >= monitor.thresholds[1]


def test_black_saturated_and_nan_frames_are_flagged_and_say_why():
    monitor, x, logits = _synthetic_monitor()
    black = np.full_like(x, -2.0)  # pixel level 0 under mean 0.5, std 0.25
    saturated = np.full_like(x, 2.0)  # level 255
    assert not monitor.score(x, logits).flagged
    for frame, feature in ((black, "black"), (saturated, "saturated")):
        result = monitor.score(frame, logits)
        assert result.flagged and result.score > 10 * monitor.threshold
        values = dict(zip(monitor.features, monitor.z_scores(monitor.feature_values(frame, logits))))
        assert values[feature] > monitor.threshold
    broken = monitor.score(x, np.full_like(logits, np.nan))
    assert broken.flagged and broken.feature == "non_finite" and broken.to_dict()["score"] is None


def test_scoring_reads_the_fixed_pixel_grid_chosen_at_calibration():
    monitor, x, logits = _synthetic_monitor()
    assert (monitor.stride, monitor.logit_stride) == (1, 2)  # 32x32 frames: every row, every 2nd logit row/column
    again = OodMonitor.from_dict(json.loads(json.dumps(monitor.to_dict())))
    np.testing.assert_array_equal(again.feature_values(x, logits), monitor.feature_values(x, logits))
    big = OodCollector(mean=(0.5,), std=(0.25,))
    rng = np.random.default_rng(5)
    frames = [(((rng.integers(60, 200, (128, 128, 1)) / 255 - 0.5) / 0.25).astype(np.float32),
               rng.normal(0, 3, (128, 128, 4)).astype(np.float32)) for _ in range(MIN_CALIBRATION_IMAGES)]
    for frame in frames:
        big.add(*frame)
    grid = big.finish()
    x, logits = frames[0]
    before = grid.feature_values(x, logits)
    off_grid_x, off_grid_logits = x.copy(), logits.copy()
    off_grid_x[1::grid.stride] = 2.0  # rows the monitor never reads
    off_grid_logits[1::grid.logit_stride, 1::grid.logit_stride] = np.nan
    np.testing.assert_array_equal(grid.feature_values(off_grid_x, off_grid_logits), before)
    on_grid_x = x.copy()
    on_grid_x[:: grid.stride] = 2.0  # the rows it reads: saturated
    assert dict(zip(grid.features, grid.feature_values(on_grid_x, logits)))["saturated"] == 1.0
    assert grid.score(on_grid_x, logits).flagged


def test_pixel_features_equal_a_direct_computation_on_the_sampled_rows():
    monitor, _, logits = _synthetic_monitor()
    rng = np.random.default_rng(3)
    levels = rng.integers(0, 256, (32, 32, 1))
    x = ((levels / 255 - 0.5) / 0.25).astype(np.float32)
    values = dict(zip(monitor.features, monitor.feature_values(x, logits)))
    rows = levels[:: monitor.stride].astype(np.float64)
    assert values["brightness"] == pytest.approx(rows.mean(), abs=1e-6)
    assert values["contrast"] == pytest.approx(rows.std(), abs=1e-4)
    assert values["sharpness"] == pytest.approx(np.abs(np.diff(rows, axis=1)).mean(), abs=1e-3)
    assert values["black"] == pytest.approx((rows <= 5).mean()) and values["saturated"] == pytest.approx((rows >= 250).mean())
    shares = np.bincount((rows // 16).astype(int).ravel(), minlength=16) / rows.size
    assert values["histogram"] == pytest.approx(0.5 * np.abs(shares - monitor.histogram_reference).sum())


def test_too_few_calibration_frames_give_no_monitor():
    collector = OodCollector(mean=(0.5,), std=(0.25,))
    for _ in range(MIN_CALIBRATION_IMAGES - 1):
        collector.add(np.zeros((8, 8, 1), np.float32), np.zeros((8, 8, 3), np.float32))
    assert collector.finish() is None


def test_monitor_round_trips_through_json_and_refuses_a_broken_field_by_name():
    monitor, x, logits = _synthetic_monitor()
    again = OodMonitor.from_dict(json.loads(json.dumps(monitor.to_dict())))
    assert again == monitor and again.score(x, logits) == monitor.score(x, logits)
    broken = {**monitor.to_dict(), "scale": [0.0] * len(monitor.features)}
    with pytest.raises(ValueError, match="'scale'"):
        OodMonitor.from_dict(broken)
    with pytest.raises(ValueError, match="flag_rate"):
        OodMonitor.from_dict({**monitor.to_dict(), "flag_rate": 0.02})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(list(_synthetic_monitor(frames=16)[0].to_dict())), replacement=JSON, delete=st.booleans())
def test_monitor_reader_fails_only_with_value_error_on_any_field_mutation(key, replacement, delete):
    raw = _synthetic_monitor(frames=16)[0].to_dict()
    if delete:
        del raw[key]
    else:
        raw[key] = replacement
    try:
        OodMonitor.from_dict(raw)
    except ValueError:
        pass


# === Export, sidecar and Segmenter ===


def test_export_stores_the_calibration_in_the_sidecar_and_it_round_trips(exported):
    for result in exported.values():
        sidecar = read_sidecar(result.path)
        assert sidecar.ood is not None and sidecar.ood["images"] == CHECK_IMAGES
        assert "ood" not in sidecar.self_check
        again = parse_sidecar(json.loads(json.dumps(sidecar.to_dict())))
        assert again.ood == sidecar.ood
        assert OodMonitor.from_dict(again.ood) == Segmenter(result.path).ood_monitor


def test_sidecar_with_a_monitor_of_other_classes_is_refused(exported):
    raw = read_sidecar(exported["tflite_int8"].path).to_dict()
    raw["ood"]["class_reference"] = [0.5, 0.5]
    with pytest.raises(ValueError, match="'ood'"):
        parse_sidecar(raw)


def test_predict_flags_black_and_saturated_frames_and_few_held_out_val_frames(exported):
    for fmt, result in exported.items():
        seg = Segmenter(result.path)
        held_out, _ = band_scenes(200, seed=11)  # never seen by training or calibration
        flagged = []
        for image in held_out:
            seg.predict(image)
            flagged.append(seg.last_ood.flagged)
        # Calibrated at 1 % on 96 frames: a held-out rate of a few % is sampling, 10 % would be broken.
        assert np.mean(flagged) <= 0.06, fmt
        for value in (0, 255):
            mask = seg.predict(np.full((48, 40), value, np.uint8))
            assert mask.shape == (48, 40) and seg.last_ood.flagged, (fmt, value, seg.last_ood)


def test_an_artifact_without_ood_still_predicts_with_the_monitor_reported_off(exported, tmp_path):
    target = _copy_without_ood(exported["tflite_int8"], tmp_path / "old")
    images, masks = band_scenes(4, seed=3)
    seg = Segmenter(target)
    reference = Segmenter(exported["tflite_int8"].path).predict_batch(images)
    np.testing.assert_array_equal(seg.predict_batch(images), reference)
    assert seg.ood_monitor is None and seg.last_ood is None and "off" in seg.ood_status
    summary = evaluate_artifact(seg, images, masks)["ood"]
    assert summary["enabled"] is False and "re-export" in describe_ood(summary)


def test_eval_reports_the_flag_rate_and_score_distribution(exported):
    images, masks = band_scenes(20, seed=4)
    images[:2] = 0  # two black frames among eighteen ordinary ones
    summary = evaluate_artifact(exported["tflite_int8"].path, images, masks)["ood"]
    assert summary["enabled"] and summary["images"] == 20
    assert summary["flag_rate"] >= 0.1 and summary["flagged_by_feature"].get("black", 0) + summary[
        "flagged_by_feature"].get("brightness", 0) >= 2
    assert summary["score"]["max"] >= summary["score"]["p50"] and "flagged" in describe_ood(summary)


def test_device_monitor_runs_where_tensorflow_cannot_be_imported(exported, tmp_path):
    path = str(exported["tflite_int8"].path)
    proc = run_device_python(
        f"""
        import json, sys
        import numpy as np
        from roverlite.deploy import Segmenter
        seg = Segmenter({path!r})
        seg.predict(np.zeros((32, 32), np.uint8))
        loaded = sorted(name for name in {list(BLOCKED_MODULES)!r} if sys.modules.get(name) is not None)
        print(json.dumps({{"ood": seg.last_ood.to_dict(), "loaded": loaded}}))
        """,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == [] and out["ood"]["flagged"] is True
