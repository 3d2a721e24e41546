"""The typed preprocessing contract (roverlite.core.preprocessing.Preprocessing) and its call sites.

TensorFlow-free: the device side runs a tiny hand-built ONNX model (two copies of its input as
logits) under ONNX Runtime, with a sidecar written by the Sidecar class itself.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from roverlite.config import Config, DataConfig
from roverlite.core.preprocessing import GRAY_TOLERANCE, PIXEL_SCALE, Preprocessing
from roverlite.deploy.segmenter import Segmenter
from roverlite.deploy.sidecar import Sidecar, TensorSpec, parse_sidecar, read_sidecar, sha256_bytes, sidecar_path

SIZE = (24, 20)
RULES = Preprocessing(image_size=SIZE, color_mode="grayscale", mean=(0.45,), std=(0.225,))


# === The contract ===


def test_preprocessing_round_trips_through_its_json_dict():
    for rules in (RULES, Preprocessing((8, 9), "rgb", (0.1, 0.2, 0.3), (0.5,), 1 / 127.5, -1, True)):
        again = Preprocessing.from_dict(json.loads(json.dumps(rules.to_dict())))
        assert again == rules


def test_unknown_key_is_refused_with_the_closest_key_suggested():
    raw = {**RULES.to_dict(), "gray_tolerence": 4}
    expected = r"Expected one of .* Received: 'gray_tolerence'\. Did you mean \"gray_tolerance\"\?"
    with pytest.raises(ValueError, match=expected):
        Preprocessing.from_dict(raw)


def test_missing_keys_take_their_defaults_but_the_size_is_required():
    assert Preprocessing.from_dict({"image_size": [4, 5]}) == Preprocessing((4, 5))
    with pytest.raises(ValueError, match="Expected preprocessing with an image_size"):
        Preprocessing.from_dict({"color_mode": "rgb"})


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"image_size": (0, 8)}, "image_size"),
        ({"image_size": (8,)}, "image_size"),
        ({"color_mode": "rbg"}, "color_mode"),
        ({"mean": (0.1, 0.2)}, "mean"),
        ({"std": (0.0,)}, "std"),
        ({"mean": (float("nan"),)}, "mean"),
        ({"pixel_scale": 0.0}, "pixel_scale"),
        ({"gray_tolerance": 256}, "gray_tolerance"),
        ({"gray_tolerance": 1.5}, "gray_tolerance"),
        ({"allow_gray_to_rgb": "yes"}, "allow_gray_to_rgb"),
        ({"resize": "bicubic"}, "resize"),
    ],
)
def test_impossible_values_are_refused_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"Expected .*Received: {field}="):
        dataclasses.replace(RULES, **changes)


def test_a_misspelt_color_mode_suggests_the_right_one():
    with pytest.raises(ValueError, match='Did you mean "rgb"'):
        dataclasses.replace(RULES, color_mode="rbg")


def test_data_config_gives_its_preprocessing_and_takes_it_back():
    data_cfg = DataConfig(image_size=(64, 48), color_mode="rgb", mean=(0.5, 0.4, 0.3), std=(0.2,))
    rules = data_cfg.preprocessing
    assert rules == Preprocessing((64, 48), "rgb", (0.5, 0.4, 0.3), (0.2,), PIXEL_SCALE, GRAY_TOLERANCE, False)
    assert Config.from_dict({"data": rules.data_config_fields()}).data == data_cfg


def test_normalize_is_the_documented_float32_formula():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    x = RULES.normalize(pixels)
    assert x.dtype == np.float32 and x.shape == pixels.shape
    np.testing.assert_allclose(x, (pixels / 255.0 - 0.45) / 0.225, rtol=1e-6, atol=1e-6)


def test_gray_rule_accepts_equal_channels_within_the_tolerance_and_refuses_colour():
    gray = np.full((4, 4, 3), 100, np.uint8)
    gray[0, 0, 1] += GRAY_TOLERANCE
    assert RULES.channel_problem(gray) is None
    gray[0, 0, 1] += 1
    assert "colour image" in RULES.channel_problem(gray)
    refuses_all = dataclasses.replace(RULES, gray_tolerance=-1)
    assert "colour image" in refuses_all.channel_problem(np.zeros((2, 2, 3), np.uint8))
    rgb = dataclasses.replace(RULES, color_mode="rgb")
    assert "Received: 1 channel" in rgb.channel_problem(np.zeros((2, 2, 1), np.uint8))
    assert dataclasses.replace(rgb, allow_gray_to_rgb=True).channel_problem(np.zeros((2, 2, 1), np.uint8)) is None


# === Call sites ===


def _identity_onnx(path: Path, channels: int, classes: int) -> None:
    """A model whose logits are ``classes`` copies of its input channels (first channel when C > 1)."""
    import onnx
    from onnx import TensorProto, helper

    h, w = SIZE
    first = helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["first"])
    concat = helper.make_node("Concat", ["first"] * classes, ["logits"], axis=3)
    consts = [
        helper.make_tensor(name, TensorProto.INT64, [1], [value])
        for name, value in (("starts", 0), ("ends", 1), ("axes", 3))
    ]
    graph = helper.make_graph(
        [first, concat], "copies",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, h, w, channels])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, h, w, classes])],
        initializer=consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def _artifact(folder: Path, rules: Preprocessing) -> Path:
    """An ONNX artifact of ``rules``' input with a valid sidecar, as export would write it."""
    path = folder / "copies_onnx.onnx"
    _identity_onnx(path, rules.channels, 2)
    content = path.read_bytes()
    fields = rules.to_dict()
    del fields["image_size"]
    sidecar = Sidecar(
        name="copies", format="onnx", runtime="onnxruntime", artifact_file=path.name, size_bytes=len(content),
        sha256=sha256_bytes(content), classes=("soil", "rock"), class_colors=((0, 0, 0), (255, 0, 0)),
        ignore_index=255, eval_class_ids=(0, 1),
        input=TensorSpec((1, *SIZE, rules.channels), "float32"), output=TensorSpec((1, *SIZE, 2), "float32"),
        **{key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()},
    )
    sidecar_path(path).write_text(json.dumps(sidecar.to_dict()))
    return path


def _dataset(root: Path, rgb: bool) -> Path:
    """Two odd-sized images (exactly gray RGB, or 1-channel) with masks, in the folder layout."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(3)
    for k in range(2):
        gray = rng.integers(0, 256, (37, 29), dtype=np.uint8)
        Image.fromarray(np.stack([gray] * 3, -1) if rgb else gray).save(root / "images" / f"s{k}.png")
        Image.fromarray(rng.integers(0, 2, (37, 29), dtype=np.uint8)).save(root / "masks" / f"s{k}.png")
    return root


@pytest.mark.parametrize("rgb", [False, True], ids=["gray-images", "gray-rgb-images"])
def test_loader_and_segmenter_give_bit_identical_inputs_for_the_same_image(tmp_path, rgb):
    from roverlite.data.formats import open_source
    from roverlite.data.loader import load_split

    data_cfg = DataConfig(
        format="folder", path=str(_dataset(tmp_path / "data", rgb)), classes=("soil", "rock"),
        image_size=SIZE, mean=RULES.mean, std=RULES.std,
    )
    assert data_cfg.preprocessing == RULES
    segmenter = Segmenter(_artifact(tmp_path, data_cfg.preprocessing), threads=1)
    assert segmenter.preprocessing == RULES
    loaded, source = load_split(data_cfg, "all", workers=1), open_source(data_cfg)
    for k, sample_id in enumerate(loaded.ids):
        x = segmenter.preprocess(source.read_image(sample_id))
        np.testing.assert_array_equal(x[0], RULES.normalize(loaded.images[k]))


def test_sidecar_writes_its_preprocessing_in_the_input_and_normalization_blocks(tmp_path):
    rules = dataclasses.replace(RULES, color_mode="rgb", mean=(0.1, 0.2, 0.3), allow_gray_to_rgb=True)
    raw = read_sidecar(_artifact(tmp_path, rules)).to_dict()
    assert raw["normalization"] == {"pixel_scale": PIXEL_SCALE, "mean": [0.1, 0.2, 0.3], "std": [0.225]}
    assert {k: raw["input"][k] for k in ("color_mode", "gray_tolerance", "allow_gray_to_rgb", "resize")} == {
        "color_mode": "rgb", "gray_tolerance": GRAY_TOLERANCE, "allow_gray_to_rgb": True, "resize": "bilinear",
    }
    assert parse_sidecar(raw).preprocessing == rules


def test_an_old_sidecar_without_the_resize_field_still_loads_and_runs(tmp_path):
    path = _artifact(tmp_path, RULES)
    raw = json.loads(sidecar_path(path).read_text())
    del raw["input"]["resize"]
    sidecar_path(path).write_text(json.dumps(raw))
    segmenter = Segmenter(path, threads=1)
    assert segmenter.sidecar.resize == "bilinear" and segmenter.preprocessing == RULES
    assert segmenter.predict(np.zeros((50, 40), np.uint8)).shape == (50, 40)
    raw["input"]["resize"] = "bicubic"
    with pytest.raises(ValueError, match=r"field 'input.resize'. Expected one of \['bilinear'\]"):
        parse_sidecar(raw)


def test_artifact_data_config_takes_the_preprocessing_from_the_sidecar(tmp_path):
    from roverlite.cli import _artifact_data_config

    rules = dataclasses.replace(RULES, color_mode="rgb", mean=(0.1, 0.2, 0.3))
    data_cfg = _artifact_data_config(_artifact(tmp_path, rules), "synthetic")
    assert data_cfg.preprocessing == rules
    with pytest.raises(ValueError, match="--set data.std conflicts with the sidecar"):
        _artifact_data_config(_artifact(tmp_path, rules), "synthetic", ["data.std=[0.5]"])


def test_c_array_header_carries_the_sidecars_normalisation():
    from roverlite.export.c_array import model_data_sources

    rules = dataclasses.replace(RULES, mean=(0.25,), std=(0.5,))
    spec = {"shape": [1, *SIZE, 1], "scale": 0.02, "zero_point": -3}
    header, _ = model_data_sources(b"\x01\x02", "test", spec, {**spec, "shape": [1, *SIZE, 2]}, ("a", "b"), rules)
    assert "kInputMean[] = {0.25f}" in header and "kInputStd[] = {0.5f}" in header
    assert f"kPixelScale = {float(np.float32(PIXEL_SCALE)):.9g}f" in header
