"""Hazard rates travel with an artifact: its sidecar declares them, its self-check and eval report them."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from export_helpers import DATA_CFG, band_scenes, trained_tiny_model

from roverlite.deploy.sidecar import parse_sidecar
from roverlite.train.metrics import hazard_summary

# The tiny model's classes are intensity quartiles; the brightest (big_rock) must not be called
# the darkest two (soil, bedrock): an arbitrary but well-defined hazard for the plumbing.
HAZARDS = {"big_rock": ("soil", "bedrock")}
CFG = dataclasses.replace(DATA_CFG, hazards=HAZARDS)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from roverlite.export import ExportSettings, export_model

    images, masks = band_scenes(8, seed=2)
    (result,) = export_model(trained_tiny_model(), ExportSettings(["tflite"], tmp_path_factory.mktemp("hazards"), CFG,
                             check_images=images, check_masks=masks, name="tiny"))
    return result


def test_sidecar_carries_the_configs_hazards_and_the_self_check_reports_both_models(artifact):
    sidecar = json.loads(artifact.path.with_suffix(".json").read_text())
    assert sidecar["hazards"] == {"big_rock": ["soil", "bedrock"]}
    check = sidecar["self_check"]
    for who in ("keras_hazards", "artifact_hazards"):
        rates = check[who]["big_rock"]
        assert set(rates) >= {"miss_rate", "false_rate", "traversable", "hazard_pixels"}
        assert rates["hazard_pixels"] > 0


def test_eval_of_an_artifact_reports_hazards_from_its_sidecar_without_a_config(artifact, tmp_path, capsys):
    from roverlite.cli import main
    from roverlite.deploy.evaluate import evaluate_artifact

    images, masks = band_scenes(6, seed=5)
    result = evaluate_artifact(artifact.path, images, masks)
    expected = hazard_summary(np.asarray(result["confusion_matrix"]), CFG.classes, HAZARDS)
    assert result["hazards"] == expected and expected["big_rock"]["hazard_pixels"] > 0

    out = tmp_path / "eval.json"
    assert main(["eval", str(artifact.path), "--data", "synthetic", "--json", str(out)]) == 0
    assert "hazard big_rock: miss rate" in capsys.readouterr().out
    assert json.loads(out.read_text())["hazards"]["big_rock"]["traversable"] == ["soil", "bedrock"]


def test_a_sidecar_without_hazards_still_reads_and_evaluates_without_them(artifact, tmp_path):
    import shutil

    from roverlite.deploy.evaluate import evaluate_artifact

    raw = json.loads(artifact.path.with_suffix(".json").read_text())
    del raw["hazards"]
    assert parse_sidecar(raw).hazards is None
    assert "hazards" not in parse_sidecar(raw).to_dict()  # written only when declared
    old = tmp_path / artifact.path.name
    shutil.copy(artifact.path, old)
    old.with_suffix(".json").write_text(json.dumps(raw))
    images, masks = band_scenes(2, seed=5)
    assert "hazards" not in evaluate_artifact(old, images, masks)


@pytest.mark.parametrize(
    "hazards",
    [{"big_rok": ["soil"]}, {"big_rock": ["big_rock"]}, {"big_rock": []}, {"big_rock": "soil"}, ["big_rock"],
     {"big_rock": ["soil", "soil"]}, {"big_rock": [3]}],
)
def test_invalid_sidecar_hazards_are_refused_naming_the_field(artifact, hazards):
    raw = json.loads(artifact.path.with_suffix(".json").read_text())
    raw["hazards"] = hazards
    with pytest.raises(ValueError, match="field 'hazards"):
        parse_sidecar(raw)
