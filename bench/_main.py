"""`python -m bench [--quick|--smoke] [options]`: builds the environments, runs the parts, and
writes latest.json, latest.md (also printed), latency.png and the README's results section.

Progress goes to stderr; every process started is stopped, also on an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench._errors import BenchError

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
NOTES_FILE = BENCH_DIR / "notes.md"
README = BENCH_DIR / "README.md"
PARTS = ("latency", "coldstart", "memory", "throughput")
SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Preset:
    name: str
    memory_sizes: tuple[int, ...] = (128, 512, 1769)
    backend_latencies_ms: tuple[float, ...] = (0, 50, 200, 1000)
    invocations: int = 100
    warmup: int = 5
    # A cell past this many seconds stops early, never under min_invocations.
    cell_budget_s: float = 40.0
    min_invocations: int = 30
    cold_starts: int = 10
    cold_memory_mb: int = 1769
    # Where Init's time goes: cold starts per size, with and without burst CPU (fewer than
    # cold_starts: the one at 128 MB without burst runs into Lambda's 10 s Init limit).
    breakdown_runs: int = 5
    breakdown_memory_mb: tuple[int, ...] = (128, 512, 1769)
    heavy_spans: int = 10_000
    heavy_invocations: int = 3
    heavy_memory_mb: int = 1769
    throughput_spans: int = 51_200
    chart: bool = True


PRESETS = {
    "full": Preset(name="full"),
    "quick": Preset(
        name="quick", memory_sizes=(128, 1769), invocations=30, warmup=2, cell_budget_s=5.0,
        min_invocations=10, cold_starts=3, breakdown_runs=1, heavy_invocations=1,
        throughput_spans=10_240,
    ),
    # The smoke test's: every part runs, on a tiny size, without a chart.
    "smoke": Preset(
        name="smoke", memory_sizes=(1769,), backend_latencies_ms=(0,), invocations=2,
        warmup=1, cell_budget_s=5.0, min_invocations=2, cold_starts=1, breakdown_runs=1,
        breakdown_memory_mb=(1769,), heavy_spans=200, heavy_invocations=1,
        throughput_spans=1_024, chart=False,
    ),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="preset",
                      help="30 invocations per cell, 128 and 1769 MB, 3 cold starts (~3 min)")
    size.add_argument("--smoke", action="store_const", const="smoke", dest="preset",
                      help="a couple of invocations at 1769 MB and 0 ms (checks the harness)")
    parser.add_argument("--layer", type=Path,
                        help="the layer zip (default: dist/afterflush-python-<arch>.zip)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="where latest.json, latest.md and latency.png go")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run (default: {','.join(PARTS)})")
    parser.add_argument("--memory", help="memory sizes in MB, e.g. 128,1769")
    parser.add_argument("--latency", help="backend latencies in ms, e.g. 0,200")
    parser.add_argument("--invocations", type=int, help="measured invocations per cell")
    parser.add_argument("--no-chart", action="store_true", help="do not draw latency.png")
    parser.add_argument("--keep", action="store_true",
                        help="keep the working directory (logs of every process)")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="run nothing: write the outputs again from a saved latest.json")
    parser.add_argument("--merge", type=Path, metavar="JSON",
                        help="run --parts and put them into a saved latest.json's results")
    parser.set_defaults(preset="full")
    return parser.parse_args(argv)


def _numbers(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise BenchError(f"{what}: {text!r} is not a comma-separated list of numbers") from None
    if not values or any(v < 0 for v in values):
        raise BenchError(f"{what}: {text!r} needs at least one number, none negative")
    return values


def build_preset(args: argparse.Namespace) -> Preset:
    preset = PRESETS[args.preset]
    if args.memory:
        sizes = tuple(int(v) for v in _numbers(args.memory, "--memory"))
        if any(not 128 <= s <= 10240 for s in sizes):
            raise BenchError("--memory: Lambda's sizes are 128 to 10240 MB")
        preset = replace(preset, memory_sizes=sizes)
    if args.latency:
        preset = replace(preset, backend_latencies_ms=_numbers(args.latency, "--latency"))
    if args.invocations is not None:
        if args.invocations < 1:
            raise BenchError("--invocations: must be at least 1")
        preset = replace(preset, invocations=args.invocations,
                         min_invocations=min(preset.min_invocations, args.invocations))
    if args.no_chart:
        preset = replace(preset, chart=False)
    return preset


def parse_parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise BenchError(f"--parts: choose from {', '.join(PARTS)}")
    return parts


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "arch": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


SECTIONS = {"latency": "latency", "coldstart": "cold_start", "memory": "memory_heavy",
            "throughput": "throughput"}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench._coldstart import run_cold_starts
    from bench._deploy import Workspace, default_layer_zip
    from bench._latency import LatencyPlan, run_latency
    from bench._layerzip import measure_zips
    from bench._memory import run_heavy
    from bench._procs import Backend
    from bench._throughput import run_throughput

    preset = build_preset(args)
    parts = parse_parts(args.parts)
    layer_zip = args.layer or default_layer_zip()
    started = time.monotonic()
    results: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "started": _now(),
        "preset": preset.name,
        "layer": layer_zip.name,
        "machine": machine(),
        # The zip under test and dist/'s for each architecture: sizes in bytes.
        "layer_zips": measure_zips(layer_zip) if layer_zip.is_file() else [],
        "settings": {
            "memory_sizes_mb": list(preset.memory_sizes),
            "backend_latencies_ms": list(preset.backend_latencies_ms),
            "invocations": preset.invocations, "min_invocations": preset.min_invocations,
            "cell_budget_s": preset.cell_budget_s, "warmup": preset.warmup,
            "spans_per_invocation": 20, "cold_starts": preset.cold_starts,
            "cold_memory_mb": preset.cold_memory_mb,
            "breakdown_runs": preset.breakdown_runs,
            "breakdown_memory_mb": list(preset.breakdown_memory_mb),
            "heavy_spans": preset.heavy_spans,
            "heavy_invocations": preset.heavy_invocations,
            "throughput_spans": preset.throughput_spans, "parts": parts,
        },
        # When each part ran and how busy the machine was meanwhile.
        "parts_run": {},
    }
    # Short: the control sockets inside must stay under ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="afb-", dir="/tmp"))
    try:
        progress(f"preparing the environments from {layer_zip.name} in {root}")
        ws = Workspace.build(root, layer_zip)
        with Backend(root) as backend:
            steps: dict[str, Any] = {
                "latency": lambda: run_latency(ws, backend, LatencyPlan(
                    memory_sizes=preset.memory_sizes,
                    backend_latencies_ms=preset.backend_latencies_ms,
                    invocations=preset.invocations, warmup=preset.warmup,
                    cell_budget_s=preset.cell_budget_s, min_invocations=preset.min_invocations,
                ), root / "latency", progress=progress),
                "coldstart": lambda: run_cold_starts(
                    ws, backend, runs=preset.cold_starts, memory_mb=preset.cold_memory_mb,
                    workdir=root / "cold", progress=progress,
                    breakdown_runs=preset.breakdown_runs,
                    breakdown_sizes=preset.breakdown_memory_mb,
                ),
                "memory": lambda: run_heavy(
                    ws, backend, spans=preset.heavy_spans,
                    invocations=preset.heavy_invocations, memory_mb=preset.heavy_memory_mb,
                    workdir=root / "heavy", progress=progress,
                ),
                "throughput": lambda: run_throughput(
                    ws, backend, spans=preset.throughput_spans, workdir=root / "throughput",
                    progress=progress,
                ),
            }
            for part in PARTS:
                if part not in parts:
                    continue
                record: dict[str, Any] = {"started": _now(), "load_before": _load()}
                part_started = time.monotonic()
                results[SECTIONS[part]] = steps[part]()
                record.update(seconds=round(time.monotonic() - part_started, 1),
                              load_after=_load())
                results["parts_run"][part] = record
        limits = _limits_line(root)
        if limits:
            results["machine"]["limits"] = limits
    finally:
        if args.keep:
            progress(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    results["machine"]["load_after"] = _load()
    results["duration_s"] = round(time.monotonic() - started, 1)
    return results


def merge(base: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """`base` with the parts `fresh` ran taken from `fresh` (a part re-run on a quieter
    machine); the rest, and the run's own description, stay `base`'s."""
    if base.get("preset") != fresh["preset"]:
        raise BenchError(f"--merge: the file is a {base.get('preset')} run, this one is "
                         f"{fresh['preset']}; use the same preset")
    merged = dict(base)
    merged.setdefault("layer_zips", fresh.get("layer_zips", []))
    merged["parts_run"] = {**base.get("parts_run", {}), **fresh["parts_run"]}
    for part in fresh["parts_run"]:
        merged[SECTIONS[part]] = fresh[SECTIONS[part]]
    return merged


def _limits_line(root: Path) -> str | None:
    """What the emulator said about freezing and limits (from any environment's log)."""
    for log in root.rglob("emulator.log"):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("emulator: listening"):
                words = [w for w in line.split() if w.split("=")[0] in ("freeze", "limits")]
                return " ".join(words)
    return None


def write_outputs(results: dict[str, Any], out: Path, *, chart: bool) -> str:
    from bench._compare import against_python_collector, load_baseline
    from bench._report import checks, markdown, update_readme

    results["checks"] = checks(results)
    results["against_python_collector"] = against_python_collector(results, load_baseline())
    out.mkdir(parents=True, exist_ok=True)
    chart_path = out / "latency.png"
    if chart and "latency" in results:
        from bench._chart import write_chart

        write_chart(results, chart_path)
    notes = NOTES_FILE.read_text() if NOTES_FILE.exists() else ""
    text = markdown(results, notes)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latest.md").write_text(text)
    if out.resolve() == RESULTS_DIR.resolve() and results["preset"] == "full":
        update_readme(README, results, "results/latency.png" if chart else None)
    return text


def load_results(path: Path) -> dict[str, Any]:
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from exc
    if not isinstance(results, dict) or results.get("schema") != SCHEMA_VERSION:
        raise BenchError(f"{path} is not a results file of schema {SCHEMA_VERSION}")
    return results


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # As Ctrl-C: unwinds through every `with`, so whatever was started is stopped.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        preset = build_preset(args)
        if args.render is not None:
            results = load_results(args.render)
            preset = PRESETS.get(results.get("preset", ""), preset)
            chart = preset.chart and not args.no_chart
        else:
            base = load_results(args.merge) if args.merge is not None else None
            results = run(args)
            if base is not None:
                results = merge(base, results)
            chart = preset.chart
        text = write_outputs(results, args.out, chart=chart and "latency" in results)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    print(text)
    return 0
