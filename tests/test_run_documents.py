"""Run-folder documents: kind + schema_version stamps, typed readers, legacy documents, and the report on them."""

from __future__ import annotations

import json
import logging

import pytest

from roverlite.core import documents as docs
from roverlite.core.documents import UnknownDocumentError, parse_document, read_document, stamp
from roverlite.deploy.bench import BENCH_SCHEMA_VERSION
from roverlite.io import write_document
from roverlite.report.build import REPORT_SCHEMA_VERSION
from roverlite.report.collect import collect_run_dirs

CLASSES = ("soil", "bedrock", "sand", "big_rock")
SHA = "a" * 64


def _iou(value):
    return {name: value for name in CLASSES}


def _stats(p50):
    return {"p50": p50, "p90": p50, "p99": p50, "mean": p50, "std": 0.0, "min": p50, "max": p50, "runs": 3}


def _bench_row(artifact, fmt, p50, sha=SHA):
    return {"artifact": artifact, "runtime": "onnxruntime" if artifact.endswith(".onnx") else "litert", "name": "tiny",
            "format": fmt, "sha256": sha, "latency_ms": _stats(p50), "size_bytes": 1000,
            "accuracy": {"miou": 0.4, "per_class_iou": _iou(0.4), "images": 10}}


def _gate_report(artifact, images=80, miou=0.6):
    return {"step": "3_export", "artifact": artifact, "format": "tflite", "images": images, "artifact_miou": miou,
            "artifact_iou": _iou(miou), "passed": False, "reasons": ["mIoU drop 0.3 > 0.02"], "miou_drop": 0.3}


# Bodies as each writer produces them (before the stamp), and the typed field each reader must give back.
BODIES = {
    docs.TRAIN_SUMMARY: ({"model": "unet_teacher", "best_epoch": 2, "epochs_run": 3, "miou": 0.9,
                          "per_class_iou": _iou(0.9), "params": 7, "macs": 5, "model_path": "model.h5"},
                         lambda d: (d.model, d.miou, d.epochs_run, d.model_path, d.macs) == ("unet_teacher", 0.9, 3,
                                                                                             "model.h5", 5)),
    docs.EVAL: ({"miou": 0.5, "per_class_iou": _iou(0.5), "images": 50, "artifact": "/r/tiny_tflite.tflite",
                 "sha256": SHA, "split": "val"},
                lambda d: (d.miou, d.images, d.sha256, d.artifact, d.gate) == (0.5, 50, SHA, "/r/tiny_tflite.tflite", None)),
    docs.RECIPE_RESULT: ({"recipe": "r", "status": "passed", "message": "", "out_dir": "/c",
                          "teacher": {"sha256": SHA, "miou": 0.9},
                          "steps": [{"index": 1, "kind": "distill", "dir": "/c/1_distill", "passed": True,
                                     "artifacts": [{"artifact": "/c/1_distill/s_tflite.tflite", "gate_passed": True}],
                                     "gate_reasons": []}]},
                         lambda d: (d.recipe, d.status, d.teacher["sha256"], d.steps[0].kind, d.steps[0].dir,
                                    d.steps[0].artifacts[0]["gate_passed"]) == ("r", "passed", SHA, "distill",
                                                                                "/c/1_distill", True)),
    docs.GATE: ({"step": "3_export", "passed": False, "artifacts": [_gate_report("/r/tiny_tflite.tflite")]},
                lambda d: (d.step, d.passed, d.artifacts[0]["artifact_miou"]) == ("3_export", False, 0.6)),
    docs.GATE_VERDICT: ({"sha256": SHA, "gate": {"passed": True}},
                        lambda d: (d.sha256, dict(d.gate), d.variant) == (SHA, {"passed": True}, None)),
    docs.VARIANT: ({"variant": {"name": "hand_made", "kind": "PTQ int8", "miou": 0.3}},
                   lambda d: d.variant["name"] == "hand_made"),
    docs.BENCH: ({"schema_version": 1, "command": "pytest", "host": {}, "comparisons": [],
                  "results": [_bench_row("/r/tiny_tflite.tflite", "tflite", 2.0)]},
                 lambda d: (d.command, d.results[0]["runtime"]) == ("pytest", "litert")),
    docs.REPORT_SUMMARY: ({"schema_version": 1, "generated": "now", "teacher": "t_float32", "deliverable": None,
                           "peak": None, "variants": [{"name": "t_float32", "miou": 0.9}]},
                          lambda d: (d.teacher, d.variants[0]["name"]) == ("t_float32", "t_float32")),
}


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_each_document_kind_round_trips_through_its_stamped_file(kind, tmp_path):
    body, check = BODIES[kind]
    path = write_document(tmp_path / f"{kind}.json", kind, body)
    saved = json.loads(path.read_text())
    assert (saved["kind"], saved["schema_version"]) == (kind, docs.VERSIONS[kind])
    document = read_document(path)
    assert check(document)
    assert read_document(path, expect=kind) == document


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_an_unstamped_document_written_before_the_stamp_is_still_read_as_its_kind(kind, tmp_path, caplog):
    body, check = BODIES[kind]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(body))
    with caplog.at_level(logging.DEBUG, logger="roverlite.core.documents"):
        document = read_document(path)
    assert check(document)
    assert any("no 'kind' stamp" in r.message and r.levelno == logging.DEBUG for r in caplog.records)


def test_an_unstamped_file_the_caller_names_is_read_as_the_kind_it_expects(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"miou": 0.7, "epochs_run": 3}))  # an early training summary: no model, no per-class
    summary = read_document(path, expect=docs.TRAIN_SUMMARY)
    assert (summary.miou, summary.epochs_run, summary.model) == (0.7, 3, None)
    with pytest.raises(UnknownDocumentError, match="Expected a run document"):
        read_document(path)
    write_document(path, docs.GATE, BODIES[docs.GATE][0])
    with pytest.raises(ValueError, match=r"Expected a train_summary document .*Received: kind='gate'"):
        read_document(path, expect=docs.TRAIN_SUMMARY)


def test_an_unknown_kind_is_refused_with_the_known_ones_listed(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"kind": "telemetry", "schema_version": 1}))
    with pytest.raises(ValueError, match=r"Unknown document kind .*Expected one of \[.*'gate'.*\]\. Received: kind='telemetry'"):
        read_document(path)
    with pytest.raises(UnknownDocumentError):
        stamp("telemetry", {})


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_a_document_newer_than_this_reader_is_refused(kind, tmp_path):
    path = tmp_path / "new.json"
    path.write_text(json.dumps({**stamp(kind, BODIES[kind][0]), "schema_version": docs.VERSIONS[kind] + 1}))
    with pytest.raises(ValueError, match=rf"newer than this reader\. Expected schema_version <= "
                                         rf"{docs.VERSIONS[kind]}\. Received: schema_version={docs.VERSIONS[kind] + 1}"):
        read_document(path)


def test_a_field_of_the_wrong_type_names_the_key_and_the_file():
    with pytest.raises(ValueError, match=r"Expected 'miou' to be int/float in the eval document f\.json\. Received: 'high'"):
        parse_document(stamp(docs.EVAL, {"miou": "high", "per_class_iou": {}}), "f.json")
    with pytest.raises(ValueError, match="schema_version to be a positive integer"):
        parse_document({"kind": docs.GATE, "schema_version": True}, "f.json")


def test_other_json_in_a_run_folder_is_not_a_run_document(tmp_path):
    for name, value in {"splits.json": {"train": ["a"], "val": ["b"]}, "list.json": [1, 2],
                        "sidecar.json": {"schema_version": 1, "task": "semantic_segmentation",
                                         "artifact": {"file": "x.tflite"}, "miou": 1, "per_class_iou": {}}}.items():
        (tmp_path / name).write_text(json.dumps(value))
        with pytest.raises(UnknownDocumentError):
            read_document(tmp_path / name)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UnknownDocumentError, match="Expected JSON"):
        read_document(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError, match="Expected a JSON file"):
        read_document(tmp_path / "missing.json")


def test_stamp_refuses_a_body_with_its_own_kind_key():
    with pytest.raises(ValueError, match="without a 'kind' key. Received: kind='distill'"):
        stamp(docs.EVAL, {"kind": "distill"})


def test_every_kind_has_a_reader_and_writers_share_the_readers_versions():
    assert set(docs._PARSERS) == set(docs.VERSIONS)
    assert BENCH_SCHEMA_VERSION == docs.VERSIONS[docs.BENCH]  # deploy keeps its own constant (bundles copy no documents.py)
    assert REPORT_SCHEMA_VERSION == docs.VERSIONS[docs.REPORT_SUMMARY]


# === The report on stamped and unstamped folders ===


def _run_folder(folder, write):
    """One document of each kind the report reads, through ``write(path, kind, body)``."""
    folder.mkdir(parents=True)
    onnx = "/r/tiny_onnx.onnx"
    bench = {"schema_version": 1, "command": "pytest", "results": [
        _bench_row("/r/tiny_tflite.tflite", "tflite", 2.0), _bench_row(onnx, "onnx", 1.0, sha="b" * 64),
        _bench_row("/r/tiny_tflite_int8.tflite", "tflite_int8", 0.5, sha="c" * 64)]}
    write(folder / "bench.json", docs.BENCH, bench)
    write(folder / "eval_int8.json", docs.EVAL, {"artifact": "/r/tiny_tflite_int8.tflite", "sha256": "c" * 64,
                                                 "images": 50, "miou": 0.5, "per_class_iou": _iou(0.5)})
    write(folder / "verdict.json", docs.GATE_VERDICT, {"artifact": "/r/tiny_tflite_int8.tflite", "gate": {"passed": True}})
    write(folder / "gate.json", docs.GATE, {"step": "3_export", "passed": False, "artifacts": [_gate_report(onnx)]})
    write(folder / "summary.json", docs.TRAIN_SUMMARY, BODIES[docs.TRAIN_SUMMARY][0])
    write(folder / "row.json", docs.VARIANT, BODIES[docs.VARIANT][0])
    write(folder / "recipe_result.json", docs.RECIPE_RESULT, BODIES[docs.RECIPE_RESULT][0])
    write(folder / "splits.json", None, {"train": ["a"], "val": ["b"]})  # not a run document: skipped
    return folder


def _unstamped(path, kind, body):
    path.write_text(json.dumps(body))


def _stamped(path, kind, body):
    if kind is None:
        _unstamped(path, kind, body)
    else:
        write_document(path, kind, body)


def test_report_collects_the_same_rows_from_stamped_documents_as_from_unstamped_ones(tmp_path):
    old = {row.name: row for row in collect_run_dirs([_run_folder(tmp_path / "old" / "run", _unstamped)])}
    new = {row.name: row for row in collect_run_dirs([_run_folder(tmp_path / "new" / "run", _stamped)])}
    assert new == old
    assert set(new) == {"unet_teacher_keras", "tiny_float32", "tiny_int8", "hand_made"}
    assert new["unet_teacher_keras"].kind == "teacher float" and new["unet_teacher_keras"].miou == 0.9
    float_row = new["tiny_float32"]
    assert float_row.miou == 0.6 and "80 images" in float_row.accuracy_source  # the gate scored the most images
    assert float_row.gate["passed"] is False and float_row.gate["reasons"] == ["mIoU drop 0.3 > 0.02"]
    assert new["tiny_int8"].miou == 0.5 and new["tiny_int8"].gate == {"passed": True}


def test_report_stops_on_a_document_newer_than_this_code(tmp_path):
    folder = _run_folder(tmp_path / "run", _stamped)
    (folder / "gate.json").write_text(json.dumps({**stamp(docs.GATE, BODIES[docs.GATE][0]), "schema_version": 99}))
    with pytest.raises(ValueError, match="newer than this reader"):
        collect_run_dirs([folder])


def test_pipeline_names_the_same_deliverable_from_a_stamped_recipe_result_as_from_an_unstamped_one(tmp_path):
    from roverlite.pipeline import deliverable_of

    found = []
    for name, write in (("old", _unstamped), ("new", _stamped)):
        run = tmp_path / name
        (run / "compress").mkdir(parents=True)
        write(run / "compress" / "recipe_result.json", docs.RECIPE_RESULT, BODIES[docs.RECIPE_RESULT][0])
        delivered = deliverable_of(run, enforced=True)
        found.append({**delivered, "artifact": delivered["artifact"].replace(str(run), "RUN")})
    assert found[0] == found[1]
    assert found[1] == {"artifact": "RUN/compress/1_distill/s_tflite.tflite", "label": None, "step": "1_distill",
                        "gate": {"passed": True, "reasons": []}, "enforced": True}
