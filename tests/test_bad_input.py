"""Bad-input catalogue (issue #8): every bad input a user can hand roverlite, through the real CLI.

Each case plants one problem and runs one ``roverlite`` command on it, then checks what README's
"Failure behaviour" table promises:

* the exit code: 2 = the command could not run; 1 = it ran and reports a problem (a failed bench
  row); 0 where the documented behaviour is to carry on (bench of a raw model without a sidecar);
* exactly one line on stderr, ``roverlite: error: ...``, naming the culprit (file, key or folder);
* no traceback without ``--debug``;
* nothing half-written: the command's output file does not exist and its output folder holds no
  file at all (temporary ``.*.tmp`` files included).

Cases run in-process through :func:`roverlite.cli.main`, as in ``test_cli.py`` (pytest captures
log records, so stderr holds only what the CLI prints); the disk-full case runs a real process,
because it needs a file-size limit. Some scenarios repeat ones in ``test_cli.py``,
``test_deploy.py`` and ``test_fuzz.py`` on purpose: this module is the one place listing them all.

Models are an untrained ``unet_tiny`` at 32x32 exported once per module (to float TFLite and
ONNX): failures do not depend on the weights.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from roverlite.cli import main

SIZE = 32
EVAL_SYNTHETIC = ("--data", "synthetic", "--set", "data.synthetic_count=4", "--split", "all")
# Lines TensorFlow's and LiteRT's C++ loggers write to the process's stderr before Python runs
# any roverlite code; they are not the CLI's output.
NATIVE_LOG_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]"
    r"|INFO: Created TensorFlow Lite)"
)


# === Shared fixtures: one untrained run folder and its exports ===


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """An untrained ``unet_tiny`` run folder (``model.h5`` + ``config.yaml``): all export needs."""
    from roverlite.config import load_config
    from roverlite.train.modelfile import save_model_file
    from roverlite.train.models import create_model

    run = tmp_path_factory.mktemp("bad-input") / "run"
    run.mkdir()
    cfg = load_config(None, overrides=["model.name=unet_tiny", f"data.image_size=[{SIZE}, {SIZE}]",
                                       "data.synthetic_count=8"])
    model = create_model("unet_tiny", input_shape=(SIZE, SIZE, cfg.data.channels), num_classes=cfg.data.num_classes)
    save_model_file(model, run / "model.h5")
    cfg.to_yaml(run / "config.yaml")
    return run


@pytest.fixture(scope="module")
def artifacts(run_dir) -> dict[str, Path]:
    """``{"tflite": path, "onnx": path}``: the run exported through the CLI, sidecars beside them."""
    out = run_dir.parent / "exports"
    code = main(["-q", "export", str(run_dir), "--format", "tflite", "onnx", "--out", str(out), "--check-images", "2"])
    assert code == 0
    return {"tflite": out / "unet_tiny_tflite.tflite", "onnx": out / "unet_tiny_onnx.onnx"}


# === What every case checks ===


@dataclass(frozen=True)
class Scenario:
    """One command on one planted problem, and what must (not) be left afterwards.

    Attributes:
        argv: the command line after ``roverlite``.
        culprits: fragments the one error line must contain (file, key, folder, reason).
        outputs: files that must not exist afterwards (the command's output, a marker file).
        out_dirs: folders that must hold no file afterwards (absent or empty).
        code: the expected exit code.
    """

    argv: tuple[str, ...]
    culprits: tuple[str, ...]
    outputs: tuple[Path, ...] = ()
    out_dirs: tuple[Path, ...] = ()
    code: int = 2


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []


def assert_nothing_half_written(scenario: Scenario) -> None:
    for path in scenario.outputs:
        assert not path.exists(), f"{path} was left behind"
    for folder in scenario.out_dirs:
        assert files_in(folder) == [], f"{folder} holds files after a failed command"


def assert_one_line_error(code: int, out: str, err: str, scenario: Scenario) -> None:
    assert code == scenario.code, err
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("roverlite: error: "), err
    for fragment in scenario.culprits:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert_nothing_half_written(scenario)


def run_cli(capsys, argv: tuple[str, ...] | list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# === Building bad inputs ===


class Kit:
    """Builds the planted problems of one test in its ``tmp_path``."""

    def __init__(self, tmp: Path, make_folder: Callable[..., Path], run_dir: Path, artifacts: dict[str, Path]):
        self.tmp, self.make_folder, self.run_dir, self.artifacts = tmp, make_folder, run_dir, artifacts

    def folder(self, **kw) -> Path:
        return self.make_folder(n=4, size=(16, 16), **kw)

    def copy_artifact(self, fmt: str) -> Path:
        """A private copy of the ``fmt`` artifact and its sidecar (cases damage the copy)."""
        source = self.artifacts[fmt]
        folder = self.tmp / f"artifact-{fmt}"
        folder.mkdir(exist_ok=True)
        shutil.copyfile(source, folder / source.name)
        shutil.copyfile(source.with_suffix(".json"), folder / source.with_suffix(".json").name)
        return folder / source.name

    def truncated_artifact(self, fmt: str) -> Path:
        """The artifact cut to half its size, its sidecar updated to the cut file's sha256 and size.

        The hash check then passes, so the file's own checks and the runtime meet the damage (a
        file truncated *after* export is the sha256 case).
        """
        path = self.copy_artifact(fmt)
        content = path.read_bytes()[: path.stat().st_size // 2]
        path.write_bytes(content)
        sidecar = json.loads(path.with_suffix(".json").read_text())
        sidecar["artifact"].update(sha256=hashlib.sha256(content).hexdigest(), size_bytes=len(content))
        path.with_suffix(".json").write_text(json.dumps(sidecar))
        return path

    def modified_artifact(self, fmt: str) -> Path:
        path = self.copy_artifact(fmt)
        content = bytearray(path.read_bytes())
        content[len(content) // 2] ^= 0xFF
        path.write_bytes(bytes(content))
        return path

    def an2dl_npz(self, name: str, value: float) -> Path:
        """An AN2DL-layout ``.npz`` (N, 2, H, W) of float pixels with one pixel set to ``value``."""
        pairs = np.zeros((3, 2, SIZE, SIZE), np.float32)
        pairs[:, 0] = 100.0
        pairs[1, 0, 3, 5] = value
        path = self.tmp / name
        np.savez(path, training_set=pairs)
        return path


# --- Dataset problems: each returns (dataset path, culprit fragments, split to load) ---


def _truncated_image(kit: Kit):
    root = kit.folder(image_ext=".jpg")
    path = root / "images" / "s002.jpg"
    path.write_bytes(path.read_bytes()[:60])
    return root, ("s002.jpg", "readable"), "all"


def _size_mismatch(kit: Kit):
    root = kit.folder()
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(root / "masks" / "s001.png")
    return root, ("s001.png", "sizes differ"), "all"


def _label_out_of_range(kit: Kit):
    root = kit.folder()
    Image.fromarray(np.full((16, 16), 9, np.uint8)).save(root / "masks" / "s003.png")
    return root, ("s003.png", "ids outside the classes", "[9]"), "all"


def _wrong_channels(kit: Kit):
    root = kit.folder()  # grayscale images, as the model expects, but one colour photo
    colour = np.stack([np.full((16, 16), 200), np.full((16, 16), 20), np.full((16, 16), 90)], -1).astype(np.uint8)
    Image.fromarray(colour).save(root / "images" / "s002.png")
    return root, ("s002.png", "wrong channels"), "all"


def _empty_dataset(kit: Kit):
    root = kit.make_folder(n=0)
    return root, (str(root), "No image/mask pairs"), "all"


def _empty_split(kit: Kit):
    root = kit.folder()
    (root / "splits.json").write_text(json.dumps({"train": [f"s{k:03d}" for k in range(4)], "val": []}))
    return root, ("split 'val' is empty", str(root)), "val"


def _nan_pixels(kit: Kit):
    path = kit.an2dl_npz("nan.npz", np.nan)
    return path, (str(path), "NaN or Inf", "1 NaN"), "all"


def _inf_pixels(kit: Kit):
    path = kit.an2dl_npz("inf.npz", np.inf)
    return path, (str(path), "NaN or Inf", "1 Inf"), "all"


MARKER = "unpickled-marker"


class Booby:
    """Unpickling an instance runs ``open(marker, "w")``: the marker file exists iff something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickled_npz(kit: Kit):
    path = kit.tmp / "evil.npz"
    np.savez(path, training_set=np.array([Booby(kit.tmp / MARKER), 1.5], dtype=object))
    return path, (str(path), "pickled"), "all"


DATA_PROBLEMS = {
    "truncated_image": _truncated_image,
    "size_mismatch": _size_mismatch,
    "label_id_out_of_range": _label_out_of_range,
    "wrong_channel_count": _wrong_channels,
    "empty_dataset": _empty_dataset,
    "empty_split": _empty_split,
    "nan_pixels": _nan_pixels,
    "inf_pixels": _inf_pixels,
    "npz_with_pickled_objects": _pickled_npz,
}


def data_case(problem: str, command: str) -> Callable[[Kit], Scenario]:
    """A dataset problem met by ``eval ARTIFACT --data`` (the device path) or ``train --data``."""

    def build(kit: Kit) -> Scenario:
        data, culprits, split = DATA_PROBLEMS[problem](kit)
        marker = (kit.tmp / MARKER,)
        if command == "eval":
            result = kit.tmp / "eval.json"
            argv = ("-q", "eval", kit.artifacts["tflite"], "--data", data, "--split", split, "--json", result)
            return Scenario(argv, culprits, outputs=(result, *marker))
        out = kit.tmp / "run"
        argv = ("-q", "train", "--data", data, "--out", out, "--model", "unet_tiny", "--epochs", "1",
                "--set", "data.image_size=[16, 16]")
        return Scenario(argv, culprits, outputs=marker, out_dirs=(out,))

    return build


# --- Config, artifact and output problems ---


def _config_key_typo(kit: Kit) -> Scenario:
    cfg = kit.tmp / "typo.yaml"
    cfg.write_text("data:\n  image_szie: [64, 64]\n")
    out = kit.tmp / "run"
    return Scenario(("-q", "train", "--config", cfg, "--out", out),
                    ("data.image_szie", 'Did you mean "image_size"?'), out_dirs=(out,))


def _eval_truncated(fmt: str) -> Callable[[Kit], Scenario]:
    def build(kit: Kit) -> Scenario:
        artifact = kit.truncated_artifact(fmt)
        result = kit.tmp / "eval.json"
        expected = "Cannot load" if fmt == "tflite" else "Not a valid ONNX model"
        return Scenario(("-q", "eval", artifact, *EVAL_SYNTHETIC, "--json", result), (str(artifact), expected),
                        outputs=(result,))

    return build


def _eval_sidecar_missing(kit: Kit) -> Scenario:
    artifact = kit.copy_artifact("tflite")
    artifact.with_suffix(".json").unlink()
    result = kit.tmp / "eval.json"
    return Scenario(("-q", "eval", artifact, *EVAL_SYNTHETIC, "--json", result),
                    ("Sidecar not found", str(artifact.with_suffix(".json"))), outputs=(result,))


def _eval_sha_mismatch(fmt: str) -> Callable[[Kit], Scenario]:
    def build(kit: Kit) -> Scenario:
        artifact = kit.modified_artifact(fmt)
        expected = json.loads(artifact.with_suffix(".json").read_text())["artifact"]["sha256"]
        actual = hashlib.sha256(artifact.read_bytes()).hexdigest()
        result = kit.tmp / "eval.json"
        return Scenario(("-q", "eval", artifact, *EVAL_SYNTHETIC, "--json", result),
                        (str(artifact), "sha256 does not match", f"Expected: {expected}", f"Received: {actual}"),
                        outputs=(result,))

    return build


def _export_to_unwritable_folder(kit: Kit) -> Scenario:
    blocker = kit.tmp / "blocker"
    blocker.write_text("a file where the output folder should go")
    out = blocker / "exports"
    return Scenario(("-q", "export", kit.run_dir, "--format", "tflite", "--out", out, "--check-images", "2"),
                    ("not writable", str(out)), outputs=(out,))


def _eval_json_to_unwritable_folder(kit: Kit) -> Scenario:
    blocker = kit.tmp / "blocker"
    blocker.write_text("a file where the output folder should go")
    result = blocker / "eval.json"
    return Scenario(("-q", "eval", kit.artifacts["tflite"], *EVAL_SYNTHETIC, "--json", result),
                    (f"Cannot write {str(result)!r}", str(blocker)), outputs=(result,))


# --- Issue 23: configs that expand, artifacts whose sidecar is overridden, thread counts ---


def _config_case(text: str, culprits: tuple[str, ...]) -> Callable[[Kit], Scenario]:
    def build(kit: Kit) -> Scenario:
        cfg = kit.tmp / "c.yaml"
        cfg.write_text(text)
        out = kit.tmp / "run"
        return Scenario(("-q", "train", "--config", cfg, "--out", out), (str(cfg), *culprits), out_dirs=(out,))

    return build


def _huge_override(kit: Kit) -> Scenario:
    return Scenario(("-q", "config", "show", "--set", "train.epochs=" + "9" * 5000), ("train.epochs", "5000"))


def _artifact_override(command: str, key: str, value: str) -> Callable[[Kit], Scenario]:
    def build(kit: Kit) -> Scenario:
        artifact = kit.artifacts["tflite"]
        result = kit.tmp / ("eval.json" if command == "eval" else "bundle.tar.gz")
        target = ("--json", result) if command == "eval" else ("--out", result, "--images", "2")
        data = EVAL_SYNTHETIC if command == "eval" else EVAL_SYNTHETIC[:4]
        culprits = (f"--set data.{key}", str(artifact.with_suffix(".json")), value)
        return Scenario(("-q", command, artifact, *data, "--set", f"data.{key}={value}", *target), culprits,
                        outputs=(result,))

    return build


def _too_many_threads(command: str) -> Callable[[Kit], Scenario]:
    def build(kit: Kit) -> Scenario:
        result = kit.tmp / "out.json"
        if command == "eval":
            argv = ("-q", "eval", kit.artifacts["tflite"], *EVAL_SYNTHETIC, "--threads", "1000", "--json", result)
        else:
            argv = ("-q", "bench", kit.artifacts["onnx"], "--runs", "1", "--warmup", "0", "--threads", "1000",
                    "--json", result)
        return Scenario(argv, ("threads=1000", "CPU cores"), outputs=(result,))

    return build


ISSUE_23_CASES: dict[str, Callable[[Kit], Scenario]] = {
    "duplicate_config_key-via-train": _config_case("train:\n  epochs: 3\n  epochs: 30\n", ("train.epochs", "twice")),
    "number_of_5000_digits_in_config-via-train": _config_case(
        "train:\n  epochs: " + "1" * 5000 + "\n", ("train.epochs", "5000")
    ),
    "number_of_5000_digits_in_override-via-config-show": _huge_override,
    "artifact_image_size_override-via-eval": _artifact_override("eval", "image_size", "[64, 64]"),
    "artifact_huge_image_size_override-via-eval": _artifact_override("eval", "image_size", "[100000, 100000]"),
    "artifact_normalisation_override-via-bundle": _artifact_override("bundle", "mean", "[0.3]"),
    "threads_beyond_the_cores-via-eval": _too_many_threads("eval"),
    "threads_beyond_the_cores-via-bench": _too_many_threads("bench"),
}


CASES: dict[str, Callable[[Kit], Scenario]] = {
    **{f"{problem}-via-{command}": data_case(problem, command)
       for problem in DATA_PROBLEMS for command in ("eval", "train")},
    "config_key_typo": _config_key_typo,
    "truncated_tflite-via-eval": _eval_truncated("tflite"),
    "truncated_onnx-via-eval": _eval_truncated("onnx"),
    "sidecar_missing-via-eval": _eval_sidecar_missing,
    "sidecar_sha256_mismatch_tflite-via-eval": _eval_sha_mismatch("tflite"),
    "sidecar_sha256_mismatch_onnx-via-eval": _eval_sha_mismatch("onnx"),
    "unwritable_output_folder-via-export": _export_to_unwritable_folder,
    "unwritable_output_folder-via-eval-json": _eval_json_to_unwritable_folder,
    **ISSUE_23_CASES,
}


@pytest.fixture
def kit(tmp_path, tiny_folder_dataset, run_dir, artifacts) -> Kit:
    return Kit(tmp_path, tiny_folder_dataset, run_dir, artifacts)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_the_culprit_with_nothing_half_written(case, kit, capsys):
    scenario = CASES[case](kit)
    code, out, err = run_cli(capsys, scenario.argv)
    assert_one_line_error(code, out, err, scenario)


def test_pickled_npz_marker_detects_unpickling(tmp_path):
    # Control for the npz_with_pickled_objects cases: unpickling the archive does create the marker.
    path = tmp_path / "evil.npz"
    np.savez(path, training_set=np.array([Booby(tmp_path / MARKER)], dtype=object))
    np.load(path, allow_pickle=True)["training_set"]
    assert (tmp_path / MARKER).exists()


def test_debug_flag_shows_the_traceback_instead_of_one_line(kit):
    artifact = kit.modified_artifact("tflite")
    with pytest.raises(ValueError, match="sha256 does not match"):
        main(["-q", "--debug", "eval", str(artifact), *EVAL_SYNTHETIC])


# === bench: a damaged artifact is a failed row; the others are still measured ===


BENCH_PROBLEMS = {
    "truncated_tflite": lambda kit: kit.truncated_artifact("tflite"),
    "truncated_onnx": lambda kit: kit.truncated_artifact("onnx"),
    "sidecar_sha256_mismatch": lambda kit: kit.modified_artifact("onnx"),
}


@pytest.mark.parametrize("problem", list(BENCH_PROBLEMS))
def test_bench_reports_a_damaged_artifact_as_a_failed_row_and_measures_the_rest(problem, kit, capsys):
    damaged = BENCH_PROBLEMS[problem](kit)
    report = kit.tmp / "bench.json"
    code, out, err = run_cli(capsys, ("-q", "bench", damaged, kit.artifacts["tflite"], "--runs", "3", "--warmup", "1",
                                      "--threads", "1", "--json", report))
    assert code == 1  # the command ran and found a problem
    assert "Traceback" not in out + err and "roverlite: error" not in err
    failed = [line for line in out.splitlines() if "FAILED:" in line]
    assert len(failed) == 1 and str(damaged) in failed[0], out
    rows = json.loads(report.read_text())["results"]
    assert [row["status"] for row in rows] == ["failed", "ok"]
    assert str(damaged) in rows[0]["error"] and "\n" not in rows[0]["error"]


def test_bench_of_an_artifact_without_sidecar_measures_the_raw_model(kit, capsys):
    # Documented in roverlite.deploy.bench: without a sidecar, init is read + load + allocate (no
    # hash to check); eval, bundle and Segmenter refuse such a file (sidecar_missing-via-eval).
    artifact = kit.copy_artifact("tflite")
    artifact.with_suffix(".json").unlink()
    code, out, err = run_cli(capsys, ("-q", "bench", artifact, "--runs", "3", "--warmup", "1", "--threads", "1"))
    assert code == 0 and "FAILED" not in out and err == ""


# === Disk full ===


def _limit_file_size(max_bytes: int) -> Callable[[], None]:
    import resource
    import signal

    def limit() -> None:  # runs in the child before exec; SIG_IGN survives exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE/SIGXFSZ semantics checked on Linux")
def test_disk_full_while_writing_an_artifact_is_one_line_and_leaves_no_file(run_dir, tmp_path):
    # A file-size limit makes every write past 8 KiB fail with EFBIG, as a full disk fails with
    # ENOSPC: the 35 KB artifact cannot be written, while the folder check's empty probe file can.
    out = tmp_path / "exports"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "roverlite", "-q", "export", str(run_dir), "--format", "tflite", "--out", str(out),
         "--check-images", "2"],
        preexec_fn=_limit_file_size(8192), capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
        check=False,
    )
    err = "\n".join(line for line in done.stderr.splitlines() if not NATIVE_LOG_LINE.match(line))
    artifact = out / "unet_tiny_tflite.tflite"
    scenario = Scenario((), (f"Cannot write {str(artifact)!r}", "File too large"), outputs=(artifact,), out_dirs=(out,))
    assert_one_line_error(done.returncode, done.stdout, err, scenario)


def test_disk_full_while_writing_the_sidecar_removes_the_artifact(run_dir, tmp_path, capsys, monkeypatch):
    from roverlite.export import metadata
    from roverlite.io import write_staged

    def full_disk(staged, final, obj):
        def write(fh):
            fh.write('{\n  "schema_version": 1,')  # part of the sidecar reaches the temporary file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return write_staged(staged, final, write, "w")

    monkeypatch.setattr(metadata, "write_staged_json", full_disk)
    out = tmp_path / "exports"
    sidecar = out / "unet_tiny_tflite.json"
    code, stdout, err = run_cli(capsys, ("-q", "export", run_dir, "--format", "tflite", "--out", out,
                                         "--check-images", "2"))
    scenario = Scenario((), (f"Cannot write {str(sidecar)!r}", "No space left on device"), out_dirs=(out,))
    assert_one_line_error(code, stdout, err, scenario)


# === NaN / Inf at inference through the API ===


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_segmenter_predict_refuses_non_finite_pixels(artifacts, value):
    from roverlite.deploy import Segmenter

    segmenter = Segmenter(artifacts["tflite"], threads=1)
    image = np.full((SIZE, SIZE), 100.0, np.float32)
    image[4, 7] = value
    with pytest.raises(ValueError, match="finite"):
        segmenter.predict(image)
    assert segmenter.predict(np.full((SIZE, SIZE), 100.0, np.float32)).shape == (SIZE, SIZE)  # still usable


# === Issue 23: re-export keeps the previous artifact; hostile configs; any error is one line ===


def _exported_pair(kit: Kit, folder: Path) -> dict[str, bytes]:
    """A good previous export in ``folder``: the module's TFLite artifact and sidecar, as bytes by name."""
    folder.mkdir()
    source = kit.artifacts["tflite"]
    for path in (source, source.with_suffix(".json")):
        shutil.copyfile(path, folder / path.name)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _assert_previous_pair_intact(folder: Path, before: dict[str, bytes]) -> None:
    from roverlite.deploy.sidecar import load_verified

    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert sorted(after) == sorted(before), f"files now: {sorted(after)}"  # no temporary or pending file
    assert after == before
    load_verified(next(folder.glob("*.tflite")))  # still a checksum-valid pair


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError], ids=["ctrl-c", "crash"])
def test_reexport_interrupted_or_failing_during_the_self_check_keeps_the_previous_artifact(
    kit, capsys, monkeypatch, failure
):
    import roverlite.export as export

    out = kit.tmp / "exports"
    before = _exported_pair(kit, out)

    def self_check(*args, **kwargs):
        raise failure("stopped during the self-check")

    monkeypatch.setattr(export, "self_check", self_check)
    code, stdout, err = run_cli(capsys, ("-q", "export", kit.run_dir, "--format", "tflite", "--out", out,
                                         "--check-images", "2"))
    if failure is KeyboardInterrupt:
        assert code == 130 and err.strip() == "roverlite: interrupted"
    else:  # an unexpected error is one line too (--debug shows the traceback)
        assert_one_line_error(code, stdout, err, Scenario((), ("RuntimeError", "stopped during the self-check")))
    _assert_previous_pair_intact(out, before)


def _run_limited(argv: list[str], cwd: Path, memory_bytes: int, timeout: float) -> subprocess.CompletedProcess:
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "roverlite", *argv], preexec_fn=limit, capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout, check=False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS semantics checked on Linux")
@pytest.mark.parametrize("command", [("config", "show"), ("data", "audit")])
def test_yaml_alias_bomb_is_refused_before_anything_expands(tmp_path, command):
    # 9 levels of 9 aliases: ~4e8 strings once expanded (the issue's 531-byte file grew past 1.4 GB).
    # Under a 1 GiB address-space limit and 60 s, only a refusal before expansion can pass.
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 9)}]" for k in range(1, 10)]
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    assert cfg.stat().st_size < 1024
    done = _run_limited(["-q", *command, "--config", str(cfg)], tmp_path, memory_bytes=1 << 30, timeout=60)
    assert_one_line_error(done.returncode, done.stdout, done.stderr, Scenario((), (str(cfg), "alias *l0", "line 2")))


def test_unexpected_error_is_one_line_and_debug_shows_its_traceback(capsys, monkeypatch):
    from roverlite.config import Config

    def out_of_memory(self, path=None):
        raise MemoryError("Unable to allocate 37.3 GiB for an array")

    monkeypatch.setattr(Config, "to_yaml", out_of_memory)
    code, out, err = run_cli(capsys, ("config", "show"))
    assert_one_line_error(code, out, err, Scenario((), ("MemoryError", "Unable to allocate 37.3 GiB")))
    with pytest.raises(MemoryError):
        main(["config", "show", "--debug"])


def test_debug_flag_after_the_subcommand_shows_the_traceback(kit):
    artifact = kit.modified_artifact("tflite")
    with pytest.raises(ValueError, match="sha256 does not match"):
        main(["eval", str(artifact), *EVAL_SYNTHETIC, "-q", "--debug"])


def test_override_in_exponent_notation_is_a_number(capsys):
    code, out, err = run_cli(capsys, ("config", "show", "--set", "train.learning_rate=1e-3"))
    assert code == 0, err
    assert "learning_rate: 0.001" in out
