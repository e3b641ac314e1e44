"""Part 3, memory under a heavy invocation: peak RSS of the companion, the collector and the
runtime while each invocation makes 10,000 spans (the light case is part 1's figure).

The SDK's span queue is raised above the invocation's span count: with its default (2,048) it
would drop most of them before they reach the collector, and the test would be light again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._deploy import SIGNALS, Mode, Workspace
from bench._environment import environment, warm_up
from bench._latency import produced_per_invocation
from bench._procs import Backend
from bench._stats import summary


def run_heavy(
    ws: Workspace,
    backend: Backend,
    *,
    spans: int,
    invocations: int,
    memory_mb: int,
    workdir: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    backend.set_latency(0)
    queue = str(max(spans * 2, 2048))
    result: dict[str, Any] = {"spans_per_invocation": spans, "invocations": invocations,
                              "memory_mb": memory_mb, "backend_latency_ms": 0, "modes": {}}
    for mode in (Mode.SYNC, Mode.AFTERFLUSH):
        started = time.monotonic()
        with environment(ws, backend, mode, memory_mb, workdir / f"heavy-{mode.value}",
                         extra_env={"OTEL_BSP_MAX_QUEUE_SIZE": queue}) as env:
            warm_up(env, 1, {"spans": 20})
            backend.reset()
            records = [env.invoke({"spans": spans}) for _ in range(invocations)]
            delivered = backend.items()
            peak = env.peak_rss_mb()
            pss = env.pss_mb()
        per = produced_per_invocation(mode, spans)
        result["modes"][mode.value] = {
            "peak_rss_mb": peak,
            "pss_mb_at_end": pss,
            "caller_ms": summary([float(r["callerLatencyMs"]) for r in records], ("p50",)),
            "post_invoke_ms": summary(
                [float(r["postRuntimeDurationMs"]) for r in records], ("p50",)
            ),
            "produced": {s: per[s] * invocations for s in SIGNALS},
            "delivered": {s: delivered.get(s, 0) for s in SIGNALS},
            "seconds": round(time.monotonic() - started, 1),
        }
        progress(
            f"{spans} spans per invocation, {mode.value}: companion "
            f"{peak['companion']} MiB, collector {peak['collector']} MiB peak RSS"
        )
    return result
