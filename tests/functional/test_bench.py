"""The benchmark harness on a tiny size (`python -m bench --smoke`): it runs every part against the
built layer, writes latest.json in the documented shape with exact item counts, writes
latest.md without a chart, and leaves no process behind. Times are never asserted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
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
    for variant in ("layer", "layer-bytecode-cached"):
        assert set(cold["variants"][variant]["companion_ms"]) == {
            "registered_ms", "collector_ready_ms", "first_next_ms"}
    for variant in ("layer", "layer-bytecode-cached", "layer-sdk-only"):
        entry = cold["variants"][variant]
        assert len(entry["samples_ms"]) == 1
        assert entry["overhead_ms"] == round(
            entry["init_ms"]["median"] - cold["variants"]["no-layer"]["init_ms"]["median"], 1
        )


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
