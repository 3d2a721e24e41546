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


def test_config_scalars_are_read_as_yaml_1_2_and_written_back_unchanged(tmp_path):
    # YAML 1.1 read 1e-3 as a string, "no" as False (a class named "no"), 010 as 8 and 1:30 as 90.
    cfg = load_config(None, overrides=["train.learning_rate=1e-3", "data.classes=[no, yes, on, '1e3', 1:30]",
                                       "train.seed=010", "data.colors=null"])
    assert cfg.train.learning_rate == 0.001 and cfg.train.seed == 10
    assert cfg.data.classes == ("no", "yes", "on", "1e3", "1:30")
    with pytest.raises(ConfigError, match=r"Expected true or false for train.jit_compile. Received: 'yes'"):
        load_config(None, overrides=["train.jit_compile=yes"])
    cfg.to_yaml(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


# === Hazards ===


def test_mars_configs_declare_big_rock_as_a_hazard_and_cropweed_none():
    for name in ("mars.yaml", "mars_an2dl.yaml", "mars_gpu.yaml"):
        assert load_config(REPO / "configs" / name).data.hazards == {"big_rock": ("soil", "sand")}
    assert load_config(REPO / "configs" / "cropweed.yaml").data.hazards is None


def test_hazards_round_trip_through_yaml(tmp_path):
    cfg = load_config(overrides=["data.hazards={big_rock: [soil, sand], sand: [soil]}"])
    assert cfg.data.hazards == {"big_rock": ("soil", "sand"), "sand": ("soil",)}
    out = tmp_path / "resolved.yaml"
    cfg.to_yaml(out)
    assert "hazards:" in out.read_text()
    assert load_config(out) == cfg


@pytest.mark.parametrize(
    "hazards, fragment",
    [
        ({"big_rok": ["soil"]}, "Received: 'big_rok'. Did you mean \"big_rock\"?"),
        ({"big_rock": ["soil", "snad"]}, "Received: 'snad'. Did you mean \"sand\"?"),
        ({"big_rock": ["soil", "big_rock"]}, "not 'big_rock' itself"),
        ({"big_rock": []}, "must list the traversable classes"),
        ({"big_rock": ["soil", "soil"]}, "each once"),
        ({"big_rock": "soil"}, "Expected a list for data.hazards"),
    ],
)
def test_invalid_hazards_are_refused_naming_the_class(hazards, fragment):
    with pytest.raises(ConfigError) as err:
        Config.from_dict({"data": {"hazards": hazards}})
    assert fragment in str(err.value)


def test_declaring_hazards_does_not_block_resuming_or_adopting_a_run_trained_without_them():
    from roverlite.config import to_plain
    from roverlite.train.fit import _differing_keys

    before = to_plain(load_config(REPO / "configs" / "mars.yaml", overrides=["data.hazards=null"]))
    after = to_plain(load_config(REPO / "configs" / "mars.yaml"))
    assert after["data"]["hazards"] and _differing_keys(before, after) == []
    after["data"]["classes"] = ["a", "b", "c", "d"]
    assert _differing_keys(before, after) == ["data.classes"]
