"""Export round trips for every format on a tiny trained U-Net, plus the export's input checks."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from export_helpers import DATA_CFG, SIZE, band_scenes, trained_tiny_model

from roverlite.config import DataConfig
from roverlite.deploy import Segmenter, evaluate_artifact, read_sidecar
from roverlite.export import (
    ExportResult,
    ExportSettings,
    Tolerances,
    export_model,
    get_format,
    list_formats,
)
from roverlite.io import sha256_file

FLOAT32_FORMATS = ("tflite", "onnx")
QUANTIZED_FORMATS = ("tflite_dynamic", "tflite_int8", "onnx_int8")
# Stated tolerance for quantized artifacts against the Keras model on held-out scenes.
QUANTIZED_MIOU_TOLERANCE = 0.03
QUANTIZED_CLASS_IOU_TOLERANCE = 0.06
# Float32 kernels may reorder sums: pixels whose Keras top-2 logits are closer than this are ties.
FLOAT32_TIE_MARGIN = 1e-4
FLOAT16_TIE_MARGIN = 5e-2


@pytest.fixture(scope="module")
def heldout():
    return band_scenes(12, seed=3)


def _keras_logits(images: np.ndarray) -> np.ndarray:
    from roverlite.data.loader import normalize

    return np.asarray(trained_tiny_model()(normalize(images, DATA_CFG.mean, DATA_CFG.std), training=False))


def _keras_miou(images: np.ndarray, masks: np.ndarray) -> dict:
    from roverlite.train.evaluate import evaluate_arrays

    return evaluate_arrays(trained_tiny_model(), images, masks, DATA_CFG)


# === Every format ===


def test_export_writes_every_format_in_table_order(tiny_exports):
    assert list(tiny_exports) == list_formats()
    assert set(list_formats()) == {"tflite", "tflite_fp16", "tflite_dynamic", "tflite_int8", "c_array", "onnx", "onnx_int8"}


@pytest.mark.parametrize("fmt", list_formats())
def test_every_format_passes_its_self_check_and_records_it_in_the_sidecar(tiny_exports, fmt):
    result = tiny_exports[fmt]
    assert isinstance(result, ExportResult)
    assert result.passed, result.check
    assert result.path.name == f"tiny{get_format(fmt).suffix}"
    assert result.size_bytes == result.path.stat().st_size
    assert result.sha256 == sha256_file(result.path)
    sidecar = read_sidecar(result.path)
    assert sidecar.format == fmt and sidecar.runtime == get_format(fmt).runtime
    assert sidecar.sha256 == result.sha256 and sidecar.size_bytes == result.size_bytes
    assert sidecar.self_check["passed"] is True and sidecar.self_check["truth"] == "masks"
    assert sidecar.classes == DATA_CFG.classes and sidecar.ignore_index == 255
    assert sidecar.mean == (0.5,) and sidecar.std == (0.25,)
    assert sidecar.input.shape == (1, SIZE, SIZE, 1) and sidecar.output.shape == (1, SIZE, SIZE, 4)
    assert {"tensorflow", "tf-keras", "numpy", "onnxruntime", "ai-edge-litert"} <= set(sidecar.versions)
    assert sidecar.cost["macs"] > 0 and sidecar.cost["params"] > 0
    assert sidecar.recipe["test"] is True and sidecar.recipe["export"]["format"] == fmt


@pytest.mark.parametrize("fmt", FLOAT32_FORMATS)
def test_float32_artifact_predicts_exactly_like_keras_up_to_argmax_ties(tiny_exports, heldout, fmt):
    images, masks = heldout
    reference = _keras_logits(images)
    segmenter = Segmenter(tiny_exports[fmt].path)
    predicted = segmenter.predict_batch(images)
    differ = predicted != reference.argmax(-1)
    top2 = np.sort(reference, axis=-1)[..., -2:]
    assert np.all((top2[..., 1] - top2[..., 0])[differ] < FLOAT32_TIE_MARGIN)
    if not differ.any():
        keras, artifact = _keras_miou(images, masks), evaluate_artifact(segmenter, images, masks)
        assert artifact["per_class_iou"] == keras["per_class_iou"]
        assert artifact["confusion_matrix"] == keras["confusion_matrix"]


def test_float16_artifact_differs_from_keras_only_at_near_ties(tiny_exports, heldout):
    images, _ = heldout
    reference = _keras_logits(images)
    predicted = Segmenter(tiny_exports["tflite_fp16"].path).predict_batch(images)
    differ = predicted != reference.argmax(-1)
    top2 = np.sort(reference, axis=-1)[..., -2:]
    assert np.all((top2[..., 1] - top2[..., 0])[differ] < FLOAT16_TIE_MARGIN)


@pytest.mark.parametrize("fmt", QUANTIZED_FORMATS)
def test_quantized_artifact_miou_is_within_tolerance_of_keras(tiny_exports, heldout, fmt):
    images, masks = heldout
    keras = _keras_miou(images, masks)
    artifact = evaluate_artifact(tiny_exports[fmt].path, images, masks)
    assert keras["miou"] > 0.8  # the tiny model did learn the task, so the comparison means something
    assert abs(artifact["miou"] - keras["miou"]) <= QUANTIZED_MIOU_TOLERANCE
    for name, iou in keras["per_class_iou"].items():
        assert abs(artifact["per_class_iou"][name] - iou) <= QUANTIZED_CLASS_IOU_TOLERANCE, name


# === What the int8 TFLite contains ===


def test_int8_tflite_has_int8_io_and_weights_and_no_float_tensors(tiny_exports):
    from ai_edge_litert.interpreter import Interpreter

    from roverlite.export.tflite import float_ops, tflite_ops

    content = tiny_exports["tflite_int8"].path.read_bytes()
    interpreter = Interpreter(model_content=content)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    dtypes = {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    assert dtypes <= {"int8", "int32"}, dtypes  # int32: biases and shape operands
    assert float_ops(content, float_io=False) == []
    ops = {op.name for op in tflite_ops(content)}
    assert ops == {"CONV_2D", "MAX_POOL_2D", "CONCATENATION", "TRANSPOSE_CONV"}
    sidecar = read_sidecar(tiny_exports["tflite_int8"].path)
    scale, zero_point = interpreter.get_input_details()[0]["quantization"]
    assert sidecar.input.quantization.scale == pytest.approx(scale)
    assert sidecar.input.quantization.zero_point == zero_point
    assert sidecar.output.quantization is not None


def test_int8_tflite_with_float_io_has_float_only_at_quantize_and_dequantize_edges():
    from roverlite.data.loader import normalize
    from roverlite.export.tflite import convert_int8, float_ops, tflite_ops

    calibration = normalize(band_scenes(8, seed=1)[0], DATA_CFG.mean, DATA_CFG.std)
    content = convert_int8(trained_tiny_model(), calibration, int8_io=False)
    ops = tflite_ops(content)
    assert ops[0].name == "QUANTIZE" and ops[0].input_types == ("float32",)
    assert ops[-1].name == "DEQUANTIZE" and ops[-1].output_types == ("float32",)
    assert float_ops(content, float_io=True) == []
    assert len(float_ops(content, float_io=False)) == 2


@pytest.mark.parametrize("fmt", ["tflite", "tflite_fp16", "tflite_dynamic", "tflite_int8"])
def test_tflite_artifacts_use_builtin_ops_only(tiny_exports, fmt):
    from roverlite.export.tflite import check_builtin_ops, tflite_ops

    content = tiny_exports[fmt].path.read_bytes()
    check_builtin_ops(content)
    assert not [op.name for op in tflite_ops(content) if op.name.startswith("Flex")]


def test_flex_op_detector_refuses_a_select_tf_ops_model():
    from roverlite._tf import tf
    from roverlite.export.tflite import check_builtin_ops

    class Determinant(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([4, 4], tf.float32)])
        def __call__(self, x):
            return tf.raw_ops.MatrixDeterminant(input=x)[None]

    module = Determinant()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    with pytest.raises(ValueError, match="FlexMatrixDeterminant"):
        check_builtin_ops(converter.convert())


# === Bad inputs are refused before any conversion ===


@pytest.fixture
def no_conversion(monkeypatch):
    """Fail the test if a converter is reached."""
    from roverlite._tf import tf

    def refuse(*args, **kwargs):
        raise AssertionError("conversion started before the input check")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_concrete_functions", refuse)
    import tf2onnx

    monkeypatch.setattr(tf2onnx.convert, "from_keras", refuse)


@pytest.mark.parametrize("fmt", ["tflite_int8", "onnx_int8"])
@pytest.mark.parametrize(
    "calibration, message",
    [
        (None, "Received: None"),
        (np.zeros((0, SIZE, SIZE, 1), np.uint8), "non-empty"),
        (np.zeros((4, 16, 16, 1), np.uint8), r"shape=\(4, 16, 16, 1\)"),
        (np.zeros((4, SIZE, SIZE, 3), np.uint8), r"shape=\(4, 32, 32, 3\)"),
        (np.zeros((4, SIZE, SIZE), np.uint8), r"shape=\(4, 32, 32\)"),
        (np.zeros((4, SIZE, SIZE, 1), np.float32), "dtype=float32"),
    ],
    ids=["none", "empty", "wrong-size", "wrong-channels", "no-channel-axis", "float"],
)
def test_bad_representative_set_raises_before_conversion(tmp_path, no_conversion, fmt, calibration, message):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        export_model(trained_tiny_model(), ExportSettings([fmt], out, DATA_CFG, calibration_images=calibration))
    assert not out.exists()


@pytest.mark.parametrize("converter", ["tflite", "onnx"])
def test_converters_refuse_bad_calibration_arrays_directly(no_conversion, converter):
    from roverlite.export import onnx as onnx_export
    from roverlite.export import tflite as tflite_export

    convert = tflite_export.convert_int8 if converter == "tflite" else onnx_export.convert_int8
    with pytest.raises(ValueError, match="non-empty"):
        convert(trained_tiny_model(), np.zeros((0, SIZE, SIZE, 1), np.float32))
    with pytest.raises(ValueError, match="finite"):
        convert(trained_tiny_model(), np.full((2, SIZE, SIZE, 1), np.nan, np.float32))


def test_unknown_format_suggests_the_closest_name(tmp_path, no_conversion):
    with pytest.raises(ValueError, match='Unknown export format.*Received: \'tflite_int9\'. Did you mean "tflite_int8"'):
        export_model(trained_tiny_model(), ExportSettings(["tflite", "tflite_int9"], tmp_path, DATA_CFG))
    with pytest.raises(ValueError, match='Did you mean "onnx_int8"'):
        get_format("onnx-int8")


def test_duplicate_or_empty_format_list_is_refused(tmp_path, no_conversion):
    with pytest.raises(ValueError, match="more than once"):
        export_model(trained_tiny_model(), ExportSettings(["onnx", "onnx"], tmp_path, DATA_CFG))
    with pytest.raises(ValueError, match="at least one"):
        export_model(trained_tiny_model(), ExportSettings([], tmp_path, DATA_CFG))


def test_the_removed_keyword_form_is_refused_naming_the_one_front_door(tmp_path, no_conversion):
    expected = r"Expected export_model\(model, ExportSettings\(\.\.\.\)\).*Received: a list of formats"
    with pytest.raises(ValueError, match=expected):
        export_model(trained_tiny_model(), ["tflite"], tmp_path / "out", DATA_CFG, name="tiny")
    with pytest.raises(ValueError, match=r"Received: a format name 'tflite' and keyword\(s\) \['data_cfg', 'out_dir'"):
        export_model(trained_tiny_model(), "tflite", out_dir=tmp_path / "out", data_cfg=DATA_CFG)
    assert not (tmp_path / "out").exists()


def test_model_that_does_not_match_the_data_config_is_refused(tmp_path, no_conversion):
    with pytest.raises(ValueError, match=r"Expected \(H, W, C\)=\(64, 64, 1\).*Received: \(32, 32, 1\)"):
        export_model(trained_tiny_model(), ExportSettings(["tflite"], tmp_path, DataConfig(image_size=(64, 64))))
    with pytest.raises(ValueError, match="Expected one output with 3 logits"):
        export_model(trained_tiny_model(), ExportSettings(
            ["tflite"], tmp_path, DataConfig(image_size=(32, 32), classes=("a", "b", "c"))))


def test_check_masks_must_match_check_images(tmp_path, no_conversion):
    images, masks = band_scenes(4, seed=5)
    with pytest.raises(ValueError, match="Wrong check_masks"):
        export_model(trained_tiny_model(), ExportSettings(
            ["tflite"], tmp_path, DATA_CFG, check_images=images, check_masks=masks[:2]))


# === A failed self-check keeps the artifact ===


def test_failed_self_check_still_writes_the_artifact_and_warns(tmp_path, caplog):
    strict = Tolerances(float32_atol=0.0, float32_rtol=0.0)
    images, masks = band_scenes(2, seed=4)
    with caplog.at_level(logging.WARNING, logger="roverlite.export"):
        [result] = export_model(
            trained_tiny_model(), ExportSettings(["onnx"], tmp_path, DATA_CFG, check_images=images, check_masks=masks,
            name="strict", tolerances=strict)
        )
    assert result.passed is False and result.path.is_file()
    assert any("max abs logit error" in f for f in result.check["failures"])
    assert read_sidecar(result.path).self_check["passed"] is False
    assert "self-check FAILED" in caplog.text


def test_tolerances_reject_negative_or_nan_limits():
    with pytest.raises(ValueError, match="max_miou_drop"):
        Tolerances(max_miou_drop=-0.1)
    with pytest.raises(ValueError, match="float32_atol"):
        Tolerances(float32_atol=float("nan"))


# === The CLI's entry points ===


def test_cli_entry_points_export_evaluate_and_bundle_a_model_file(tmp_path):
    import dataclasses

    from roverlite.export.dataset import (
        bundle_from_split,
        evaluate_artifact_on_split,
    )
    from roverlite.train.modelfile import save_model_file

    model_file = save_model_file(trained_tiny_model(), tmp_path / "run" / "model.h5")
    data_cfg = dataclasses.replace(DATA_CFG, synthetic_count=8)
    settings = ExportSettings.from_run(
        ["onnx", "tflite_int8"], tmp_path / "exports", data_cfg, max_check_images=3, representative_count=4,
    )
    results = export_model(tmp_path / "run", settings)
    assert [r.format for r in results] == ["onnx", "tflite_int8"]
    sidecar = read_sidecar(results[1].path)
    assert sidecar.source_sha256 == sha256_file(model_file) and sidecar.source_path == str(model_file.resolve())
    assert sidecar.recipe["export"]["calibration_images"] == 4 and sidecar.recipe["calibration_split"] == "train"

    scores = evaluate_artifact_on_split(results[1].path, data_cfg, split="val")
    assert scores["split"] == "val" and scores["format"] == "tflite_int8" and 0.0 <= scores["miou"] <= 1.0
    with pytest.raises(ValueError, match="other classes"):
        evaluate_artifact_on_split(results[1].path, dataclasses.replace(data_cfg, classes=("a", "b", "c", "d")))

    archive = bundle_from_split(results[0].path, tmp_path / "tiny.tar.gz", data_cfg, max_images=2)
    assert archive.is_file()


@pytest.mark.slow  # ~14 s here: TFMOT import, quantize_model and a QAT conversion
def test_quantization_aware_model_exports_to_int8_tflite_keeping_its_learnt_ranges(tmp_path):
    import tensorflow_model_optimization as tfmot

    from roverlite.export.tflite import float_ops

    qat = tfmot.quantization.keras.quantize_model(trained_tiny_model())
    images, masks = band_scenes(4, seed=6)
    [result] = export_model(
        qat, ExportSettings(["tflite_int8"], tmp_path, DATA_CFG, calibration_images=images, check_images=images,
                            check_masks=masks)
    )
    assert result.passed, result.check
    # The int8 model runs (up to rounding steps) what the fake-quant graph simulates.
    assert result.check["argmax_agreement"] > 0.99, result.check
    assert float_ops(result.path.read_bytes(), float_io=False) == []


# === Re-export into a folder holding an export (issue 23) ===


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler cleans up."""


def _other_model():
    from roverlite._tf import keras
    from roverlite.train.models import create_model

    keras.utils.set_random_seed(7)
    return create_model("unet_tiny", input_shape=(SIZE, SIZE, 1), num_classes=4)


@pytest.mark.parametrize("renames_done", [1, 2], ids=["before-the-commit-point", "between-the-last-two-renames"])
def test_reexport_killed_during_its_renames_leaves_a_pair_the_reader_takes_and_the_next_export_finishes(
    tiny_exports, tmp_path, monkeypatch, renames_done
):
    import os
    import shutil
    from pathlib import Path

    import roverlite.io as rio
    from roverlite.deploy.sidecar import load_verified, pending_sidecar_path

    out = tmp_path / "exports"
    out.mkdir()
    old = tiny_exports["tflite"]
    for path in (old.path, old.sidecar_path):
        shutil.copyfile(path, out / path.name)
    artifact, sidecar = out / old.path.name, out / old.sidecar_path.name
    images, _ = band_scenes(2, seed=4)
    calls = []

    real_replace = os.replace

    def replace(src, dst, **kwargs):
        if Path(dst).parent == out:  # the pair's renames (other libraries rename their own files)
            if len(calls) == renames_done:
                raise _Killed
            calls.append(dst)
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(rio.os, "replace", replace)
    with pytest.raises(_Killed):
        export_model(_other_model(), ExportSettings(["tflite"], out, DATA_CFG, check_images=images, name="tiny"))
    monkeypatch.undo()

    new_sha = sha256_file(artifact)
    pending = pending_sidecar_path(artifact)
    assert pending.is_file()  # the new sidecar waits beside the pair
    if renames_done == 1:  # killed before the commit point: the previous pair, untouched
        assert new_sha == old.sha256 and read_sidecar(artifact).sha256 == old.sha256
    else:  # the new artifact is in place, its sidecar still pending: the reader takes the pending one
        assert new_sha != old.sha256 and read_sidecar(artifact).sha256 == old.sha256
    assert load_verified(artifact)[0].sha256 == new_sha
    assert Segmenter(artifact).predict(images[0]).shape == (SIZE, SIZE)

    (result,) = export_model(_other_model(), ExportSettings(["tflite"], out, DATA_CFG, check_images=images, name="tiny"))
    assert not pending.exists()  # finished (or dropped) before the new export, then replaced whole
    assert read_sidecar(artifact).sha256 == sha256_file(artifact) == result.sha256
    assert sorted(p.name for p in out.iterdir()) == sorted([artifact.name, sidecar.name])
