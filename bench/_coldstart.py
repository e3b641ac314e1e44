"""Part 2, cold start: the emulator's Init duration of a fresh environment (initialised at once,
--init-now) without a layer and with the afterflush layer, the companion's own breakdown from its
ready line and the collector's from its own; then where Init's time goes at each memory size,
with Lambda's burst CPU and without it (the emulator's --no-init-burst).

The layer ships no bytecode for its Python side (the companion, the SDK) and Lambda's /opt is
read-only, so every real cold start compiles those modules: the "as shipped" runs remove what
earlier runs compiled. The "bytecode cached" runs keep it, to show what shipping compiled
modules would save; the "SDK only" runs are the layer without its extension (the function side
alone), to tell the two sides apart. The collector is a static Go binary: nothing to compile.

The breakdown's environments are initialised by their first invocation (as on Lambda), with
AWS_LAMBDA_LOG_FORMAT=JSON so that the companion's and the collector's log records carry
timestamps; each step is timed from the moment that invocation was sent.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench._deploy import Mode, Workspace
from bench._environment import FUNCTION_TIMEOUT_S, TIMELINE, environment
from bench._errors import BenchError
from bench._procs import Backend
from bench._stats import spread

VARIANTS = ("no-layer", "layer", "layer-bytecode-cached", "layer-sdk-only")
# The first invocation of a breakdown environment: it starts Init; the smallest work.
BREAKDOWN_EVENT = {"spans": 1, "work": 1}
# Lambda's Init limit, kept: a run past it is counted, not measured.
BREAKDOWN_INIT_TIMEOUT_S = 10.0


def forget_bytecode(directory: Path) -> int:
    """Removes every __pycache__ under `directory`; how many there were."""
    caches = [p for p in directory.rglob("__pycache__") if p.is_dir()]
    for cache in caches:
        shutil.rmtree(cache, ignore_errors=True)
    return len(caches)


def one_cold_start(
    ws: Workspace, backend: Backend, variant: str, memory_mb: int, workdir: Path
) -> dict[str, Any]:
    mode = Mode.FLOOR if variant == "no-layer" else Mode.AFTERFLUSH
    opt = ws.sdk_only_layer if variant == "layer-sdk-only" else None
    with environment(ws, backend, mode, memory_mb, workdir, opt=opt, init_now=True) as env:
        init = env.wait_init()
        extension = opt is None and mode is not Mode.FLOOR
        breakdown = env.companion_ready() if extension else None
        collector = env.collector_ready_ms() if extension else None
    if init.get("status") != "success":
        raise BenchError(f"{variant} cold start at {memory_mb} MB: Init ended with "
                         f"{init.get('status')} {init.get('errorType') or ''}")
    return {"init_ms": float(init["initDurationMs"]), "companion": breakdown,
            "collector_ready_ms": collector}


def run_cold_starts(
    ws: Workspace,
    backend: Backend,
    *,
    runs: int,
    memory_mb: int,
    workdir: Path,
    progress: Callable[[str], None],
    breakdown_runs: int = 0,
    breakdown_sizes: Sequence[int] = (),
) -> dict[str, Any]:
    """The four variants at `memory_mb`, `runs` each; then, with `breakdown_runs`, where
    Init's time goes at each of `breakdown_sizes` (the "breakdown" key)."""
    backend.set_latency(0)
    samples: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    # Interleaved, so that a slow spell of the machine does not land on one variant only.
    for index in range(runs):
        for variant in VARIANTS:
            if variant == "layer":
                forget_bytecode(ws.layer)
            samples[variant].append(
                one_cold_start(ws, backend, variant, memory_mb, workdir / f"{variant}-{index}")
            )
        progress(
            f"cold start {index + 1}/{runs} at {memory_mb} MB: "
            + ", ".join(f"{v} {samples[v][-1]['init_ms']:.0f} ms" for v in VARIANTS)
        )
    result: dict[str, Any] = {"memory_mb": memory_mb, "runs": runs, "variants": {}}
    for variant, runs_of in samples.items():
        entry: dict[str, Any] = {
            "init_ms": spread([s["init_ms"] for s in runs_of]),
            "samples_ms": [round(s["init_ms"], 1) for s in runs_of],
        }
        breakdowns = [s["companion"] for s in runs_of if s["companion"]]
        if breakdowns:
            entry["companion_ms"] = {
                key: spread([b[key] for b in breakdowns])
                for key in ("registered_ms", "collector_ready_ms", "first_next_ms")
            }
        own = [s["collector_ready_ms"] for s in runs_of if s["collector_ready_ms"] is not None]
        if own:
            entry["collector_ms"] = {"ready_ms": spread(own)}
        result["variants"][variant] = entry
    floor = result["variants"]["no-layer"]["init_ms"]["median"]
    for variant in VARIANTS[1:]:
        median = result["variants"][variant]["init_ms"]["median"]
        result["variants"][variant]["overhead_ms"] = (
            None if floor is None or median is None else round(median - floor, 1)
        )
    if breakdown_runs > 0 and breakdown_sizes:
        result["breakdown"] = run_breakdown(
            ws, backend, runs=breakdown_runs, memory_sizes=breakdown_sizes,
            workdir=workdir / "breakdown", progress=progress,
        )
    return result


def one_timed_cold_start(
    ws: Workspace, backend: Backend, memory_mb: int, init_burst: bool, workdir: Path
) -> dict[str, Any]:
    """One cold start of the layer as shipped, started by an invocation: Init's record and
    when each step happened (ms from the invocation being sent)."""
    forget_bytecode(ws.layer)
    with environment(ws, backend, Mode.AFTERFLUSH, memory_mb, workdir,
                     extra_env={"AWS_LAMBDA_LOG_FORMAT": "JSON"},
                     init_timeout=BREAKDOWN_INIT_TIMEOUT_S, init_burst=init_burst) as env:
        sent_at = time.time()
        result, _ = env.emulator.invoke(dict(BREAKDOWN_EVENT), timeout=FUNCTION_TIMEOUT_S * 2)
        init = env.wait_init()
        imported_at = None
        if result.status == 200:
            try:
                imported_at = float(result.json()["importedAt"])
            except (ValueError, KeyError, TypeError):
                imported_at = None
        timeline = env.init_timeline(sent_at, imported_at)
    return {"status": str(init.get("status")), "init_ms": init.get("initDurationMs"),
            **timeline}


def run_breakdown(
    ws: Workspace,
    backend: Backend,
    *,
    runs: int,
    memory_sizes: Sequence[int],
    workdir: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Where Init's time goes: `runs` cold starts of the layer as shipped at each size, with
    and without burst CPU, interleaved. Init's duration is over the runs whose Init succeeded;
    each step over every run that reached it (an Init past its limit still shows how far it
    got)."""
    backend.set_latency(0)
    keys = [(memory, burst) for memory in memory_sizes for burst in (True, False)]
    samples: dict[tuple[int, bool], list[dict[str, Any]]] = {key: [] for key in keys}
    for index in range(runs):
        for memory, burst in keys:
            name = f"timed-{memory}-{'burst' if burst else 'no-burst'}-{index}"
            sample = one_timed_cold_start(ws, backend, memory, burst, workdir / name)
            samples[(memory, burst)].append(sample)
            progress(
                f"Init breakdown {index + 1}/{runs} at {memory} MB "
                f"({'burst' if burst else 'no burst'}): {sample['status']}, Init "
                f"{sample['init_ms']} ms, collector ready {sample['collector_ready_ms']} ms, "
                f"runtime ready {sample['runtime_ready_ms']} ms, first next "
                f"{sample['first_next_ms']} ms"
            )
    rows = []
    for (memory, burst), runs_of in samples.items():
        ok = [s for s in runs_of if s["status"] == "success"]
        row: dict[str, Any] = {
            "memory_mb": memory,
            "init_burst": burst,
            "runs": len(runs_of),
            "succeeded": len(ok),
            "statuses": {st: sum(1 for s in runs_of if s["status"] == st)
                         for st in sorted({s["status"] for s in runs_of})},
            "init_ms": spread([float(s["init_ms"]) for s in ok if s["init_ms"] is not None]),
        }
        for key in TIMELINE:
            row[key] = spread([float(s[key]) for s in runs_of if s[key] is not None])
        rows.append(row)
    return {"runs": runs, "memory_sizes_mb": list(memory_sizes),
            "init_timeout_s": BREAKDOWN_INIT_TIMEOUT_S, "rows": rows}
