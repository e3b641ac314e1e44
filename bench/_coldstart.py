"""Part 2, cold start: the emulator's Init duration of a fresh environment (initialised at once,
--init-now) without a layer and with the afterflush layer, and the companion's own breakdown
from its ready line.

The layer ships no bytecode and Lambda's /opt is read-only, so every real cold start compiles
the layer's modules: the "as shipped" runs remove what earlier runs compiled. The "bytecode
cached" runs keep it, to show what shipping compiled modules would save; the "SDK only" runs
are the layer without its extension (the function side alone), to tell the two sides apart.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._deploy import Mode, Workspace
from bench._environment import environment
from bench._errors import BenchError
from bench._procs import Backend
from bench._stats import spread

VARIANTS = ("no-layer", "layer", "layer-bytecode-cached", "layer-sdk-only")


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
        breakdown = env.companion_ready() if opt is None and mode is not Mode.FLOOR else None
    if init.get("status") != "success":
        raise BenchError(f"{variant} cold start at {memory_mb} MB: Init ended with "
                         f"{init.get('status')} {init.get('errorType') or ''}")
    return {"init_ms": float(init["initDurationMs"]), "companion": breakdown}


def run_cold_starts(
    ws: Workspace,
    backend: Backend,
    *,
    runs: int,
    memory_mb: int,
    workdir: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
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
        result["variants"][variant] = entry
    floor = result["variants"]["no-layer"]["init_ms"]["median"]
    for variant in VARIANTS[1:]:
        median = result["variants"][variant]["init_ms"]["median"]
        result["variants"][variant]["overhead_ms"] = (
            None if floor is None or median is None else round(median - floor, 1)
        )
    return result
