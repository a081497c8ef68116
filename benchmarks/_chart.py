"""The PNG chart: one panel per workload, one bar per system (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot's import

import matplotlib.pyplot as plt  # noqa: E402

from benchmarks._report import concurrency_levels, stat  # noqa: E402

COLOURS = {
    "zmq": "#7f7f7f",
    "ipybox": "#d62728",
    "kernelbox": "#1f77b4",
    "kernelbox-sandbox": "#2ca02c",
}
PANELS: tuple[tuple[str, str, float], ...] = (
    # workload, title, scale of "seconds" to the axis unit
    ("roundtrip", "1+1 round trip (ms, bar = median, line = p95)", 1000.0),
    ("cold_start", "Cold start → first result (s)", 1.0),
    ("stream", "Streaming lines, wall time (s)", 1.0),
    ("figure", "Figure → PNG on disk (ms)", 1000.0),
)


def _bar_panel(ax: Any, results: dict[str, Any], workload: str, title: str, scale: float) -> None:
    names = [n for n in results["systems"] if stat(results, workload, n) is not None]
    medians = [stat(results, workload, n) * scale for n in names]  # type: ignore[operator]
    p95s = [stat(results, workload, n, key="p95") * scale for n in names]  # type: ignore[operator]
    errors = [[0.0] * len(names), [p - m for p, m in zip(p95s, medians, strict=True)]]
    bars = ax.bar(
        names, medians, yerr=errors, capsize=4, color=[COLOURS.get(n, "#333") for n in names]
    )
    ax.bar_label(
        bars,
        labels=[
            f"{m:.3g}{_lost_mark(results, workload, n)}"
            for m, n in zip(medians, names, strict=True)
        ],
        fontsize=8,
    )
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelsize=8, rotation=15)
    ax.margins(y=0.2)  # room for the value labels under the title


def _lost_mark(results: dict[str, Any], workload: str, system: str) -> str:
    """A warning appended to a bar's label when that system lost or garbled output."""
    entry = results["workloads"].get(workload, {}).get(system) or {}
    if entry.get("complete") is False or entry.get("all_ok") is False:
        return "\n(lost output!)"
    return ""


def _connect_panel(ax: Any, results: dict[str, Any]) -> None:
    names = list(results["systems"])
    for offset, (workload, label, hatch) in enumerate(
        (("cold_connect", "new kernel", ""), ("warm_connect", "from pool", "//"))
    ):
        xs = [i + (offset - 0.5) * 0.4 for i in range(len(names))]
        values = [(stat(results, workload, n) or 0.0) * 1000 for n in names]
        bars = ax.bar(
            xs,
            values,
            width=0.4,
            hatch=hatch,
            label=label,
            color=[COLOURS.get(n, "#333") for n in names],
            edgecolor="black",
            linewidth=0.5,
        )
        ax.bar_label(bars, labels=[f"{v:.0f}" if v else "" for v in values], fontsize=7)
    ax.set_xticks(range(len(names)), names, fontsize=8, rotation=15)
    ax.set_title("connect() (ms): new kernel vs warm pool", fontsize=10)
    ax.margins(y=0.2)
    ax.legend(fontsize=8)


def _concurrency_panel(ax: Any, results: dict[str, Any]) -> None:
    levels = concurrency_levels(results)
    names = list(results["systems"])
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(levels))]
        values = [
            stat(results, f"concurrent_{k}", name, "throughput_per_second") or 0.0 for k in levels
        ]
        bars = ax.bar(xs, values, width=width, label=name, color=COLOURS.get(name, "#333"))
        lost = [
            (results["workloads"].get(f"concurrent_{k}", {}).get(name) or {}).get("lost")
            for k in levels
        ]
        ax.bar_label(bars, labels=[f"lost {n}" if n else "" for n in lost], fontsize=7, color="red")
    ax.set_xticks(range(len(levels)), [f"{k} kernels" for k in levels], fontsize=8)
    ax.set_title("Concurrent kernels: executions/s (higher is better)", fontsize=10)
    ax.legend(fontsize=7)


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Draw every panel into one PNG at `path`."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    flat = list(axes.flat)
    for ax, (workload, title, scale) in zip(flat[: len(PANELS)], PANELS, strict=True):
        _bar_panel(ax, results, workload, title, scale)
    _connect_panel(flat[4], results)
    _concurrency_panel(flat[5], results)
    machine = results["machine"]
    fig.suptitle(
        f"kernelbox benchmark — {machine['date']} — {machine['cpu_model']}, "
        f"{machine['logical_cores']} cores, Python {machine['python']}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
