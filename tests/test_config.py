"""Config: frozen dataclasses that validate themselves and round-trip to YAML."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from roverlite.config import Config, ConfigError, DataConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_round_trips_through_yaml(path, tmp_path):
    cfg = load_config(path)
    out = tmp_path / "resolved.yaml"
    cfg.to_yaml(out)
    assert load_config(out) == cfg


def test_shipped_configs_include_mars_and_cropweed():
    mars = load_config(REPO / "configs" / "mars.yaml").data
    assert mars.classes == ("soil", "bedrock", "sand", "big_rock")
    assert (mars.ignore_index, mars.image_size, mars.channels) == (255, (128, 128), 1)
    crop = load_config(REPO / "configs" / "cropweed.yaml").data
    assert crop.classes == ("soil", "crop", "weed") and crop.channels == 3


def test_default_config_is_synthetic_and_round_trips():
    cfg = Config()
    assert cfg.data.format == "synthetic"
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.task = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"data": {"imag_size": [64, 64]}}, "data.imag_size"),
        ({"trian": {}}, 'Did you mean "train"'),
        ({"augment": {"copy_paste": {"probabilty": 0.3}}}, 'Did you mean "probability"'),
    ],
)
def test_unknown_key_is_refused_with_closest_valid_key(raw, expected):
    with pytest.raises(ConfigError, match=expected):
        Config.from_dict(raw)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"data": {"format": "folders", "path": "x"}}, 'Did you mean "folder"'),
        ({"data": {"format": "folder"}}, "data.path is required"),
        ({"data": {"image_size": [64]}}, "Expected 2 values"),
        ({"data": {"ignore_index": 2}}, "ignore_index"),
        ({"data": {"colors": [[0, 0, 0]]}}, "one colour per class"),
        ({"data": {"color_mode": "rgb", "mean": [0, 0]}}, "1 or 3 values"),
        ({"data": {"eval_classes": ["rock"]}}, "eval_classes"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"epochs": "ten"}}, "Expected an integer"),
        ({"train": {"loss": {"dyce": 1.0}}}, 'Did you mean "dice"'),
        ({"train": {"strategy": "mirror"}}, 'Did you mean "mirrored"'),
        ({"augment": {"hflip": "yes"}}, "Expected true or false"),
        ({"augment": {"oversample": {"classes": ["big_rok"]}}}, 'Did you mean "big_rock"'),
    ],
)
def test_invalid_value_names_the_key_and_what_was_expected(raw, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Config.from_dict(raw)


def test_overrides_take_precedence_over_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 5}\n")
    cfg = load_config(path, overrides=["train.epochs=2", "data.image_size=[64, 96]"])
    assert cfg.train.epochs == 2
    assert cfg.data.image_size == (64, 96)


def test_relative_data_path_resolves_against_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("data: {format: folder, path: ../data}\n")
    assert load_config(path).data.path == str((tmp_path / "data").resolve())


def test_label_map_and_eval_classes_express_an2dl_layout():
    cfg = load_config(REPO / "configs" / "mars_an2dl.yaml").data
    assert cfg.label_map == {255: 0, 0: 1, 1: 2, 2: 3, 3: 4}
    assert cfg.ignore_index is None
    assert cfg.eval_class_ids == (1, 2, 3, 4)


def test_missing_config_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="Config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_tags_are_not_executed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("task: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_default_colours_are_one_per_class():
    data = DataConfig(classes=("a", "b", "c"))
    assert len(data.class_colors) == 3
