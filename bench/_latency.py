"""Part 1, caller latency: every mode at every memory size and backend latency, measured on warm
environments invoked one at a time when idle; also post-invoke and billed time, items delivered
against items produced, and the peak RSS of our processes while it ran, their RSS and PSS at rest
once it ended.

One environment per mode and memory size serves all backend latencies (the backend's latency is
changed between cells); no telemetry does not depend on the backend and is measured once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._deploy import SIGNALS, Mode, Workspace
from bench._environment import Environment, environment, warm_up
from bench._procs import Backend
from bench._stats import summary

DEFAULT_SPANS = 20
# Part 1 measures warm invocations: Init may take longer than Lambda's 10 s here (it does at
# 128 MB when the emulator throttles Init too), and its duration is recorded either way.
WARM_INIT_TIMEOUT_S = 60.0
METRIC_POINTS = 3
LOG_RECORDS = 3


@dataclass(frozen=True)
class LatencyPlan:
    memory_sizes: Sequence[int]
    backend_latencies_ms: Sequence[float]
    invocations: int
    warmup: int
    # Wall time a cell may take: a cell stops early (never under min_invocations) past it.
    cell_budget_s: float
    min_invocations: int
    modes: Sequence[Mode] = (Mode.FLOOR, Mode.SYNC, Mode.AFTERFLUSH)
    spans: int = DEFAULT_SPANS


def produced_per_invocation(mode: Mode, spans: int) -> dict[str, int]:
    """What one invocation hands the SDK: the function's spans plus the instrumentation's
    invocation span, one point per metric series, its log records. Nothing without an SDK."""
    if mode is Mode.FLOOR:
        return dict.fromkeys(SIGNALS, 0)
    return {"traces": spans + 1, "metrics": METRIC_POINTS, "logs": LOG_RECORDS}


def measure_cell(
    env: Environment,
    backend: Backend,
    plan: LatencyPlan,
    latency_ms: float | None,
    *,
    event: dict[str, Any],
) -> dict[str, Any]:
    """`plan.invocations` invocations (fewer past the cell's budget) at one backend latency."""
    if latency_ms is not None:
        backend.set_latency(latency_ms)
    backend.reset()
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    for index in range(plan.invocations):
        if index >= plan.min_invocations and time.monotonic() - started > plan.cell_budget_s:
            break
        records.append(env.invoke(event))
    # Every invocation's record is written once the companion has drained: what the backend
    # has now is what was delivered before the environment could freeze.
    delivered = backend.items()
    per = produced_per_invocation(env.mode, plan.spans)
    produced = {signal: per[signal] * len(records) for signal in SIGNALS}

    def column(name: str) -> list[float]:
        return [float(r[name]) for r in records if r.get(name) is not None]

    return {
        "mode": env.mode.value,
        "memory_mb": env.memory_mb,
        "backend_latency_ms": latency_ms,
        "invocations": len(records),
        "seconds": round(time.monotonic() - started, 1),
        "caller_ms": summary(column("callerLatencyMs")),
        "runtime_ms": summary(column("runtimeDurationMs"), ("p50", "p99")),
        "post_invoke_ms": summary(column("postRuntimeDurationMs"), ("p50", "p99")),
        "billed_ms": {
            **summary(column("billedDurationMs"), ("p50", "p99")),
            "mean": round(sum(column("billedDurationMs")) / max(len(records), 1), 1),
        },
        "produced": produced,
        "delivered": {signal: delivered.get(signal, 0) for signal in SIGNALS},
    }


def run_latency(
    ws: Workspace,
    backend: Backend,
    plan: LatencyPlan,
    workdir: Path,
    *,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    cells: list[dict[str, Any]] = []
    environments: list[dict[str, Any]] = []
    event = {"spans": plan.spans}
    # Largest first: its quick start compiles the layer's modules for the slower sizes.
    for memory in sorted(plan.memory_sizes, reverse=True):
        for mode in plan.modes:
            latencies: list[float | None] = (
                [None] if mode is Mode.FLOOR else list(plan.backend_latencies_ms)
            )
            backend.set_latency(latencies[0] or 0)
            started = time.monotonic()
            with environment(ws, backend, mode, memory, workdir / f"{mode.value}-{memory}",
                             init_timeout=WARM_INIT_TIMEOUT_S) as env:
                warm_up(env, plan.warmup, event)
                for latency in latencies:
                    cell = measure_cell(env, backend, plan, latency, event=event)
                    cells.append(cell)
                    progress(_cell_line(cell))
                environments.append({
                    "mode": mode.value,
                    "memory_mb": memory,
                    "init": [
                        {"status": r.get("status"), "error_type": r.get("errorType"),
                         "init_ms": r.get("initDurationMs")}
                        for r in env.init_records
                    ],
                    "peak_rss_mb": env.peak_rss_mb(),
                    "pss_mb_at_end": env.pss_mb(),
                    # At rest: the last invocation ended, the environment idle (frozen).
                    "rss_mb_at_end": env.rss_mb(),
                    "anon_rss_mb_at_end": env.anon_rss_mb(),
                    "seconds": round(time.monotonic() - started, 1),
                })
    return {"cells": cells, "environments": environments}


def _cell_line(cell: dict[str, Any]) -> str:
    latency = cell["backend_latency_ms"]
    where = "any" if latency is None else f"{latency:g} ms"
    return (
        f"{cell['mode']:>13} {cell['memory_mb']:>5} MB backend {where:>7}: caller p50 "
        f"{cell['caller_ms']['p50']} p99 {cell['caller_ms']['p99']} ms, post-invoke p50 "
        f"{cell['post_invoke_ms']['p50']} ms ({cell['invocations']} invocations, "
        f"{cell['seconds']} s)"
    )
