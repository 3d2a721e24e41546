"""The soak benchmark (``benchmarks/soak.py``): its rules on known numbers, and short real soaks.

The short soak runs the Pi loop (edgeloop with overlays, the mask socket and its consumer, the
mask PNGs, the thermal monitor) on the tiny int8 model three times at once: as it is, with a
publisher that keeps every mask, and with one that keeps a timestamp pair per frame (a slow,
steady leak). The first must pass; the other two must fail on their memory slope while their end
point stays under the 5 % limit.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from export_helpers import run_device_python

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SOAK = BENCHMARKS / "soak.py"
# 3,000 warm-up frames (the soak's default) and a 2,000-frame fit over 21 samples: ~10 s at the
# tiny model's ~250 frames/s. Over so few frames one resident page more or less moves the
# projection by ~3 MiB per million frames, so the short soak judges against 50 MiB (the 5 MiB
# budget is for long soaks, whose fit spans 50,000+ frames). Measured here: the loop as it is
# fits 0.0 MiB (flat to the page after warm-up, 3 runs of 3); keeping a 32x24 mask per frame
# fits ~960 MiB per million frames, while its end point rises by only ~3 %.
SHORT_FRAMES, SHORT_WINDOW, SHORT_FRAME_SIZE, SHORT_BUDGET_MIB = 5000, 100, (32, 24), 50.0
_SHORT_SOAK = """
import json, sys
from pathlib import Path

sys.path.insert(0, {benchmarks!r})
import soak


class KeepsEveryMask:  # a mask publisher with the bug this test is about: it keeps every mask

    def __init__(self):
        self.kept = []

    def publish(self, frame, mask):
        self.kept.append(mask.copy())

    def close(self):
        pass


class KeepsEveryTimestamp(KeepsEveryMask):  # a slow, steady leak: one (index, time) pair per frame, ~130 B

    def publish(self, frame, mask):
        self.kept.append((frame.index, frame.timestamp))


LEAKS = {{"none": [], "mask": [KeepsEveryMask()], "timestamp": [KeepsEveryTimestamp()]}}


result = soak.soak(Path({artifact!r}), {frames}, 1, {window}, {frame_size!r}, Path({work!r}), loop="pi",
                   budget_mib={budget}, extra_publishers=LEAKS[{leak!r}])
Path({out!r}).write_text(json.dumps(result))
"""


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("soak_benchmark", SOAK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def _samples(*pairs: tuple[int, float]) -> list[dict[str, float]]:
    return [{"frame": frame, "rss_mib": rss} for frame, rss in pairs]


def test_rss_growth_is_measured_from_the_first_sample_at_or_after_the_warm_up(soak):
    # The early jump (50 -> 100 MiB before frame 1,000) is start-up, not growth.
    assert soak.rss_growth_percent(_samples((0, 50), (500, 90), (1000, 100), (1500, 101), (2000, 104)), 1000) == 4.0
    assert soak.rss_growth_percent(_samples((0, 10), (600, 20), (1200, 80), (1800, 60)), 1000) == -25.0
    assert soak.rss_growth_percent(_samples((0, 50), (1000, 100)), 1000) is None  # nothing after the baseline
    assert soak.rss_growth_percent(_samples((0, 50), (1000, None), (1500, 80), (2000, 88)), 1000) == 10.0
    assert soak.rss_growth_percent(_samples((0, 50), (3000, 100), (4000, 102))) == 2.0  # default warm-up: 3,000


def test_rss_peak_growth_sees_a_rise_that_a_heap_trim_hid_before_the_last_sample(soak):
    samples = _samples((0, 50), (1000, 80), (1500, 86), (2000, 84), (2500, 72))
    assert soak.rss_growth_percent(samples, 1000) == -10.0
    assert soak.rss_peak_growth_percent(samples, 1000) == 7.5
    assert soak.rss_peak_growth_percent(_samples((0, 50), (1000, 80)), 1000) is None


def test_growth_can_read_live_memory_instead_of_held_memory(soak):
    # Held RSS jumps by the allocator's cached buffers; the trimmed reading is what is still in use.
    samples = [{"frame": f, "rss_mib": held, "rss_trimmed_mib": live}
               for f, held, live in ((0, 60, 55), (1000, 69, 60), (2000, 81, 60.6), (3000, 69, 61.2))]
    assert soak.rss_peak_growth_percent(samples, 1000) == pytest.approx(17.391, abs=1e-3)
    assert soak.rss_growth_percent(samples, 1000, key="rss_trimmed_mib") == 2.0
    assert soak.rss_peak_growth_percent(samples, 1000, key="rss_trimmed_mib") == 2.0


def test_memory_slope_is_the_least_squares_line_after_warm_up_projected_over_a_million_frames(soak):
    # 60 MiB + 0.02 MiB per 1,000 frames after a 5 MiB start-up jump that the warm-up leaves out.
    samples = [{"frame": f, "rss_trimmed_mib": 55.0 + (5.0 if f >= 500 else 0.0) + 2e-5 * f} for f in range(0, 20001, 500)]
    fit = soak.memory_slope(samples, from_frame=3000)
    assert fit["from_frame"] == 3000 and fit["to_frame"] == 20000 and fit["samples"] == 35
    assert fit["slope_mib_per_1k_frames"] == pytest.approx(0.02, abs=1e-9)
    assert fit["projected_growth_mib"] == pytest.approx(20.0, abs=1e-6)
    assert fit["bytes_per_frame"] == pytest.approx(2e-5 * 2**20, abs=0.01)
    assert fit["residual_std_mib"] == 0.0
    assert soak.memory_slope(samples, from_frame=0)["projected_growth_mib"] > 20.0  # the jump, read as growth


def test_memory_slope_of_noise_around_a_plateau_is_near_zero_and_needs_three_samples(soak):
    noise = [0.004, -0.004, 0.0, 0.004, -0.004, 0.0, -0.004, 0.004, 0.0, 0.0]  # one 4 KiB page up or down
    samples = [{"frame": 3000 + 500 * k, "rss_trimmed_mib": 70.0 + e} for k, e in enumerate(noise)]
    assert abs(soak.memory_slope(samples)["projected_growth_mib"]) < 1.0
    assert soak.memory_slope(samples[:2]) is None
    assert soak.memory_slope([{"frame": 3000, "rss_trimmed_mib": None}] * 5) is None


def _page_noise(count: int) -> np.ndarray:
    """Trimmed RSS wobbles by one 4 KiB page up or down between samples (seeded)."""
    return np.random.default_rng(26).integers(-1, 2, count) * 4 / 1024


def test_slope_rule_fails_a_slow_steady_leak_that_the_end_point_and_a_short_look_miss(soak):
    # 8 bytes per frame (one pointer kept per frame) under page noise, over a 100,000-frame soak.
    frames = np.arange(3000, 100_001, 500)
    rss = 75.0 + 8 * frames / 2**20 + _page_noise(len(frames))
    samples = [{"frame": int(f), "rss_trimmed_mib": float(v)} for f, v in zip(frames, rss)]
    fit = soak.memory_slope(samples)
    assert fit["projected_growth_mib"] == pytest.approx(8 * 1e6 / 2**20, rel=0.05)  # 7.6 MiB > 5 MiB
    growth = soak.rss_growth_percent(samples, key="rss_trimmed_mib")
    assert growth < 1.5  # the end point alone sees ~1 %
    assert soak.verdict(growth, fit["projected_growth_mib"], None) == {"endpoint_ok": True, "slope_ok": False,
                                                                       "passed": False}
    step = soak.largest_step(samples)  # steady growth: no single step explains it
    assert step["mib"] < 0.02 and step["projected_growth_without_step_mib"] > soak.BUDGET_MIB


def test_a_one_off_step_is_charged_by_the_slope_and_named_by_largest_step(soak):
    # Session 12's Jetson soak: flat, +0.52 MiB at frame 49,500 (the interned-string table), flat again.
    frames = np.arange(3000, 76_001, 500)
    rss = 95.55 + np.where(frames >= 49_500, 0.52, 0.0) + _page_noise(len(frames))
    samples = [{"frame": int(f), "rss_trimmed_mib": float(v)} for f, v in zip(frames, rss)]
    fit = soak.memory_slope(samples)
    assert fit["projected_growth_mib"] > soak.BUDGET_MIB  # not excused: it could be a leak that steps rarely
    assert soak.verdict(0.5, fit["projected_growth_mib"], None)["passed"] is False
    step = soak.largest_step(samples)
    assert step["frame"] == 49_500 and step["mib"] == pytest.approx(0.52, abs=0.01)
    assert abs(step["projected_growth_without_step_mib"]) < 1.0
    assert soak.largest_step(samples[:3]) is None


def test_soak_passes_only_without_error_under_five_percent_and_within_the_slope_budget(soak):
    assert soak.verdict(4.999, 5.0, None) == {"endpoint_ok": True, "slope_ok": True, "passed": True}
    assert soak.verdict(-1.0, -3.0, None)["passed"] is True
    assert soak.verdict(5.0, 0.0, None) == {"endpoint_ok": False, "slope_ok": True, "passed": False}
    # A slow leak: 0.6 % at the end point of a short run, 80 MiB over a million frames.
    assert soak.verdict(0.6, 80.0, None) == {"endpoint_ok": True, "slope_ok": False, "passed": False}
    assert soak.verdict(0.6, 80.0, None, budget_mib=100.0)["passed"] is True
    assert soak.verdict(1.0, 1.0, "RuntimeError: camera gone")["passed"] is False
    assert soak.verdict(None, 1.0, None)["passed"] is False
    assert soak.verdict(1.0, None, None)["slope_ok"] is False  # too few frames to fit: not a pass
    assert soak.verdict(float("nan"), 1.0, None)["passed"] is False


def test_window_row_has_frame_and_model_percentiles_and_drift_compares_first_and_last(soak):
    frame_ms = [40.0 + k for k in range(101)]  # 40 .. 140 ms: p50 90, p99 139, 101 frames in 9.09 s
    row = soak.window_row(3, 1500, frame_ms, [9.0, 11.0], 61.25)
    assert row["window"] == 3 and row["frames"] == [1500, 1601] and row["rss_mib"] == 61.25
    assert row["frame_ms"] == {"p50": 90.0, "p99": 139.0} and row["model_ms"] == {"p50": 10.0, "p99": 10.98}
    assert row["fps"] == pytest.approx(101 / 9.09, abs=1e-3)
    assert soak.window_row(0, 0, [5.0], [], None)["model_ms"] == {"p50": None, "p99": None}
    later = soak.window_row(4, 1601, [112.5] * 10, [9.0], 61.3)
    assert soak.latency_drift([row, later]) == 1.25
    assert soak.latency_drift([row]) is None


def test_results_file_keeps_the_other_loops_entry_and_replaces_the_old_one_run_layout(soak, tmp_path):
    path = tmp_path / "soak.json"
    path.write_text(json.dumps({"schema_version": 1, "command": "python benchmarks/soak.py", "passed": True}))
    soak.update_results(path, "pi", {"command": "pi run", "passed": True})
    document = soak.update_results(path, "jetson", {"command": "jetson run", "passed": False})
    assert json.loads(path.read_text()) == document
    assert document["schema_version"] == soak.SCHEMA_VERSION and "command" not in document
    assert {k: v["command"] for k, v in document["loops"].items()} == {"jetson": "jetson run", "pi": "pi run"}
    assert document["passed"] is False
    document = soak.update_results(path, "jetson", {"command": "jetson rerun", "passed": True})
    assert document["passed"] is True and document["loops"]["pi"]["command"] == "pi run"


# === Short real soaks ===


@pytest.fixture(scope="module")
def tiny_tflite(tiny_exports) -> Path:
    return tiny_exports["tflite_int8"].path


def _short_soak(artifact: Path, work: Path, leak: str) -> dict:
    work.mkdir()
    out = work.parent / f"{work.name}.json"
    code = _SHORT_SOAK.format(benchmarks=str(BENCHMARKS), artifact=str(artifact), frames=SHORT_FRAMES,
                              window=SHORT_WINDOW, frame_size=SHORT_FRAME_SIZE, work=str(work),
                              budget=SHORT_BUDGET_MIB, leak=leak, out=str(out))
    done = run_device_python(code, timeout=600)  # TensorFlow blocked, as on the robot
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_short_soak_passes_the_pi_loop_and_its_slope_rule_fails_a_fast_and_a_slow_steady_leak(tiny_tflite, tmp_path):
    with ThreadPoolExecutor(3) as pool:  # at once: each is one Python thread plus one LiteRT thread
        clean, leaky, slow = pool.map(lambda args: _short_soak(tiny_tflite, *args),
                                      [(tmp_path / "clean", "none"), (tmp_path / "leaky", "mask"),
                                       (tmp_path / "slow", "timestamp")])
    for result in (clean, leaky, slow):
        assert result["error"] is None and result["frames"]["run"] == SHORT_FRAMES
        assert result["rss"]["basis"] == "rss_trimmed_mib" and result["rss"]["slope"]["samples"] == 21
        assert result["frames"]["publisher"]["messages_received"] > 0  # the mask socket was in the loop
        assert result["frames"]["overlays"]["on_disk"] <= result["frames"]["overlays"]["keep"]
        assert result["frames"]["mask_png"]["on_disk"] == result["frames"]["mask_png"]["keep"]  # bounded, and on
        assert result["tensorflow_imported"] is False
    assert clean["passed"] is True, clean["rss"]["slope"]
    for result in (leaky, slow):
        assert result["passed"] is False and result["rss"]["slope_ok"] is False, result["rss"]["slope"]
        assert result["rss"]["endpoint_ok"] is True, result["rss"]["growth_percent"]  # the end point alone misses it
    # The fit recovers each leak's size: a 32x24 uint8 mask (768 B) and its array header per frame; a
    # tuple, a float and an int per frame (~136 B), six times slower but still over the short budget.
    assert 768 <= leaky["rss"]["slope"]["bytes_per_frame"] <= 2048, leaky["rss"]["slope"]
    assert 60 <= slow["rss"]["slope"]["bytes_per_frame"] <= 400, slow["rss"]["slope"]


@pytest.mark.slow
@pytest.mark.parametrize(("loop", "artifact_format"), [("pi", "tflite_int8"), ("jetson", "onnx")])
def test_soak_command_builds_the_student_and_writes_its_loops_entry(loop, artifact_format, tmp_path):
    report = tmp_path / "soak.json"
    # 4,000 frames: a fit over 3 samples after the 3,000-frame warm-up, judged against 50 MiB (see SHORT_*).
    done = subprocess.run([sys.executable, str(SOAK), "--loop", loop, "--frames", "4000", "--threads", "1",
                           "--budget-mib", "50", "--json", str(report)],
                          capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(report.read_text())
    assert list(document["loops"]) == [loop] and document["passed"] is True
    result = document["loops"][loop]
    assert result["error"] is None and result["passed"] is True
    assert result["frames"]["run"] == 4000 and result["threads"] == 1
    assert [s["frame"] for s in result["rss"]["samples"]] == list(range(0, 4001, 500))
    assert all(s["rss_mib"] > 0 and s["rss_trimmed_mib"] > 0 for s in result["rss"]["samples"])  # glibc here
    assert result["rss"]["basis"] == "rss_trimmed_mib" and result["rss"]["slope"]["samples"] == 3
    assert result["rss"]["growth_percent"] < 5.0 and result["rss"]["peak_growth_percent"] is not None
    assert [w["frames"] for w in result["latency_windows"]] == [[k, k + 500] for k in range(0, 4000, 500)]
    for window in result["latency_windows"]:
        assert 0 < window["model_ms"]["p50"] <= window["frame_ms"]["p50"] <= window["frame_ms"]["p99"]
    assert result["loop_summary"]["frames"] == 4000 and result["loop_summary"]["latency_ms"]["predict"]["p50"] > 0
    assert result["artifact"]["format"] == artifact_format and result["artifact"]["trained"] is False
    assert result["runtime"]["version"] and result["host"]["cpu"]
    assert len(result["load_avg_start"]) == len(result["load_avg_end"]) == 3
    assert result["tensorflow_imported"] is False  # the measured process holds no TensorFlow
    assert result["frames"]["overlays"]["on_disk"] <= result["frames"]["overlays"]["keep"]
