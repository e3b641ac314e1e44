"""The comparison with the Python collector: its last full run (bench/results/python-collector.json,
the baseline) beside this run, figure by figure, at the memory size(s) of the baseline's cold
start; and the targets of the move to the Go collector, met or missed and by how much.

Like the report, it reads results documents only: a saved latest.json gives the same comparison
again (--render) as long as the baseline file is the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench._report import check_target

BASELINE = Path(__file__).resolve().parent / "results" / "python-collector.json"
MIB = 2**20
# The targets of the Go collector.
COLLECTOR_READY_MS = 60.0
COLLECTOR_READY_AT_MB = 1769
COLLECTOR_RSS_AT_REST_MIB = 30.0
ZIP_ZIPPED_MIB = 50.0
ZIP_UNZIPPED_MIB = 200.0


def load_baseline(path: Path = BASELINE) -> dict[str, Any] | None:
    """The baseline's results, None when the file is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _get(doc: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _variant(results: dict[str, Any], memory: int, variant: str) -> dict[str, Any] | None:
    cold = results.get("cold_start")
    if not isinstance(cold, dict) or cold.get("memory_mb") != memory:
        return None
    found = _get(cold, "variants", variant)
    return found if isinstance(found, dict) else None


def _environment(results: dict[str, Any], memory: int) -> dict[str, Any] | None:
    for env in _get(results, "latency", "environments") or []:
        if env.get("mode") == "afterflush" and env.get("memory_mb") == memory:
            return dict(env)
    return None


def _mib(value: Any) -> float | None:
    number = _number(value)
    return None if number is None else round(number / MIB, 2)


def _zip_for(results: dict[str, Any], arch: str | None) -> dict[str, Any] | None:
    """The results' zip of `arch`: the tested one when it is of that architecture."""
    zips = [z for z in results.get("layer_zips") or [] if z.get("arch") == arch]
    zips.sort(key=lambda z: not z.get("tested"))
    return zips[0] if zips else None


def _zip_where(entry: dict[str, Any]) -> str:
    return (f"{entry.get('name')} ({entry.get('arch')}, "
            f"{'tested' if entry.get('tested') else 'dist/'})")


def _row(figure: str, where: str, unit: str, before: float | None,
         now: float | None) -> dict[str, Any]:
    change = None if before is None or now is None else round(now - before, 3)
    return {"figure": figure, "where": where, "unit": unit, "before": before, "now": now,
            "change": change}


def _cold_rows(baseline: dict[str, Any], results: dict[str, Any], memory: int,
               runs: str) -> list[dict[str, Any]]:
    def both(variant: str, *keys: str) -> tuple[float | None, float | None]:
        return (_number(_get(_variant(baseline, memory, variant), *keys)),
                _number(_get(_variant(results, memory, variant), *keys)))

    where = f"{memory} MB, {runs}"
    rows = [
        _row("collector ready after its start, its own log line (layer as shipped)", where,
             "ms", *both("layer", "collector_ms", "ready_ms", "median")),
        _row("collector ready after its start, as the companion saw it (spawn to Status "
             "answered; layer as shipped)", where, "ms",
             *both("layer", "companion_ms", "collector_ready_ms", "median")),
        _row("companion's first next after its start (layer as shipped)", where, "ms",
             *both("layer", "companion_ms", "first_next_ms", "median")),
    ]
    for variant, label in (("layer", "as shipped"), ("layer-bytecode-cached", "bytecode cached")):
        rows.append(_row(f"Init overhead of the layer against no layer ({label})", where, "ms",
                         *both(variant, "overhead_ms")))
    return rows


def _memory_rows(baseline: dict[str, Any], results: dict[str, Any],
                 memory: int) -> list[dict[str, Any]]:
    before, now = _environment(baseline, memory), _environment(results, memory)
    where = f"{memory} MB, part 1 (afterflush)"
    rows = []
    for label, key in (("peak RSS", "peak_rss_mb"), ("PSS at the end", "pss_mb_at_end"),
                       ("RSS at rest", "rss_mb_at_end")):
        for role in ("companion", "collector"):
            rows.append(_row(f"{role} {label}", where, "MiB",
                             _number(_get(before, key, role)), _number(_get(now, key, role))))
    rows.append(_row("collector anonymous RSS at rest (RssAnon: less its binary's pages)", where,
                     "MiB", _number(_get(before, "anon_rss_mb_at_end", "collector")),
                     _number(_get(now, "anon_rss_mb_at_end", "collector"))))
    return rows


def _zip_rows(baseline: dict[str, Any], results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for entry in results.get("layer_zips") or []:
        old = _zip_for(baseline, entry.get("arch"))
        where = _zip_where(entry)
        if entry.get("tested"):
            rows.append(_row("collector binary, unzipped (the Python collector's package, if "
                             "the baseline has it)", where, "MiB",
                             _mib(_get(old, "collector_bytes")),
                             _mib(entry.get("collector_bytes"))))
        rows.append(_row("layer zip, zipped", where, "MiB", _mib(_get(old, "zipped_bytes")),
                         _mib(entry.get("zipped_bytes"))))
        rows.append(_row("layer zip, unzipped (sum of its entries' sizes)", where, "MiB",
                         _mib(_get(old, "unzipped_bytes")), _mib(entry.get("unzipped_bytes"))))
    return rows


def _throughput_rows(baseline: dict[str, Any], results: dict[str, Any]) -> list[dict[str, Any]]:
    def receiver(doc: dict[str, Any], protocol: str, key: str) -> float | None:
        return _number(_get(doc, "throughput", "receivers", protocol, key))

    def drain(doc: dict[str, Any], after: str) -> float | None:
        for entry in _get(doc, "throughput", "drains") or []:
            if entry.get("after") == after:
                return _number(entry.get("spans_per_s"))
        return None

    def spans(doc: dict[str, Any]) -> str:
        count = _get(doc, "throughput", "spans_per_receiver")
        return f"{count:,}" if isinstance(count, int) else "-"

    where = f"{spans(baseline)} -> {spans(results)} spans per receiver, collector on one core"
    rows = []
    for protocol in ("grpc", "http"):
        rows.append(_row(f"{protocol} receiver, spans/s accepted", where, "spans/s",
                         receiver(baseline, protocol, "spans_per_s"),
                         receiver(results, protocol, "spans_per_s")))
        rows.append(_row(f"{protocol} receiver, collector CPU s per 10,000 spans", where, "s",
                         receiver(baseline, protocol, "cpu_s_per_10k_spans"),
                         receiver(results, protocol, "cpu_s_per_10k_spans")))
    for after in ("grpc", "http"):
        rows.append(_row(f"drain after the {after} push, spans/s to the backend", where,
                         "spans/s", drain(baseline, after), drain(results, after)))
    return rows


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    layer = _variant(results, COLLECTOR_READY_AT_MB, "layer")
    runs = _get(results, "cold_start", "runs")
    out.append(check_target(
        f"collector ready after its start (its own log line) at {COLLECTOR_READY_AT_MB} MB",
        f"{COLLECTOR_READY_AT_MB} MB, median of {runs} cold starts (layer as shipped)",
        _number(_get(layer, "collector_ms", "ready_ms", "median")), COLLECTOR_READY_MS, "ms"))
    environments = [e for e in _get(results, "latency", "environments") or []
                    if e.get("mode") == "afterflush"]
    for env in environments:
        out.append(check_target(
            "collector RSS at rest", f"{env['memory_mb']} MB, part 1 (afterflush), after its "
            "last invocation", _number(_get(env, "rss_mb_at_end", "collector")),
            COLLECTOR_RSS_AT_REST_MIB, "MiB"))
    if not environments:
        out.append(check_target("collector RSS at rest", "part 1 not run", None,
                                COLLECTOR_RSS_AT_REST_MIB, "MiB"))
    for entry in results.get("layer_zips") or [{}]:
        where = _zip_where(entry) if entry else "no zip measured"
        out.append(check_target("layer zip, zipped", where, _mib(entry.get("zipped_bytes")),
                                ZIP_ZIPPED_MIB, "MiB"))
        out.append(check_target("layer zip, unzipped", where, _mib(entry.get("unzipped_bytes")),
                                ZIP_UNZIPPED_MIB, "MiB"))
    return out


def _sizes(baseline: dict[str, Any]) -> list[int]:
    """The memory size(s) of the baseline's cold start (1769 MB without one)."""
    memory = _get(baseline, "cold_start", "memory_mb")
    if isinstance(memory, int):
        return [memory]
    if isinstance(memory, list):
        return [m for m in memory if isinstance(m, int)] or [COLLECTOR_READY_AT_MB]
    return [COLLECTOR_READY_AT_MB]


def against_python_collector(results: dict[str, Any],
                             baseline: dict[str, Any] | None) -> dict[str, Any]:
    """Rows of before (the baseline) and now (these results), and the Go collector's targets
    checked against these results."""
    old = baseline or {}
    runs = _get(results, "cold_start", "runs")
    before_runs = _get(old, "cold_start", "runs")
    cold_runs = f"median of {before_runs or '-'} -> {runs or '-'} cold starts"
    rows: list[dict[str, Any]] = []
    sizes = _sizes(old)
    for memory in sizes:
        rows += _cold_rows(old, results, memory, cold_runs)
    for memory in sizes:
        rows += _memory_rows(old, results, memory)
    rows += _zip_rows(old, results)
    rows += _throughput_rows(old, results)
    described = None
    if baseline is not None:
        described = {"file": BASELINE.name, "started": baseline.get("started"),
                     "preset": baseline.get("preset"), "layer": baseline.get("layer")}
    return {"baseline": described, "memory_mb": sizes, "rows": rows,
            "targets": _targets(results)}
