"""The results as a reader sees them: the targets checked against the figures (printed beside
them, never asserted), the markdown tables of latest.md, and the README's copy of them.

Everything here reads the results document only, so a saved latest.json can be re-rendered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# The targets, in the units of the figures they apply to.
CALLER_P99_OVER_FLOOR_MS = 2.0
POST_INVOKE_OVER_BACKEND_MS = 5.0
INIT_OVERHEAD_MS = 150.0
OUR_RSS_MIB = 60.0
RECEIVER_SPANS_PER_S = 20_000

README_START = "<!-- bench-results:start -->"
README_END = "<!-- bench-results:end -->"


def check_target(target: str, where: str, value: float | None, limit: float, unit: str,
           *, at_least: bool = False) -> dict[str, Any]:
    met = None if value is None else (value >= limit if at_least else value <= limit)
    miss = None
    if met is False and value is not None:
        miss = round(limit - value if at_least else value - limit, 1)
    return {"target": target, "where": where, "value": value, "limit": limit, "unit": unit,
            "met": met, "missed_by": miss}


def _cells(results: dict[str, Any], mode: str) -> Iterable[dict[str, Any]]:
    return (c for c in results.get("latency", {}).get("cells", []) if c["mode"] == mode)


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target at every place it applies."""
    out: list[dict[str, Any]] = []
    floors = {c["memory_mb"]: c for c in _cells(results, "no-telemetry")}
    for cell in _cells(results, "afterflush"):
        memory, latency = cell["memory_mb"], cell["backend_latency_ms"]
        where = f"{memory} MB, backend {latency:g} ms"
        floor = floors.get(memory)
        p99, floor_p99 = cell["caller_ms"]["p99"], floor and floor["caller_ms"]["p99"]
        over = None if p99 is None or floor_p99 is None else round(p99 - floor_p99, 2)
        out.append(check_target("afterflush caller p99 - no-telemetry caller p99", where, over,
                          CALLER_P99_OVER_FLOOR_MS, "ms"))
        post = cell["post_invoke_ms"]["p50"]
        over_backend = None if post is None else round(post - latency, 2)
        out.append(check_target("afterflush post-invoke p50 - backend latency", where, over_backend,
                          POST_INVOKE_OVER_BACKEND_MS, "ms"))
    cold = results.get("cold_start")
    if cold:
        for variant in ("layer", "layer-bytecode-cached"):
            entry = cold["variants"].get(variant, {})
            out.append(check_target(f"Init overhead of the layer ({variant})",
                              f"{cold['memory_mb']} MB, median of {cold['runs']}",
                              entry.get("overhead_ms"), INIT_OVERHEAD_MS, "ms"))
    for env in results.get("latency", {}).get("environments", []):
        if env["mode"] != "afterflush":
            continue
        ours = _ours(env["peak_rss_mb"])
        out.append(check_target("companion + collector peak RSS in part 1",
                          f"{env['memory_mb']} MB", ours, OUR_RSS_MIB, "MiB"))
    throughput = results.get("throughput")
    if throughput:
        for protocol, figures in throughput["receivers"].items():
            out.append(check_target(f"{protocol} receiver spans/s accepted on one core",
                              f"{throughput['spans_per_receiver']} spans in batches of "
                              f"{throughput['batch']}", figures["spans_per_s"],
                              RECEIVER_SPANS_PER_S, "spans/s", at_least=True))
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _delivered(cell: dict[str, Any]) -> str:
    produced = sum(cell["produced"].values())
    delivered = sum(cell["delivered"].values())
    return "-" if produced == 0 and delivered == 0 else f"{delivered:,}/{produced:,}"


def latency_table(results: dict[str, Any]) -> list[str]:
    cells = results.get("latency", {}).get("cells", [])
    floors = {c["memory_mb"]: c for c in cells if c["mode"] == "no-telemetry"}
    rows = []
    memories = sorted({c["memory_mb"] for c in cells})
    latencies = sorted({c["backend_latency_ms"] for c in cells
                        if c["backend_latency_ms"] is not None})
    for memory in memories:
        for latency in latencies:
            group = [floors.get(memory)] + [
                c for c in cells if c["memory_mb"] == memory
                and c["backend_latency_ms"] == latency and c["mode"] != "no-telemetry"
            ]
            for cell in (c for c in group if c is not None):
                rows.append([
                    f"{memory}", f"{latency:g}", cell["mode"], str(cell["invocations"]),
                    _fmt(cell["caller_ms"]["p50"]), _fmt(cell["caller_ms"]["p95"]),
                    _fmt(cell["caller_ms"]["p99"]), _fmt(cell["post_invoke_ms"]["p50"]),
                    _fmt(cell["post_invoke_ms"]["p99"]), _fmt(cell["billed_ms"]["p50"], 0),
                    _delivered(cell),
                ])
    return _table(
        ["MB", "backend ms", "mode", "n", "caller p50", "p95", "p99", "post-invoke p50", "p99",
         "billed p50", "delivered/produced"], rows)


def cold_table(results: dict[str, Any]) -> list[str]:
    cold = results.get("cold_start")
    if not cold:
        return ["(not run)"]
    rows = []
    for variant, entry in cold["variants"].items():
        init = entry["init_ms"]
        companion = entry.get("companion_ms") or {}

        def median(key: str, companion: dict[str, Any] = companion) -> str:
            return _fmt(companion.get(key, {}).get("median"), 0)

        own = (entry.get("collector_ms") or {}).get("ready_ms") or {}
        rows.append([
            variant, _fmt(init["median"], 0), f"{_fmt(init['min'], 0)}-{_fmt(init['max'], 0)}",
            _fmt(init["iqr"], 0), _fmt(entry.get("overhead_ms"), 0),
            median("registered_ms"), median("collector_ready_ms"), median("first_next_ms"),
            _fmt(own.get("median"), 0),
        ])
    return [
        f"Init duration at {cold['memory_mb']} MB, {cold['runs']} cold starts each (ms; "
        "companion columns are medians of its own ready line, from its start, \"collector "
        "ready\" from its spawn of the collector to the collector answering its Status call; "
        "the last column is the collector's own ready line, from its process start):", "",
        *_table(["variant", "median", "min-max", "IQR", "overhead", "registered",
                 "collector ready", "first next", "collector's own ready"], rows),
        *breakdown_table(cold),
    ]


BREAKDOWN_COLUMNS = (
    ("companion_started_ms", "companion started"),
    ("companion_registered_ms", "registered"),
    ("collector_started_ms", "collector started"),
    ("collector_ready_ms", "collector ready"),
    ("runtime_ready_ms", "runtime ready"),
    ("first_next_ms", "companion's first next"),
)


def _runs(row: dict[str, Any]) -> str:
    failed = {k: v for k, v in row.get("statuses", {}).items() if k != "success"}
    if not failed:
        return str(row["runs"])
    return f"{row['runs']} ({', '.join(f'{v} {k}' for k, v in failed.items())})"


def breakdown_table(cold: dict[str, Any]) -> list[str]:
    """Where Init's time goes, per memory size, with and without burst CPU."""
    breakdown = cold.get("breakdown")
    if not breakdown:
        return []
    rows = []
    for row in breakdown["rows"]:
        cpu = "burst (2 vCPU)" if row["init_burst"] else "the size's share"
        rows.append([
            str(row["memory_mb"]), cpu, _runs(row), _fmt(row["init_ms"]["median"], 0),
            *(_fmt(row[key]["median"], 0) for key, _ in BREAKDOWN_COLUMNS),
        ])
    return [
        "", f"Where Init's time goes: the layer as shipped, {breakdown['runs']} cold start(s) "
        "per row, started by an invocation; medians in ms from the moment it was sent (Init "
        "starts within about a millisecond). Init's CPU is Lambda's burst, or the memory "
        "size's share throughout (the emulator's --no-init-burst); Init is limited to "
        f"{breakdown['init_timeout_s']:g} s as on Lambda, and a step is the median of the runs "
        "that reached it. Runtime ready is when the function's module was imported (the "
        "runtime calls next right after); Init ends when the last of it and the companion's "
        "first next arrive:", "",
        *_table(["MB", "Init CPU", "n", "Init", *(label for _, label in BREAKDOWN_COLUMNS)],
                rows),
    ]


def _ours(figures: dict[str, Any]) -> float | None:
    companion, collector = figures.get("companion"), figures.get("collector")
    return None if companion is None or collector is None else round(companion + collector, 1)


def memory_table(results: dict[str, Any]) -> list[str]:
    rows = []
    for env in results.get("latency", {}).get("environments", []):
        rss, pss = env["peak_rss_mb"], env.get("pss_mb_at_end", {})
        inits = env["init"]
        rest = (env.get("rss_mb_at_end") or {}).get("collector")
        anon = (env.get("anon_rss_mb_at_end") or {}).get("collector")
        rows.append([f"part 1, {env['memory_mb']} MB", env["mode"], _fmt(rss.get("companion")),
                     _fmt(rss.get("collector")), _fmt(_ours(rss)), _fmt(_ours(pss)),
                     "-" if rest is None else f"{_fmt(rest)} ({_fmt(anon)})",
                     _fmt(rss.get("runtime")), _fmt(inits[-1]["init_ms"] if inits else None, 0)])
    heavy = results.get("memory_heavy")
    if heavy:
        for mode, entry in heavy["modes"].items():
            rss, pss = entry["peak_rss_mb"], entry.get("pss_mb_at_end", {})
            rows.append([
                f"{heavy['spans_per_invocation']:,} spans x {heavy['invocations']}, "
                f"{heavy['memory_mb']} MB", mode, _fmt(rss.get("companion")),
                _fmt(rss.get("collector")), _fmt(_ours(rss)), _fmt(_ours(pss)), "-",
                _fmt(rss.get("runtime")), "-",
            ])
    if not rows:
        return ["(not run)"]
    return [
        "Peak RSS (VmHWM) per process in MiB; PSS (shared pages split between the processes "
        "that map them) read at the end of the run; the collector's RSS at rest (VmRSS once "
        "part 1's last invocation ended; in brackets its anonymous part, RssAnon: the rest is "
        "its binary's pages); Init of each environment (the first one with the layer also "
        "compiled its bytecode; part 2 measures Init):", "",
        *_table(["run", "mode", "companion", "collector", "ours (RSS)", "ours (PSS)",
                 "collector at rest (anon)", "runtime", "Init ms"], rows),
    ]


def heavy_table(results: dict[str, Any]) -> list[str]:
    heavy = results.get("memory_heavy")
    if not heavy:
        return []
    rows = [[mode, _fmt(e["caller_ms"]["p50"]), _fmt(e["post_invoke_ms"]["p50"]),
             _delivered(e)] for mode, e in heavy["modes"].items()]
    return ["", f"The {heavy['spans_per_invocation']:,}-span invocations themselves (ms):", "",
            *_table(["mode", "caller p50", "post-invoke p50", "delivered/produced"], rows)]


def throughput_table(results: dict[str, Any]) -> list[str]:
    throughput = results.get("throughput")
    if not throughput:
        return ["(not run)"]
    rows = []
    for protocol, entry in throughput["receivers"].items():
        rows.append([f"{protocol} receiver", _fmt(entry["accepted"]), _fmt(entry["spans_per_s"]),
                     _fmt(entry["spans_per_cpu_s"]), _fmt(entry["cpu_s_per_10k_spans"], 3)])
    for drain in throughput["drains"]:
        rows.append([f"drain (after {drain['after']})", _fmt(drain["exported"]),
                     _fmt(drain["spans_per_s"]), "-", _fmt(drain["cpu_s_per_10k_spans"], 3)])
    return [
        f"Collector pinned to CPU {throughput['collector_cpu']}, SDK exporter on CPU "
        f"{throughput['client_cpu']}, batches of {throughput['batch']} spans:", "",
        *_table(["path", "spans", "spans/s (wall)", "spans per CPU s", "CPU s per 10k spans"],
                rows),
    ]


def checks_table(results: dict[str, Any]) -> list[str]:
    """One row per target and memory size: where it was met, and its worst figure (every
    place is in the JSON's checks)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for check in results.get("checks", []):
        size = check["where"].split(",")[0] if " MB" in check["where"] else ""
        groups.setdefault((check["target"], size), []).append(check)
    rows = []
    for (target, _), group in groups.items():
        measured = [c for c in group if c["value"] is not None]
        at_least = "spans/s" in group[0]["unit"]
        unit, sign = group[0]["unit"], ">=" if at_least else "<="
        if not measured:
            rows.append([target, f"{sign} {_fmt(group[0]['limit'])} {unit}", "not measured",
                         "-", "-"])
            continue
        worst = (min if at_least else max)(measured, key=lambda c: c["value"])
        met = sum(1 for c in measured if c["met"])
        verdict = (f"met at all {len(measured)}" if met == len(measured)
                   else f"missed at {len(measured) - met} of {len(measured)}")
        miss = ("" if worst["met"] else f", missed by {_fmt(worst['missed_by'])} {unit}")
        rows.append([target, f"{sign} {_fmt(group[0]['limit'])} {unit}", verdict,
                     f"{_fmt(worst['value'])} {unit}{miss}", worst["where"]])
    if not rows:
        return []
    return _table(["target", "limit", "verdict", "worst", "where (worst)"], rows)


def _change(row: dict[str, Any]) -> str:
    change, before = row.get("change"), row.get("before")
    if change is None:
        return "-"
    digits = 3 if row["unit"] == "s" else (0 if row["unit"] == "spans/s" else 1)
    text = f"{change:+,.{digits}f}"
    if before:
        text += f" ({change / before * 100:+.0f}%)"
    return text


def _verdict(check: dict[str, Any]) -> str:
    if check["met"] is None:
        return "not measured"
    if check["met"]:
        return "met"
    return f"missed by {_fmt(check['missed_by'])} {check['unit']}"


def comparison_table(results: dict[str, Any]) -> list[str]:
    """Before (the Python collector's baseline run) and now, then the Go collector's targets."""
    comparison = results.get("against_python_collector")
    if not comparison:
        return []
    baseline = comparison.get("baseline")
    if baseline:
        intro = (f"Before: bench/results/{baseline['file']} (the Python collector's last "
                 f"{baseline['preset']} run, {baseline['started']}, {baseline['layer']}); now: "
                 "this run. At the memory size(s) of the baseline's cold start "
                 f"({', '.join(str(m) for m in comparison['memory_mb'])} MB); \"-\" where a "
                 "run did not measure the figure:")
    else:
        intro = "Before: no baseline (bench/results/python-collector.json is missing); now:"
    rows = []
    for row in comparison["rows"]:
        digits = 3 if row["unit"] == "s" else (0 if row["unit"] == "spans/s" else 1)
        rows.append([row["figure"], row["where"], row["unit"], _fmt(row["before"], digits),
                     _fmt(row["now"], digits), _change(row)])
    targets = []
    for check in comparison["targets"]:
        value = "-" if check["value"] is None else f"{_fmt(check['value'])} {check['unit']}"
        targets.append([check["target"], check["where"], f"<= {_fmt(check['limit'])} "
                        f"{check['unit']}", value, _verdict(check)])
    return [
        intro, "",
        *_table(["figure", "where", "unit", "before (Python)", "now (Go)", "change"], rows),
        "", "Targets of the Go collector:", "",
        *_table(["target", "where", "limit", "now", "verdict"], targets),
    ]


def machine_lines(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    load_before = ", ".join(f"{x:.2f}" for x in m["load_before"])
    load_after = ", ".join(f"{x:.2f}" for x in m.get("load_after", []))
    return [
        f"Run {results['started']} ({results['preset']}, {results['duration_s']:.0f} s) on "
        f"{m['cpu_model']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}; "
        f"emulator limits: {m.get('limits', '?')}.",
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after}.",
        *(f"- {part}: {r['started']}, {r['seconds']:.0f} s, load "
          f"{', '.join(f'{x:.2f}' for x in r['load_before'])} before, "
          f"{', '.join(f'{x:.2f}' for x in r['load_after'])} after"
          for part, r in results.get("parts_run", {}).items()),
    ]


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The tables without the title: what the README embeds."""
    lines = [*machine_lines(results), "", "### Caller latency (ms)", "",
             *latency_table(results), "", "### Cold start", "", *cold_table(results), "",
             "### Peak RSS", "", *memory_table(results), *heavy_table(results), "",
             "### Throughput", "", *throughput_table(results), ""]
    targets = checks_table(results)
    if targets:
        lines += ["### Targets", "", *targets, ""]
    comparison = comparison_table(results)
    if comparison:
        lines += ["### Against the Python collector", "", *comparison, ""]
    return lines


def markdown(results: dict[str, Any], notes: str = "") -> str:
    lines = [
        "# afterflush benchmark: latest results", "",
        "Caller latency, post-invoke and billed time, cold start, memory and throughput of "
        "the afterflush layer against the synchronous flush (the collector without "
        "flushcontrol, as the ADOT collector runs) and against no telemetry at all, under the "
        "local Lambda emulator, and beside the Python collector's last run (Against the Python "
        "collector). Produced by `make bench`; see bench/README.md for the method.",
        "", *summary_lines(results),
    ]
    if notes.strip():
        lines += ["## Notes", "", notes.strip(), ""]
    return "\n".join(lines)


def update_readme(readme: Path, results: dict[str, Any], chart: str | None) -> bool:
    """Replaces the results section of `readme` (between its markers); False without them."""
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        return False
    body = [README_START, "", *summary_lines(results)]
    if chart:
        body += [f"![caller latency against backend latency]({chart})", ""]
    body += ["Where a target is missed, what the profiles show: the notes of "
             "[results/latest.md](results/latest.md#notes).", ""]
    body.append(README_END)
    readme.write_text(pattern.sub(lambda _: "\n".join(body), text))
    return True
