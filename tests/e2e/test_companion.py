"""afterflush end to end: a function run by the real awslambdaric with the real OpenTelemetry
SDK and opentelemetry-instrumentation-aws-lambda, the companion and its collector as the layer's
extension under the emulator, and the test backend outside the environment.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.fixtures.companion import (
    ITEMS_PER_INVOCATION,
    collector_pids,
    deployment,
)
from tests.fixtures.emulator import wait_until

SIGNALS = ("traces", "metrics", "logs")
SLOW_BACKEND = ("--latency-ms", "300")


def expected(invocations: int) -> dict[str, int]:
    return {s: ITEMS_PER_INVOCATION[s] * invocations for s in SIGNALS}


def counts_of(items: dict[str, list]) -> dict[str, int]:
    return {s: len(items[s]) for s in SIGNALS}


@pytest.mark.parametrize(
    ("protocol", "exporter"), [("http/protobuf", "otlphttp"), ("grpc", "otlp")], ids=["http", "grpc"]
)
def test_response_comes_first_and_each_invocation_is_delivered_before_the_next(protocol, exporter):
    # Given a function exporting to the collector over `protocol` and a backend that answers
    # every export after 300 ms
    with deployment(protocol=protocol, exporter=exporter, backend_args=SLOW_BACKEND) as dep:
        responses = []
        for _ in range(3):
            # When it is invoked (each time on an idle environment)
            result, responded_at = dep.invoke_when_idle()
            assert result.status == 200, result.body
            responses.append((result.json(), responded_at))
        records = dep.emulator.wait_records(3)
        for index, ((body, responded_at), record) in enumerate(zip(responses, records, strict=True)):
            rid = body["requestId"]
            # Then at its start the backend held everything of the invocations before it
            assert body["backendAtStart"] == expected(index)
            # And all its data arrived, once, after its caller had the response
            mine = dep.items_of(rid)
            assert counts_of(mine) == ITEMS_PER_INVOCATION
            first_receipt = min(item["received"] for s in SIGNALS for item in mine[s])
            assert responded_at <= first_receipt
            # And the backend's 300 ms were spent after the response, before the freeze
            assert record["requestId"] == rid and record["status"] == "success"
            assert record["postRuntimeDurationMs"] >= 300
        assert all(dep.stats()[s]["duplicates"] == 0 for s in SIGNALS)
        # And healthy invocations cost no log line of ours beyond the ready line
        assert [line.split("] ", 1)[1].split(" ")[:2] for line in dep.companion_lines("")] == [
            ["INFO", "ready"]
        ]


def test_without_telemetry_api_events_nothing_is_lost():
    # Given a platform whose Telemetry API answers 202 "not supported", as RIE does
    with deployment(without_telemetry=True) as dep:
        bodies = [dep.invoke_when_idle()[0].json() for _ in range(3)]
        [switch] = dep.companion_lines("Telemetry API not supported")
        assert "draining at the start of each INVOKE and at SHUTDOWN" in switch
        # Then invocation 1's data was delivered by the time invocation 3 started (drained at
        # the start of invocation 2)
        assert all(
            bodies[2]["backendAtStart"][s] >= ITEMS_PER_INVOCATION[s] for s in SIGNALS
        )
        # When the environment shuts down
        assert dep.emulator.stop() == 0
        # Then everything arrived, once, the last invocation's data at SHUTDOWN
        for body in bodies:
            assert counts_of(dep.items_of(body["requestId"])) == ITEMS_PER_INVOCATION
        assert {s: dep.stats()[s]["unique"] for s in SIGNALS} == expected(3)
        assert all(dep.stats()[s]["duplicates"] == 0 for s in SIGNALS)
        assert not [line for line in dep.emulator.output.lines() if "killed extension" in line]


def test_shutdown_delivers_what_remains_and_the_companion_exits_before_sigkill():
    # Given a backend that hangs, so that post-invoke drains (300 ms) cannot finish
    with deployment(env={"AFTERFLUSH_DRAIN_TIMEOUT": "300ms"}) as dep:
        dep.backend.request("POST", "/_control", {"fault": {"hang": True}})
        bodies = [dep.invoke_when_idle()[0].json() for _ in range(2)]
        dep.emulator.wait_records(2)
        [incomplete] = dep.companion_lines("drain (invoke) incomplete")
        assert "still buffered 5 spans, 1 points, 1 log records" in incomplete
        assert dep.stats()["traces"]["items"] == 0
        # When the backend answers again and the environment shuts down
        dep.backend.request("POST", "/_control", {"clear": True})
        assert dep.emulator.stop() == 0
        # Then SHUTDOWN delivered everything, and the companion exited on its own in time
        for body in bodies:
            assert counts_of(dep.items_of(body["requestId"])) == ITEMS_PER_INVOCATION
        [summary] = dep.companion_lines("shutdown (spindown)")
        assert "exported 10 spans, 2 points, 2 log records" in summary
        assert "collector stopped (status 0)" in summary
        assert not [line for line in dep.emulator.output.lines() if "killed extension" in line]
