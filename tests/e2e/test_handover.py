"""The hand-over end to end, with the built layer unpacked as /opt, the real awslambdaric and
the real SDK: the function's telemetry leaves after its response has been posted, the drain
starts on the function side's mark (not on runtimeDone), each invocation's data is at the
backend before the next one starts, and nothing is lost when the handler raises, logs after
returning, or runs into its timeout.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from companion._control import ControlClient
from tests.fixtures.layer import (
    REPO,
    LambdaRuntime,
    build_zips,
    host_arch,
    lambda_runtime,
    layer_deployment,
    unpack,
)

FUNCTION = REPO / "tests" / "layer_assets" / "handover_function"
PROTOCOLS = pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"], ids=["http", "grpc"])
DEBUG = {"AFTERFLUSH_LOG_LEVEL": "debug"}
# The companion's debug line for each drain that waited for a hand-over.
DRAIN_LINE = re.compile(r"drain \(invoke\) in \d+ ms after a \d+ ms wait for the hand-over "
                        r"\((\w+)\): exported (\d+) spans, (\d+) points, (\d+) log records")
ITEMS = 2
PRODUCED = {"traces": ITEMS + 2, "metrics": 1, "logs": 1}


@pytest.fixture(scope="module")
def opt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    arch = host_arch()
    zips = build_zips(tmp_path_factory.mktemp("zip"), [arch])
    return unpack(zips[arch], tmp_path_factory.mktemp("opt"))


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> LambdaRuntime:
    return lambda_runtime(tmp_path_factory.mktemp("runtime"))


def collector_status(endpoint: str) -> Any:
    async def call() -> Any:
        client = ControlClient(endpoint)
        try:
            return await client.status(timeout=5.0)
        finally:
            await client.aclose()

    return asyncio.run(call())


def drains(dep: Any) -> list[tuple[str, ...]]:
    """(source of the hand-over mark, spans, points, log records) of every invoke drain."""
    return [m.groups() for line in dep.lines("drain (invoke)") if (m := DRAIN_LINE.search(line))]


def late_records(dep: Any) -> list[str]:
    return sorted(r["name"] for r in dep.items("logs") if r["name"].startswith("late record"))


@PROTOCOLS
def test_the_response_is_posted_before_the_collector_has_any_of_the_invocation(
    opt, runtime, monkeypatch, protocol
):
    # Given the function's SDK exporting through a gate that holds every byte back
    with layer_deployment(opt, runtime, monkeypatch=monkeypatch, function=FUNCTION,
                          protocol=protocol, env=DEBUG, gate=True) as dep:
        # When the function is invoked
        result, _ = dep.invoke_when_idle({"items": ITEMS})
        # Then the caller has the response while the collector has accepted nothing of it
        assert result.status == 200, result.body
        body = result.json()
        status = collector_status(dep.control_endpoint)
        accepted = (status.accepted_traces, status.accepted_metrics, status.accepted_logs)
        assert accepted == (0, 0, 0)
        # And once the gate opens the invocation ends with everything delivered, drained on
        # the function side's mark
        dep.gate.open()
        [record] = dep.emulator.wait_records(1)
        assert record["status"] == "success"
        mine = dep.invocation_items(body["requestId"])
        assert {s: len(mine[s]) for s in mine} == {"traces": 4, "logs": 1}
        assert drains(dep) == [("function", "4", "1", "1")]
        assert dep.emulator.stop() == 0


@PROTOCOLS
def test_each_invocation_is_at_the_backend_before_the_next_one_starts(
    opt, runtime, monkeypatch, protocol
):
    # Given a backend that answers each export after 50 ms
    with layer_deployment(opt, runtime, monkeypatch=monkeypatch, function=FUNCTION,
                          protocol=protocol, env=DEBUG,
                          backend_args=("--latency-ms", "50")) as dep:
        # When three callers arrive one right after the other's response
        bodies = []
        for _ in range(3):
            result = dep.emulator.invoke({"items": ITEMS}, timeout=30.0)
            assert result.status == 200, result.body
            bodies.append(result.json())
        records = dep.emulator.wait_records(3)
        assert [r["status"] for r in records] == ["success"] * 3
        # Then each invocation's data reached the backend before the next invocation started
        for body, following in zip(bodies, bodies[1:], strict=False):
            mine = dep.invocation_items(body["requestId"])
            assert {s: len(mine[s]) for s in mine} == {"traces": 4, "logs": 1}
            last = max(item["received"] for s in mine for item in mine[s])
            assert last <= following["startedAt"]
        # And every drain started on the function side's mark, with all of its invocation
        assert drains(dep) == [("function", "4", "1", "1")] * 3
        stats = dep.stats()
        assert {s: (stats[s]["unique"], stats[s]["duplicates"]) for s in stats} == {
            "traces": (12, 0), "metrics": (3, 0), "logs": (3, 0),
        }
        assert dep.emulator.stop() == 0


@PROTOCOLS
def test_a_raising_handler_and_a_record_logged_after_return_are_delivered(
    opt, runtime, monkeypatch, protocol
):
    with layer_deployment(opt, runtime, monkeypatch=monkeypatch, function=FUNCTION,
                          protocol=protocol, env=DEBUG) as dep:
        # Given an invocation that raises and leaves a thread that logs after it returned
        failed, _ = dep.invoke_when_idle({"items": ITEMS, "raise": True, "late_log": True})
        assert failed.json()["errorType"] == "RuntimeError"
        # And a next invocation
        ok, _ = dep.invoke_when_idle({"items": ITEMS})
        records = dep.emulator.wait_records(2)
        assert [r["status"] for r in records] == ["error", "success"]
        # Then the raising invocation's spans (its own span among them) and record were delivered
        mine = dep.invocation_items(records[0]["requestId"])
        assert {s: len(mine[s]) for s in mine} == {"traces": 4, "logs": 1}
        # And the record logged after it returned went with it or with the next invocation
        assert late_records(dep) == [f"late record {records[0]['requestId']}"]
        theirs = dep.invocation_items(ok.json()["requestId"])
        assert {s: len(theirs[s]) for s in theirs} == {"traces": 4, "logs": 1}
        # And both drains started on the function side's mark
        assert [d[0] for d in drains(dep)] == ["function", "function"]
        assert dep.emulator.stop() == 0


def test_an_invocation_that_times_out_keeps_what_it_had_ended(opt, runtime, monkeypatch):
    # Given a one-second timeout and an invocation that runs past it after producing its data
    with layer_deployment(opt, runtime, monkeypatch=monkeypatch, function=FUNCTION,
                          env=DEBUG, emulator_args=("--timeout", "1")) as dep:
        result, _ = dep.invoke_when_idle({"items": ITEMS, "sleep_s": 5})
        assert result.json()["errorType"] == "Sandbox.Timedout"
        [record] = dep.emulator.wait_records(1)
        assert record["status"] == "timeout"
        # When the environment ends
        assert dep.emulator.stop() == 0
        # Then everything the invocation had ended before the deadline reached the backend:
        # its spans (not the invocation's own, which never ended), its point and its record
        names = sorted(s["name"] for s in dep.items("traces"))
        assert names == ["handle-order"] + ["process-item"] * ITEMS
        stats = dep.stats()
        assert {s: stats[s]["unique"] for s in stats} == {"traces": 3, "metrics": 1, "logs": 1}
        assert dep.lines(f"[afterflush] WARNING invocation {record['requestId']} is about to "
                         "time out: flushing what it has ended so far")
