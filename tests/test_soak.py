"""The soak benchmark (``benchmarks/soak.py``): its verdict arithmetic on known numbers, and a short real soak."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("soak_benchmark", SOAK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _samples(*pairs: tuple[int, float]) -> list[dict[str, float]]:
    return [{"frame": frame, "rss_mib": rss} for frame, rss in pairs]


def test_rss_growth_is_measured_from_the_first_sample_at_or_after_frame_1000(soak):
    # The early jump (50 -> 100 MiB before frame 1,000) is start-up, not growth.
    assert soak.rss_growth_percent(_samples((0, 50), (500, 90), (1000, 100), (1500, 101), (2000, 104))) == 4.0
    assert soak.rss_growth_percent(_samples((0, 10), (600, 20), (1200, 80), (1800, 60))) == -25.0
    assert soak.rss_growth_percent(_samples((0, 50), (1000, 100))) is None  # nothing after the baseline
    assert soak.rss_growth_percent(_samples((0, 50), (1000, None), (1500, 80), (2000, 88))) == 10.0


def test_rss_peak_growth_sees_a_rise_that_a_heap_trim_hid_before_the_last_sample(soak):
    samples = _samples((0, 50), (1000, 80), (1500, 86), (2000, 84), (2500, 72))
    assert soak.rss_growth_percent(samples) == -10.0
    assert soak.rss_peak_growth_percent(samples) == 7.5
    assert soak.rss_peak_growth_percent(_samples((0, 50), (1000, 80))) is None


def test_growth_can_read_live_memory_instead_of_held_memory(soak):
    # Held RSS jumps by the allocator's cached buffers; the trimmed reading is what is still in use.
    samples = [{"frame": f, "rss_mib": held, "rss_trimmed_mib": live}
               for f, held, live in ((0, 60, 55), (1000, 69, 60), (2000, 81, 60.6), (3000, 69, 61.2))]
    assert soak.rss_peak_growth_percent(samples) == pytest.approx(17.391, abs=1e-3)
    assert soak.rss_growth_percent(samples, key="rss_trimmed_mib") == 2.0
    assert soak.rss_peak_growth_percent(samples, key="rss_trimmed_mib") == 2.0


def test_soak_passes_only_without_error_and_under_five_percent_growth(soak):
    assert soak.verdict(4.999, None) is True
    assert soak.verdict(-1.0, None) is True
    assert soak.verdict(5.0, None) is False
    assert soak.verdict(1.0, "RuntimeError: camera gone") is False
    assert soak.verdict(None, None) is False
    assert soak.verdict(float("nan"), None) is False


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


@pytest.mark.slow
def test_short_soak_through_the_pi_loop_keeps_memory_flat(tmp_path):
    report = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, str(SOAK), "--frames", "1500", "--threads", "1", "--json", str(report)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["error"] is None and result["passed"] is True
    assert result["frames"]["run"] == 1500 and result["threads"] == 1
    assert [s["frame"] for s in result["rss"]["samples"]] == [0, 500, 1000, 1500]
    assert all(s["rss_mib"] > 0 and s["rss_trimmed_mib"] > 0 for s in result["rss"]["samples"])  # glibc here
    assert result["rss"]["basis"] == "rss_trimmed_mib"
    assert result["rss"]["growth_percent"] < 5.0 and result["rss"]["peak_growth_percent"] is not None
    assert [w["frames"] for w in result["latency_windows"]] == [[0, 500], [500, 1000], [1000, 1500]]
    for window in result["latency_windows"]:
        assert 0 < window["model_ms"]["p50"] <= window["frame_ms"]["p50"] <= window["frame_ms"]["p99"]
    assert result["loop_summary"]["frames"] == 1500 and result["loop_summary"]["latency_ms"]["predict"]["p50"] > 0
    assert result["artifact"]["format"] == "tflite_int8" and result["artifact"]["trained"] is False
    assert result["runtime"]["version"] and result["host"]["cpu"]
    assert len(result["load_avg_start"]) == len(result["load_avg_end"]) == 3
    assert result["tensorflow_imported"] is False  # the measured process holds no TensorFlow
    assert result["frames"]["overlays"]["on_disk"] <= result["frames"]["overlays"]["keep"]
