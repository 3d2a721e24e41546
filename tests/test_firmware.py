"""Firmware examples: the Pi and Jetson loops on real AI4Mars frames, the TensorRT plumbing, and the
TFLite-Micro ``c_array`` export (C sources, arena, refused ops, TFLite-Micro vs LiteRT reference kernels).

One tiny ``unet_micro`` (32x32, trained for a few seconds on intensity-band scenes so that its
int8 predictions are decisive) is exported once as ``c_array`` and once as ``onnx``; the loops run
the bundles of those artifacts in fresh processes where TensorFlow cannot be imported.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from export_helpers import BLOCKED_MODULES, DATA_CFG, SIZE, band_scenes
from loop_fakes import ConstantSegmenter, CountingSource
from PIL import Image

from roverlite.deploy import Segmenter, load_testpack, make_bundle

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware_examples"
STUBS = Path(__file__).resolve().parent / "firmware_stubs"
PI_LOOP = FIRMWARE / "raspberry_pi" / "pi_loop.py"
JETSON_LOOP = FIRMWARE / "jetson" / "jetson_loop.py"
MICRO_OPS = ("CONV_2D", "MAX_POOL_2D", "RESIZE_NEAREST_NEIGHBOR", "CONCATENATION")
FRAMES = 10
# The device processes may use Pillow (the host test decodes JPEGs), never TensorFlow or TFLite-Micro.
DEVICE_BLOCKED = tuple(m for m in BLOCKED_MODULES if m != "PIL") + ("tflite_micro",)
FAKE_VCGENCMD = """#!/bin/sh
case "$1" in
  get_throttled) echo "throttled=0x50005" ;;
  measure_temp) echo "temp=71.3'C" ;;
  *) exit 1 ;;
esac
"""
# trtexec 8.6's performance summary (format of samples/common/sampleReporting.cpp; numbers made up).
TRTEXEC_86 = """\
[11/22/2026-10:01:02] [I] TensorRT version: 8.6.2
[11/22/2026-10:01:02] [I] === Build Options ===
[11/22/2026-10:01:02] [I] Precision: FP32+FP16
[11/22/2026-10:01:40] [I] === Performance summary ===
[11/22/2026-10:01:40] [I] Throughput: 1203.55 qps
[11/22/2026-10:01:40] [I] Latency: min = 0.780273 ms, max = 1.91406 ms, mean = 0.823145 ms, median = 0.812988 ms, percentile(90%) = 0.849609 ms, percentile(95%) = 0.871094 ms, percentile(99%) = 0.953125 ms
[11/22/2026-10:01:40] [I] Enqueue Time: min = 0.21 ms, max = 0.9 ms, mean = 0.25 ms, median = 0.24 ms, percentile(90%) = 0.28 ms, percentile(95%) = 0.3 ms, percentile(99%) = 0.41 ms
[11/22/2026-10:01:40] [I] H2D Latency: min = 0.01 ms, max = 0.05 ms, mean = 0.012 ms, median = 0.011 ms, percentile(90%) = 0.014 ms, percentile(95%) = 0.015 ms, percentile(99%) = 0.02 ms
[11/22/2026-10:01:40] [I] GPU Compute Time: min = 0.75 ms, max = 1.88 ms, mean = 0.79 ms, median = 0.78 ms, percentile(90%) = 0.81 ms, percentile(95%) = 0.83 ms, percentile(99%) = 0.91 ms
[11/22/2026-10:01:40] [I] D2H Latency: min = 0.02 ms, max = 0.06 ms, mean = 0.025 ms, median = 0.024 ms, percentile(90%) = 0.028 ms, percentile(95%) = 0.03 ms, percentile(99%) = 0.04 ms
[11/22/2026-10:01:40] [I] Total Host Walltime: 3.00112 s
[11/22/2026-10:01:40] [I] Total GPU Compute Time: 2.85 s
&&&& PASSED TensorRT.trtexec [TensorRT v8602] # trtexec --onnx=m.onnx --fp16
"""


# === Shared artifacts ===


@pytest.fixture(scope="module")
def micro_model():
    """``unet_micro`` at 32x32x1 -> 4 classes, trained briefly on band scenes."""
    from roverlite._tf import keras
    from roverlite.data.loader import normalize
    from roverlite.train.models import create_model

    keras.utils.set_random_seed(0)
    model = create_model("unet_micro", input_shape=(SIZE, SIZE, 1), num_classes=4)
    images, masks = band_scenes(64, seed=0)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(
        normalize(images, DATA_CFG.mean, DATA_CFG.std),
        np.where(masks == 255, 0, masks),
        batch_size=16,
        epochs=6,
        verbose=0,
    )
    return model


@pytest.fixture(scope="module")
def c_array(micro_model, tmp_path_factory):
    from roverlite.export import ExportSettings, export_model

    calibration, _ = band_scenes(32, seed=1)
    check_images, check_masks = band_scenes(8, seed=2)
    (result,) = export_model(micro_model, ExportSettings(
        "c_array",
        tmp_path_factory.mktemp("micro"),
        DATA_CFG,
        calibration_images=calibration,
        check_images=check_images,
        check_masks=check_masks,
        name="micro",
        representative_count=32,
    ))
    return result


@pytest.fixture(scope="module")
def onnx_artifact(micro_model, tmp_path_factory):
    from roverlite.export import ExportSettings, export_model

    check_images, check_masks = band_scenes(8, seed=2)
    (result,) = export_model(micro_model, ExportSettings(
        ["onnx"],
        tmp_path_factory.mktemp("onnx"),
        DATA_CFG,
        check_images=check_images,
        check_masks=check_masks,
        name="micro",
    ))
    return result


def _bundle(artifact: Path, out: Path) -> Path:
    images, masks = band_scenes(6, seed=5)
    return make_bundle(artifact, out, images, masks, [f"band{k}" for k in range(6)])


@pytest.fixture(scope="module")
def pi_bundle(c_array, tmp_path_factory):
    return _bundle(c_array.path, tmp_path_factory.mktemp("pi") / "bundle")


@pytest.fixture(scope="module")
def onnx_bundle(onnx_artifact, tmp_path_factory):
    return _bundle(onnx_artifact.path, tmp_path_factory.mktemp("jetson") / "bundle")


@pytest.fixture(scope="module")
def mars_frames(shared_datasets, tmp_path_factory):
    """Ten real AI4Mars NAVCAM JPEGs in a folder, as a camera-less Pi would see them."""
    folder = tmp_path_factory.mktemp("frames")
    for path in sorted((shared_datasets / "ai4mars-msl" / "images").glob("*.jpg"))[:FRAMES]:
        shutil.copyfile(path, folder / path.name)
    return folder


def _run(script: Path, args: list[str], cwd: Path, env: dict | None = None, blocked=DEVICE_BLOCKED, timeout=120):
    """Run a firmware script in a fresh interpreter where ``blocked`` modules cannot be imported."""
    code = "import runpy, sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
    code += f"sys.argv = [{str(script)!r}] + sys.argv[1:]\nrunpy.run_path({str(script)!r}, run_name='__main__')\n"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_vcgencmd(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "vcgencmd"
    tool.write_text(FAKE_VCGENCMD)
    tool.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


# === Raspberry Pi loop ===


def test_pi_loop_segments_real_frames_into_overlays_masks_and_a_latency_summary(pi_bundle, mars_frames, tmp_path):
    overlays, masks = tmp_path / "overlays", tmp_path / "masks"
    proc = _run(
        PI_LOOP,
        [
            "--bundle",
            str(pi_bundle),
            "--images",
            str(mars_frames),
            "--threads",
            "1",
            "--overlay-dir",
            str(overlays),
            "--overlay-every",
            "3",
            "--publish",
            f"png:{masks}",
            "--publish",
            "stdout",
            "--summary",
            str(tmp_path / "summary.json"),
            "--thermal-every",
            "0",
        ],
        cwd=tmp_path,
        env=_fake_vcgencmd(tmp_path / "bin"),
    )
    assert proc.returncode == 0, proc.stderr

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == FRAMES and summary["stopped_by"] == "end_of_source"
    assert summary["fps"] > 0 and summary["format"] == "c_array" and summary["source"] == "folder"
    for stage in ("capture", "preprocess", "model", "postprocess", "predict", "frame"):
        latency = summary["latency_ms"][stage]
        assert latency["count"] == FRAMES - 1  # the warm-up frame is left out
        assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    # The fake vcgencmd reports under-voltage and throttling: logged and summarised.
    assert "THROTTLING" in proc.stderr and summary["thermal"]["max_temp_c"] == pytest.approx(71.3)
    assert {"under-voltage detected", "currently throttled", "throttling has occurred"} <= set(
        summary["thermal"]["flags_seen"]
    )

    # stdout: one JSON line per frame, then the summary line.
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [m["type"] for m in lines] == ["mask"] * FRAMES + ["summary"]
    frames = sorted(mars_frames.iterdir())
    written = sorted(overlays.iterdir())
    assert [p.name for p in written] == [f"overlay_{k:06d}.png" for k in (0, 3, 6, 9)]
    segmenter = Segmenter(pi_bundle / "micro_c_array.tflite")
    for k, path in zip((0, 3, 6, 9), written):
        source = np.asarray(Image.open(frames[k]))
        with Image.open(path) as png:
            png.verify()
        picture = np.asarray(Image.open(path))
        assert picture.shape == (*source.shape[:2], 3) and picture.dtype == np.uint8
        mask = segmenter.predict(source)
        np.testing.assert_array_equal(picture, segmenter.overlay(source, mask))
        np.testing.assert_array_equal(np.asarray(Image.open(masks / f"mask_{k:06d}.png")), mask)
        assert lines[k]["counts"] == {name: int((mask == c).sum()) for c, name in enumerate(segmenter.classes)}


def test_pi_loop_stops_cleanly_on_sigterm_while_publishing_on_a_unix_socket(pi_bundle, mars_frames, tmp_path):
    sock_path, summary_path = tmp_path / "seg.sock", tmp_path / "summary.json"
    code = "import runpy, sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in DEVICE_BLOCKED)
    code += f"sys.argv = [{str(PI_LOOP)!r}] + sys.argv[1:]\nrunpy.run_path({str(PI_LOOP)!r}, run_name='__main__')\n"
    args = [
        "--bundle",
        str(pi_bundle),
        "--images",
        str(mars_frames),
        "--loop",
        "--fps-limit",
        "40",
        "--publish",
        f"unix:{sock_path}",
        "--publish-mask-data",
        "--summary",
        str(summary_path),
    ]
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=tmp_path, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 60
            while not sock_path.exists():
                assert proc.poll() is None, (tmp_path / "err.txt").read_text()
                assert time.monotonic() < deadline, "socket never appeared"
                time.sleep(0.05)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(20)
            client.connect(str(sock_path))
            received = b""
            while b"\n" not in received:
                received += client.recv(65536)
            message = json.loads(received.split(b"\n")[0])
            client.close()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, (tmp_path / "err.txt").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert message["type"] == "mask" and message["height"] == message["width"] == 256
    mask = np.frombuffer(zlib.decompress(base64.b64decode(message["mask"]["data"])), np.uint8).reshape(
        message["mask"]["shape"]
    )
    assert sum(message["counts"].values()) == mask.size and int(mask.max()) < 4
    summary = json.loads(summary_path.read_text())
    assert summary["stopped_by"] == "signal:SIGTERM" and summary["frames"] >= 1
    assert not sock_path.exists()  # the socket is removed on shutdown


def test_pi_loop_without_pillow_reads_npz_frames_and_names_what_it_cannot_decode(pi_bundle, mars_frames, tmp_path):
    pack = load_testpack(pi_bundle / "testpack.npz")
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / "frames.npz", frames=pack.images)
    no_pillow = DEVICE_BLOCKED + ("PIL", "PIL.Image")
    proc = _run(
        PI_LOOP, ["--bundle", str(pi_bundle), "--images", str(tmp_path / "npz")], cwd=tmp_path, blocked=no_pillow
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["frames"] == len(pack.images)

    proc = _run(PI_LOOP, ["--bundle", str(pi_bundle), "--images", str(mars_frames)], cwd=tmp_path, blocked=no_pillow)
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "Pillow" in error and f"{FRAMES} PNG/JPEG" in error


def test_pi_loop_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    proc = _run(PI_LOOP, ["--bundle", str(tmp_path), "--images", str(tmp_path)], cwd=tmp_path)
    error = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and error.startswith("error: Not a bundle folder") and "bundle.json" in error


# === Jetson loop ===


def test_jetson_loop_runs_on_onnxruntime_cpu_and_reports_its_providers(onnx_bundle, mars_frames, tmp_path):
    proc = _run(
        JETSON_LOOP,
        [
            "--bundle",
            str(onnx_bundle),
            "--images",
            str(mars_frames),
            "--max-frames",
            "5",
            "--summary",
            str(tmp_path / "summary.json"),
            "--trt-cache",
            str(tmp_path / "trt"),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == 5 and summary["stopped_by"] == "max_frames" and summary["format"] == "onnx"
    assert summary["providers_requested"][-1] == "CPUExecutionProvider"
    assert summary["providers_active"] == ["CPUExecutionProvider"]  # this host's onnxruntime has no GPU providers
    assert summary["latency_ms"]["model"]["count"] == 4
    assert "active providers" in proc.stderr


def test_provider_choice_prefers_tensorrt_then_cuda_then_cpu_and_names_missing_ones(tmp_path):
    jetson = _load(JETSON_LOOP)
    full = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = jetson.choose_providers(full, "auto", trt_fp16=True, trt_cache=tmp_path)
    assert chosen[0] == (
        "TensorrtExecutionProvider",
        {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(tmp_path)},
    )
    assert chosen[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert jetson.choose_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert jetson.choose_providers(full, "cuda,cpu") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ValueError, match="CUDAExecutionProvider is not in this onnxruntime build"):
        jetson.choose_providers(["CPUExecutionProvider"], "cuda,cpu")
    with pytest.raises(ValueError, match="Unknown ONNX Runtime provider"):
        jetson.choose_providers(full, "tpu")


# === TensorRT plumbing ===


def test_shell_scripts_parse():
    scripts = sorted(FIRMWARE.rglob("*.sh"))
    assert {p.name for p in scripts} >= {"install.sh", "build_engine.sh"}
    for script in scripts:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


def test_trtexec_command_for_each_precision():
    trt = _load(FIRMWARE / "jetson" / "trt_command.py")
    assert trt.trtexec_command("m.onnx", "m.engine", "fp32") == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine"]
    assert trt.trtexec_command("m.onnx", "m.engine", "fp16", input_name="image", load_inputs="x.bin") == [
        "trtexec",
        "--onnx=m.onnx",
        "--saveEngine=m.engine",
        "--fp16",
        "--loadInputs=image:x.bin",
    ]
    assert trt.trtexec_command("m.onnx", "m.engine", "int8", calib="c.cache", timing_cache="t.cache") == [
        "trtexec",
        "--onnx=m.onnx",
        "--saveEngine=m.engine",
        "--fp16",
        "--int8",
        "--calib=c.cache",
        "--timingCacheFile=t.cache",
    ]
    assert "--calib" not in " ".join(trt.trtexec_command("m.onnx", "m.engine", "int8", perf_only=True))
    with pytest.raises(ValueError, match="placeholder scales"):
        trt.trtexec_command("m.onnx", "m.engine", "int8")
    with pytest.raises(ValueError, match="--calib only with --precision int8"):
        trt.trtexec_command("m.onnx", "m.engine", "fp16", calib="c.cache")
    with pytest.raises(ValueError, match="Expected --precision"):
        trt.trtexec_command("m.onnx", "m.engine", "int4")


def test_build_engine_dry_run_prints_the_trtexec_command_for_the_bundle_onnx(onnx_bundle, tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin", "PYTHON": sys.executable}
    env.pop("TRTEXEC", None)
    proc = subprocess.run(
        [
            "bash",
            str(FIRMWARE / "jetson" / "build_engine.sh"),
            "--bundle",
            str(onnx_bundle),
            "--dry-run",
            "--",
            "--iterations=50",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    onnx = onnx_bundle / "micro_onnx.onnx"
    assert proc.stdout.split() == [
        "trtexec",
        f"--onnx={onnx}",
        f"--saveEngine={onnx.with_name('micro_onnx_fp16.engine')}",
        "--fp16",
        "--iterations=50",
    ]
    proc = subprocess.run(
        [
            "bash",
            str(FIRMWARE / "jetson" / "build_engine.sh"),
            "--bundle",
            str(onnx_bundle),
            "--precision",
            "int8",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 2 and "placeholder scales" in proc.stderr


def test_parse_trtexec_reads_the_percentile_summary():
    parse = _load(FIRMWARE / "jetson" / "parse_trtexec.py").parse_trtexec
    result = parse(TRTEXEC_86)
    assert result["tensorrt_version"] == "8.6.2" and result["precision"] == "FP32+FP16" and result["passed"] is True
    assert result["throughput_qps"] == pytest.approx(1203.55)
    assert result["latency_ms"] == pytest.approx(
        {
            "min": 0.780273,
            "max": 1.91406,
            "mean": 0.823145,
            "median": 0.812988,
            "p90": 0.849609,
            "p95": 0.871094,
            "p99": 0.953125,
        }
    )
    assert result["gpu_compute_time_ms"]["p99"] == pytest.approx(0.91)
    assert {"enqueue_time_ms", "h2d_latency_ms", "d2h_latency_ms"} <= set(result)
    # TensorRT 8.2 (Jetson Nano, JetPack 4.6) prints a single percentile.
    old = parse("[I] Latency: min = 2.1 ms, max = 3 ms, mean = 2.2 ms, median = 2.2 ms, percentile(99%) = 2.9 ms\n")
    assert old["latency_ms"] == pytest.approx({"min": 2.1, "max": 3.0, "mean": 2.2, "median": 2.2, "p99": 2.9})
    with pytest.raises(ValueError, match="No trtexec performance summary"):
        parse("[E] Error[4]: network has no inputs\n&&&& FAILED TensorRT.trtexec\n")


def test_tensorrt_helper_scripts_stay_python_36_compatible_for_the_jetson_nano():
    # JetPack 4.6 (the Nano's last) ships Python 3.6: the grammar check catches 3.7+ syntax.
    for name in ("trt_command.py", "parse_trtexec.py"):
        source = (FIRMWARE / "jetson" / name).read_text()
        ast.parse(source, feature_version=(3, 6))
        assert "from __future__ import annotations" not in source and "shlex.join" not in source, name


def test_make_calib_cache_writes_trtexec_input_files_and_a_polygraphy_loader(onnx_bundle, tmp_path):
    out = tmp_path / "calib"
    proc = _run(
        FIRMWARE / "jetson" / "make_calib_cache.py", ["--bundle", str(onnx_bundle), "--out", str(out)], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input_name"] == "image" and manifest["shape"] == [1, SIZE, SIZE, 1] and len(manifest["files"]) == 6
    pack = load_testpack(onnx_bundle / "testpack.npz")
    segmenter = Segmenter(onnx_bundle / "micro_onnx.onnx")
    for name, image in zip(manifest["files"], pack.images):
        assert (out / name).stat().st_size == SIZE * SIZE * 4
        np.testing.assert_array_equal(
            np.fromfile(out / name, np.float32).reshape(1, SIZE, SIZE, 1), segmenter.preprocess(image)
        )
    batches = list(_load(out / "data_loader.py").load_data())
    assert len(batches) == 6 and batches[0]["image"].shape == (1, SIZE, SIZE, 1)
    assert "polygraphy convert" in proc.stdout and "--calibration-cache" in proc.stdout


# === Raspberry Pi install ===


def test_install_refuses_32_bit_raspberry_pi_os(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    results = {}
    for arch in ("armv7l", "aarch64"):
        (fake / "uname").write_text(f"#!/bin/sh\necho {arch}\n")
        (fake / "uname").chmod(0o755)
        results[arch] = subprocess.run(
            ["bash", str(FIRMWARE / "raspberry_pi" / "install.sh"), "--check-only"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"},
        )
    refused, accepted = results["armv7l"], results["aarch64"]
    assert refused.returncode == 2 and "armv7l" in refused.stderr and "64-bit" in refused.stderr
    assert "no armv7l wheel" in refused.stderr
    assert accepted.returncode == 0 and "platform ok: aarch64" in accepted.stdout


# === Shared loop pieces ===


def test_png_writer_round_trips_through_pillow(tmp_path):
    png = _load_edgeloop("png")
    rng = np.random.default_rng(0)
    for image in (rng.integers(0, 256, (7, 5), dtype=np.uint8), rng.integers(0, 256, (4, 9, 3), dtype=np.uint8)):
        path = png.write_png(tmp_path / "x.png", image)
        np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    with pytest.raises(ValueError, match="uint8"):
        png.encode_png(np.zeros((2, 2), np.float32))


def test_png_writer_is_pillows_encoder_and_keeps_the_previous_file_on_a_bad_image(tmp_path):
    # Issue 23: no hand-written PNG encoder; Pillow (roverlite[device]) writes the same bytes as here.
    import io

    png = _load_edgeloop("png")
    image = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    expected = io.BytesIO()
    Image.fromarray(image).save(expected, format="PNG", compress_level=3)
    path = png.write_png(tmp_path / "overlay.png", image)
    assert path.read_bytes() == expected.getvalue() == png.encode_png(image)
    with pytest.raises(ValueError, match="uint8"):
        png.write_png(path, image.astype(np.float32))
    assert path.read_bytes() == expected.getvalue()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.png"]


def test_throttle_bits_decode_as_documented():
    thermal = _load_edgeloop("thermal")
    value = thermal.parse_throttled("throttled=0x50005\n")
    assert value == 0x50005
    assert thermal.decode_throttled(value) == [
        "under-voltage detected",
        "currently throttled",
        "under-voltage has occurred",
        "throttling has occurred",
    ]
    assert thermal.decode_throttled(0) == [] and thermal.parse_measure_temp("temp=48.3'C") == pytest.approx(48.3)


def _load_edgeloop(name: str):
    return importlib.import_module(f"roverlite.deploy.edgeloop.{name}")


# === TFLite-Micro c_array ===


def test_c_array_export_passes_and_records_ops_and_arena_in_its_sidecar(c_array):
    assert c_array.passed, (c_array.check, c_array.micro_check)
    assert c_array.ops == MICRO_OPS  # unet_micro: exactly the ops its preset promises
    assert c_array.micro_check["bit_exact"] and c_array.micro_check["mask_agreement"] == 1.0
    assert c_array.arena_bytes_measured % 16 == 0 and c_array.arena_bytes >= c_array.arena_bytes_measured
    sidecar = json.loads(c_array.sidecar_path.read_text())
    section = sidecar["tflite_micro"]
    assert section["ops"] == list(MICRO_OPS) and section["arena_bytes"] == c_array.arena_bytes
    assert set(section["c_files"]) == {"model_data.h", "model_data.cc", "model_ops.h", "test_image.h"}
    assert sidecar["runtime"] == "litert" and sidecar["format"] == "c_array"


def test_export_from_run_with_c_array_is_export_plus_the_c_sources(micro_model, tiny_folder_dataset, tmp_path):
    # What `roverlite export` does: settings from the config's splits, one front door.
    from roverlite.config import DataConfig
    from roverlite.data.loader import load_split
    from roverlite.export import ExportSettings, export_model
    from roverlite.export.micro import MicroExportResult
    from roverlite.train.modelfile import save_model_file

    data = tiny_folder_dataset(n=6, size=(SIZE, SIZE))
    cfg = DataConfig(format="folder", path=str(data), image_size=(SIZE, SIZE), mean=DATA_CFG.mean, std=DATA_CFG.std)
    model_file = save_model_file(micro_model, tmp_path / "model.h5")
    with pytest.raises(ValueError, match="int8 input and output"):
        export_model(model_file, ExportSettings.from_run(
            ["tflite", "c_array"], tmp_path / "refused", cfg, max_check_images=32, int8_io=False))
    assert not (tmp_path / "refused").exists()  # refused before any conversion

    (micro,) = export_model(model_file, ExportSettings.from_run(
        ["c_array"], tmp_path / "out", cfg, max_check_images=32, name="micro", representative_count=8))
    assert isinstance(micro, MicroExportResult) and micro.path.name == "micro_c_array.tflite"
    assert sorted(p.name for p in micro.c_dir.iterdir()) == [
        "model_data.cc",
        "model_data.h",
        "model_ops.h",
        "test_image.h",
    ]
    first_val_id = load_split(cfg, "val").ids[0]
    assert f'kTestImageId = "{first_val_id}"' in (micro.c_dir / "test_image.h").read_text()
    assert micro.micro_check["bit_exact"] and micro.ops == MICRO_OPS


def test_c_array_bytes_parsed_back_from_model_data_cc_equal_the_tflite(c_array):
    from roverlite.export.micro import parse_c_array

    source = (c_array.c_dir / "model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_model_data[]" in source
    assert parse_c_array(source) == c_array.path.read_bytes()
    assert f"g_model_data_len = {c_array.size_bytes};" in source


def test_model_ops_header_registers_exactly_the_model_ops_and_the_arena(c_array):
    from roverlite.export.micro import resolver_method

    header = (c_array.c_dir / "model_ops.h").read_text()
    assert re.findall(r"resolver\.(Add\w+)\(\)", header) == [resolver_method(op) for op in MICRO_OPS]
    assert f"constexpr unsigned int kModelOpCount = {len(MICRO_OPS)};" in header
    assert f"constexpr size_t kTensorArenaSize = {c_array.arena_bytes};" in header
    assert resolver_method("CONV_2D") == "AddConv2D" and resolver_method("PADV2") == "AddPadV2"
    assert resolver_method("RESIZE_NEAREST_NEIGHBOR") == "AddResizeNearestNeighbor"


@pytest.mark.skipif(shutil.which("g++") is None, reason="no host g++")
def test_generated_sources_and_the_mcu_main_compile_with_gxx(c_array, pi_bundle, tmp_path):
    flags = ["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", f"-I{c_array.c_dir}"]
    proc = subprocess.run([*flags, str(c_array.c_dir / "model_data.cc")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    # main.cc needs TFLite-Micro's headers: compiled against declaration-only stubs of that API.
    for define in ([], ["-DARDUINO"]):
        proc = subprocess.run(
            [*flags, f"-I{STUBS}", *define, str(FIRMWARE / "mcu" / "main.cc")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
    # A test image picked from the bundle's test pack by the helper script compiles in its place.
    proc = subprocess.run(
        [
            sys.executable,
            str(FIRMWARE / "mcu" / "make_test_image.py"),
            "--bundle",
            str(pi_bundle),
            "--index",
            "2",
            "--out",
            str(tmp_path / "test_image.h"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'kTestImageId = "band2"' in (tmp_path / "test_image.h").read_text()
    proc = subprocess.run(
        [*flags[:-1], f"-I{tmp_path}", f"-I{c_array.c_dir}", f"-I{STUBS}", str(FIRMWARE / "mcu" / "main.cc")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_tflite_micro_agrees_with_litert_reference_kernels_on_the_mask(c_array):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from tflite_micro.python.tflite_micro import runtime

    content = c_array.path.read_bytes()
    segmenter = Segmenter(c_array.path)
    images, _ = band_scenes(4, seed=9)
    micro = runtime.Interpreter.from_bytes(content, arena_size=c_array.arena_bytes)  # the header's constant suffices
    reference = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    reference.allocate_tensors()
    for image in images:
        x = segmenter.runner.input.quantize(segmenter.preprocess(image))
        micro.set_input(x, 0)
        micro.invoke()
        reference.set_tensor(reference.get_input_details()[0]["index"], x)
        reference.invoke()
        expected = reference.get_tensor(reference.get_output_details()[0]["index"])
        np.testing.assert_array_equal(micro.get_output(0).argmax(-1), expected.argmax(-1))
        np.testing.assert_array_equal(micro.get_output(0), expected)  # shared reference kernels: bit for bit


def test_measured_arena_is_the_smallest_that_allocates(c_array):
    from tflite_micro.python.tflite_micro import runtime

    content = c_array.path.read_bytes()
    runtime.Interpreter.from_bytes(content, arena_size=c_array.arena_bytes_measured)
    with pytest.raises(RuntimeError):
        runtime.Interpreter.from_bytes(content, arena_size=c_array.arena_bytes_measured - 16)


def test_c_array_refuses_a_model_whose_ops_tflite_micro_lacks_naming_them():
    from tflite_micro.python.tflite_micro import runtime

    from roverlite._tf import keras, tf
    from roverlite.export.micro import check_micro_ops, convert_c_array
    from roverlite.export.tflite import convert_int8

    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.Lambda(lambda t: tf.tile(t, [1, 1, 1, 2]))(x)
    x = keras.layers.Lambda(lambda t: tf.math.top_k(t, 4).values)(x)
    model = keras.Model(inputs, x)
    calibration = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    content = convert_int8(model, calibration)
    with pytest.raises(RuntimeError):  # really unsupported: TFLite-Micro itself refuses it
        runtime.Interpreter.from_bytes(content, arena_size=1 << 20)
    with pytest.raises(ValueError, match=r"does not implement.*\['TILE', 'TOPK_V2'\]"):
        check_micro_ops(content)
    with pytest.raises(ValueError, match="int8 input and output"):
        convert_c_array(model, calibration, int8_io=False)


@pytest.mark.slow
def test_unet_micro_fits_tflite_micro_at_128px_and_64px():
    from roverlite.export.micro import check_micro_ops, measure_arena
    from roverlite.export.tflite import convert_int8
    from roverlite.train.models import create_model

    measured = {}
    for size in (128, 64):
        model = create_model("unet_micro", input_shape=(size, size, 1), num_classes=4)
        content = convert_int8(model, np.random.default_rng(0).normal(size=(4, size, size, 1)).astype(np.float32))
        assert check_micro_ops(content) == MICRO_OPS
        measured[size] = measure_arena(content)
    # 128x128: the full-resolution CONCATENATION keeps its two 4-channel int8 inputs (2 x 64 KiB)
    # and its 8-channel output (128 KiB) alive at once: 256 KiB, plus TFLite-Micro's own structs.
    assert 256 * 1024 <= measured[128] <= 288 * 1024
    assert measured[64] < measured[128] / 3


def test_device_processes_here_really_block_tensorflow(tmp_path):
    # Guards the helper the loop tests use: a script importing TensorFlow must fail there.
    script = tmp_path / "uses_tf.py"
    script.write_text("import tensorflow\n")
    proc = _run(script, [], cwd=tmp_path)
    assert proc.returncode != 0 and "import of tensorflow halted" in proc.stderr


def test_loop_latency_stats_keep_a_fixed_window_of_recent_samples():
    stats = _load_edgeloop("stats").LatencyStats(max_samples=100)
    for ms in range(1, 251):  # 250 samples through a 100-sample ring
        stats.add("model", float(ms))
    row = stats.stage("model")
    assert row["count"] == 250 and row["max"] == 250.0 and row["mean"] == 125.5
    assert row["p50"] == 200.5  # the median of the last 100 samples (151..250), not of all
    assert stats.stage("preprocess") == {"count": 0}
    assert stats._rings["model"].nbytes == 400  # float32, allocated once


@pytest.mark.parametrize(("keep", "expected"), [(3, (12, 15, 18)), (0, (0, 3, 6, 9, 12, 15, 18))])
def test_loop_keeps_only_the_newest_overlays_or_all_with_keep_zero(keep, expected, tmp_path):
    loop = _load_edgeloop("loop")
    options = loop.LoopOptions(max_frames=20, overlay_dir=tmp_path, overlay_every=3, overlay_keep=keep, log_every_s=0)
    summary = loop.run_loop(ConstantSegmenter(), CountingSource(20), options)
    assert summary["frames"] == 20 and summary["overlays_written"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"overlay_{k:06d}.png" for k in expected]
