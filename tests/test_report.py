"""roverlite.report: variant rows, runtime recommendation, peak, collected run folders, the rendered report."""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
from pathlib import Path

import pytest
from export_helpers import band_scenes
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from roverlite.deploy import save_testpack
from roverlite.deploy.bench import bench_many, write_bench_json
from roverlite.deploy.sidecar import read_sidecar, sidecar_path
from roverlite.report.build import build_report, report_run_dirs, summary_rows
from roverlite.report.collect import collect_run_dirs, infer_kind, variants_from_bench
from roverlite.deploy.peak import PeakResult
from roverlite.export.peak import measure_peak
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


def _iou(value):
    return {name: value for name in CLASSES}


def _rows(tiny_exports):
    return [
        VariantRow("teacher_fp32", "teacher float", artifact=str(tiny_exports["tflite"].path), format="tflite", miou=0.80,
                   per_class_iou=_iou(0.80), macs=2_000_000, params=8_000, size_bytes=tiny_exports["tflite"].size_bytes,
                   latency={"litert": {"p50_ms": 2.0, "p90_ms": 2.5}, "onnxruntime": {"p50_ms": 1.0, "p90_ms": 1.2}}),
        VariantRow("student_int8", "PTQ int8", artifact=str(tiny_exports["tflite_int8"].path), format="tflite_int8",
                   miou=0.75, per_class_iou={**_iou(0.75), "big_rock": None}, macs=1_000_000, params=8_000,
                   size_bytes=tiny_exports["tflite_int8"].size_bytes, latency={"litert": {"p50_ms": 0.5, "p90_ms": 0.6}},
                   gate={"passed": False, "reasons": ["mIoU drop 0.05 > 0.03"]}),
        VariantRow("keras_only", "distilled student", miou=0.7, notes=("no artifact yet",)),
    ]


# === The rendered report ===


def test_report_renders_variants_with_valid_pngs_and_self_contained_html(tiny_exports, tmp_path):
    images, masks = band_scenes(3, seed=31)
    paths = build_report(_rows(tiny_exports), tmp_path / "report", overlays=(images, masks), peak=PEAK, notes=["made by a test"])
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
    assert student["size_bytes"] == tiny_exports["tflite_int8"].size_bytes and student["macs"] == 1_000_000
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


def test_collect_run_dirs_merges_artifacts_bench_eval_and_gate_results(tiny_exports, tmp_path):
    run = tmp_path / "run"
    (run / "exports").mkdir(parents=True)
    for fmt in ("tflite", "onnx", "tflite_int8", "onnx_int8"):
        shutil.copyfile(tiny_exports[fmt].path, run / "exports" / tiny_exports[fmt].path.name)
        shutil.copyfile(tiny_exports[fmt].sidecar_path, sidecar_path(run / "exports" / tiny_exports[fmt].path.name))
    images, masks = band_scenes(2, seed=41)
    pack = save_testpack(run / "bundle" / "testpack.npz", images, masks)  # as in an unpacked bundle
    artifacts = [run / "exports" / tiny_exports[fmt].path.name for fmt in ("tflite", "onnx", "tflite_int8")]
    write_bench_json(bench_many(artifacts, runs=2, warmup=0, threads=1, testpack=pack), run / "bench.json")
    int8 = tiny_exports["tflite_int8"]
    (run / "eval_int8.json").write_text(json.dumps({
        "artifact": str(run / "exports" / int8.path.name), "sha256": int8.sha256, "images": 50, "miou": 0.5,
        "per_class_iou": _iou(0.5), "split": "val"}))
    (run / "gate_int8.json").write_text(json.dumps({"sha256": int8.sha256, "gate": {"passed": True}}))
    float_copy = run / "exports" / tiny_exports["tflite"].path.name
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


# === Human labels, deliverable, memory, Pareto labels (issue 22) ===

STEPS = [{"structured": {}}, {"qat": {}}, {"export": {}}]
TEACHER = {"source": "roverlite pipeline", "role": "teacher", "source_model": {"sha256": "teacher-model"}}


def _step(index, kind, source):
    return {"recipe": "r", "step": index, "step_kind": kind, "steps": STEPS, "source_model": {"sha256": source}}


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fake_artifact(tiny_exports, folder, fmt, name, recipe):
    """A stand-in file with a real sidecar (from the tiny export of ``fmt``) naming ``recipe``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_{fmt}{tiny_exports[fmt].path.suffix}"
    path.write_bytes(f"stand-in {path.name}".encode())
    sidecar = json.loads(tiny_exports[fmt].sidecar_path.read_text())
    sidecar.update(name=name, recipe=recipe)
    sidecar["artifact"] = {**sidecar["artifact"], "file": path.name, "sha256": _sha(path)}
    sidecar_path(path).write_text(json.dumps(sidecar))
    return path


def _bench_json(rows, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for artifact, fmt, p50, peak, miou in rows:
        stats = {"p50": p50, "p90": p50, "p99": p50, "mean": p50, "std": 0.0, "min": p50, "max": p50, "runs": 3}
        results.append({
            "artifact": str(artifact), "runtime": "onnxruntime" if artifact.suffix == ".onnx" else "litert",
            "name": read_sidecar(artifact).name, "format": fmt, "sha256": _sha(artifact), "latency_ms": stats,
            "peak_rss_mb": peak, "model_rss_mb": peak / 10, "isolated": True, "size_bytes": 1000,
            "accuracy": {"miou": miou, "per_class_iou": {**_iou(miou), "big_rock": miou / 2}, "images": 40},
        })
    path.write_text(json.dumps({"results": results}))


@pytest.fixture
def fake_run(tiny_exports, tmp_path):
    """A pipeline run: teacher tiny_exports, a 3-step recipe (structured, qat, export) and isolated benchmarks."""
    run = tmp_path / "run"
    t_float = _fake_artifact(tiny_exports, run / "exports", "tflite", "mars-teacher", TEACHER)
    t_onnx = _fake_artifact(tiny_exports, run / "exports", "onnx", "mars-teacher", TEACHER)
    t_int8 = _fake_artifact(tiny_exports, run / "exports", "tflite_int8", "mars-teacher", TEACHER)
    s1 = _fake_artifact(tiny_exports, run / "compress" / "1_structured", "tflite", "r-1-structured", _step(1, "structured", "s1"))
    s3 = _fake_artifact(tiny_exports, run / "compress" / "3_export", "tflite_int8", "r-3-export", _step(3, "export", "s3"))
    s3_onnx = _fake_artifact(tiny_exports, run / "compress" / "3_export", "onnx", "r-3-export", _step(3, "export", "s2"))
    _bench_json([(t_float, "tflite", 12.0, 70.0, 0.80), (t_onnx, "onnx", 9.0, 90.0, 0.80),
                 (t_int8, "tflite_int8", 4.0, 40.0, 0.79), (s1, "tflite", 6.0, 50.0, 0.78),
                 (s3, "tflite_int8", 1.5, 30.0, 0.77), (s3_onnx, "onnx", 3.0, 60.0, 0.775)], run / "bench" / "bench.json")
    folders = [run / "exports", run / "compress" / "1_structured", run / "compress" / "3_export", run / "bench"]
    return {"folders": folders, "deliverable": s3}


def test_labels_name_teacher_and_student_by_provenance_precision_and_runtime():
    from roverlite.report.labels import artifact_label, row_label

    assert artifact_label("tflite", TEACHER) == "teacher float"
    assert artifact_label("tflite_int8", {"step": 0, "step_kind": "teacher", "steps": STEPS}) == "teacher int8"
    assert artifact_label("onnx", TEACHER) == "teacher float (ONNX)"
    assert artifact_label("tflite_int8", _step(3, "export", "s")) == "student int8"
    assert artifact_label("onnx_int8", _step(3, "export", "s")) == "student int8 (ONNX)"
    assert artifact_label("tflite", _step(1, "structured", "s")) == "student float (step 1 structured)"
    assert artifact_label("tflite_float16", _step(3, "export", "s")) == "student float16"
    assert artifact_label("tflite_dynamic", _step(3, "export", "s")) == "student dynamic-range"
    assert artifact_label("tflite", {"source": "roverlite export"}) is None  # unknown provenance
    # one model exported by step 1 (TFLite) and the last step (ONNX): named by the last step, no "(ONNX)"
    sidecars = {"a.tflite": ("tflite", _step(1, "structured", "s")), "b.onnx": ("onnx", _step(3, "export", "s"))}
    row = VariantRow("r-1_float32", "pruned", artifact="a.tflite", precision="float32",
                     latency={"litert": {"p50_ms": 1.0, "artifact": "a.tflite"},
                              "onnxruntime": {"p50_ms": 2.0, "artifact": "b.onnx"}})
    assert row_label(row, sidecars.get) == "student float"
    assert row_label(VariantRow("x", "PTQ int8", artifact="c.tflite"), sidecars.get) is None


def test_collected_report_names_rows_by_what_they_are_and_keeps_the_file_as_a_detail(fake_run, tmp_path):
    paths = report_run_dirs(fake_run["folders"], tmp_path / "report", peak=False)
    summary = json.loads(paths.summary.read_text())
    labels = {v["name"]: (v["label"], v["file"]) for v in summary["variants"]}
    assert labels == {
        # TFLite and ONNX of one model: one row, its file the faster runtime's, no "(ONNX)" in its label
        "mars-teacher_float32": ("teacher float", "mars-teacher_onnx.onnx"),
        "mars-teacher_int8": ("teacher int8", "mars-teacher_tflite_int8.tflite"),
        "r-1-structured_float32": ("student float (step 1 structured)", "r-1-structured_tflite.tflite"),
        "r-3-export_int8": ("student int8", "r-3-export_tflite_int8.tflite"),
        "r-3-export_float32": ("student float (ONNX)", "r-3-export_onnx.onnx"),
    }
    assert summary["teacher"] == "mars-teacher_float32"
    markdown = paths.markdown.read_text()
    assert "| variant | file | kind |" in markdown
    assert "| student int8 | r-3-export_tflite_int8.tflite |" in markdown
    assert "| student float (step 1 structured) |" in markdown  # the per-class table too
    assert "r-3-export_int8" not in markdown  # the stem-based name is no longer what a reader sees


def test_report_opens_with_the_deliverable_verdict_and_its_speedup_over_both_teachers(fake_run, tmp_path):
    reasons = ["mIoU fell 3.0 points. Expected a drop <= 2.0 points."]
    deliverable = {"artifact": str(fake_run["deliverable"]), "label": None, "step": "3_export",
                   "gate": {"passed": False, "reasons": reasons, "rare_classes": ["big_rock"]}, "enforced": True}
    paths = report_run_dirs(fake_run["folders"], tmp_path / "report", peak=False, deliverable=deliverable)
    markdown = paths.markdown.read_text()
    sections = re.findall(r"^## (.+)$", markdown, flags=re.MULTILINE)
    assert sections[0] == "Deliverable" and sections[1] == "Variants"
    opening = markdown.split("## Variants")[0]
    assert "student int8 (r-3-export_tflite_int8.tflite, step 3_export): FAILED" in opening and reasons[0] in opening
    assert "speed-up vs teacher float" in opening and "speed-up vs teacher int8" in opening
    assert "6.00x" in opening and "2.67x" in opening  # teacher float's fastest (ONNX 9.0 ms) and int8 4.0 ms over 1.5 ms
    page = paths.html.read_text()
    assert page.index("Deliverable") < page.index("Variants") and 'class="verdict failed"' in page

    facts = json.loads(paths.summary.read_text())["deliverable"]
    assert facts["label"] == "student int8" and facts["variant"] == "r-3-export_int8"
    assert facts["verdict"] == "failed" and facts["enforced"] is True and facts["reasons"] == reasons
    assert facts["miou"] == 0.77 and facts["delta_miou"] == pytest.approx(-0.03) and facts["p50_ms"] == 1.5
    assert facts["rare_classes"]["big_rock"] == {"iou": 0.385, "reference_iou": 0.4, "ratio": pytest.approx(0.963)}
    assert facts["speedup_vs_teacher_float"] == pytest.approx(6.0)
    assert facts["speedup_vs_teacher_int8"] == pytest.approx(2.667, abs=1e-3)
    assert facts["size_bytes"] == fake_run["deliverable"].stat().st_size


def test_report_without_a_deliverable_has_no_deliverable_section_and_a_bad_one_is_refused(fake_run, tmp_path):
    paths = report_run_dirs(fake_run["folders"], tmp_path / "report", peak=False)
    assert "## Deliverable" not in paths.markdown.read_text()
    assert json.loads(paths.summary.read_text())["deliverable"] is None
    rows = [VariantRow("s", "PTQ int8", artifact="s.tflite", miou=0.5)]
    with pytest.raises(ValueError, match="Unknown deliverable keys"):
        build_report(rows, tmp_path / "r1", deliverable={"artifact": "s.tflite", "verdict": "ok"})
    with pytest.raises(ValueError, match=r"Expected deliverable\['gate'\]"):
        build_report(rows, tmp_path / "r2", deliverable={"artifact": "s.tflite", "gate": {"passed": "yes"}})
    not_gated = build_report(rows, tmp_path / "r3", deliverable={"artifact": "s.tflite", "label": "the robot's model"})
    assert "the robot's model (s.tflite): not gated" in not_gated.markdown.read_text()


@pytest.mark.parametrize("isolated", [True, False])
def test_memory_header_says_whether_the_peak_is_the_artifact_own_process_or_a_shared_one(isolated, tmp_path):
    memory = {"p50_ms": 1.0, "peak_rss_mb": 61.9, "model_rss_mb": 2.5, "isolated": isolated}
    rows = [VariantRow("a", "PTQ int8", miou=0.5, latency={"litert": memory}),
            VariantRow("b", "teacher float", miou=0.6, latency={"litert": {**memory, "peak_rss_mb": 88.0}})]
    paths = build_report(rows, tmp_path / "report")
    header = next(line for line in paths.markdown.read_text().splitlines() if line.startswith("| variant | file"))
    if isolated:
        assert "peak RSS MiB (own process) | model MiB (load)" in header and "shared" not in header
        assert "| 61.9 | 2.5 |" in paths.markdown.read_text()
    else:
        assert "process peak MiB (shared)" in header and "own process" not in header and "model MiB" not in header
    variant = json.loads(paths.summary.read_text())["variants"][0]
    assert (variant["peak_rss_mb"], variant["model_rss_mb"], variant["memory_isolated"]) == (61.9, 2.5, isolated)
    assert variant["latency_ms"]["litert"]["isolated"] is isolated


def test_collected_memory_comes_from_isolated_bench_rows(fake_run):
    rows = {row.name: row for row in collect_run_dirs(fake_run["folders"])}
    teacher = rows["mars-teacher_float32"]
    assert {e.runtime: (e.peak_rss_mb, e.isolated) for e in teacher.latency} == {
        "litert": (70.0, True), "onnxruntime": (90.0, True)}


def test_pareto_labels_of_close_points_do_not_overlap_each_other_or_leave_the_axes():
    from matplotlib.text import Text

    from roverlite.report.pareto import pareto_figure
    from roverlite.report.plots import _pyplot

    names = ["teacher float", "teacher int8", "teacher float (ONNX)", "student float", "student int8",
             "student int8 (ONNX)", "student float (step 1 structured)", "student dynamic-range"]
    rows = [VariantRow(f"v{i}", "teacher float" if "teacher" in label else "QAT int8", label=label,
                       miou=0.70 + 0.002 * (i % 3), size_bytes=100_000 * (i + 1),
                       latency={"litert": {"p50_ms": 2.0 + 0.03 * i}})
            for i, label in enumerate(names)]
    rows.append(VariantRow("far", "PTQ int8", label="far away", miou=0.5, latency={"litert": {"p50_ms": 5.0}}))
    fig, labels = pareto_figure(rows)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        frame = fig.axes[0].get_window_extent(renderer)
        boxes = [Text.get_window_extent(label, renderer) for label in labels]
        assert [label.get_text() for label in labels] == [*names, "far away"]
        for i, a in enumerate(boxes):
            assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
            for b in boxes[i + 1:]:
                assert min(a.x1, b.x1) <= max(a.x0, b.x0) or min(a.y1, b.y1) <= max(a.y0, b.y0), (a, b)
    finally:
        _pyplot().close(fig)


# === Rover safety: hazard columns and confusion heat maps ===


def _hazard(miss, false):
    return {"big_rock": {"miss_rate": miss, "false_rate": false, "traversable": ["soil", "sand"],
                         "hazard_pixels": 10, "traversable_pixels": 13}}


def test_report_shows_hazard_miss_rates_beside_the_teacher_and_writes_a_heat_map_per_variant(tmp_path):
    cm = [[5, 1, 2, 1], [0, 4, 0, 2], [1, 0, 3, 0], [3, 2, 1, 4]]
    rows = [
        VariantRow("teacher_fp32", "teacher float", miou=0.8, per_class_iou=_iou(0.8), hazards=_hazard(0.05, 0.01),
                   confusion_matrix=cm),
        VariantRow("student_int8", "student int8", miou=0.79, per_class_iou=_iou(0.79), hazards=_hazard(0.30, 0.02),
                   confusion_matrix=cm),
        VariantRow("keras_only", "distilled student", miou=0.7),
    ]
    paths = build_report(rows, tmp_path / "report", peak=None)
    assert [p.name for p in paths.confusion] == ["confusion_teacher_fp32.png", "confusion_student_int8.png"]
    for png in paths.confusion:
        with PILImage.open(png) as image:
            image.verify()
            assert image.format == "PNG"
    markdown = paths.markdown.read_text()
    assert "## Rover safety" in markdown and "big_rock miss rate (as soil / sand)" in markdown
    assert "](confusion_student_int8.png)" in markdown
    student_line = next(line for line in markdown.splitlines() if line.startswith("| student_int8 |") and "0.3000" in line)
    assert "+0.2500" in student_line  # Δ against the teacher's 0.0500
    assert paths.html.read_text().count("data:image/png;base64,") == 3  # pareto + two heat maps
    summary = {v["name"]: v for v in json.loads(paths.summary.read_text())["variants"]}
    assert summary["student_int8"]["hazards"]["big_rock"]["miss_rate"] == 0.30
    assert summary["keras_only"]["hazards"] == {}


def test_collected_rows_take_hazards_and_confusion_from_a_recipe_gate_json(tmp_path):
    from roverlite.compress.gate import GateConfig, compare_to_teacher, write_gate

    cm = [[5, 0, 0, 0], [0, 4, 0, 0], [0, 0, 3, 0], [0, 0, 3, 7]]
    teacher = {"miou": 0.9, "per_class_iou": _iou(0.9), "images": 80, "hazards": _hazard(0.0, 0.0)}
    student = {"miou": 0.88, "per_class_iou": _iou(0.88), "images": 80, "hazards": _hazard(0.3, 0.0),
               "confusion_matrix": cm}
    report = compare_to_teacher(teacher, student, GateConfig(max_hazard_miss_increase=0.02), "3_export",
                                str(tmp_path / "s_tflite_int8.tflite"), "tflite_int8")
    write_gate(tmp_path / "gate.json", "3_export", [report])
    from roverlite.report import collect

    measured = collect._hazard_fields({**student})
    assert measured == {"hazards": _hazard(0.3, 0.0), "confusion_matrix": cm}
    document = json.loads((tmp_path / "gate.json").read_text())["artifacts"][0]
    assert document["artifact_hazards"]["big_rock"]["miss_rate"] == 0.3
    assert document["artifact_confusion_matrix"] == cm and document["passed"] is False
    row = VariantRow.from_dict({**VariantRow("x", "student int8").to_dict(), **measured})
    assert row.confusion_matrix == tuple(map(tuple, cm)) and row.hazards["big_rock"]["miss_rate"] == 0.3
    with pytest.raises(ValueError, match="confusion_matrix"):
        VariantRow("bad", "student int8", confusion_matrix=[[1, 2]])
