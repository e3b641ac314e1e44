"""afterflush end to end: a function run by the real awslambdaric with the real OpenTelemetry
SDK and opentelemetry-instrumentation-aws-lambda, the companion and its collector as the layer's
extension under the emulator, and the test backend outside the environment.
"""

from __future__ import annotations

import os
import signal

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


def test_killed_collector_is_restarted_and_later_data_arrives():
    # The SDK gives up quickly on a collector that is not there (the function's own choice).
    with deployment(env={"E2E_EXPORT_TIMEOUT": "0.5"}) as dep:
        assert dep.invoke_when_idle()[0].status == 200
        [first] = wait_until(lambda: collector_pids(dep.endpoint), what="the collector's pid")
        # Given the collector killed (it dies as the environment thaws for the next invocation)
        os.kill(first, signal.SIGKILL)
        # When invocations go on (each giving the restart 300 ms of unfrozen time)
        statuses = []
        for _ in range(20):
            result, _ = dep.invoke_when_idle({"sleep": 0.3})
            statuses.append(result.status)
            if dep.companion_lines("collector ready in"):
                break
        # Then the function kept answering, the death was logged once and the collector restarted
        assert set(statuses) == {200}
        [death] = dep.companion_lines("collector exited (killed by SIGKILL)")
        assert "restarting it (restart 1)" in death
        [restarted] = dep.companion_lines("collector ready in")
        assert "restart 1" in restarted
        assert [pid for pid in collector_pids(dep.endpoint) if pid != first]
        # And data of later invocations arrives
        later = [dep.invoke_when_idle()[0].json()["requestId"] for _ in range(2)]
        dep.emulator.wait_records(dep.invoked)
        for rid in later:
            assert counts_of(dep.items_of(rid)) == ITEMS_PER_INVOCATION


INVALID_CONFIG = """\
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  otlphttp:
    endpoint: {backend}
    compresion: none
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
"""


def test_invalid_collector_config_fails_open_with_one_clear_error_line():
    with deployment(config_text=INVALID_CONFIG.format(port=1, backend="http://127.0.0.1:1"),
                    env={"E2E_EXPORT_TIMEOUT": "0.5"}) as dep:
        # When the function is invoked with a collector config that has a misspelt key
        results = [dep.invoke_when_idle({"count": False})[0] for _ in range(2)]
        # Then it still answers
        assert [r.status for r in results] == [200, 200]
        assert [r.json()["requestId"] for r in results] == [
            rec["requestId"] for rec in dep.emulator.wait_records(2)
        ]
        # And one line says what is wrong, with the key path and the file line
        errors = dep.companion_lines("ERROR")
        assert len(errors) == 1
        assert "collector config rejected" in errors[0]
        assert f"exporters::otlphttp::compresion ({dep.config_path}:9): unknown key" in errors[0]
        assert "the function keeps serving" in errors[0]
        # And the collector is not started again and again
        assert dep.companion_lines("restart") == []


def test_invalid_collector_config_with_strict_init_fails_init_with_an_extension_error():
    with deployment(config_text=INVALID_CONFIG.format(port=1, backend="http://127.0.0.1:1"),
                    env={"AFTERFLUSH_STRICT_INIT": "true"}) as dep:
        result, _ = dep.invoke_when_idle({"count": False})
        # Then init failed because of the extension, and the caller got that error
        assert result.json() == {
            "errorType": "Extension.InitError",
            "errorMessage": "extension afterflush failed to initialize: Extension.ConfigInvalid",
        }
        [init] = dep.emulator.records("init")
        assert (init["status"], init["errorType"]) == ("failure", "Extension.InitError")
        [line] = dep.companion_lines("failing init")
        assert f"exporters::otlphttp::compresion ({dep.config_path}:9): unknown key" in line


def test_with_a_hanging_backend_every_invocation_completes_within_a_2s_timeout():
    # Given a backend that never answers and a 2 s function timeout
    with deployment(timeout=2.0) as dep:
        dep.backend.request("POST", "/_control", {"fault": {"hang": True}})
        results = [dep.invoke_when_idle()[0] for _ in range(3)]
        records = dep.emulator.wait_records(3)
        # Then every invocation succeeded: the drains ended before the function's deadline
        assert [r.status for r in results] == [200, 200, 200]
        assert [r["status"] for r in records] == ["success"] * 3
        # And the stuck backend is one warning line, not one per invocation
        [warning] = dep.companion_lines("drain (invoke) incomplete")
        assert "still buffered 5 spans, 1 points, 1 log records" in warning


def test_what_cannot_be_sent_by_shutdown_is_written_to_stdout_and_counted():
    with deployment(env={"AFTERFLUSH_DRAIN_TIMEOUT": "300ms"}) as dep:
        dep.backend.request("POST", "/_control", {"fault": {"hang": True}})
        rid = dep.invoke_when_idle()[0].json()["requestId"]
        dep.emulator.wait_records(1)
        # When the environment shuts down with the backend still hanging
        assert dep.emulator.stop() == 0
        # Then what remained was spilled as OTLP JSON lines and counted
        [summary] = dep.companion_lines("shutdown (spindown)")
        assert "spilled to stdout 5 spans, 1 points, 1 log records" in summary
        spilled = [line for line in dep.emulator.output.lines() if rid in line and "resourceSpans" in line]
        assert len(spilled) == 1
        assert not [line for line in dep.emulator.output.lines() if "killed extension" in line]
