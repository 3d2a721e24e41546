"""roverlite.deploy on a "robot": no TensorFlow (Pillow resizes, as in training); damaged files, sidecars, bundles."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from export_helpers import (
    BLOCKED_MODULES,
    DATA_CFG,
    SIZE,
    band_scenes,
    run_device_python,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roverlite.deploy import (
    Segmenter,
    evaluate_artifact,
    load_testpack,
    make_bundle,
    parse_sidecar,
    read_sidecar,
    unpack_bundle,
)
from roverlite.deploy.resize import resize_bilinear, resize_nearest
from roverlite.deploy.runtime import default_providers, load_runner
from roverlite.deploy.sidecar import sidecar_path

DEVICE_FORMATS = ("tflite", "tflite_int8", "onnx", "onnx_int8")


def _copy_artifact(result, folder):
    """Copy an artifact and its sidecar into ``folder`` (tests may damage the copies)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / result.path.name
    shutil.copyfile(result.path, target)
    shutil.copyfile(result.sidecar_path, sidecar_path(target))
    return target


# === The device has no TensorFlow ===


def test_deploy_runs_in_a_process_where_tensorflow_cannot_be_imported(tiny_exports, tmp_path):
    images, _ = band_scenes(3, seed=7)
    np.save(tmp_path / "images.npy", images)
    artifacts = {fmt: str(tiny_exports[fmt].path) for fmt in DEVICE_FORMATS}
    proc = run_device_python(
        f"""
        import json, sys
        import numpy as np
        import roverlite.deploy
        from roverlite.deploy import Segmenter
        images = np.load("images.npy")
        masks = {{fmt: Segmenter(path).predict_batch(images).tolist() for fmt, path in {artifacts!r}.items()}}
        loaded = sorted(name for name in {list(BLOCKED_MODULES)!r} if sys.modules.get(name) is not None)
        print(json.dumps({{"masks": masks, "loaded": loaded}}))
        """,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    for fmt in DEVICE_FORMATS:
        expected = Segmenter(tiny_exports[fmt].path).predict_batch(images)
        np.testing.assert_array_equal(np.asarray(out["masks"][fmt], dtype=np.uint8), expected)


def test_damaged_model_files_fail_with_a_clear_error_naming_the_file(tiny_exports, tmp_path):
    damaged = {}
    for fmt in ("tflite", "onnx"):
        content = tiny_exports[fmt].path.read_bytes()
        rng = np.random.default_rng(0)
        flipped = bytearray(content)
        for i in rng.integers(0, len(content), 50):
            flipped[i] ^= 0xFF
        variants = {
            "truncated-half": content[: len(content) // 2],
            "truncated-8": content[:8],
            "empty": b"",
            "garbage": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
            "other-format": tiny_exports["onnx" if fmt == "tflite" else "tflite"].path.read_bytes(),
            "bytes-flipped": bytes(flipped),
        }
        for name, data in variants.items():
            path = tmp_path / f"{name}.{fmt}"
            path.write_bytes(data)
            damaged[str(path)] = name
    proc = run_device_python(
        f"""
        import json
        from roverlite.deploy.runtime import load_runner
        out = {{}}
        for path in {list(damaged)!r}:
            try:
                load_runner(path)
                out[path] = "loaded"
            except ValueError as err:
                out[path] = str(err)
        print(json.dumps(out))
        """
    )
    assert proc.returncode == 0, proc.stderr  # no segfault, no other exception type
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for path, message in out.items():
        if damaged[path] == "bytes-flipped" and message == "loaded":
            continue  # flipped weight bytes can still parse; the sidecar hash catches those
        assert message != "loaded", path
        assert path in message, message


def test_truncated_artifact_is_refused_by_its_sidecar_hash(tiny_exports, tmp_path):
    artifact = _copy_artifact(tiny_exports["tflite_int8"], tmp_path)
    artifact.write_bytes(artifact.read_bytes()[:-100])
    with pytest.raises(ValueError, match="sha256 does not match"):
        Segmenter(artifact)


def test_hash_mismatch_is_refused_showing_both_hashes(tiny_exports, tmp_path):
    artifact = _copy_artifact(tiny_exports["onnx"], tmp_path)
    swapped = tiny_exports["onnx_int8"].path.read_bytes()
    artifact.write_bytes(swapped)
    import hashlib

    with pytest.raises(ValueError) as err:
        Segmenter(artifact)
    assert tiny_exports["onnx"].sha256 in str(err.value)
    assert hashlib.sha256(swapped).hexdigest() in str(err.value)


def test_missing_sidecar_is_refused_naming_the_expected_path(tiny_exports, tmp_path):
    artifact = tmp_path / "lonely.tflite"
    shutil.copyfile(tiny_exports["tflite"].path, artifact)
    with pytest.raises(FileNotFoundError, match="lonely.json"):
        Segmenter(artifact)


# === Segmenter inputs ===


@pytest.fixture(scope="module")
def segmenter(tiny_exports):
    return Segmenter(tiny_exports["tflite"].path, threads=1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_a_float_image_is_rejected(segmenter, bad):
    image = np.full((SIZE, SIZE), 100.0, np.float32)
    image[3, 4] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        segmenter.predict(image)


def test_float_image_outside_pixel_range_is_rejected(segmenter):
    with pytest.raises(ValueError, match="0..255"):
        segmenter.predict(np.full((SIZE, SIZE), 300.0))


def test_float_image_on_the_pixel_scale_predicts_like_uint8(segmenter):
    image = band_scenes(1, seed=8)[0][0]
    np.testing.assert_array_equal(segmenter.predict(image.astype(np.float64)), segmenter.predict(image))


def test_wrong_size_image_is_resized_and_the_mask_returned_at_its_size(segmenter):
    image = band_scenes(1, seed=9, size=75)[0][0][:, :61]
    mask = segmenter.predict(image)
    assert mask.shape == (75, 61) and mask.dtype == np.uint8
    small = segmenter.predict(resize_bilinear(image, (SIZE, SIZE)))
    np.testing.assert_array_equal(mask, resize_nearest(small, (75, 61)))


def test_gray_model_accepts_equal_rgb_channels_and_refuses_colour(segmenter):
    gray = band_scenes(1, seed=10)[0][0]
    rgb = np.repeat(gray, 3, axis=-1)
    np.testing.assert_array_equal(segmenter.predict(rgb), segmenter.predict(gray))
    np.testing.assert_array_equal(segmenter.predict(gray[..., 0]), segmenter.predict(gray))
    colour = rgb.copy()
    colour[..., 0] = 255 - colour[..., 0]
    with pytest.raises(ValueError, match="colour image"):
        segmenter.predict(colour)
    with pytest.raises(ValueError, match=r"shape \(H, W\), \(H, W, 1\) or \(H, W, 3\)"):
        segmenter.predict(np.zeros((SIZE, SIZE, 4), np.uint8))


def test_overlay_blends_class_colours(segmenter):
    image = np.full((4, 4), 100, np.uint8)
    mask = np.array([[0, 1, 2, 255]] * 4, np.uint8)
    out = segmenter.overlay(image, mask, alpha=1.0)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :3], np.asarray(segmenter.sidecar.class_colors[:3], np.uint8))
    np.testing.assert_array_equal(out[0, 3], [100, 100, 100])  # ignore label keeps the image
    np.testing.assert_array_equal(segmenter.overlay(image, mask, alpha=0.0), np.full((4, 4, 3), 100))


def test_runner_quantizes_float_input_for_an_int8_model(tiny_exports):
    runner = load_runner(tiny_exports["tflite_int8"].path)
    assert runner.input.dtype == "int8" and runner.input.quantized
    x = np.zeros((2, SIZE, SIZE, 1), np.float32)
    logits = runner.run(x)
    assert logits.dtype == np.float32 and logits.shape == (2, SIZE, SIZE, 4)
    np.testing.assert_array_equal(logits, runner.run(runner.input.quantize(x)))


def test_default_onnx_providers_end_with_cpu_and_threads_are_validated(tiny_exports):
    assert default_providers()[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="threads"):
        load_runner(tiny_exports["onnx"].path, threads=0)


# === Preprocessing is the training loader's, in bounded memory ===


def _odd_sized_dataset(root, rgb: bool):
    """Noisy 75x61 scenes (gray, or RGB with channels 0-3 levels apart) and masks, as a folder dataset."""
    from PIL import Image

    rng = np.random.default_rng(3)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(4):
        gray = rng.integers(0, 253, (75, 61), dtype=np.uint8)
        pixels = np.stack([gray, gray + rng.integers(0, 3, gray.shape, dtype=np.uint8), gray + 2], -1) if rgb else gray
        Image.fromarray(pixels).save(root / "images" / f"s{k}.png")
        Image.fromarray(rng.integers(0, 4, (75, 61), dtype=np.uint8)).save(root / "masks" / f"s{k}.png")
    return root


@pytest.mark.parametrize("rgb", [False, True], ids=["gray-frames", "near-gray-rgb-frames"])
def test_device_preprocessing_gives_the_training_loaders_arrays(tiny_exports, tmp_path, rgb):
    import dataclasses

    from roverlite.data.formats import open_source
    from roverlite.data.loader import load_split, normalize

    root = _odd_sized_dataset(tmp_path / "data", rgb)
    data_cfg = dataclasses.replace(DATA_CFG, format="folder", path=str(root))
    loaded = load_split(data_cfg, "all", workers=1)
    source = open_source(data_cfg)
    segmenter = Segmenter(tiny_exports["tflite"].path, threads=1)
    for k, sample_id in enumerate(loaded.ids):
        frame = source.read_image(sample_id)
        assert frame.shape[:2] == (75, 61) and frame.shape[2] == (3 if rgb else 1)
        np.testing.assert_array_equal(
            segmenter.preprocess(frame)[0], normalize(loaded.images[k], data_cfg.mean, data_cfg.std)
        )


@pytest.fixture(scope="module")
def rgb_artifact(tmp_path_factory):
    """An untrained RGB ``unet_tiny`` (64x64x3) as float TFLite: memory does not depend on the weights."""
    from roverlite.config import DataConfig
    from roverlite.export import ExportSettings, export_model
    from roverlite.train.models import create_model

    data_cfg = DataConfig(image_size=(64, 64), color_mode="rgb", mean=(0.5,), std=(0.25,))
    model = create_model("unet_tiny", input_shape=(64, 64, 3), num_classes=4)
    (result,) = export_model(model, ExportSettings(["tflite"], tmp_path_factory.mktemp("rgb"), data_cfg, name="rgb"))
    return result.path


_PEAK_PROBE = """
import json, sys, time
import numpy as np
from roverlite.deploy import Segmenter

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

segmenter = Segmenter(sys.argv[1], threads=1)
segmenter.predict(np.zeros((480, 640, 3), np.uint8))  # imports and runtime buffers, as in a camera loop
frame = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
open("/proc/self/clear_refs", "w").write("5")  # peak RSS := current RSS
before = status("VmRSS")
started = time.perf_counter()
mask = segmenter.predict(frame)
seconds = time.perf_counter() - started
growth = status("VmHWM") - before
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS")
picture = segmenter.overlay(frame, mask)
print(json.dumps({"growth": growth, "overlay_growth": status("VmHWM") - before, "frame": frame.nbytes,
                  "seconds": seconds, "shape": list(mask.shape), "overlay_shape": list(picture.shape)}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak RSS")
def test_predict_and_overlay_on_a_12_mp_rgb_frame_need_at_most_3x_the_frame_in_memory(rgb_artifact):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _PEAK_PROBE, str(rgb_artifact)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shape"] == [3000, 4000] and out["overlay_shape"] == [3000, 4000, 3]
    assert out["growth"] <= 3 * out["frame"], f"predict: peak RSS grew {out['growth'] / out['frame']:.1f}x the frame"
    # The overlay is itself the frame's size; blending it must not take float copies of the whole frame.
    ratio = out["overlay_growth"] / out["frame"]
    assert out["overlay_growth"] <= 2 * out["frame"], f"overlay: peak RSS grew {ratio:.1f}x the frame"


def test_gray_frames_are_replicated_for_an_rgb_model_after_resizing_with_the_same_result():
    from roverlite.deploy.resize import gray_to_rgb, resize_bilinear

    gray = np.random.default_rng(1).integers(0, 256, (75, 61, 1), dtype=np.uint8)
    np.testing.assert_array_equal(gray_to_rgb(resize_bilinear(gray, (32, 32))),
                                  resize_bilinear(gray_to_rgb(gray), (32, 32)))


def test_threads_beyond_the_usable_cores_are_refused(tiny_exports):
    from roverlite.deploy.hostinfo import usable_cpus

    cores = usable_cpus()
    assert load_runner(tiny_exports["onnx"].path, threads=cores).input.shape[-1] == 1
    for threads in (cores + 1, 1000):
        with pytest.raises(ValueError, match=rf"from 1 to {cores} .*threads={threads}"):
            load_runner(tiny_exports["onnx"].path, threads=threads)
        with pytest.raises(ValueError, match="threads"):
            Segmenter(tiny_exports["tflite"].path, threads=threads)


# === Sidecar parsing ===


def test_sidecar_round_trips_through_its_json(tiny_exports):
    sidecar = read_sidecar(tiny_exports["tflite_int8"].path)
    again = parse_sidecar(json.loads(json.dumps(sidecar.to_dict())))
    assert again == sidecar


def test_sidecar_reader_names_the_missing_or_invalid_field(tiny_exports):
    raw = read_sidecar(tiny_exports["tflite"].path).to_dict()
    del raw["input"]["color_mode"]
    with pytest.raises(ValueError, match="missing field 'input.color_mode'"):
        parse_sidecar(raw)
    raw = read_sidecar(tiny_exports["tflite"].path).to_dict()
    raw["artifact"]["sha256"] = "abc"
    with pytest.raises(ValueError, match="field 'artifact.sha256'. Expected 64 lowercase hex"):
        parse_sidecar(raw)
    raw = read_sidecar(tiny_exports["tflite"].path).to_dict()
    raw["schema_version"] = 2
    with pytest.raises(ValueError, match="schema_version"):
        parse_sidecar(raw)


def test_unreadable_sidecar_files_raise_value_error(tiny_exports, tmp_path):
    artifact = _copy_artifact(tiny_exports["tflite"], tmp_path)
    for text in (b"{", b"\xff\xfe", b"[" * 100_000, b"null", b'{"schema_version": 1e999}'):
        sidecar_path(artifact).write_bytes(text)
        with pytest.raises(ValueError, match="sidecar"):
            read_sidecar(artifact)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON)
def test_sidecar_parser_never_crashes_on_arbitrary_json(value):
    try:
        parse_sidecar(value)
    except ValueError:
        pass


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield prefix + (i,)
            yield from _paths(value, prefix + (i,))


@pytest.fixture(scope="module")
def valid_sidecar(tiny_exports):
    return read_sidecar(tiny_exports["tflite_int8"].path).to_dict()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), replacement=JSON, delete=st.booleans())
def test_sidecar_parser_survives_any_single_field_mutation(valid_sidecar, data, replacement, delete):
    raw = json.loads(json.dumps(valid_sidecar))
    path = data.draw(st.sampled_from(list(_paths(raw))))
    parent = raw
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    try:
        parse_sidecar(raw)
    except ValueError:
        pass


# === Test packs and bundles ===


def test_testpack_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "pack.npz"
    np.savez(path, images=np.zeros((1, 4, 4), np.uint8), masks=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="pickled"):
        load_testpack(path)


def test_bundle_round_trip_runs_on_a_device_without_roverlite_or_tensorflow(tiny_exports, tmp_path):
    images, masks = band_scenes(6, seed=11)
    ids = [f"scene{i}" for i in range(6)]
    archive = make_bundle(tiny_exports["tflite_int8"].path, tmp_path / "tiny_int8.tar.gz", images, masks, ids)
    folder = unpack_bundle(archive, tmp_path / "robot")
    assert {"run.py", "requirements-device.txt", "testpack.npz", "bundle.json", "tiny_tflite_int8.tflite",
            "tiny_tflite_int8.json"} <= {p.name for p in folder.iterdir()}
    requirements = (folder / "requirements-device.txt").read_text()
    assert "ai-edge-litert==" in requirements and "onnxruntime==" in requirements and "numpy==" in requirements
    assert "pillow==" in requirements  # the device resizes with Pillow, as training does
    assert load_testpack(folder / "testpack.npz").ids == tuple(ids)

    proc = run_device_python(
        """
        import runpy, sys
        sys.argv = ["run.py", "--json", "result.json", "--repeat", "3", "--threads", "1"]
        runpy.run_path("run.py", run_name="__main__")
        """,
        cwd=folder,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mIoU" in proc.stdout
    result = json.loads((folder / "result.json").read_text())
    assert result["deploy_package"].startswith(str(folder.resolve()))  # the bundled copy, not the install
    expected = evaluate_artifact(tiny_exports["tflite_int8"].path, images, masks)
    assert result["miou"] == pytest.approx(expected["miou"])
    assert result["confusion_matrix"] == expected["confusion_matrix"]
    assert result["latency_ms"]["runs"] == 3


def test_bundle_as_folder_refuses_to_overwrite_and_refuses_tampered_artifacts(tiny_exports, tmp_path):
    images, masks = band_scenes(2, seed=12)
    folder = make_bundle(tiny_exports["onnx"].path, tmp_path / "bundle", images, masks)
    assert (folder / "roverlite" / "deploy" / "segmenter.py").is_file()
    with pytest.raises(FileExistsError):
        make_bundle(tiny_exports["onnx"].path, folder, images, masks)
    tampered = _copy_artifact(tiny_exports["onnx"], tmp_path / "tampered")
    tampered.write_bytes(tampered.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="sha256"):
        make_bundle(tampered, tmp_path / "bundle2.tar.gz", images, masks)
    assert not (tmp_path / "bundle2.tar.gz").exists()


def _tar_with(tmp_path, member: tarfile.TarInfo, data: bytes = b"x"):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        safe = tarfile.TarInfo("run.py")
        safe.size = 1
        tar.addfile(safe, io.BytesIO(b"x"))
        if member.isreg():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)
    return path


def _member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    "member, message",
    [
        (_member("../evil"), "'..'"),
        (_member("sub/../../evil"), "'..'"),
        (_member("/tmp/evil"), "absolute"),
        (_member("link", tarfile.SYMTYPE, "../../etc/passwd"), "escaping"),
        (_member("sub/link", tarfile.SYMTYPE, "../.."), "escaping"),
        (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "absolute"),
        (_member("hard", tarfile.LNKTYPE, "../outside"), "hard link"),
        (_member("fifo", tarfile.FIFOTYPE), "FIFO"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-up", "nested-symlink-up", "symlink-absolute",
         "hardlink-up", "fifo"],
)
def test_unpack_refuses_members_escaping_the_destination(tmp_path, member, message):
    archive = _tar_with(tmp_path, member)
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=message):
        unpack_bundle(archive, dest)
    assert not dest.exists()  # nothing extracted, not even the safe member
    assert not (tmp_path / "evil").exists()


def test_unpack_keeps_links_that_stay_inside(tmp_path):
    archive = _tar_with(tmp_path, _member("alias.py", tarfile.SYMTYPE, "run.py"))
    dest = unpack_bundle(archive, tmp_path / "dest")
    assert (dest / "alias.py").resolve() == (dest / "run.py").resolve()


def _tar_of(tmp_path, *members):
    """A .tar.gz of ``(TarInfo, bytes)`` members in order (bytes only for regular files)."""
    path = tmp_path / "crafted.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


@pytest.mark.parametrize(
    "members, message",
    [
        # d/s -> .. stays inside (it is the root); x -> d/s/.. is then the root's parent.
        ([(_member("d", tarfile.DIRTYPE), b""), (_member("d/s", tarfile.SYMTYPE, ".."), b""),
          (_member("x", tarfile.SYMTYPE, "d/s/.."), b"")], "escaping"),
        ([(_member("a", tarfile.SYMTYPE, "b"), b""), (_member("b", tarfile.SYMTYPE, "a"), b"")], "escaping"),
        ([(_member("hard", tarfile.LNKTYPE, "missing.py"), b"")], "hard link"),
        ([(_member("hard", tarfile.LNKTYPE, "later.py"), b""), (_member("later.py"), b"x")], "hard link"),
        ([(_member("sub", tarfile.DIRTYPE), b""), (_member("sub/up", tarfile.SYMTYPE, "../run.py/../../etc"), b"")],
         "escaping"),
        ([(_member("twice.py"), b"x"), (_member("twice.py"), b"y")], "more than once"),
        ([(_member("d", tarfile.SYMTYPE, "."), b""), (_member("d/d/../../../x"), b"x")], "'..'"),
    ],
    ids=["chained-symlink", "symlink-loop", "hardlink-to-missing", "hardlink-before-target", "up-through-a-file",
         "duplicate", "dotdot-through-link"],
)
def test_unpack_checks_links_as_the_file_system_resolves_them_before_extracting_anything(tmp_path, members, message):
    archive = _tar_of(tmp_path, (_member("run.py"), b"x"), *members)
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=message):
        unpack_bundle(archive, dest)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crafted.tar.gz"]  # no staging folder left


def test_unpack_refuses_more_members_or_bytes_than_its_limits_before_extracting(tmp_path):
    from roverlite.deploy.bundle import MAX_BUNDLE_MEMBERS

    many = _tar_of(tmp_path, *[(_member(f"f{k}"), b"") for k in range(MAX_BUNDLE_MEMBERS + 1)])
    with pytest.raises(ValueError, match=f"too many members. Expected at most {MAX_BUNDLE_MEMBERS}"):
        unpack_bundle(many, tmp_path / "dest")
    large = _tar_of(tmp_path, (_member("a"), b"x" * 600), (_member("b"), b"x" * 600))
    with pytest.raises(ValueError, match="too large. Expected at most 1000 bytes"):
        unpack_bundle(large, tmp_path / "dest", max_bytes=1000)
    assert not (tmp_path / "dest").exists()
    assert unpack_bundle(large, tmp_path / "dest", max_bytes=1200).joinpath("b").stat().st_size == 600


def test_unpack_into_a_folder_holding_files_is_refused(tmp_path):
    archive = _tar_of(tmp_path, (_member("run.py"), b"new"))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "run.py").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="dest"):
        unpack_bundle(archive, dest)
    assert (dest / "run.py").read_bytes() == b"old"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (unpack_bundle(archive, empty) / "run.py").read_bytes() == b"new"


def test_test_pack_declaring_more_than_its_limit_is_refused_before_reading(tmp_path):
    import zipfile

    from roverlite.deploy.evaluate import MAX_TESTPACK_BYTES

    shape = (MAX_TESTPACK_BYTES // (128 * 128) + 1, 128, 128)  # header only: a bomb's claim, no data
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images.npy", header.getvalue())
        archive.writestr("masks.npy", header.getvalue())
    with pytest.raises(ValueError, match=f"too large. Expected arrays of at most {MAX_TESTPACK_BYTES} bytes"):
        load_testpack(path)
