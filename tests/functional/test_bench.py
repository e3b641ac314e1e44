"""The benchmark harness on a tiny size (`python -m bench --smoke`): it runs every part against the
built layer, writes latest.json in the documented shape with exact item counts, writes
latest.md without a chart, and leaves no process behind. Times are never asserted: where a
figure is a time or a size, only that it is a number is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.fixtures.layer import REPO, build_zips, host_arch

SMOKE_TIMEOUT_S = 90
# In a fresh clone the layer zip (its wheels downloaded once into the cache) may first be
# built for this module; the harness itself takes well under SMOKE_TIMEOUT_S.
pytestmark = pytest.mark.timeout(600)
SIGNALS = ("traces", "metrics", "logs")
MODES = ("no-telemetry", "synchronous", "afterflush")
# The smoke preset: 2 measured invocations of 20 spans (plus the invocation span), 3 metric
# points and 3 log records each; one 200-span heavy invocation; 1,024 spans per receiver.
PER_INVOCATION = {"traces": 21, "metrics": 3, "logs": 3}
INVOCATIONS = 2
HEAVY = {"traces": 201, "metrics": 3, "logs": 3}
THROUGHPUT_SPANS = 1024
SPREAD = {"median", "min", "max", "iqr", "stdev"}
ROLES = {"companion", "collector", "runtime"}
TIMELINE = {"companion_started_ms", "companion_registered_ms", "collector_started_ms",
            "collector_ready_ms", "runtime_ready_ms", "first_next_ms"}
BASELINE = REPO / "bench" / "results" / "python-collector.json"
ZIP_KEYS = {"name", "arch", "tested", "files", "zipped_bytes", "unzipped_bytes",
            "collector_bytes", "collector_zipped_bytes"}
CHECK_KEYS = {"target", "where", "value", "limit", "unit", "met", "missed_by"}


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def assert_spread(spread: dict[str, Any]) -> None:
    """A median/min/max/IQR/stdev summary of at least one sample: numbers only."""
    assert set(spread) == SPREAD
    assert all(is_number(v) for v in spread.values()), spread


def run_bench(*args: str) -> tuple[int, str, str]:
    """`python -m bench ARGS`: exit code, stdout, stderr; interrupted (and so stopped) when it
    takes too long."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=SMOKE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGINT lets the harness stop what it started before it goes.
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        pytest.fail(f"the bench run took over {SMOKE_TIMEOUT_S} s:\n{stderr.decode()[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def layer_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zips(tmp_path_factory.mktemp("zip"), [host_arch()])[host_arch()]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, layer_zip: Path) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("results")
    code, stdout, text = run_bench("--smoke", "--layer", str(layer_zip), "--out", str(out))
    assert code == 0, text[-3000:]
    workdir = re.search(r"environments from \S+ in (\S+)", text)
    assert workdir is not None, text[-2000:]
    return {"out": out, "stdout": stdout, "stderr": text, "workdir": workdir.group(1),
            "results": json.loads((out / "latest.json").read_text())}


def test_smoke_run_describes_the_machine_and_the_settings(smoke_run: dict[str, Any]) -> None:
    results = smoke_run["results"]
    assert results["schema"] == 1
    assert results["preset"] == "smoke"
    machine = results["machine"]
    assert isinstance(machine["cpu_model"], str) and machine["cpu_model"]
    assert machine["cores"] == os.cpu_count()
    assert len(machine["load_before"]) == 3 and len(machine["load_after"]) == 3
    assert results["settings"]["memory_sizes_mb"] == [1769]
    assert results["settings"]["backend_latencies_ms"] == [0]
    assert results["settings"]["parts"] == ["latency", "coldstart", "memory", "throughput"]
    assert results["settings"]["breakdown_runs"] == 1
    assert results["settings"]["breakdown_memory_mb"] == [1769]
    assert list(results["parts_run"]) == ["latency", "coldstart", "memory", "throughput"]
    for part in results["parts_run"].values():
        assert len(part["load_before"]) == 3 and len(part["load_after"]) == 3


def test_latency_cells_count_every_item_the_function_produced(smoke_run: dict[str, Any]) -> None:
    cells = smoke_run["results"]["latency"]["cells"]
    assert [(c["mode"], c["memory_mb"], c["backend_latency_ms"]) for c in cells] == [
        ("no-telemetry", 1769, None), ("synchronous", 1769, 0), ("afterflush", 1769, 0),
    ]
    for cell in cells:
        assert cell["invocations"] == INVOCATIONS
        assert set(cell["caller_ms"]) == {"p50", "p95", "p99", "max"}
        assert set(cell["post_invoke_ms"]) == {"p50", "p99", "max"}
        assert set(cell["billed_ms"]) == {"p50", "p99", "max", "mean"}
        assert all(isinstance(v, float) for v in cell["caller_ms"].values())
    floor, sync, afterflush = cells
    assert floor["produced"] == floor["delivered"] == dict.fromkeys(SIGNALS, 0)
    expected = {s: n * INVOCATIONS for s, n in PER_INVOCATION.items()}
    # Delivered before each environment could freeze, in both telemetry modes.
    assert sync["produced"] == sync["delivered"] == expected
    assert afterflush["produced"] == afterflush["delivered"] == expected


def test_peak_rss_is_read_for_each_of_our_processes(smoke_run: dict[str, Any]) -> None:
    environments = {e["mode"]: e for e in smoke_run["results"]["latency"]["environments"]}
    assert set(environments) == set(MODES)
    floor = environments["no-telemetry"]["peak_rss_mb"]
    assert floor["companion"] is None and floor["collector"] is None
    assert floor["runtime"] > 0
    for mode in ("synchronous", "afterflush"):
        rss = environments[mode]["peak_rss_mb"]
        assert rss["companion"] > 0 and rss["collector"] > 0 and rss["runtime"] > 0
        pss = environments[mode]["pss_mb_at_end"]
        assert pss["companion"] > 0 and pss["collector"] > 0
        assert environments[mode]["init"][-1]["status"] == "success"
        # At rest, once the last invocation ended: RSS, and its anonymous part.
        rest, anon = environments[mode]["rss_mb_at_end"], environments[mode]["anon_rss_mb_at_end"]
        assert set(rest) == set(anon) == ROLES
        for role in ROLES:
            assert is_number(rest[role]) and is_number(anon[role])
            assert 0 < anon[role] <= rest[role]
    for key in ("rss_mb_at_end", "anon_rss_mb_at_end"):
        floor = environments["no-telemetry"][key]
        assert floor["companion"] is None and floor["collector"] is None
        assert is_number(floor["runtime"])


def test_cold_starts_with_and_without_the_layer_and_the_companion_breakdown(
    smoke_run: dict[str, Any],
) -> None:
    cold = smoke_run["results"]["cold_start"]
    assert cold["runs"] == 1 and cold["memory_mb"] == 1769
    assert set(cold["variants"]) == {"no-layer", "layer", "layer-bytecode-cached",
                                     "layer-sdk-only"}
    # Only a layer with its extension has a companion to report its start-up.
    assert "companion_ms" not in cold["variants"]["no-layer"]
    assert "companion_ms" not in cold["variants"]["layer-sdk-only"]
    # Nor to have the collector's own ready line.
    assert "collector_ms" not in cold["variants"]["no-layer"]
    assert "collector_ms" not in cold["variants"]["layer-sdk-only"]
    for variant in ("layer", "layer-bytecode-cached"):
        assert set(cold["variants"][variant]["companion_ms"]) == {
            "registered_ms", "collector_ready_ms", "first_next_ms"}
        for spread in cold["variants"][variant]["companion_ms"].values():
            assert_spread(spread)
        assert set(cold["variants"][variant]["collector_ms"]) == {"ready_ms"}
        assert_spread(cold["variants"][variant]["collector_ms"]["ready_ms"])
    for variant in ("layer", "layer-bytecode-cached", "layer-sdk-only"):
        entry = cold["variants"][variant]
        assert len(entry["samples_ms"]) == 1
        assert entry["overhead_ms"] == round(
            entry["init_ms"]["median"] - cold["variants"]["no-layer"]["init_ms"]["median"], 1
        )


def test_the_init_breakdown_has_a_row_per_size_with_and_without_burst_cpu(
    smoke_run: dict[str, Any],
) -> None:
    breakdown = smoke_run["results"]["cold_start"]["breakdown"]
    assert set(breakdown) == {"runs", "memory_sizes_mb", "init_timeout_s", "rows"}
    assert breakdown["runs"] == 1 and breakdown["memory_sizes_mb"] == [1769]
    assert is_number(breakdown["init_timeout_s"])
    rows = breakdown["rows"]
    assert [(r["memory_mb"], r["init_burst"]) for r in rows] == [(1769, True), (1769, False)]
    for row in rows:
        assert set(row) == {"memory_mb", "init_burst", "runs", "succeeded", "statuses",
                            "init_ms", *TIMELINE}
        assert row["runs"] == 1
        # Init succeeded (the smoke's other cold starts depend on that too), so every step of
        # it was found: the companion's and the collector's JSON records, the function's time.
        assert row["statuses"] == {"success": 1} and row["succeeded"] == 1
        assert_spread(row["init_ms"])
        for key in TIMELINE:
            assert_spread(row[key])


def test_the_layer_zips_are_measured(smoke_run: dict[str, Any], layer_zip: Path) -> None:
    zips = smoke_run["results"]["layer_zips"]
    assert zips and zips[0]["tested"] is True
    assert [z["tested"] for z in zips[1:]] == [False] * (len(zips) - 1)
    for entry in zips:
        assert set(entry) == ZIP_KEYS
        assert entry["arch"] in ("x86_64", "arm64")
        for key in ZIP_KEYS - {"name", "arch", "tested"}:
            assert isinstance(entry[key], int) and entry[key] > 0, (key, entry)
        # Sizes that follow from the zip's own contents, not from timing.
        assert entry["unzipped_bytes"] > entry["collector_bytes"]
        assert entry["zipped_bytes"] > entry["collector_zipped_bytes"]
    tested = zips[0]
    assert tested["name"] == layer_zip.name and tested["arch"] == host_arch()
    assert tested["zipped_bytes"] == layer_zip.stat().st_size
    with zipfile.ZipFile(layer_zip) as archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        assert tested["files"] == len(infos)
        assert tested["unzipped_bytes"] == sum(i.file_size for i in infos)
        assert tested["collector_bytes"] == archive.getinfo(
            "afterflush/bin/afterflush-collector").file_size


def test_the_comparison_with_the_python_collector(smoke_run: dict[str, Any]) -> None:
    results = smoke_run["results"]
    comparison = results["against_python_collector"]
    baseline = json.loads(BASELINE.read_text())
    assert set(comparison) == {"baseline", "memory_mb", "rows", "targets"}
    assert comparison["baseline"] == {"file": "python-collector.json",
                                      "started": baseline["started"],
                                      "preset": baseline["preset"], "layer": baseline["layer"]}
    assert comparison["memory_mb"] == [baseline["cold_start"]["memory_mb"]] == [1769]
    rows = comparison["rows"]
    for row in rows:
        assert set(row) == {"figure", "where", "unit", "before", "now", "change"}
        assert all(isinstance(row[k], str) and row[k] for k in ("figure", "where", "unit"))
        for key in ("before", "now", "change"):
            assert row[key] is None or is_number(row[key]), row
        if row["before"] is not None and row["now"] is not None:
            assert row["change"] == round(row["now"] - row["before"], 3)
        else:
            assert row["change"] is None
    figures = [row["figure"] for row in rows]
    by_figure = {row["figure"]: row for row in rows}
    assert figures[:12] == [
        "collector ready after its start, its own log line (layer as shipped)",
        "collector ready after its start, as the companion saw it (spawn to Status answered; "
        "layer as shipped)",
        "companion's first next after its start (layer as shipped)",
        "Init overhead of the layer against no layer (as shipped)",
        "Init overhead of the layer against no layer (bytecode cached)",
        "companion peak RSS", "collector peak RSS",
        "companion PSS at the end", "collector PSS at the end",
        "companion RSS at rest", "collector RSS at rest",
        "collector anonymous RSS at rest (RssAnon: less its binary's pages)",
    ]
    assert figures[-6:] == [
        "grpc receiver, spans/s accepted", "grpc receiver, collector CPU s per 10,000 spans",
        "http receiver, spans/s accepted", "http receiver, collector CPU s per 10,000 spans",
        "drain after the grpc push, spans/s to the backend",
        "drain after the http push, spans/s to the backend",
    ]
    zip_rows = figures[12:-6]
    assert zip_rows[0].startswith("collector binary, unzipped")
    assert zip_rows[1:] == ["layer zip, zipped", "layer zip, unzipped (sum of its entries' sizes)"
                            ] * len(results["layer_zips"])
    # Before is the baseline's figure where it has one; now is this run's, all measured here.
    old = baseline["cold_start"]["variants"]
    assert by_figure["Init overhead of the layer against no layer (as shipped)"]["before"] == (
        old["layer"]["overhead_ms"])
    assert by_figure["collector ready after its start, its own log line (layer as shipped)"][
        "before"] is None
    assert by_figure["collector RSS at rest"]["before"] is None
    assert by_figure[zip_rows[0]]["before"] is None
    assert all(by_figure[f]["now"] is not None for f in figures)
    assert by_figure["grpc receiver, spans/s accepted"]["now"] == (
        results["throughput"]["receivers"]["grpc"]["spans_per_s"])

    targets = comparison["targets"]
    assert [c["target"] for c in targets] == [
        "collector ready after its start (its own log line) at 1769 MB",
        "collector RSS at rest",
        *["layer zip, zipped", "layer zip, unzipped"] * len(results["layer_zips"]),
    ]
    for check in targets:
        assert set(check) == CHECK_KEYS
        assert is_number(check["value"]) and is_number(check["limit"])
        assert isinstance(check["met"], bool)
        assert check["met"] is (check["missed_by"] is None)


def test_heavy_invocations_deliver_every_span(smoke_run: dict[str, Any]) -> None:
    heavy = smoke_run["results"]["memory_heavy"]
    assert heavy["spans_per_invocation"] == 200 and heavy["invocations"] == 1
    assert set(heavy["modes"]) == {"synchronous", "afterflush"}
    for entry in heavy["modes"].values():
        assert entry["produced"] == entry["delivered"] == HEAVY
        assert entry["peak_rss_mb"]["collector"] > 0


def test_throughput_counts_what_each_receiver_accepted_and_each_drain_exported(
    smoke_run: dict[str, Any],
) -> None:
    throughput = smoke_run["results"]["throughput"]
    assert throughput["spans_per_receiver"] == THROUGHPUT_SPANS
    for protocol in ("grpc", "http"):
        receiver = throughput["receivers"][protocol]
        assert receiver["accepted"] == THROUGHPUT_SPANS
        assert receiver["failed_exports"] == 0
        assert receiver["spans_per_s"] > 0
    assert [(d["after"], d["exported"], d["complete"]) for d in throughput["drains"]] == [
        ("grpc", THROUGHPUT_SPANS, True), ("http", THROUGHPUT_SPANS, True),
    ]
    # The binary's own ready line was found in its zap JSON output.
    assert is_number(throughput["collector_ready_ms"])


def test_every_target_is_checked_where_it_applies(smoke_run: dict[str, Any]) -> None:
    checks = smoke_run["results"]["checks"]
    assert [c["target"] for c in checks] == [
        "afterflush caller p99 - no-telemetry caller p99",
        "afterflush post-invoke p50 - backend latency",
        "Init overhead of the layer (layer)",
        "Init overhead of the layer (layer-bytecode-cached)",
        "companion + collector peak RSS in part 1",
        "grpc receiver spans/s accepted on one core",
        "http receiver spans/s accepted on one core",
    ]
    for check in checks:
        assert check["met"] is (check["missed_by"] is None)


def test_markdown_is_written_and_printed_without_a_chart(smoke_run: dict[str, Any]) -> None:
    out: Path = smoke_run["out"]
    text = (out / "latest.md").read_text()
    assert text.startswith("# afterflush benchmark: latest results")
    assert "| 1769 | 0 | afterflush | 2 |" in text
    assert "\n### Against the Python collector\n" in text
    assert "Targets of the Go collector:" in text
    assert "Where Init's time goes:" in text
    assert "| 1769 | burst (2 vCPU) | 1 |" in text and "| 1769 | the size's share | 1 |" in text
    assert smoke_run["stdout"].strip() == text.strip()
    assert not (out / "latency.png").exists()


def test_nothing_the_run_started_is_left_running(smoke_run: dict[str, Any]) -> None:
    workdir = smoke_run["workdir"]
    left = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(workdir in part for part in proc.info.get("cmdline") or []):
            left.append(proc.info["cmdline"])
    assert left == []
    assert not Path(workdir).exists()


def test_render_writes_the_same_markdown_from_the_saved_json(
    smoke_run: dict[str, Any], tmp_path: Path
) -> None:
    code, stdout, stderr = run_bench("--render", str(smoke_run["out"] / "latest.json"),
                                     "--out", str(tmp_path))
    assert code == 0, stderr
    assert (tmp_path / "latest.md").read_text() == (smoke_run["out"] / "latest.md").read_text()
    assert stdout == smoke_run["stdout"]
    assert json.loads((tmp_path / "latest.json").read_text()) == smoke_run["results"]


def test_merge_replaces_only_the_parts_run_again(
    smoke_run: dict[str, Any], layer_zip: Path, tmp_path: Path
) -> None:
    code, _, stderr = run_bench("--smoke", "--parts", "throughput", "--layer", str(layer_zip),
                                "--merge", str(smoke_run["out"] / "latest.json"),
                                "--out", str(tmp_path))
    assert code == 0, stderr[-3000:]
    before, after = smoke_run["results"], json.loads((tmp_path / "latest.json").read_text())
    assert after["parts_run"]["throughput"]["started"] >= before["parts_run"]["throughput"]["started"]
    assert after["throughput"]["receivers"]["grpc"]["accepted"] == THROUGHPUT_SPANS
    for key in ("started", "machine", "settings", "latency", "cold_start", "memory_heavy"):
        assert after[key] == before[key]
    assert {k: v for k, v in after["parts_run"].items() if k != "throughput"} == {
        k: v for k, v in before["parts_run"].items() if k != "throughput"}


def test_a_bad_option_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    code, stdout, stderr = run_bench("--smoke", "--memory", "64", "--out", str(tmp_path))
    assert code == 1
    assert stderr == "bench: error: --memory: Lambda's sizes are 128 to 10240 MB\n"
    assert stdout == ""
    assert list(tmp_path.iterdir()) == []
