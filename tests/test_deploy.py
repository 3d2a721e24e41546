"""roverlite.deploy on a "robot": no TensorFlow, no Pillow; damaged files, sidecars, bundles."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import numpy as np
import pytest
from export_helpers import (
    BLOCKED_MODULES,
    SIZE,
    band_scenes,
    run_device_python,
    tiny_exports,
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
from roverlite.deploy.resize import resize_bilinear, resize_nearest, rgb_to_gray
from roverlite.deploy.runtime import default_providers, load_runner
from roverlite.deploy.sidecar import sidecar_path

DEVICE_FORMATS = ("tflite", "tflite_int8", "onnx", "onnx_int8")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return tiny_exports(tmp_path_factory)


def _copy_artifact(result, folder):
    """Copy an artifact and its sidecar into ``folder`` (tests may damage the copies)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / result.path.name
    shutil.copyfile(result.path, target)
    shutil.copyfile(result.sidecar_path, sidecar_path(target))
    return target


# === The device has no TensorFlow ===


def test_deploy_runs_in_a_process_where_tensorflow_and_pillow_cannot_be_imported(exports, tmp_path):
    images, _ = band_scenes(3, seed=7)
    np.save(tmp_path / "images.npy", images)
    artifacts = {fmt: str(exports[fmt].path) for fmt in DEVICE_FORMATS}
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
        expected = Segmenter(exports[fmt].path).predict_batch(images)
        np.testing.assert_array_equal(np.asarray(out["masks"][fmt], dtype=np.uint8), expected)


def test_damaged_model_files_fail_with_a_clear_error_naming_the_file(exports, tmp_path):
    damaged = {}
    for fmt in ("tflite", "onnx"):
        content = exports[fmt].path.read_bytes()
        rng = np.random.default_rng(0)
        flipped = bytearray(content)
        for i in rng.integers(0, len(content), 50):
            flipped[i] ^= 0xFF
        variants = {
            "truncated-half": content[: len(content) // 2],
            "truncated-8": content[:8],
            "empty": b"",
            "garbage": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
            "other-format": exports["onnx" if fmt == "tflite" else "tflite"].path.read_bytes(),
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


def test_truncated_artifact_is_refused_by_its_sidecar_hash(exports, tmp_path):
    artifact = _copy_artifact(exports["tflite_int8"], tmp_path)
    artifact.write_bytes(artifact.read_bytes()[:-100])
    with pytest.raises(ValueError, match="sha256 does not match"):
        Segmenter(artifact)


def test_hash_mismatch_is_refused_showing_both_hashes(exports, tmp_path):
    artifact = _copy_artifact(exports["onnx"], tmp_path)
    swapped = exports["onnx_int8"].path.read_bytes()
    artifact.write_bytes(swapped)
    import hashlib

    with pytest.raises(ValueError) as err:
        Segmenter(artifact)
    assert exports["onnx"].sha256 in str(err.value)
    assert hashlib.sha256(swapped).hexdigest() in str(err.value)


def test_missing_sidecar_is_refused_naming_the_expected_path(exports, tmp_path):
    artifact = tmp_path / "lonely.tflite"
    shutil.copyfile(exports["tflite"].path, artifact)
    with pytest.raises(FileNotFoundError, match="lonely.json"):
        Segmenter(artifact)


# === Segmenter inputs ===


@pytest.fixture(scope="module")
def segmenter(exports):
    return Segmenter(exports["tflite"].path, threads=1)


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


def test_runner_quantizes_float_input_for_an_int8_model(exports):
    runner = load_runner(exports["tflite_int8"].path)
    assert runner.input.dtype == "int8" and runner.input.quantized
    x = np.zeros((2, SIZE, SIZE, 1), np.float32)
    logits = runner.run(x)
    assert logits.dtype == np.float32 and logits.shape == (2, SIZE, SIZE, 4)
    np.testing.assert_array_equal(logits, runner.run(runner.input.quantize(x)))


def test_default_onnx_providers_end_with_cpu_and_threads_are_validated(exports):
    assert default_providers()[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="threads"):
        load_runner(exports["onnx"].path, threads=0)


# === Resizing matches the training loader (Pillow) ===


def test_numpy_resize_matches_pillow():
    from PIL import Image

    rng = np.random.default_rng(0)
    for h, w, out_h, out_w in [(75, 61, 32, 32), (20, 30, 64, 48), (128, 128, 128, 96), (33, 17, 7, 40)]:
        image = rng.integers(0, 256, (h, w), dtype=np.uint8)
        pil = np.asarray(Image.fromarray(image).resize((out_w, out_h), Image.Resampling.BILINEAR))
        assert np.abs(resize_bilinear(image, (out_h, out_w)).astype(int) - pil).max() <= 1
        mask = rng.integers(0, 5, (h, w), dtype=np.uint8)
        pil_mask = np.asarray(Image.fromarray(mask).resize((out_w, out_h), Image.Resampling.NEAREST))
        np.testing.assert_array_equal(resize_nearest(mask, (out_h, out_w)), pil_mask)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rgb_to_gray(rgb)[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))


# === Sidecar parsing ===


def test_sidecar_round_trips_through_its_json(exports):
    sidecar = read_sidecar(exports["tflite_int8"].path)
    again = parse_sidecar(json.loads(json.dumps(sidecar.to_dict())))
    assert again == sidecar


def test_sidecar_reader_names_the_missing_or_invalid_field(exports):
    raw = read_sidecar(exports["tflite"].path).to_dict()
    del raw["input"]["color_mode"]
    with pytest.raises(ValueError, match="missing field 'input.color_mode'"):
        parse_sidecar(raw)
    raw = read_sidecar(exports["tflite"].path).to_dict()
    raw["artifact"]["sha256"] = "abc"
    with pytest.raises(ValueError, match="field 'artifact.sha256'. Expected 64 lowercase hex"):
        parse_sidecar(raw)
    raw = read_sidecar(exports["tflite"].path).to_dict()
    raw["schema_version"] = 2
    with pytest.raises(ValueError, match="schema_version"):
        parse_sidecar(raw)


def test_unreadable_sidecar_files_raise_value_error(exports, tmp_path):
    artifact = _copy_artifact(exports["tflite"], tmp_path)
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
def valid_sidecar(exports):
    return read_sidecar(exports["tflite_int8"].path).to_dict()


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


def test_bundle_round_trip_runs_on_a_device_without_roverlite_or_tensorflow(exports, tmp_path):
    images, masks = band_scenes(6, seed=11)
    ids = [f"scene{i}" for i in range(6)]
    archive = make_bundle(exports["tflite_int8"].path, tmp_path / "tiny_int8.tar.gz", images, masks, ids)
    folder = unpack_bundle(archive, tmp_path / "robot")
    assert {"run.py", "requirements-device.txt", "testpack.npz", "bundle.json", "tiny_tflite_int8.tflite",
            "tiny_tflite_int8.json"} <= {p.name for p in folder.iterdir()}
    requirements = (folder / "requirements-device.txt").read_text()
    assert "ai-edge-litert==" in requirements and "onnxruntime==" in requirements and "numpy==" in requirements
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
    expected = evaluate_artifact(exports["tflite_int8"].path, images, masks)
    assert result["miou"] == pytest.approx(expected["miou"])
    assert result["confusion_matrix"] == expected["confusion_matrix"]
    assert result["latency_ms"]["runs"] == 3


def test_bundle_as_folder_refuses_to_overwrite_and_refuses_tampered_artifacts(exports, tmp_path):
    images, masks = band_scenes(2, seed=12)
    folder = make_bundle(exports["onnx"].path, tmp_path / "bundle", images, masks)
    assert (folder / "roverlite" / "deploy" / "segmenter.py").is_file()
    with pytest.raises(FileExistsError):
        make_bundle(exports["onnx"].path, folder, images, masks)
    tampered = _copy_artifact(exports["onnx"], tmp_path / "tampered")
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
