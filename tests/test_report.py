"""roverlite.report: variant rows, runtime recommendation, peak, collected run folders, the rendered report."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pytest
from export_helpers import band_scenes, tiny_exports
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from roverlite.deploy import save_testpack
from roverlite.deploy.bench import bench_many, write_bench_json
from roverlite.deploy.sidecar import read_sidecar, sidecar_path
from roverlite.report.build import build_report, report_run_dirs, summary_rows
from roverlite.report.collect import collect_run_dirs, infer_kind, variants_from_bench
from roverlite.report.peak import PeakResult, measure_peak
from roverlite.report.tables import (
    RuntimeLatency,
    VariantRow,
    find_teacher,
    markdown_table,
    pareto_front,
    recommend_runtime,
)

CLASSES = ("soil", "bedrock", "sand", "big_rock")
PEAK = PeakResult(threads=1, fp32_blas_gmacs=40.0, fp32_litert_gmacs=50.0, int8_litert_gmacs=100.0, blas_size=256,
                  conv={"input": [1, 8, 8, 8], "filters": 8, "kernel": [3, 3], "macs": 4608}, repeats=3, cpu="test CPU")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return tiny_exports(tmp_path_factory)


def _iou(value):
    return {name: value for name in CLASSES}


def _rows(exports):
    return [
        VariantRow("teacher_fp32", "teacher float", artifact=str(exports["tflite"].path), format="tflite", miou=0.80,
                   per_class_iou=_iou(0.80), macs=2_000_000, params=8_000, size_bytes=exports["tflite"].size_bytes,
                   latency={"litert": {"p50_ms": 2.0, "p90_ms": 2.5}, "onnxruntime": {"p50_ms": 1.0, "p90_ms": 1.2}}),
        VariantRow("student_int8", "PTQ int8", artifact=str(exports["tflite_int8"].path), format="tflite_int8",
                   miou=0.75, per_class_iou={**_iou(0.75), "big_rock": None}, macs=1_000_000, params=8_000,
                   size_bytes=exports["tflite_int8"].size_bytes, latency={"litert": {"p50_ms": 0.5, "p90_ms": 0.6}},
                   gate={"passed": False, "reasons": ["mIoU drop 0.05 > 0.03"]}),
        VariantRow("keras_only", "distilled student", miou=0.7, notes=("no artifact yet",)),
    ]


# === The rendered report ===


def test_report_renders_variants_with_valid_pngs_and_self_contained_html(exports, tmp_path):
    images, masks = band_scenes(3, seed=31)
    paths = build_report(_rows(exports), tmp_path / "report", overlays=(images, masks), peak=PEAK, notes=["made by a test"])
    for png in (paths.pareto, paths.overlays):
        with PILImage.open(png) as image:
            image.verify()
            assert image.format == "PNG"
    page = paths.html.read_text()
    assert page.count("data:image/png;base64,") == 2
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.IGNORECASE)
    assert references and all(ref.startswith("data:") for ref in references)
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page
    markdown = paths.markdown.read_text()
    assert "](pareto.png)" in markdown and "](overlays.png)" in markdown
    for name in ("teacher_fp32", "student_int8", "keras_only", "FAILED: mIoU drop 0.05 > 0.03", "made by a test"):
        assert name in markdown and html.escape(name) in page

    summary = json.loads(paths.summary.read_text())
    assert summary["teacher"] == "teacher_fp32" and summary["peak"]["int8_litert_gmacs"] == 100.0
    teacher, student, keras_only = summary["variants"]
    assert student["delta_miou"] == pytest.approx(-0.05) and teacher["delta_miou"] == 0.0
    assert teacher["recommended_runtime"] == "onnxruntime" and teacher["p50_ms"] == 1.0
    assert student["size_bytes"] == exports["tflite_int8"].size_bytes and student["macs"] == 1_000_000
    # achieved GMAC/s = MACs / p50; int8 compares with the int8 peak, float with the better fp32 one
    assert student["gmac_per_s"] == pytest.approx(1e6 / 0.5e-3 / 1e9)
    assert student["peak_fraction"] == pytest.approx(2.0 / 100.0)
    assert teacher["peak_fraction"] == pytest.approx(2.0 / 50.0)
    assert keras_only["recommended_runtime"] is None and keras_only["p50_ms"] is None


def test_report_refuses_duplicate_names_and_an_unknown_teacher(tmp_path):
    row = VariantRow("a", "PTQ int8", miou=0.5)
    with pytest.raises(ValueError, match="unique"):
        build_report([row, row], tmp_path)
    with pytest.raises(ValueError, match="Unknown teacher"):
        build_report([row], tmp_path, teacher="b")
    with pytest.raises(ValueError, match="at least one"):
        build_report([], tmp_path)


# === Rows and decisions ===


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["litert", "onnxruntime", "tensorrt"]),
                                st.floats(0.01, 1000.0), min_size=1), min_size=1, max_size=6))
def test_recommended_runtime_is_never_slower_than_another_measured_one(latencies):
    rows = [VariantRow(f"v{i}", "PTQ int8", latency={rt: {"p50_ms": ms} for rt, ms in lat.items()})
            for i, lat in enumerate(latencies)]
    choices = recommend_runtime(rows)
    for row, lat in zip(rows, latencies):
        choice = choices[row.name]
        assert choice.p50_ms == lat[choice.runtime] == min(lat.values())
        assert all(choice.p50_ms <= other for other in choice.others.values())


def test_variant_rows_validate_and_round_trip_through_json():
    row = VariantRow("x", "QAT int8", miou=0.5, per_class_iou={"soil": 0.5, "sand": None}, macs=10,
                     latency=[RuntimeLatency("litert", 1.0, 2.0)])
    assert VariantRow.from_dict(json.loads(json.dumps(row.to_dict()))) == row
    with pytest.raises(ValueError, match="miou"):
        VariantRow("x", "QAT int8", miou=1.5)
    with pytest.raises(ValueError, match="one latency per runtime"):
        VariantRow("x", "QAT int8", latency=[RuntimeLatency("litert", 1.0), RuntimeLatency("litert", 2.0)])
    with pytest.raises(ValueError, match="p90_ms >= p50_ms"):
        RuntimeLatency("litert", 2.0, 1.0)
    with pytest.raises(ValueError, match="Unknown variant row fields"):
        VariantRow.from_dict({"name": "x", "kind": "y", "miuo": 0.5})


def test_pareto_front_keeps_points_no_other_beats_on_both_axes():
    points = [(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (0.5, 0.4), (2.0, 0.7), (4.0, 0.9)]
    assert pareto_front(points) == [3, 0, 1, 4, 5]
    assert markdown_table(["a", "b|c"], [[1, None]]) == "| a | b\\|c |\n| ---: | --- |\n| 1 | – |"


def test_teacher_reference_prefers_the_float_artifact_over_keras_and_int8_rows():
    rows = [VariantRow("keras", "teacher float", miou=0.70), VariantRow("t_int8", "teacher int8", artifact="a", miou=0.6),
            VariantRow("t_fp32", "teacher float", artifact="b", miou=0.69), VariantRow("s", "PTQ int8", miou=0.5)]
    assert find_teacher(rows).name == "t_fp32"
    assert find_teacher(rows, teacher="keras").name == "keras"
    assert find_teacher(rows[3:]) is None


def test_infer_kind_prefers_the_recipe_and_falls_back_on_name_and_precision():
    assert infer_kind("unet_xs", "int8", {"kind": "distilled student"}) == "distilled student"
    assert infer_kind("unet_teacher", "float32") == "teacher float"
    assert infer_kind("unet_xs", "int8", {"source": "roverlite export"}) == "PTQ int8"
    # roverlite compress provenance: the step's kind and the recipe's steps up to it
    steps = [{"distill": {}}, {"qat": {}}, {"export": {}}]
    assert infer_kind("r-0-teacher", "float32", {"step": 0, "step_kind": "teacher", "steps": steps}) == "teacher float"
    assert infer_kind("r-1-distill", "float32", {"step": 1, "step_kind": "distill", "steps": steps}) == "distilled student"
    assert infer_kind("r-3-export", "int8", {"step": 3, "step_kind": "export", "steps": steps}) == "QAT int8"
    assert infer_kind("r-1-export", "int8", {"step": 1, "step_kind": "export", "steps": [{"export": {}}]}) == "PTQ int8"


def _bench_row(artifact, runtime, p50, accuracy=None):
    stats = {"p50": p50, "p90": p50, "p99": p50, "mean": p50, "std": 0.0, "min": p50, "max": p50, "runs": 3}
    return {"artifact": artifact, "runtime": runtime, "name": "tiny", "format": Path(artifact).suffix[1:],
            "sha256": artifact, "latency_ms": stats, "accuracy": accuracy, "ok": True}


@pytest.mark.parametrize("onnx_p50", [0.5, 5.0])
def test_variant_accuracy_comes_from_the_artifact_scored_on_most_images_whatever_runtime_is_faster(onnx_p50):
    pack_score = {"miou": 0.9, "per_class_iou": _iou(0.9), "images": 2, "testpack": "pack.npz"}
    rows = variants_from_bench(
        [_bench_row("tiny.tflite", "litert", 1.0, pack_score), _bench_row("tiny.onnx", "onnxruntime", onnx_p50, pack_score)],
        accuracy={"tiny.tflite": {"miou": 0.6, "per_class_iou": _iou(0.6), "images": 80, "split": "val"}},
    )
    assert len(rows) == 1 and rows[0].miou == 0.6 and rows[0].artifact == "tiny.tflite"
    assert rows[0].accuracy_source == "80 images, from val"


def test_variant_accuracy_tie_goes_to_the_faster_runtime():
    rows = variants_from_bench([
        _bench_row("tiny.tflite", "litert", 1.0, {"miou": 0.7, "per_class_iou": _iou(0.7), "images": 2}),
        _bench_row("tiny.onnx", "onnxruntime", 0.5, {"miou": 0.8, "per_class_iou": _iou(0.8), "images": 2}),
    ])
    assert rows[0].miou == 0.8 and rows[0].artifact == "tiny.onnx"


# === Run folders and peak ===


def test_collect_run_dirs_merges_artifacts_bench_eval_and_gate_results(exports, tmp_path):
    run = tmp_path / "run"
    (run / "exports").mkdir(parents=True)
    for fmt in ("tflite", "onnx", "tflite_int8", "onnx_int8"):
        shutil.copyfile(exports[fmt].path, run / "exports" / exports[fmt].path.name)
        shutil.copyfile(exports[fmt].sidecar_path, sidecar_path(run / "exports" / exports[fmt].path.name))
    images, masks = band_scenes(2, seed=41)
    pack = save_testpack(run / "bundle" / "testpack.npz", images, masks)  # as in an unpacked bundle
    artifacts = [run / "exports" / exports[fmt].path.name for fmt in ("tflite", "onnx", "tflite_int8")]
    write_bench_json(bench_many(artifacts, runs=2, warmup=0, threads=1, testpack=pack), run / "bench.json")
    int8 = exports["tflite_int8"]
    (run / "eval_int8.json").write_text(json.dumps({
        "artifact": str(run / "exports" / int8.path.name), "sha256": int8.sha256, "images": 50, "miou": 0.5,
        "per_class_iou": _iou(0.5), "split": "val"}))
    (run / "gate_int8.json").write_text(json.dumps({"sha256": int8.sha256, "gate": {"passed": True}}))
    float_copy = run / "exports" / exports["tflite"].path.name
    (run / "exports" / "gate.json").write_text(json.dumps({  # a recipe step's gate.json (compress.gate.write_gate)
        "step": "3_export", "passed": False, "artifacts": [{
            "step": "3_export", "artifact": str(float_copy), "format": "tflite", "images": 80, "artifact_miou": 0.6,
            "artifact_iou": _iou(0.6), "passed": False, "reasons": ["mIoU drop 0.3 > 0.02"], "miou_drop": 0.3}]}))
    (run / "summary.json").write_text(json.dumps({
        "model": "unet_teacher", "miou": 0.9, "per_class_iou": _iou(0.9), "macs": 5, "params": 7,
        "model_path": "model.h5"}))
    rows = {row.name: row for row in collect_run_dirs([run])}
    assert set(rows) == {"unet_teacher_keras", "tiny_float32", "tiny_int8"}
    assert rows["unet_teacher_keras"].kind == "teacher float" and rows["unet_teacher_keras"].latency == ()
    float_row = rows["tiny_float32"]
    assert {e.runtime for e in float_row.latency} == {"litert", "onnxruntime"}
    assert float_row.miou == 0.6 and "80 images" in float_row.accuracy_source  # the gate scored the most images
    assert float_row.gate["passed"] is False and float_row.gate["reasons"] == ["mIoU drop 0.3 > 0.02"]
    int8_row = rows["tiny_int8"]
    assert int8_row.miou == 0.5 and "50 images" in int8_row.accuracy_source  # eval over more images wins
    assert int8_row.gate == {"passed": True} and int8_row.params == read_sidecar(int8.path).cost["params"] > 0
    assert [e.runtime for e in int8_row.latency] == ["litert"]  # onnx_int8 was not benchmarked

    paths = report_run_dirs([run], tmp_path / "report", peak=False, command="roverlite report run")
    assert paths.overlays is not None  # the bundle's test pack was found
    assert "roverlite report run" in paths.markdown.read_text()
    with pytest.raises(FileNotFoundError):
        collect_run_dirs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="Nothing to report"):
        collect_run_dirs([tmp_path / "empty"])


def test_measure_peak_gives_positive_rates_and_matches_precision():
    peak = measure_peak(threads=1, blas_size=96, conv_input=(8, 8, 8), conv_filters=8, repeats=2)
    assert peak.errors == ()
    assert peak.fp32_blas_gmacs > 0 and peak.fp32_litert_gmacs > 0 and peak.int8_litert_gmacs > 0
    assert peak.conv["macs"] == 8 * 8 * 8 * 9 * 8
    assert peak.peak_for("int8") == (peak.int8_litert_gmacs, "int8 LiteRT conv")
    assert peak.peak_for("float32")[0] == max(peak.fp32_blas_gmacs, peak.fp32_litert_gmacs)
    assert PeakResult.from_dict(json.loads(json.dumps(peak.to_dict()))) == peak
    assert summary_rows([VariantRow("a", "PTQ int8", macs=10)], peak)[0]["peak_fraction"] is None  # no latency
