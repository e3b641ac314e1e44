"""Scenario 6: SHUTDOWN with 5,000 spans buffered and a slow backend. Within Lambda's 2 s
budget each span is delivered, or written to standard output as OTLP JSON and counted; the
companion exits on its own, before the SIGKILL at the deadline.

Each backend behaviour is run once (a module-scoped fixture) and looked at by several tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest

from backend import FaultSpec
from tests.fixtures.ledger import Ledger, chaos_deployment

BATCH = {"spans": 1000, "points": 5, "logs": 5}
# The most one CloudWatch Logs event holds (1 MB since 2025, 256 KB before); the emulator,
# like Lambda, passes longer lines on in pieces.
LOG_EVENT_BYTES = 1024 * 1024
@dataclass
class ShutdownRun:
    scenario: str
    ledger: Ledger
    output: list[str]
    companion: list[str]
    collector_drains: list[str]
    records: list[dict]


def _run(backend_at_shutdown: str, attr_bytes: int, batches: int, guarantees) -> ShutdownRun:
    with chaos_deployment(request_mib=1, env={"AFTERFLUSH_DRAIN_TIMEOUT": "100ms"}) as dep:
        # Given thousands of spans held by the collector (the backend hung while they were
        # made, so every drain left them buffered)
        dep.backend.set_faults(FaultSpec(hang=True))
        results = [dep.invoke({**BATCH, "attr_bytes": attr_bytes}) for _ in range(batches)]
        assert [r.status for r in results] == [200] * batches
        records = dep.wait_records()
        assert dep.backend.stats()["traces"].items == 0
        # When the environment shuts down with the backend slow or stalled
        if backend_at_shutdown != "stalled":
            dep.backend.clear_faults()
            dep.backend.set_latency(300 if backend_at_shutdown == "slow" else 400)
        assert dep.stop() == 0
        scenario = f"6. SHUTDOWN, {batches * 1000} spans, backend {backend_at_shutdown}"
        ledger = dep.ledger()
        guarantees(scenario, ledger, records)
        return ShutdownRun(scenario, ledger, dep.emulator.output.lines(), dep.companion_lines(),
                           dep.collector_lines("drain (shutdown)"), records)


@pytest.fixture(scope="module")
def slow(request):
    return _run("slow", 0, 5, request.getfixturevalue("guarantees"))


@pytest.fixture(scope="module")
def stalled(request):
    return _run("stalled", 0, 5, request.getfixturevalue("guarantees"))


@pytest.fixture(scope="module")
def slower_than_budget(request):
    # 5.5 MB in 1 MiB requests, each answered after 400 ms: some go, the rest is spilled.
    return _run("slower than the budget", 1000, 5, request.getfixturevalue("guarantees"))


def _exited_in_time(run: ShutdownRun) -> None:
    assert not [line for line in run.output if "killed extension" in line]
    [summary] = [line for line in run.companion if "shutdown (spindown)" in line]
    assert "collector stopped (status 0)" in summary


def test_shutdown_with_a_slow_backend_delivers_5000_spans_and_exits_in_time(slow):
    # Then the companion exited by itself before the deadline, its collector stopped
    _exited_in_time(slow)
    # And every span arrived, once, within the budget; nothing was spilled
    slow.ledger.assert_nothing_unexplained()
    for name, signal in slow.ledger.signals.items():
        assert signal.delivered == signal.acknowledged == signal.produced, name
        assert (signal.duplicates, signal.spilled, signal.buffered) == (0, 0, 0), name
    [summary] = [line for line in slow.companion if "shutdown (spindown)" in line]
    assert "exported 5005 spans, 25 points, 25 log records" in summary


def test_shutdown_with_a_stalled_backend_spills_every_span_as_whole_otlp_json_lines(stalled):
    # Then the companion exited by itself before the deadline, its collector stopped
    _exited_in_time(stalled)
    # And every spilled line is a whole OTLP JSON document within one log event
    spilled = [line for line in stalled.output if line.startswith('{"resource')]
    assert spilled
    assert all(len(line.encode()) <= LOG_EVENT_BYTES and json.loads(line) for line in spilled)
    # And each span is in them or, what the deadline left no time to write, counted as
    # dropped with its reason: nothing unexplained
    stalled.ledger.assert_nothing_unexplained()
    for name, signal in stalled.ledger.signals.items():
        assert signal.delivered == 0, name
        assert signal.spilled + sum(signal.dropped.values()) == signal.acknowledged, name
        assert set(signal.dropped) <= {"shutdown_deadline"}, name
    # And the companion's shutdown line counts what stdout holds
    [summary] = [line for line in stalled.companion if "shutdown (spindown)" in line]
    assert _logged_spilled(summary) == {
        name: signal.spilled for name, signal in stalled.ledger.signals.items()
    }


def test_shutdown_past_the_budget_delivers_some_spills_the_rest_and_exits_in_time(
    slower_than_budget,
):
    _exited_in_time(slower_than_budget)
    [drain] = slower_than_budget.collector_drains
    exported, spilled, dropped = _drain_counts(drain)
    # Some requests went within the budget, the rest was spilled or, past the deadline,
    # dropped and counted: together, every span
    assert 0 < exported < 5005 and exported + spilled + dropped == 5005
    # And the ledger finds each of them at the backend, in the spilled lines or among the
    # counted drops (the request the deadline cut may have reached the backend too: a counted
    # duplicate)
    slower_than_budget.ledger.assert_nothing_unexplained()
    traces = slower_than_budget.ledger.signals["traces"]
    assert traces.delivered > 0 and traces.spilled > 0
    assert traces.delivered + traces.spilled - traces.produced <= traces.duplicates


@pytest.mark.chaos
def test_shutdown_with_20000_spans_and_a_slow_backend_delivers_all_and_exits_in_time(guarantees):
    run = _run("slow", 0, 20, guarantees)
    _exited_in_time(run)
    run.ledger.assert_nothing_unexplained()
    traces = run.ledger.signals["traces"]
    assert traces.delivered + traces.spilled + sum(traces.dropped.values()) >= traces.produced
    assert traces.produced == 20020


def _drain_counts(line: str) -> tuple[int, int, int]:
    """Spans exported, spilled and dropped in the collector's line of one drain."""

    def spans(pattern: str) -> int:
        found = re.search(pattern, line)
        return int(found.group(1)) if found else 0

    return (spans(r"exported (\d+) spans"), spans(r"spilled (\d+) spans"),
            spans(r"dropped (\d+) spans"))


def _logged_spilled(summary: str) -> dict[str, int]:
    found = re.search(r"spilled to stdout (\d+) spans, (\d+) points, (\d+) log records", summary)
    if found is None:
        return {"traces": 0, "metrics": 0, "logs": 0}
    return dict(zip(("traces", "metrics", "logs"), map(int, found.groups()), strict=True))
