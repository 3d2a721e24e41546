"""The teacher benchmark (``benchmarks/teacher.py``): where it writes and how it judges targets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("teacher_benchmark", ROOT / "benchmarks" / "teacher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tagged_run_writes_its_own_file_beside_the_configured_teacher(bench):
    assert bench.results_path("cwfid") == bench.RESULTS / "teacher_cwfid.json"
    assert bench.results_path("cwfid", "no_class_weights") == bench.RESULTS / "teacher_cwfid_no_class_weights.json"


@pytest.mark.parametrize("tag", ["", "../escape", "No-Caps", "a/b"])
def test_tag_that_is_not_a_plain_name_is_refused(bench, tag):
    with pytest.raises(ValueError, match="Expected a tag"):
        bench.results_path("cwfid", tag)


def test_bad_tag_is_refused_before_training(bench, monkeypatch):
    import roverlite.train.fit as fit

    monkeypatch.setattr(fit, "train", lambda *a, **k: pytest.fail("trained despite a bad tag"))
    with pytest.raises(ValueError, match="Expected a tag"):
        bench.main(["--config", str(ROOT / "configs" / "cropweed.yaml"), "--tag", "../x"])


def test_cwfid_target_is_the_mean_of_crop_and_weed(bench):
    met = bench.check_targets("cwfid", {"miou": 0.7, "per_class_iou": {"soil": 0.9, "crop": 0.55, "weed": 0.66}})
    assert met == [{"target": "mean_crop_weed_iou", "minimum": 0.60, "value": pytest.approx(0.605), "met": True}]
    missed = bench.check_targets("cwfid", {"miou": 0.7, "per_class_iou": {"soil": 0.97, "crop": 0.44, "weed": 0.69}})
    assert missed[0]["met"] is False
    assert bench.check_targets("cwfid", {"miou": 0.7, "per_class_iou": {}})[0] == {
        "target": "mean_crop_weed_iou", "minimum": 0.60, "value": None, "met": False}
