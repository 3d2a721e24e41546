"""roverlite.deploy.bench: latency statistics, bench rows and their JSON, failed rows, device-side runs."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from export_helpers import BLOCKED_MODULES, band_scenes, run_device_python

from roverlite.deploy import evaluate_artifact, make_bundle, save_testpack
from roverlite.deploy.bench import (
    BenchResult,
    LatencyStats,
    bench_artifact,
    bench_many,
    compare_runtimes,
    format_bench_table,
    latency_stats,
    percentile,
    read_bench_json,
    write_bench_json,
)
from roverlite.deploy.hostinfo import cpu_model, simd_features
from roverlite.deploy.profile import delegated_nodes, op_macs
from roverlite.deploy.sidecar import sidecar_path

FAST = {"runs": 4, "warmup": 1, "threads": 1}


@pytest.fixture(scope="module")
def testpack(tmp_path_factory):
    images, masks = band_scenes(4, seed=21)
    return save_testpack(tmp_path_factory.mktemp("pack") / "testpack.npz", images, masks)


def _copy(result, folder):
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / result.path.name
    shutil.copyfile(result.path, target)
    shutil.copyfile(result.sidecar_path, sidecar_path(target))
    return target


# === Statistics ===


def test_percentile_interpolates_linearly_between_known_timings():
    timings = [7.0, 1.0, 10.0, 3.0, 2.0, 9.0, 4.0, 6.0, 5.0, 8.0]  # 1..10, unsorted
    assert percentile(timings, 0) == 1.0
    assert percentile(timings, 50) == pytest.approx(5.5)
    assert percentile(timings, 90) == pytest.approx(9.1)
    assert percentile(timings, 99) == pytest.approx(9.91)
    assert percentile(timings, 100) == 10.0
    assert percentile([3.5], 99) == 3.5
    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 100, 101):
        values = rng.exponential(2.0, n).tolist()
        for q in (1, 25, 50, 90, 99, 99.9):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


@pytest.mark.parametrize("values, q", [([], 50), ([1.0], -1), ([1.0], 100.5), ([1.0], True)])
def test_percentile_rejects_no_values_and_out_of_range_q(values, q):
    with pytest.raises(ValueError, match="Expected"):
        percentile(values, q)


def test_latency_stats_of_known_timings():
    stats = latency_stats([2, 4, 4, 4, 5, 5, 7, 9])
    assert (stats.mean, stats.std, stats.min, stats.max, stats.runs) == (5.0, 2.0, 2.0, 9.0, 8)
    assert stats.p50 == pytest.approx(4.5)
    assert stats.p50 <= stats.p90 <= stats.p99 <= stats.max
    with pytest.raises(ValueError, match="min <= p50"):
        LatencyStats(p50=2.0, p90=1.0, p99=3.0, mean=2.0, std=0.1, min=1.0, max=3.0, runs=3)


# === Bench rows ===


EXPECTED_FIELDS = {
    "artifact", "runtime", "status", "error", "name", "format", "backend", "runtime_version", "threads",
    "latency_ms", "warmup_runs", "duration_s", "init_ms", "first_inference_ms", "end_to_end_ms", "peak_rss_mb",
    "rss_mb", "model_rss_mb", "isolated", "input_shape", "input_dtype", "size_bytes", "sha256", "macs", "accuracy", "profile",
    "timestamp", "gmac_per_s", "cpu", "simd", "os", "arch", "python", "numpy", "usable_cpus", "load_avg",
}


def test_bench_json_has_every_field_with_sane_values(tiny_exports, testpack, tmp_path):
    paths = [tiny_exports[f].path for f in ("tflite", "tflite_int8", "onnx")]
    results = bench_many(paths, testpack=testpack, end_to_end=True, profile=True, **FAST)
    out = write_bench_json(results, tmp_path / "bench.json", command="pytest")
    document = json.loads(out.read_text())
    assert set(document) == {"schema_version", "command", "host", "results", "comparisons"}
    assert [row["runtime"] for row in document["results"]] == ["litert", "litert", "onnxruntime"]
    for row in document["results"]:
        assert set(row) == EXPECTED_FIELDS
        assert row["status"] == "ok" and row["error"] is None
        latency = row["latency_ms"]
        assert set(latency) == {"p50", "p90", "p99", "mean", "std", "min", "max", "runs"}
        assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        assert latency["runs"] == FAST["runs"] and latency["std"] >= 0
        assert row["init_ms"] > 0 and row["first_inference_ms"] > 0 and row["duration_s"] > 0
        assert row["end_to_end_ms"]["p50"] > 0
        assert row["peak_rss_mb"] >= row["rss_mb"] > 0
        assert row["threads"] == 1 and row["input_shape"] == [1, 32, 32, 1]
        assert row["runtime_version"] and row["cpu"] and row["os"] and row["arch"]
        assert row["macs"] > 0 and row["gmac_per_s"] > 0 and row["size_bytes"] > 0 and len(row["sha256"]) == 64
        accuracy = row["accuracy"]
        assert 0.0 <= accuracy["miou"] <= 1.0 and accuracy["images"] == 4
        assert set(accuracy["per_class_iou"]) == {"soil", "bedrock", "sand", "big_rock"}
        assert row["profile"]["ops"]
    tflite_profile = document["results"][1]["profile"]
    assert tflite_profile["delegated_nodes"] == tflite_profile["nodes"] > 0  # XNNPACK takes the whole tiny U-Net
    assert tflite_profile["estimated_macs"] == document["results"][1]["macs"]  # shapes agree with count_macs
    assert {op["op"] for op in document["results"][2]["profile"]["ops"]} >= {"Conv", "ConvTranspose"}
    comparison = document["comparisons"][0]  # tflite vs onnx, both float32
    assert (comparison["model"], comparison["precision"]) == ("tiny", "float32")
    assert comparison["p50_ms"][comparison["faster"]] == min(comparison["p50_ms"].values())
    assert [r.to_dict() for r in read_bench_json(out)] == document["results"]


def test_accuracy_is_scored_by_the_runner_that_was_timed(tiny_exports, testpack, monkeypatch):
    import roverlite.deploy.segmenter as segmenter_module

    loads = []
    real_load_runner = segmenter_module.load_runner
    monkeypatch.setattr(segmenter_module, "load_runner", lambda *a, **k: loads.append(a) or real_load_runner(*a, **k))
    result = bench_artifact(tiny_exports["tflite_int8"].path, testpack=testpack, **FAST)
    assert len(loads) == 1  # one model loaded: the timed runner also scored the test pack
    images, masks = band_scenes(4, seed=21)
    expected = evaluate_artifact(tiny_exports["tflite_int8"].path, images, masks)
    assert result.accuracy["miou"] == pytest.approx(expected["miou"])
    assert result.accuracy["per_class_iou"] == pytest.approx(expected["per_class_iou"])


def test_unusable_artifacts_become_failed_rows_and_the_rest_still_run(tiny_exports, tmp_path):
    good = tiny_exports["tflite"].path
    truncated = _copy(tiny_exports["tflite_int8"], tmp_path / "truncated")
    truncated.write_bytes(truncated.read_bytes()[:500])
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00" * 64)  # no sidecar: the runtime check refuses it
    paths = [truncated, good, garbage, tmp_path / "missing.tflite", tiny_exports["onnx"].path, tmp_path / "weights.bin"]
    results = bench_many(paths, runtime="litert", **FAST)
    assert [r.status for r in results] == ["failed", "ok", "failed", "failed", "failed", "failed"]
    errors = [r.error for r in results]
    assert "sha256" in errors[0] and "truncated" in errors[0]
    assert "garbage.tflite" in errors[2] and "Not a valid TFLite model" in errors[2]
    assert "missing.tflite" in errors[3] and "not found" in errors[3]
    assert "cannot run" in errors[4] and results[4].runtime == "litert"
    assert "Unknown model file type" in errors[5]
    table = format_bench_table(results)
    assert table.count("FAILED") == 5 and good.name in table
    json.dumps([r.to_dict() for r in results])  # failed rows serialise too


def test_bad_arguments_are_refused_before_anything_runs(tiny_exports):
    with pytest.raises(ValueError, match="runs"):
        bench_many([tiny_exports["tflite"].path], runs=0)
    with pytest.raises(ValueError, match="Did you mean \"litert\""):
        bench_artifact(tiny_exports["tflite"].path, runtime="liteRT")
    with pytest.raises(ValueError, match="cannot run"):
        bench_artifact(tiny_exports["onnx"].path, runtime="litert")
    with pytest.raises(FileNotFoundError, match="Test pack"):
        bench_artifact(tiny_exports["tflite"].path, testpack="nowhere.npz")


def test_rounds_interleave_models_and_keep_the_given_order(tiny_exports):
    paths = [tiny_exports["onnx"].path, tiny_exports["tflite"].path]
    results = bench_many(paths, rounds=2, runs=4, warmup=0, threads=1, min_seconds=0.01)
    assert [r.runtime for r in results] == ["onnxruntime", "litert"]
    assert all(r.ok and r.latency_ms.runs >= 4 for r in results)


def test_compare_runtimes_names_the_faster_runtime_of_each_model():
    def row(runtime, fmt, p50):
        stats = LatencyStats(p50=p50, p90=p50, p99=p50, mean=p50, std=0.0, min=p50, max=p50, runs=1)
        return BenchResult(artifact=f"m_{fmt}", runtime=runtime, name="m", format=fmt, latency_ms=stats)

    rows = [row("litert", "tflite_int8", 2.0), row("onnxruntime", "onnx_int8", 1.0), row("litert", "tflite", 3.0)]
    (comparison,) = compare_runtimes(rows)  # the float model has one runtime only: no comparison
    assert comparison["precision"] == "int8" and comparison["faster"] == "onnxruntime"
    assert comparison["speedup"] == pytest.approx(2.0)
    assert BenchResult.from_dict(rows[0].to_dict()) == rows[0]


# === Device side ===


def test_bench_module_runs_as_a_script_where_tensorflow_cannot_be_imported(tiny_exports, testpack, tmp_path):
    proc = run_device_python(
        f"""
        import json, runpy, sys
        sys.argv = ["bench", {str(tiny_exports["tflite_int8"].path)!r}, {str(tiny_exports["onnx"].path)!r}, "--runs", "3",
                    "--warmup", "1", "--threads", "1", "--with-accuracy", {str(testpack)!r}, "--json", "bench.json"]
        try:
            runpy.run_module("roverlite.deploy.bench", run_name="__main__")
        except SystemExit as stop:
            code = stop.code
        loaded = sorted(name for name in {list(BLOCKED_MODULES)!r} if sys.modules.get(name) is not None)
        print(json.dumps({{"code": code, "loaded": loaded}}))
        """,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"code": 0, "loaded": []}
    rows = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["accuracy"]["miou"] is not None for r in rows)


def test_bundle_ships_a_bench_script_that_scores_its_test_pack(tiny_exports, tmp_path):
    images, masks = band_scenes(3, seed=5)
    folder = make_bundle(tiny_exports["tflite_int8"].path, tmp_path / "bundle", images, masks)
    assert (folder / "bench.py").is_file() and (folder / "roverlite" / "deploy" / "bench.py").is_file()
    proc = run_device_python(
        """
        import runpy, sys
        sys.argv = ["bench.py", "--runs", "3", "--warmup", "1", "--threads", "1", "--json", "bench.json"]
        runpy.run_path("bench.py", run_name="__main__")
        """,
        cwd=folder,
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads((folder / "bench.json").read_text())["results"]
    assert row["status"] == "ok" and row["accuracy"]["images"] == 3
    assert row["accuracy"]["miou"] == pytest.approx(evaluate_artifact(tiny_exports["tflite_int8"].path, images, masks)["miou"])


# === Host info and profile helpers ===


def test_cpu_model_reads_x86_and_raspberry_pi_cpuinfo():
    x86 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma avx512f avx512_vnni\n"
    assert cpu_model(x86) == "AMD EPYC 7B13"
    assert simd_features(x86) == ["avx2", "fma", "avx512f", "avx512_vnni"]
    pi = ("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n\n"
          "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n")
    assert cpu_model(pi) == "Raspberry Pi 4 Model B Rev 1.4 / Cortex-A72"
    assert simd_features(pi) == ["asimd"]


def test_delegated_nodes_follow_each_partition_back_to_its_inputs():
    def op(index, name, inputs, outputs):
        return {"index": index, "op_name": name, "inputs": inputs, "outputs": outputs}

    ops = [
        op(0, "CONV_2D", [0, 1, 2], [3]),
        op(1, "MAX_POOL_2D", [3], [4]),
        op(2, "CUSTOM_THING", [4], [5]),  # not delegated: consumes partition 1's output, feeds partition 2
        op(3, "CONV_2D", [5, 6, -1], [7]),
        op(4, "DELEGATE", [0, 1, 2], [4]),
        op(5, "DELEGATE", [5, 6], [7]),
    ]
    assert delegated_nodes(ops) == {0, 1, 3}
    assert op_macs("CONV_2D", [(1, 8, 8, 3), (16, 3, 3, 3), (16,)], [(1, 8, 8, 16)]) == 8 * 8 * 16 * 3 * 3 * 3
    assert op_macs("TRANSPOSE_CONV", [(4,), (8, 2, 2, 16), (1, 4, 4, 16)], [(1, 8, 8, 8)]) == 4 * 4 * 16 * 8 * 2 * 2
    assert op_macs("MAX_POOL_2D", [(1, 8, 8, 3)], [(1, 4, 4, 3)]) == 0
    assert math.isfinite(op_macs("CONV_2D", [None, None], [None]))  # unknown shapes count as 0, never raise


# === Isolated benchmarks ===


def test_isolated_rows_carry_their_own_process_memory_not_this_one(tiny_exports, testpack):
    import resource

    parent_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this process holds TensorFlow
    [isolated] = bench_many([tiny_exports["tflite_int8"].path], testpack=testpack, isolate=True, **FAST)
    [shared] = bench_many([tiny_exports["tflite_int8"].path], testpack=testpack, **FAST)
    assert isolated.ok and isolated.isolated and not shared.isolated
    assert shared.peak_rss_mb >= parent_peak_mb * 0.99
    assert isolated.peak_rss_mb < parent_peak_mb / 2
    assert isolated.accuracy["miou"] == pytest.approx(shared.accuracy["miou"])  # the same artifact, same images
    assert "each artifact in a process of its own" in format_bench_table([isolated])


def test_isolated_benchmark_of_a_damaged_artifact_is_a_failed_row(tiny_exports, tmp_path):
    damaged = tmp_path / "tiny_tflite.tflite"
    damaged.write_bytes(tiny_exports["tflite"].path.read_bytes()[:100])
    (tmp_path / "tiny_tflite.tflite.json").write_bytes(tiny_exports["tflite"].sidecar_path.read_bytes())
    [row] = bench_many([damaged], isolate=True, **FAST)
    assert row.status == "failed" and "tiny_tflite.tflite" in row.error and not row.isolated


def test_isolation_refuses_interleaved_rounds(tiny_exports):
    with pytest.raises(ValueError, match="one round"):
        bench_many([tiny_exports["tflite"].path], rounds=2, isolate=True)
