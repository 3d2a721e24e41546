"""Bundles on an emulated Raspberry Pi class CPU (qemu-user, Cortex-A72) agree with x86-64.

The slow test runs ``tools/emulate_aarch64.py``'s whole check: a student trained on AI4Mars,
exported to int8 TFLite and float ONNX, bundled, and run through each bundle's ``run.py`` on this
machine and under ``qemu-aarch64-static`` with Debian's arm64 Python and the aarch64 wheels. It
skips, naming the reason, where the host cannot emulate; it never passes without having run the
arm64 process. The other tests cover the tool's own logic and need no emulator.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "emulate_aarch64.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("emulate_aarch64", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["emulate_aarch64"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


emulate = _load_tool()
emulate_host = importlib.import_module("aarch64.host")  # support_problem's platform, shutil, os and _os_release


# === The end-to-end check (slow) ===


@pytest.mark.slow
def test_emulated_aarch64_bundles_give_the_x86_masks_and_miou_for_litert_and_onnxruntime(shared_datasets, tmp_path):
    problem = emulate.support_problem()
    if problem:
        pytest.skip(f"aarch64 emulation unavailable: {problem}")
    report = emulate.run_check(shared_datasets / "ai4mars-msl", tmp_path / "work", json_out=tmp_path / "result.json")

    assert json.loads((tmp_path / "result.json").read_text())["runs"] == report["runs"]
    assert [(run["runtime"], run["format"]) for run in report["runs"]] == [("litert", "tflite_int8"), ("onnxruntime", "onnx")]
    for run in report["runs"]:
        assert run["failures"] == [], run["format"]
        assert run["machine_emulated"] == "aarch64"  # the arm64 process really ran
        assert run["cpu_parts_emulated"] == [emulate.CORTEX_A72_PART]
        assert run["testpack_images"] == 20
        assert run["pixel_agreement"] >= 0.999
        assert run["miou_abs_diff"] <= 0.001
        assert run["schema_matches"]
        assert run["latency_ms_emulated"]["emulated"] is True
        assert report["model"]["trained"][run["format"]]["non_trivial"]
    assert report["passed"]
    assert {"pixel_agreement", "miou_abs_diff", "runtime", "wheels", "command"} <= set(report)
    assert {"numpy", "pillow", "ai-edge-litert", "onnxruntime"} <= {name.lower() for name in report["wheels"]}


# === Host support: clear skip reasons ===


@pytest.fixture
def supported_host(monkeypatch, tmp_path):
    """A host that passes every support check; tests then break one of them."""
    monkeypatch.setattr(emulate_host.platform, "system", lambda: "Linux")
    monkeypatch.setattr(emulate_host.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(emulate_host.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(emulate_host, "_os_release", lambda: {"ID": "debian"})
    return tmp_path / "cache"


def test_supported_host_has_no_problem(supported_host):
    assert emulate.support_problem(supported_host) is None


def test_missing_emulator_is_named_with_the_setup_command(supported_host, monkeypatch):
    monkeypatch.setattr(emulate_host.shutil, "which", lambda name: None if name == emulate.QEMU else f"/usr/bin/{name}")
    problem = emulate.support_problem(supported_host)
    assert "qemu-aarch64-static not found" in problem and "--setup" in problem


@pytest.mark.parametrize(("system", "machine"), [("Linux", "aarch64"), ("Darwin", "x86_64"), ("Windows", "AMD64")])
def test_non_x86_or_non_linux_host_is_refused_naming_it(supported_host, monkeypatch, system, machine):
    monkeypatch.setattr(emulate_host.platform, "system", lambda: system)
    monkeypatch.setattr(emulate_host.platform, "machine", lambda: machine)
    problem = emulate.support_problem(supported_host)
    assert "x86-64 Linux" in problem and machine in problem


def test_host_that_cannot_build_the_userland_is_refused_until_a_cache_exists(supported_host, monkeypatch):
    monkeypatch.setattr(emulate_host, "_os_release", lambda: {"ID": "ubuntu"})
    assert "ID=ubuntu" in emulate.support_problem(supported_host)
    monkeypatch.setattr(emulate_host.shutil, "which", lambda name: None if name == "dpkg-deb" else f"/usr/bin/{name}")
    assert "dpkg-deb not found" in emulate.support_problem(supported_host)
    supported_host.mkdir()
    (supported_host / "root.json").write_text("{}")  # a cache built elsewhere needs neither
    assert emulate.support_problem(supported_host) is None


def test_cli_exits_77_with_the_reason_on_an_unsupported_host(supported_host, monkeypatch, capsys):
    monkeypatch.setattr(emulate_host.shutil, "which", lambda name: None)
    assert emulate.main(["--check", "--cache-dir", str(supported_host)]) == emulate.SKIP_EXIT
    assert "skipped: qemu-aarch64-static not found" in capsys.readouterr().err


def test_setup_refuses_to_install_without_root(monkeypatch):
    monkeypatch.setattr(emulate_host.shutil, "which", lambda name: None if name == emulate.QEMU else f"/usr/bin/{name}")
    monkeypatch.setattr(emulate_host.os, "geteuid", lambda: 1000)
    with pytest.raises(emulate.EmulationError, match="needs root"):
        emulate.install_qemu()


# === The userland recipe ===


def test_platform_tags_list_every_manylinux_tag_the_glibc_accepts():
    tags = emulate.platform_tags(emulate.glibc_of("2.36-9+deb12u14"))
    assert tags[0] == "manylinux_2_36_aarch64" and tags[-1] == "manylinux2014_aarch64"
    assert "manylinux_2_27_aarch64" in tags and "manylinux_2_28_aarch64" in tags  # ai-edge-litert, onnxruntime
    assert len(tags) == 36 - 17 + 1 + 1
    with pytest.raises(ValueError, match="libc6 version"):
        emulate.glibc_of("unknown")


def test_requirements_are_parsed_and_keyed_independently_of_order_and_comments():
    text = "# pinned\nonnxruntime==1.31.1\n\nnumpy==2.4.6  # base\nai-edge-litert==2.3.0\n"
    requirements = emulate.parse_requirements(text)
    assert requirements == ["ai-edge-litert==2.3.0", "numpy==2.4.6", "onnxruntime==1.31.1"]
    tags = emulate.platform_tags((2, 36))
    key = emulate.site_key(requirements, tags)
    assert key == emulate.site_key(list(reversed(requirements)), tags)
    assert key != emulate.site_key([*requirements[:-1], "onnxruntime==1.30.0"], tags)


def test_cpuinfo_lists_one_cortex_a72_per_cpu():
    text = emulate.cpuinfo_text(3)
    assert text.count("processor\t:") == 3
    assert text.count(f"CPU part\t: {emulate.CORTEX_A72_PART}") == 3
    with pytest.raises(ValueError):
        emulate.cpuinfo_text(0)


def test_emulated_command_runs_the_sysroot_python_under_qemu_with_a_clean_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/host/site-packages")
    userland = emulate.Userland(root=tmp_path / "root", site=tmp_path / "site", debs={}, wheels={}, platform_tags=())
    argv, env = emulate.emulated_command(userland, ["run.py", "--threads", "1"])
    assert argv[:5] == [emulate.QEMU, "-cpu", "cortex-a72", "-L", str(tmp_path / "root")]
    assert argv[5] == str(tmp_path / "root" / "usr" / "bin" / "python3.11")
    assert argv[-3:] == ["run.py", "--threads", "1"]
    assert env["PYTHONPATH"] == str(tmp_path / "site") and env["PYTHONHOME"] == str(tmp_path / "root" / "usr")


# === Comparing an emulated run with the x86 run ===


def _probe(bundle: Path, masks: np.ndarray, miou: float = 0.5, machine: str = "aarch64", **document) -> object:
    """A run.py-style probe output for ``bundle`` (``document`` overrides fields of run.py's JSON)."""
    base = {
        "miou": miou,
        "per_class_iou": {"soil": miou, "sand": None},
        "confusion_matrix": [[1, 0], [0, 1]],
        "images": len(masks),
        "artifact": str(bundle / "m_tflite_int8.tflite"),
        "format": "tflite_int8",
        "runtime": "litert",
        "backend": "ai_edge_litert.interpreter",
        "sha256": "0" * 64,
        "latency_ms": {"runs": 3, "model_median": 1.0},
        "deploy_package": str(bundle / "roverlite" / "deploy"),
    }
    env = {
        "runner": "run.py", "machine": machine, "cpu_parts": [emulate.CORTEX_A72_PART],
        "deploy_package": str(bundle / "roverlite" / "deploy"),
        "versions": {"numpy": "2.4.6", "ai-edge-litert": "2.3.0", "onnxruntime": "1.31.1"},
    }
    logits = np.eye(4, dtype=np.float32)[masks]
    return emulate.ProbeOutput(bundle=bundle, document={**base, **document}, logits=logits, masks=masks, env=env,
                               wall_s=1.0)


def test_identical_runs_pass_with_full_agreement(tmp_path):
    masks = np.random.default_rng(0).integers(0, 4, (2, 8, 8), dtype=np.uint8)
    entry = emulate.compare_runs(_probe(tmp_path / "a", masks, machine="x86_64"), _probe(tmp_path / "b", masks.copy()))
    assert entry["passed"] and entry["failures"] == []
    assert entry["pixel_agreement"] == 1.0 and entry["miou_abs_diff"] == 0.0
    assert entry["logits_bit_identical"] and entry["logits_max_abs_diff"] == 0.0
    assert entry["latency_ms_emulated"]["emulated"] is True


def test_a_runtime_version_other_than_the_bundle_pins_fails(tmp_path):
    masks = np.zeros((1, 4, 4), np.uint8)
    pins = {"numpy": "2.4.6", "ai-edge-litert": "2.2.0"}
    entry = emulate.compare_runs(_probe(tmp_path / "a", masks), _probe(tmp_path / "b", masks), pins=pins)
    assert "the x86 run imported ai-edge-litert 2.3.0, the bundle pins 2.2.0" in entry["failures"]
    assert "the emulated run imported ai-edge-litert 2.3.0, the bundle pins 2.2.0" in entry["failures"]


def test_bench_json_is_summarised_like_run_json():
    row = {
        "artifact": "/b/m_onnx.onnx", "runtime": "onnxruntime", "status": "ok", "format": "onnx", "sha256": "1" * 64,
        "backend": "onnxruntime:CPUExecutionProvider", "latency_ms": {"p50": 2.0}, "end_to_end_ms": {"p50": 3.0},
        "init_ms": 5.0, "first_inference_ms": 4.0,
        "accuracy": {"miou": 0.4, "per_class_iou": {"soil": 0.4}, "images": 20},
    }
    summary = emulate.run_summary({"schema_version": 1, "results": [row]}, "bench.py")
    assert summary["miou"] == 0.4 and summary["images"] == 20 and summary["runtime"] == "onnxruntime"
    assert summary["latency_ms"]["model"] == {"p50": 2.0} and summary["confusion_matrix"] is None
    with pytest.raises(emulate.EmulationError, match="one measured row"):
        emulate.run_summary({"results": [{**row, "status": "failed", "error": "boom"}]}, "bench.py")


def test_one_flipped_pixel_in_a_thousand_is_the_agreement_limit(tmp_path):
    masks = np.zeros((1, 40, 50), np.uint8)  # 2,000 pixels
    emulated = masks.copy()
    emulated[0, 0, :2] = 1
    entry = emulate.compare_runs(_probe(tmp_path / "a", masks), _probe(tmp_path / "b", emulated))
    assert entry["pixel_agreement"] == pytest.approx(0.999) and entry["differing_pixels"] == 2
    emulated[0, 0, 2] = 1
    entry = emulate.compare_runs(_probe(tmp_path / "a", masks), _probe(tmp_path / "b", emulated))
    assert not entry["passed"] and "pixel agreement" in entry["failures"][0]


def test_miou_difference_above_the_limit_fails(tmp_path):
    masks = np.zeros((1, 4, 4), np.uint8)
    entry = emulate.compare_runs(_probe(tmp_path / "a", masks, miou=0.5), _probe(tmp_path / "b", masks, miou=0.5015))
    assert entry["miou_abs_diff"] == pytest.approx(0.0015)
    assert any("mIoU differs" in failure for failure in entry["failures"])


def test_a_run_that_was_not_aarch64_never_passes(tmp_path):
    masks = np.zeros((1, 4, 4), np.uint8)
    entry = emulate.compare_runs(_probe(tmp_path / "a", masks), _probe(tmp_path / "b", masks, machine="x86_64"))
    assert not entry["passed"] and "machine 'x86_64'" in entry["failures"][0]


def test_run_outside_the_bundles_deploy_package_fails(tmp_path):
    masks = np.zeros((1, 4, 4), np.uint8)
    emulated = _probe(tmp_path / "b", masks, deploy_package="/usr/lib/python3/dist-packages/roverlite/deploy")
    entry = emulate.compare_runs(_probe(tmp_path / "a", masks), emulated)
    assert any("not from its bundle" in failure for failure in entry["failures"])


def test_schema_differences_name_missing_keys_and_changed_types():
    a = {"miou": 0.5, "latency_ms": {"runs": 3, "p90": 1.0}, "per_class_iou": {"soil": 0.1}}
    b = {"miou": "0.5", "latency_ms": {"runs": 3}, "per_class_iou": {"soil": 0.2}, "extra": []}
    diffs = emulate.schema_differences(a, b)
    assert "$.extra: only in the second" in diffs
    assert "$.latency_ms.p90: only in the first" in diffs
    assert any(d.startswith("$.miou:") for d in diffs)
    assert emulate.schema_differences(a, json.loads(json.dumps(a))) == []
    assert emulate.schema_differences({"x": 1}, {"x": 1.5}) == []  # JSON has one number type
    assert emulate.schema_differences({"x": None, "y": []}, {"x": "s", "y": ["asimd"]}) == []  # nullable, empty
    assert emulate.schema_differences({"y": [1.0]}, {"y": ["a"]}) == ['$.y[]: "number" vs "str"']


def test_constant_baseline_is_the_best_single_class_miou():
    masks = np.array([[[0, 0, 0, 1], [2, 2, 255, 255]]], np.uint8)  # shares 3/6, 1/6, 2/6 over 3 eval classes
    assert emulate.constant_baseline_miou(masks, 4, 255, (0, 1, 2)) == pytest.approx(0.5 / 3)
