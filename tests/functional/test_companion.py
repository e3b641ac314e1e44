"""The companion against a fake Lambda (Extensions + Telemetry API) and a fake collector process:
registration, readiness, drains after runtimeDone, the fallback, SHUTDOWN, supervision, fail-open.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fixtures.companion import FakeLambda, RunningCompanion, start_companion, wait_until


@pytest.fixture
async def fake_lambda() -> AsyncIterator[FakeLambda]:
    fake = FakeLambda()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.aclose()


@pytest.fixture
async def companions() -> AsyncIterator[list[RunningCompanion]]:
    """Every companion a test starts is stopped, with its collector, whatever happens."""
    started: list[RunningCompanion] = []
    try:
        yield started
    finally:
        for running in started:
            await running.aclose()


def events(journal: list[dict], kind: str) -> list[dict]:
    return [entry for entry in journal if entry["event"] == kind]


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); its state in /proc says it has exited.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


async def test_registers_under_its_name_for_invoke_and_shutdown_with_account_id(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    # Given a launcher that passes its own file name
    running = await start_companion(fake_lambda, tmp_path, name="afterflush-test")
    companions.append(running)
    # When the companion has initialised
    await fake_lambda.wait_next_calls(1)
    # Then it registered once, under that name, for INVOKE and SHUTDOWN, accepting accountId
    assert fake_lambda.registrations == [{
        "name": "afterflush-test",
        "accept_feature": "accountId",
        "body": {"events": ["INVOKE", "SHUTDOWN"]},
    }]


async def test_registration_before_the_event_loop_sends_what_lambda_expects(
    fake_lambda: FakeLambda,
) -> None:
    # Given the blocking registration `python -m companion` makes before importing asyncio
    from companion._register import register

    # When it registers against the Extensions API
    registration = await asyncio.to_thread(register, fake_lambda.runtime_api, "afterflush")
    # Then Lambda saw the name, the events and the accountId feature, and the id came back
    assert fake_lambda.registrations == [{
        "name": "afterflush", "accept_feature": "accountId",
        "body": {"events": ["INVOKE", "SHUTDOWN"]},
    }]
    assert (registration.extension_id, registration.account_id) == (fake_lambda.extension_id, "123456789012")


async def test_subscribes_to_platform_events_with_the_smallest_buffering(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    running = await start_companion(fake_lambda, tmp_path)
    companions.append(running)
    await fake_lambda.wait_next_calls(1)
    [subscription] = fake_lambda.subscriptions
    port = subscription["destination"].pop("URI").rpartition(":")[2]
    assert subscription == {
        "id": fake_lambda.extension_id,
        "schemaVersion": "2022-12-13",
        "types": ["platform"],
        "buffering": {"timeoutMs": 25, "maxItems": 1000, "maxBytes": 262144},
        "destination": {"protocol": "HTTP"},
    }
    assert int(port) == running.companion._listener.port > 0


async def test_first_event_is_asked_for_only_once_the_collector_is_ready(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    # Given a collector that takes a while to become ready
    running = await start_companion(fake_lambda, tmp_path, FAKE_COLLECTOR_READY_DELAY="0.3")
    companions.append(running)
    # When the companion asks Lambda for its first event
    first = await fake_lambda.wait_next_calls(1)
    # Then the collector had already reported ready, and the subscription was made
    assert [e["event"] for e in first.journal] == ["start", "ready"]
    assert len(fake_lambda.subscriptions) == 1
    [ready_line] = running.log.matching("ready in")
    assert "collector ready" in ready_line and "draining after runtimeDone" in ready_line


async def test_drains_after_runtime_done_and_only_then_asks_for_the_next_event(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    running = await start_companion(fake_lambda, tmp_path)
    companions.append(running)
    await fake_lambda.wait_next_calls(1)
    # Given an INVOKE whose runtime has not answered yet
    fake_lambda.invoke("req-1")
    await wait_until(lambda: fake_lambda._events.empty(), what="INVOKE handed out")
    # When the runtime answers (Lambda sends platform.runtimeDone)
    sent_at = time.time()
    await fake_lambda.send_runtime_done("req-1")
    # Then the companion drains for that request, and asks for the next event after the reply
    second = await fake_lambda.wait_next_calls(2)
    [drain] = events(second.journal, "drain")
    assert (drain["request_id"], drain["reason"], drain["spill"]) == ("req-1", "invoke", False)
    assert sent_at <= drain["time"] <= second.time
    # And nothing is logged for a healthy invocation at the default level
    assert running.log.matching("drain (") == []


async def test_runtime_done_arriving_before_the_invoke_is_remembered(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    running = await start_companion(fake_lambda, tmp_path)
    companions.append(running)
    await fake_lambda.wait_next_calls(1)
    # Given runtimeDone delivered before the companion has read the INVOKE
    await fake_lambda.send_runtime_done("req-early")
    # When the INVOKE comes (its deadline far away)
    fake_lambda.invoke("req-early", deadline_in=60)
    # Then the companion drains at once and goes on, still in runtimeDone mode
    second = await fake_lambda.wait_next_calls(2, timeout=5)
    assert [d["request_id"] for d in events(second.journal, "drain")] == ["req-early"]
    assert running.companion.mode.name == "RUNTIME_DONE"


async def test_drain_deadline_is_the_invoke_deadline_minus_the_margin(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    # Given a 2 s drain budget, a 200 ms margin and an invocation with 1 s left
    running = await start_companion(
        fake_lambda, tmp_path, AFTERFLUSH_DRAIN_TIMEOUT="2s", AFTERFLUSH_DEADLINE_MARGIN="200ms"
    )
    companions.append(running)
    await fake_lambda.wait_next_calls(1)
    await fake_lambda.send_runtime_done("req-short")
    fake_lambda.invoke("req-short", deadline_in=1.0)
    # When the companion drains
    second = await fake_lambda.wait_next_calls(2)
    # Then the gRPC deadline it gave is what is left before deadline - margin, not 2 s (gRPC
    # rounds the timeout it sends up to its unit, hence the allowance above 0.8 s)
    [drain] = events(second.journal, "drain")
    assert 0 < drain["time_remaining"] <= 0.81


async def test_missing_runtime_done_switches_to_draining_at_each_invoke_start(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    running = await start_companion(fake_lambda, tmp_path, AFTERFLUSH_DEADLINE_MARGIN="100ms")
    companions.append(running)
    await fake_lambda.wait_next_calls(1)
    # Given a subscription that delivers no runtimeDone for an invocation
    fake_lambda.invoke("req-lost", deadline_in=0.5)
    # When its deadline (minus margin) passes
    second = await fake_lambda.wait_next_calls(2)
    # Then the companion went on without the event, saying so once
    assert len(running.log.matching("no platform.runtimeDone for req-lost")) == 1
    assert running.companion.mode.name == "NEXT_INVOKE"
    assert events(second.journal, "drain") == []
    # And from then on it drains at the start of each INVOKE without waiting for runtimeDone
    fake_lambda.invoke("req-2", deadline_in=60)
    third = await fake_lambda.wait_next_calls(3, timeout=5)
    assert [(d["request_id"], d["reason"]) for d in events(third.journal, "drain")] == [
        ("req-2", "next-invoke")
    ]
    assert len(running.log.matching("no platform.runtimeDone")) == 1


async def test_without_telemetry_api_it_drains_at_each_invoke_and_at_shutdown(
    tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    # Given a platform that answers the subscription with 202 (as RIE does)
    fake = FakeLambda(telemetry_status=202)
    await fake.start()
    try:
        running = await start_companion(fake, tmp_path)
        companions.append(running)
        await fake.wait_next_calls(1)
        # Then it says so in one line
        [line] = running.log.matching("Telemetry API not supported")
        assert "draining at the start of each INVOKE and at SHUTDOWN" in line
        # When two invocations and a shutdown come
        fake.invoke("req-1")
        await fake.wait_next_calls(2)
        fake.invoke("req-2")
        await fake.wait_next_calls(3)
        fake.shutdown(deadline_in=2.0)
        # Then it drained at each INVOKE's start and at SHUTDOWN (spilling what is left), and
        # exited 0
        assert await running.result() == 0
        drains = [(d["request_id"], d["reason"], d["spill"]) for d in events(fake.read_journal(), "drain")]
        assert drains == [
            ("req-1", "next-invoke", False), ("req-2", "next-invoke", False), ("", "shutdown", True)
        ]
    finally:
        await fake.aclose()


async def test_shutdown_drains_with_spill_stops_the_collector_and_exits_zero(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    running = await start_companion(fake_lambda, tmp_path)
    companions.append(running)
    await fake_lambda.wait_next_calls(1)
    pid = running.companion._supervisor.pid
    # When SHUTDOWN comes with 2 s left
    fake_lambda.shutdown(deadline_in=2.0, reason="spindown")
    # Then the companion exits 0 after draining with spill_remaining and stopping the collector
    assert await running.result() == 0
    journal = fake_lambda.read_journal()
    assert [(e["event"], e.get("spill")) for e in journal if e["event"] != "ready"] == [
        ("start", None), ("drain", True), ("sigterm", None), ("exit", None)
    ]
    assert process_gone(pid)
    [summary] = running.log.matching("shutdown (spindown)")
    assert "exported 1 spans, 0 points, 0 log records" in summary
    assert "collector stopped (status 0)" in summary
    # And no further event was asked for
    assert len(fake_lambda.next_calls) == 1


async def test_collector_ignoring_sigterm_is_killed_and_the_companion_exits_before_the_deadline(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    running = await start_companion(
        fake_lambda, tmp_path, FAKE_COLLECTOR_IGNORE_SIGTERM="1", AFTERFLUSH_DEADLINE_MARGIN="200ms"
    )
    companions.append(running)
    await fake_lambda.wait_next_calls(1)
    pid = running.companion._supervisor.pid
    fake_lambda.shutdown(deadline_in=1.0)
    deadline = time.time() + 1.0
    assert await running.result() == 0
    # Then it escalated to SIGKILL and was done before Lambda's deadline
    assert time.time() < deadline
    assert process_gone(pid)
    assert "collector stopped (killed by SIGKILL)" in running.log.matching("shutdown")[0]
    assert len(running.log.matching("did not exit within")) == 1


async def test_crashed_collector_is_restarted_and_invokes_pass_through_meanwhile(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    # Given a collector that dies during its first drain
    running = await start_companion(fake_lambda, tmp_path, FAKE_COLLECTOR_MODE="crash-after-drain")
    companions.append(running)
    await fake_lambda.wait_next_calls(1)
    await fake_lambda.send_runtime_done("req-1")
    fake_lambda.invoke("req-1")
    # When it has crashed, the invocation still completes
    await fake_lambda.wait_next_calls(2)
    # Then it is restarted (one line says why) and later invocations drain again
    supervisor = running.companion._supervisor
    await wait_until(lambda: supervisor.ready and supervisor.restarts == 1, what="restart")
    [restart] = running.log.matching("collector exited (status 3)")
    assert "restarting it (restart 1)" in restart
    await fake_lambda.send_runtime_done("req-2")
    fake_lambda.invoke("req-2")
    third = await fake_lambda.wait_next_calls(3)
    starts = events(third.journal, "start")
    drains = events(third.journal, "drain")
    assert [s["first"] for s in starts] == [True, False]
    assert [(d["request_id"], d["pid"]) for d in drains] == [
        ("req-1", starts[0]["pid"]), ("req-2", starts[1]["pid"])
    ]
    # And the first drain's failure was reported once
    assert len(running.log.matching("drain (invoke) failed")) == 1


async def test_collector_failing_to_start_is_restarted_with_its_last_words_logged(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    # Given a collector whose first process fails at start
    running = await start_companion(fake_lambda, tmp_path, FAKE_COLLECTOR_MODE="crash-at-start")
    companions.append(running)
    # When the companion initialises
    await fake_lambda.wait_next_calls(1)
    # Then it says why in one line, with the collector's last output, and starts another
    [line] = running.log.matching("before it was ready")
    assert line.endswith(
        "collector exited (status 1) before it was ready (last output: OSError: cannot listen on "
        "127.0.0.1:4317: address in use); INVOKEs pass through, restarting it"
    )
    supervisor = running.companion._supervisor
    await wait_until(lambda: supervisor.ready, what="the second collector ready")
    assert [s["first"] for s in events(fake_lambda.read_journal(), "start")] == [True, False]
    # And the failed process's output was passed on, not swallowed
    assert b"OSError: cannot listen" in running.output.getvalue()


async def test_invoke_is_acknowledged_at_once_while_the_collector_is_down(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    # Given a collector whose restarted process takes long to become ready
    running = await start_companion(
        fake_lambda, tmp_path, FAKE_COLLECTOR_RESTART_READY_DELAY="60"
    )
    companions.append(running)
    await fake_lambda.wait_next_calls(1)
    supervisor = running.companion._supervisor
    # And the running collector killed from outside
    os.kill(supervisor.pid, signal.SIGKILL)
    await wait_until(lambda: not supervisor.ready, what="collector seen down")
    # When an INVOKE comes whose runtimeDone never arrives and whose deadline is far away
    fake_lambda.invoke("req-down", deadline_in=60)
    # Then the companion acknowledges it at once instead of waiting for runtimeDone
    second = await fake_lambda.wait_next_calls(2, timeout=5)
    assert events(second.journal, "drain") == []
    assert running.companion.mode.name == "RUNTIME_DONE"
    # And the death was logged once, with its cause
    assert len(running.log.matching("collector exited (killed by SIGKILL)")) == 1


async def test_invalid_config_fails_open_with_one_line_naming_key_paths_and_lines(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    running = await start_companion(fake_lambda, tmp_path, FAKE_COLLECTOR_MODE="config-invalid")
    companions.append(running)
    # When the collector rejects its config
    await fake_lambda.wait_next_calls(1)
    # Then one error line carries every problem with its key path and line
    [line] = running.log.matching("collector config rejected")
    assert "exporters::otlphttp::endpoint (config.yaml:7): must be an http(s) URL" in line
    assert "processors::flushcontrol::max_buffer_size_mib (config.yaml:12): must be > 0" in line
    assert "the function keeps serving" in line
    # And the errors are not printed a second time through the collector's output
    assert b"config.yaml" not in running.output.getvalue()
    # And the function keeps being served: INVOKEs are acknowledged without waiting
    fake_lambda.invoke("req-1", deadline_in=60)
    await fake_lambda.wait_next_calls(2, timeout=5)
    assert events(fake_lambda.read_journal(), "start") and not events(fake_lambda.read_journal(), "drain")
    assert fake_lambda.errors == []
    # And the collector is not restarted over and over
    assert len(events(fake_lambda.read_journal(), "start")) == 1
    fake_lambda.shutdown()
    assert await running.result() == 0


async def test_invalid_config_with_strict_init_fails_init_with_an_extension_error(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    running = await start_companion(
        fake_lambda, tmp_path, FAKE_COLLECTOR_MODE="config-invalid", AFTERFLUSH_STRICT_INIT="true"
    )
    companions.append(running)
    # Then init fails: init/error with an Extension.* type and the errors, exit non-zero
    assert await running.result() == 1
    [error] = fake_lambda.errors
    assert error["path"] == "/2020-01-01/extension/init/error"
    assert error["id"] == fake_lambda.extension_id
    assert error["error_type"] == "Extension.ConfigInvalid"
    assert error["body"]["errorType"] == "Extension.ConfigInvalid"
    assert "exporters::otlphttp::endpoint (config.yaml:7)" in error["body"]["errorMessage"]
    assert fake_lambda.next_calls == []


async def test_collector_that_never_becomes_ready_fails_open(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    running = await start_companion(
        fake_lambda, tmp_path, FAKE_COLLECTOR_MODE="never-ready", AFTERFLUSH_READY_TIMEOUT="300ms"
    )
    companions.append(running)
    await fake_lambda.wait_next_calls(1)
    assert len(running.log.matching("collector not ready after 300 ms")) == 1
    # INVOKEs pass through without a drain
    fake_lambda.invoke("req-1", deadline_in=60)
    second = await fake_lambda.wait_next_calls(2, timeout=5)
    assert events(second.journal, "drain") == []


async def test_repeated_drain_failures_are_logged_once(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    running = await start_companion(fake_lambda, tmp_path, FAKE_COLLECTOR_MODE="failing-drains")
    companions.append(running)
    await fake_lambda.wait_next_calls(1)
    for i in range(3):
        await fake_lambda.send_runtime_done(f"req-{i}")
        fake_lambda.invoke(f"req-{i}")
        await fake_lambda.wait_next_calls(i + 2)
    assert len(events(fake_lambda.read_journal(), "drain")) == 3
    [line] = running.log.matching("drain (invoke) failed")
    assert "UNAVAILABLE: backend unreachable" in line


async def test_incomplete_drains_report_counts_and_last_error(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    running = await start_companion(fake_lambda, tmp_path, FAKE_COLLECTOR_BUFFERED="20")
    companions.append(running)
    await fake_lambda.wait_next_calls(1)
    await fake_lambda.send_runtime_done("req-1")
    fake_lambda.invoke("req-1")
    await fake_lambda.wait_next_calls(2)
    [line] = running.log.matching("drain (invoke) incomplete")
    assert "still buffered 20 spans, 0 points, 0 log records (2000 bytes)" in line
    assert "last error: http 503 from backend" in line


async def test_collector_output_passes_through_once_ready(
    fake_lambda: FakeLambda, tmp_path: Path, companions: list[RunningCompanion]
) -> None:
    running = await start_companion(fake_lambda, tmp_path)
    companions.append(running)
    await fake_lambda.wait_next_calls(1)
    await wait_until(lambda: b"fake collector starting" in running.output.getvalue(),
                     what="collector stderr passed through")
    assert running.output.getvalue().count(b"fake collector starting") == 1
