"""The command line: interfaces other tools rely on, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from roverlite.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("roverlite: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# === data audit ===


def test_audit_with_no_arguments_audits_builtin_synthetic_terrain(capsys):
    code, out, _ = run_cli(capsys, "-q", "data", "audit")
    assert code == 0
    assert "synthetic" in out and "big_rock" in out


def test_audit_json_interface_on_real_ai4mars(shared_datasets, tmp_path, capsys):
    report = tmp_path / "audit.json"
    code, out, _ = run_cli(capsys, "-q", "data", "audit", shared_datasets / "ai4mars-msl", "--json", report)
    assert code == 0
    data = json.loads(report.read_text())
    expected = {"0": 0.212, "1": 0.285, "2": 0.067, "3": 0.0049, "255": 0.431}
    for key, share in expected.items():
        assert data["class_shares"][key] == pytest.approx(share, abs=0.002 if share > 0.01 else 0.0005)
    assert sum(data["class_shares"].values()) == pytest.approx(1.0)
    for key in ("repeated_mask_outliers", "unreadable", "size_mismatch", "invalid_ids"):
        assert data[key] == []


def test_audit_with_config_names_cwfid_classes(shared_datasets, tmp_path, capsys):
    report = tmp_path / "audit.json"
    code, out, _ = run_cli(capsys, "-q", "data", "audit", "--config", REPO / "configs" / "cropweed.yaml", "--json", report)
    assert code == 0
    shares = json.loads(report.read_text())["class_shares"]
    assert shares["soil"] == pytest.approx(0.926, abs=0.002)
    assert shares["crop"] == pytest.approx(0.016, abs=0.002)
    assert shares["weed"] == pytest.approx(0.059, abs=0.002)


def test_audit_lists_unreadable_file_and_exits_nonzero_after_writing_report(tiny_folder_dataset, tmp_path, capsys):
    root = tiny_folder_dataset(n=4)
    (root / "images" / "s001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    report = tmp_path / "audit.json"
    code, out, _ = run_cli(capsys, "-q", "data", "audit", root, "--json", report)
    assert code == 1
    assert json.loads(report.read_text())["unreadable"] == ["images/s001.png"]


# === bad input through `roverlite train`: one line naming the culprit, exit 2, nothing written ===


def _train(capsys, data: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "train", "--data", data, "--out", out, "--model", "unet_tiny", "--epochs", "1",
                   "--set", "data.image_size=[16, 16]", *extra)


def _bad_dataset(kind: str, make) -> tuple[Path, str, list[str]]:
    """Build a dataset with one planted problem; return (path, culprit, extra args)."""
    if kind == "truncated_image":
        root = make(n=4, size=(16, 16), image_ext=".jpg")
        path = root / "images" / "s002.jpg"
        path.write_bytes(path.read_bytes()[:60])
        return root, "s002.jpg", []
    if kind == "size_mismatch":
        root = make(n=4, size=(16, 16))
        Image.fromarray(np.zeros((8, 16), np.uint8)).save(root / "masks" / "s001.png")
        return root, "s001", []
    if kind == "invalid_ids":
        root = make(n=4, size=(16, 16))
        Image.fromarray(np.full((16, 16), 9, np.uint8)).save(root / "masks" / "s003.png")
        return root, "s003", []
    if kind == "wrong_channels":
        root = make(n=4, size=(16, 16), channels=1)
        return root, "channel", ["--set", "data.color_mode=rgb", "--set", "data.mean=[0,0,0]", "--set", "data.std=[1,1,1]"]
    if kind == "empty_dataset":
        root = make(n=0, size=(16, 16))
        return root, "No image/mask pairs", []
    if kind == "empty_split":
        root = make(n=4, size=(16, 16))
        ids = [f"s{k:03d}" for k in range(4)]
        (root / "splits.json").write_text(json.dumps({"train": ids, "val": []}))
        return root, "val", []
    raise KeyError(kind)


@pytest.mark.parametrize(
    "kind", ["truncated_image", "size_mismatch", "invalid_ids", "wrong_channels", "empty_dataset", "empty_split"]
)
def test_bad_dataset_gives_one_line_error_naming_the_culprit_and_writes_no_run(kind, tiny_folder_dataset, tmp_path, capsys):
    data, culprit, extra = _bad_dataset(kind, tiny_folder_dataset)
    out = tmp_path / "run"
    code, _, err = _train(capsys, data, out, *extra)
    assert_one_line_error(code, err, culprit)
    assert not out.exists() or not any(out.iterdir())


def test_npz_with_pickled_objects_is_refused_by_the_cli(tmp_path, capsys):
    path = tmp_path / "evil.npz"
    np.savez(path, training_set=np.array([{"a": 1}], dtype=object))
    code, _, err = _train(capsys, path, tmp_path / "run")
    assert_one_line_error(code, err, "evil.npz", "pickled")


def test_config_key_typo_suggests_the_closest_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  image_szie: [64, 64]\n")
    code, _, err = run_cli(capsys, "train", "--config", cfg, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "data.image_szie", 'Did you mean "image_size"')


def test_unwritable_output_folder_is_named(tiny_folder_dataset, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    code, _, err = _train(capsys, tiny_folder_dataset(n=4, size=(16, 16)), blocker / "run")
    assert_one_line_error(code, err, "not writable", "blocker")


def test_debug_flag_shows_the_traceback(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("trian: {}\n")
    with pytest.raises(ValueError, match="trian"):
        main(["--debug", "config", "show", "--config", str(cfg)])


def test_console_script_and_module_entry_points_run(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for cmd in (["roverlite", "--help"], [sys.executable, "-m", "roverlite", "--help"]):
        exe = Path(sys.executable).parent / cmd[0] if cmd[0] == "roverlite" else None
        argv = [str(exe), *cmd[1:]] if exe is not None else cmd
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "audit" in done.stdout or "data" in done.stdout


def test_cli_error_exit_code_from_a_real_process(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {formt: folder}\n")
    done = subprocess.run([sys.executable, "-m", "roverlite", "config", "show", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "roverlite: error: Unknown config key 'data.formt'. Did you mean \"format\"?"
    ]
