"""The loss/augmentation ablation benchmark (``benchmarks/ablation.py``) keeps finished arms when a run stops."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import roverlite.train.fit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def ablation(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # ablation.py imports its sibling teacher.py
    spec = importlib.util.spec_from_file_location("ablation_benchmark", ROOT / "benchmarks" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    return module


def _summary(miou: float) -> dict:
    per_class = {"soil": miou, "bedrock": miou, "sand": miou, "big_rock": miou}
    return {"miou": miou, "per_class_iou": per_class, "train_seconds": 1.0, "images_per_second": 2.0, "best_epoch": 1}


def test_a_run_stopped_in_its_second_arm_has_written_the_first(ablation, monkeypatch, tmp_path):
    seen = []

    def fake_train(cfg, out):
        seen.append((cfg.train.loss, cfg.augment.copy_paste.enabled, Path(out).name))
        if len(seen) == 2:
            raise KeyboardInterrupt  # the run is stopped while training the second arm
        return SimpleNamespace(summary=_summary(0.5))

    monkeypatch.setattr(roverlite.train.fit, "train", fake_train)
    argv = ["--config", str(ROOT / "configs" / "mars.yaml"), "--epochs", "1", "--out", str(tmp_path / "work")]
    with pytest.raises(KeyboardInterrupt):
        ablation.main(argv)

    record = json.loads((tmp_path / "results" / "ablation_ai4mars.json").read_text())
    assert list(record["arms"]) == ["plain_ce"]
    assert record["arms"]["plain_ce"]["miou"] == 0.5 and len(record["arms"]["plain_ce"]["load_average"]) == 3
    assert "| plain_ce | 0.500 |" in record["table"]
    assert [arm for _, _, arm in seen] == ["plain_ce", "weighted_dice"]
