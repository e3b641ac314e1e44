"""The latency chart: caller p50 and p99 against backend latency for the three modes, one panel
per memory size, written as a PNG. Needs matplotlib (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench._errors import BenchError

STYLE = {"no-telemetry": "tab:gray", "synchronous": "tab:red", "afterflush": "tab:blue"}


def write_chart(results: dict[str, Any], destination: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise BenchError(
            "the chart needs matplotlib: pip install -e '.[bench]' (or pass --no-chart)"
        ) from exc

    cells = results["latency"]["cells"]
    memories = sorted({c["memory_mb"] for c in cells})
    latencies = sorted({c["backend_latency_ms"] for c in cells
                        if c["backend_latency_ms"] is not None})
    if not memories or not latencies:
        raise BenchError("no latency cells to chart")
    figure, axes = plt.subplots(1, len(memories), figsize=(4.6 * len(memories), 4.8),
                                sharey=True, squeeze=False)
    positions = list(range(len(latencies)))
    for axis, memory in zip(axes[0], memories, strict=True):
        for mode, color in STYLE.items():
            mine = [c for c in cells if c["memory_mb"] == memory and c["mode"] == mode]
            if not mine:
                continue
            if mode == "no-telemetry":
                # Independent of the backend: one measurement drawn across the panel.
                p50 = [mine[0]["caller_ms"]["p50"]] * len(latencies)
                p99 = [mine[0]["caller_ms"]["p99"]] * len(latencies)
            else:
                by_latency = {c["backend_latency_ms"]: c for c in mine}
                p50 = [by_latency[x]["caller_ms"]["p50"] if x in by_latency else None
                       for x in latencies]
                p99 = [by_latency[x]["caller_ms"]["p99"] if x in by_latency else None
                       for x in latencies]
            axis.plot(positions, p50, color=color, marker="o", label=f"{mode} p50")
            axis.plot(positions, p99, color=color, marker="^", linestyle="--",
                      label=f"{mode} p99")
        axis.set_title(f"{memory} MB")
        axis.set_xticks(positions, [f"{x:g}" for x in latencies])
        axis.set_xlabel("backend latency (ms)")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("caller latency (ms, log scale)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize="small")
    figure.suptitle("afterflush: what the caller waits, against the backend's latency")
    # Room at the bottom for the legend, which would hide lines inside a panel.
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    destination.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(destination, dpi=110)
    plt.close(figure)
