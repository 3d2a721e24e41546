"""The readable benchmark table: one line per row, failed rows with their error, then comparisons.

Example:
    >>> print(format_bench_table(results))                                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from roverlite.deploy.bench_result import BenchResult, compare_runtimes

__all__ = ["format_bench_table"]


def format_bench_table(results: Sequence[BenchResult]) -> str:
    """A fixed-width table: one line per result, failed rows with their error, then comparisons."""
    results = list(results)
    header = (
        f"{'artifact':<34} {'runtime':<11} {'thr':>3} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} "
        f"{'mean±std ms':>15} {'init ms':>9} {'1st ms':>8} {'peak MiB':>8} {'load MiB':>8} {'mIoU':>6}"
    )
    lines = []
    host = next((r.host for r in results if r.host), {})
    if host:
        lines.append(f"host: {host.get('cpu')} | {host.get('usable_cpus')} usable cores | {host.get('arch')} | "
                     f"load {host.get('load_avg')}")
    lines += [header, "-" * len(header)]
    for r in results:
        name = Path(r.artifact).name
        name = name if len(name) <= 34 else "…" + name[-33:]
        if not r.ok:
            lines.append(f"{name:<34} {r.runtime:<11} FAILED: {r.error}")
            continue
        lat = r.latency_ms
        miou = r.accuracy.get("miou") if r.accuracy else None
        lines.append(
            f"{name:<34} {r.runtime:<11} {r.threads or 0:>3} {lat.p50:>9.3f} {lat.p90:>9.3f} {lat.p99:>9.3f} "
            f"{f'{lat.mean:.3f}±{lat.std:.3f}':>15} {_num(r.init_ms, 9, 1)} {_num(r.first_inference_ms, 8, 2)} "
            f"{_num(r.peak_rss_mb, 8, 1)} {_num(r.model_rss_mb, 8, 1)} {_num(miou, 6, 4)}"
        )
        if r.end_to_end_ms is not None:
            lines.append(f"{'':<34} {'  end-to-end':<11} {'':>3} {r.end_to_end_ms.p50:>9.3f} "
                         f"{r.end_to_end_ms.p90:>9.3f} {r.end_to_end_ms.p99:>9.3f}")
    lines.append(_memory_note(results))
    for row in compare_runtimes(results):
        timings = ", ".join(f"{rt} {ms:.3f} ms" for rt, ms in row["p50_ms"].items())
        lines.append(f"{row['model']} ({row['precision']}): {timings} -> {row['faster']} faster "
                     f"({row['speedup']:.2f}x)")
    return "\n".join(lines)


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def _memory_note(results: Sequence[BenchResult]) -> str:
    """What the memory columns mean for these rows (isolated or sharing one process)."""
    measured = [r for r in results if r.ok]
    if measured and all(r.isolated for r in measured):
        where = "each artifact in a process of its own (numpy + runtime + model): its whole footprint"
    else:
        where = "this process's high-water mark, shared by every row (and whatever else it loaded)"
    return f"peak MiB: {where}; load MiB: resident growth while the model loaded"
