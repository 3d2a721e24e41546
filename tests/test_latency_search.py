"""Latency tables and the per-level channel search: round trip, validation, greedy choices, recipe end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_helpers import band_scenes
from PIL import Image

from roverlite.compress._registry import StepContext
from roverlite.compress.channel_search import importance_lost, search_channels
from roverlite.compress.latency_table import (
    TABLE_FORMAT,
    LatencyTable,
    candidate_widths,
    check_table_fits,
    level_model,
    load_latency_table,
)
from roverlite.compress.recipe import Recipe
from roverlite.compress.steps import StructuredStep
from roverlite.config import ConfigError

WIDTHS = (16, 32, 64)


def _table(level_ms=None, full=10.0, granularity=8, widths=WIDTHS, **kw) -> LatencyTable:
    """A hand-made table; by default every level costs 0.1 ms per channel."""
    level_ms = level_ms or [{w: 0.1 * w for w in candidate_widths(full_w, granularity)} for full_w in widths]
    return LatencyTable(widths=widths, granularity=granularity, threads=(1,), full_ms={1: full},
                        level_ms={1: tuple(level_ms)}, input_shape=(32, 32, 1), num_classes=4,
                        architecture={"decoder": "transpose", "resolution": 1.0}, **kw)


def _scores(*weights: float) -> tuple[tuple[np.ndarray, ...], ...]:
    """One group per level, filters of equal score summing to ``weight``."""
    return tuple((np.full(w, weight / w),) for w, weight in zip(WIDTHS, weights))


# === Table ===


def test_table_round_trips_through_json_and_predicts_additively(tmp_path):
    table = _table(model="unet_x", machine={"cpu": "test"}, settings={"runs": 5})
    loaded = load_latency_table(table.save(tmp_path / "t.json"))
    assert loaded == table
    raw = json.loads((tmp_path / "t.json").read_text())
    assert raw["format"] == TABLE_FORMAT and raw["version"] == 1 and raw["levels"][2]["layers"] == "bottleneck"
    # full 10 ms; level 1 32 -> 16 saves 1.6 ms, level 2 64 -> 8 saves 5.6 ms
    assert loaded.predict((16, 16, 8), threads=1) == pytest.approx(10.0 - 1.6 - 5.6)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(format="other"), "Expected a latency table .*with format 'roverlite.latency_table'"),
        (lambda r: r.update(version=2), "version 1. Received: version 2"),
        (lambda r: r.pop("levels"), "Received: no \\['levels'\\]"),
        (lambda r: r["levels"][1]["ms"]["1"].pop("8"), "level 1 \\(width 32\\) timed at every candidate width.*none for \\[8\\]"),
        (lambda r: r["levels"][0]["ms"]["1"].update({"8": -1}), "p50 latency in ms > 0 for level 0 width 8"),
        (lambda r: r["full_model_ms"].clear(), "latencies for every thread count"),
        (lambda r: r.update(threads=[1, 2]), "Malformed latency table"),
        (lambda r: r.update(granularity=0), "granularity as integers >= 1"),
    ],
)
def test_bad_table_is_refused_with_a_clear_error(tmp_path, edit, message):
    raw = _table().to_dict()
    edit(raw)
    (tmp_path / "t.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=message):
        load_latency_table(tmp_path / "t.json")


def test_missing_or_unparsable_table_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="Latency table not found"):
        load_latency_table(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="Expected JSON"):
        load_latency_table(tmp_path / "bad.json")


def test_level_model_holds_one_level_fed_by_its_neighbours_at_full_width():
    from roverlite.train.models import create_model

    model = create_model("unet_tiny", input_shape=(32, 32, 1), num_classes=4)  # widths 4, 8, 16
    level = level_model(model, 1, 4)
    assert sorted(tuple(t.shape) for t in level.inputs) == [(1, 8, 8, 16), (1, 16, 16, 4)]
    assert sorted(tuple(t.shape) for t in level.outputs) == [(1, 8, 8, 4), (1, 16, 16, 4)]
    assert all(layer.name.startswith(("enc1_", "dec1_", "x")) for layer in level.layers)
    assert (1, 32, 32, 4) in [tuple(t.shape) for t in level_model(model, 0, 4).outputs]  # level 0 holds the logits
    with pytest.raises(ValueError, match="widths \\(4, 8, 8\\).*\\(model: \\(4, 8, 16\\)\\)"):
        check_table_fits(_table(widths=(4, 8, 8), granularity=4), model)


# === Search ===


def test_expensive_unimportant_level_is_cut_first_and_search_stops_at_the_target():
    # level 2 (64 wide) costs 0.3 ms per channel and carries little importance
    level_ms = [{w: 0.1 * w for w in candidate_widths(16, 8)}, {w: 0.1 * w for w in candidate_widths(32, 8)},
                {w: 0.3 * w for w in candidate_widths(64, 8)}]
    result = search_channels(_table(level_ms, full=30.0), _scores(1.0, 1.0, 0.1), target_latency_ms=20.0)
    assert result.moves[0].level == 2
    assert result.predicted_ms <= 20.0 < result.moves[-1].predicted_ms + result.moves[-1].saved_ms
    assert result.widths_after == (16, 32, 24)  # 64 -> 24 saves 12 ms; 32 would save only 9.6
    assert result.keep_ratios == (1.0, 1.0, 24 / 64)


def test_search_respects_granularity_and_skips_levels_that_buy_no_time():
    flat = {w: 1.0 for w in candidate_widths(64, 8)}  # thinning the bottleneck saves nothing
    level_ms = [{w: 0.1 * w for w in candidate_widths(16, 8)}, {w: 0.1 * w for w in candidate_widths(32, 8)}, flat]
    result = search_channels(_table(level_ms), _scores(1.0, 1.0, 0.0), latency_ratio=0.85, granularity=16)
    assert result.widths_after == (16, 16, 64)  # level 0 is at its one multiple of 16 already
    assert result.predicted_ms == pytest.approx(10.0 - 1.6)
    with pytest.raises(ValueError, match="multiple of the table's \\(8\\)"):
        search_channels(_table(), _scores(1, 1, 1), latency_ratio=0.5, granularity=12)


def test_impossible_target_names_the_thinnest_prediction():
    # 10 ms - (0.8 + 2.4 + 5.6) ms saved at 8 filters per level
    with pytest.raises(ValueError, match="thinnest widths \\[8, 8, 8\\].*predicted at 1.200 ms"):
        search_channels(_table(), _scores(1, 1, 1), target_latency_ms=1.0)


def test_target_already_met_keeps_every_filter_and_both_targets_are_refused():
    result = search_channels(_table(), _scores(1, 1, 1), latency_ratio=1.0)
    assert result.moves == () and result.keep_ratios == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="exactly one of target_latency_ms and latency_ratio"):
        search_channels(_table(), _scores(1, 1, 1), target_latency_ms=5.0, latency_ratio=0.5)


def test_importance_lost_is_the_score_mass_below_the_kept_filters():
    scores = (np.array([0.5, 0.3, 0.1, 0.1]),)
    assert importance_lost(scores, 4, 4) == 0.0
    assert importance_lost(scores, 4, 2) == pytest.approx(0.2)


# === Recipe ===


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"keep_ratio": 0.5, "latency_ratio": 0.5, "table": "this"}, "exactly one of structured.keep_ratio"),
        ({"latency_ratio": 0.5}, "Expected structured.table: a JSON file"),
        ({"table": "t.json"}, "serve a latency search"),
        ({"latency_ratio": 1.5, "table": "this"}, "latency_ratio in \\(0, 1\\]"),
        ({"target_latency_ms": 0, "table": "this"}, "target_latency_ms > 0"),
        ({"latency_ratio": 0.5, "table": "this", "threads": 0}, "structured.threads to be an integer >= 1"),
    ],
)
def test_structured_latency_settings_are_validated(settings, message):
    with pytest.raises(ConfigError, match=message):
        Recipe.from_dict({"name": "r", "steps": [{"structured": settings}]})


def test_structured_latency_step_round_trips_and_keep_ratio_keeps_its_default():
    recipe = Recipe.from_dict({"name": "r", "steps": [
        {"structured": {"target_latency_ms": 2, "granularity": 16, "table": "t.json"}}]})
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert recipe.steps[0].keep_ratio is None and recipe.steps[0].target_latency_ms == 2.0
    assert StructuredStep().keep_ratio == 0.5


@pytest.fixture
def untrained_run(tmp_path) -> Path:
    from roverlite.config import load_config
    from roverlite.train.modelfile import save_model_file
    from roverlite.train.models import create_model

    images, masks = band_scenes(12, seed=5)
    for folder in ("images", "masks"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for k, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image[..., 0]).save(tmp_path / "data" / "images" / f"b{k:03d}.png")
        Image.fromarray(mask).save(tmp_path / "data" / "masks" / f"b{k:03d}.png")
    cfg = load_config(None, overrides=[
        "data.format=folder", f"data.path={tmp_path / 'data'}", "data.image_size=[32, 32]", "data.mean=[0.5]",
        "data.std=[0.25]", "model.name=unet_tiny", "train.batch_size=8"])
    run = tmp_path / "teacher"
    save_model_file(create_model("unet_tiny", input_shape=(32, 32, 1), num_classes=4), run / "model.h5")
    cfg.to_yaml(run / "config.yaml")
    return run


def _tiny_table() -> LatencyTable:
    """A table for unet_tiny (widths 4, 8, 16) in which the bottleneck is the expensive level."""
    level_ms = [{4: 1.0}, {4: 1.0, 8: 1.1}, {4: 0.2, 8: 0.4, 12: 0.6, 16: 3.0}]
    return LatencyTable(widths=(4, 8, 16), granularity=4, threads=(1,), full_ms={1: 5.0}, level_ms={1: level_ms},
                        input_shape=(32, 32, 1), num_classes=4, architecture={"decoder": "transpose", "resolution": 1.0})


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_structured_step_with_a_table_prunes_as_searched_and_records_predicted_and_measured(tmp_path):
    from roverlite.train.models import create_model

    _tiny_table().save(tmp_path / "table.json")
    step = StructuredStep(latency_ratio=0.6, table=str(tmp_path / "table.json"), epochs=0)
    model = create_model("unet_tiny", input_shape=(32, 32, 1), num_classes=4)
    thin, details = step.run(model, StepContext(index=1))  # no fine-tuning: no training context needed
    search = details["latency_search"]
    assert details["widths_after"] == [4, 8, 12] and search["keep_ratios"] == [1.0, 1.0, 0.75]
    assert search["predicted_ms"] == pytest.approx(5.0 - 2.4) and search["target_ms"] == pytest.approx(3.0)
    assert search["measured_ms"] > 0 and search["measured_full_ms"] > 0 and search["moves"][0]["level"] == 2
    assert thin.get_layer("bottleneck_1_conv").filters == 12
    nearest = StructuredStep(latency_ratio=0.6, table=str(tmp_path / "table.json"), epochs=0, decoder="nearest")
    with pytest.raises(ValueError, match="architecture .*'transpose'.*model: .*'nearest'"):
        nearest.run(model, StepContext(index=1))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_recipe_with_latency_ratio_measures_the_table_here_and_caches_it(untrained_run, tmp_path):
    from roverlite.compress.runner import run_recipe

    recipe = Recipe.from_dict({"name": "r", "steps": [
        # ratio 1: the unpruned model meets it (a tiny model's levels differ by noise); the path is what is tested
        {"structured": {"latency_ratio": 1.0, "granularity": 4, "table": "this", "threads": 1, "epochs": 1}}],
        "gate": {"max_miou_drop": 1.0, "max_rare_class_drop": 1.0, "rare_classes": ["big_rock"]}})
    result = run_recipe(untrained_run, recipe, tmp_path / "out", progress=False)
    search = result.steps[0].details["latency_search"]
    table = load_latency_table(tmp_path / "out" / "latency_table.json")
    assert search["table"] == str(tmp_path / "out" / "latency_table.json") and table.threads == (1,)
    assert search["predicted_ms"] == search["target_ms"] == pytest.approx(table.full_ms[1])
    assert search["measured_ms"] > 0 and search["moves"] == [] and search["widths_after"] == [4, 8, 16]
    saved = json.loads((tmp_path / "out" / "recipe_result.json").read_text())
    assert saved["steps"][0]["details"]["latency_search"]["keep_ratios"] == search["keep_ratios"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cli_latency_table_measures_a_registered_model_and_refuses_an_unknown_one(tmp_path, capsys):
    from roverlite.cli import main

    out = tmp_path / "table.json"
    assert main(["latency-table", "unet_tiny", "--input-shape", "32", "32", "1", "--granularity", "8",
                 "--threads", "1", "--runs", "10", "--out", str(out)]) == 0
    table = load_latency_table(out)
    assert table.widths == (4, 8, 16) and table.threads == (1,) and sorted(table.level_ms[1][2]) == [8, 16]
    assert table.model == "unet_tiny" and table.architecture == {"decoder": "transpose", "resolution": 1.0}
    assert "latency table written" in capsys.readouterr().out
    assert main(["latency-table", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "Expected a run folder with model.h5" in capsys.readouterr().err
