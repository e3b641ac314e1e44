"""The companion's parts without sockets: log lines, Lambda events, telemetry batches, the
runtimeDone tracker, drain reports, HTTP framing, restart backoff and the child's environment."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from companion._http11 import HttpError, read_body
from companion._lambda_api import InvokeEvent, LambdaApiError, ShutdownEvent, parse_event
from companion._log import DEBUG, INFO, Logger
from companion._main import (
    collector_env,
    parse_name,
)
from companion._register import LambdaApiError as RegisterError
from companion._register import (
    parse_response,
    registration_from,
    split_host_port,
    valid_extension_name,
)
from companion._report import DrainReporter, describe_reply
from companion._settings import Settings
from companion._supervisor import Backoff, describe_exit, message_of, summarize_output
from companion._telemetry import RuntimeDoneTracker, handle_batch
from companion.proto import control_pb2

T0 = 1_795_000_000.25  # a fixed wall clock for log timestamps


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- log lines ---------------------------------------------------------------------------------

def test_text_lines_carry_the_prefix_and_level() -> None:
    out = io.StringIO()
    log = Logger(out)
    log.info("ready in 12 ms")
    log.debug("not shown at info")
    log.warning("drain failed")
    assert out.getvalue() == "[afterflush] INFO ready in 12 ms\n[afterflush] WARNING drain failed\n"


def test_json_lines_when_lambda_log_format_is_json() -> None:
    out = io.StringIO()
    Logger(out, json_format=True, clock=lambda: T0).error("bad", restarts=2)
    assert json.loads(out.getvalue()) == {
        "timestamp": "2026-11-18T11:06:40.250Z", "level": "ERROR", "logger": "afterflush",
        "message": "bad", "restarts": 2,
    }
    assert out.getvalue().count("\n") == 1


def test_a_multi_line_message_stays_one_line() -> None:
    out = io.StringIO()
    Logger(out, level=DEBUG).log(INFO, "first\n\nsecond\n")
    assert out.getvalue() == "[afterflush] INFO first | second\n"


# --- Extensions API events ---------------------------------------------------------------------

def test_invoke_and_shutdown_events_parse() -> None:
    invoke = parse_event(json.dumps({
        "eventType": "INVOKE", "deadlineMs": 1700000000123, "requestId": "r-1",
        "invokedFunctionArn": "arn:fn", "tracing": {"type": "X-Amzn-Trace-Id", "value": "x"},
    }).encode())
    shutdown = parse_event(b'{"eventType": "SHUTDOWN", "shutdownReason": "timeout", "deadlineMs": 5}')
    assert invoke == InvokeEvent(request_id="r-1", deadline_ms=1700000000123, invoked_function_arn="arn:fn")
    assert shutdown == ShutdownEvent(reason="timeout", deadline_ms=5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"eventType": "RESTORE", "deadlineMs": 5}', 'unknown eventType "RESTORE"'),
        (b'{"eventType": "INVOKE"}', "not valid"),
        (b"not json", "not valid"),
    ],
)
def test_malformed_events_are_api_errors(body: bytes, message: str) -> None:
    with pytest.raises(LambdaApiError, match=message):
        parse_event(body)


# --- telemetry batches and the runtimeDone tracker ---------------------------------------------

def batch(*events: tuple[str, str]) -> bytes:
    return json.dumps([
        {"time": "2026-11-01T00:00:00Z", "type": kind, "record": {"requestId": rid, "status": "success"}}
        for kind, rid in events
    ]).encode()


async def test_runtime_done_before_the_wait_is_remembered() -> None:
    tracker = RuntimeDoneTracker()
    count = handle_batch(batch(("platform.start", "a"), ("platform.runtimeDone", "a")), tracker)
    assert count == 2 and tracker.events_seen == 2
    assert tracker.is_done("a")
    assert await tracker.wait("a", timeout=0) == "success"
    # Each requestId is waited for once.
    assert not tracker.is_done("a")


async def test_wait_returns_when_runtime_done_arrives() -> None:
    tracker = RuntimeDoneTracker()
    waiter = asyncio.create_task(tracker.wait("b", timeout=5))
    await asyncio.sleep(0)
    assert not waiter.done()
    handle_batch(batch(("platform.runtimeDone", "b")), tracker)
    assert await waiter == "success"


async def test_wait_gives_none_when_runtime_done_does_not_come_in_time() -> None:
    tracker = RuntimeDoneTracker()
    handle_batch(batch(("platform.runtimeDone", "other")), tracker)
    assert await tracker.wait("c", timeout=0.01) is None


def test_the_tracker_keeps_only_the_newest_request_ids() -> None:
    tracker = RuntimeDoneTracker(capacity=3)
    for rid in "abcde":
        tracker.mark_done(rid, "success")
    assert [tracker.is_done(rid) for rid in "abcde"] == [False, False, True, True, True]


@pytest.mark.parametrize("body", [b'{"type": "platform.runtimeDone"}', b"[", b""])
def test_a_batch_that_is_not_a_json_array_is_rejected(body: bytes) -> None:
    with pytest.raises(ValueError):
        handle_batch(body, RuntimeDoneTracker())


def test_events_without_a_request_id_are_counted_and_ignored() -> None:
    tracker = RuntimeDoneTracker()
    body = json.dumps([{"type": "platform.runtimeDone", "record": {}}, "junk"]).encode()
    assert handle_batch(body, tracker) == 2
    assert tracker.events_seen == 1


# --- drain reports -----------------------------------------------------------------------------

def reply(*, exported: int = 0, buffered: int = 0, dropped: int = 0, complete: bool = True,
          last_error: str = "", spilled: int = 0) -> control_pb2.DrainReply:
    return control_pb2.DrainReply(
        traces=control_pb2.SignalCounts(
            exported=exported, buffered=buffered, buffered_bytes=10 * buffered, spilled=spilled,
            dropped={"permanent:http 400": dropped} if dropped else {},
        ),
        logs=control_pb2.SignalCounts(exported=2),
        duration_us=12_400, complete=complete, last_error=last_error,
    )


def test_a_reply_reads_as_one_line_of_counts() -> None:
    assert describe_reply(reply(exported=20, buffered=3, dropped=4, spilled=5)) == (
        "exported 20 spans, 0 points, 2 log records; "
        "still buffered 3 spans, 0 points, 0 log records (30 bytes); "
        "spilled to stdout 5 spans, 0 points, 0 log records; "
        "dropped 4 spans, 0 points, 0 log records (permanent:http 400: 4)"
    )


def test_requests_the_receivers_refused_are_one_warning_line() -> None:
    out = io.StringIO()
    reporter = DrainReporter(Logger(out), clock=FakeClock())
    refused = reply(exported=3)
    refused.rejected_requests["backpressure"] = 4
    reporter.drained("invoke", refused)
    assert out.getvalue().splitlines() == [
        "[afterflush] WARNING drain (invoke) complete after 12 ms: exported 3 spans, 0 points, "
        "2 log records; receivers refused 4 requests (backpressure) since the last drain"
    ]


def test_healthy_drains_say_nothing_at_info() -> None:
    out = io.StringIO()
    reporter = DrainReporter(Logger(out), clock=FakeClock())
    for _ in range(5):
        reporter.drained("invoke", reply(exported=3))
    assert out.getvalue() == ""
    assert reporter.totals.drains == 5 and reporter.totals.exported["traces"] == 15


def test_a_recurring_problem_is_one_line_then_folded_then_repeated_with_a_count() -> None:
    out = io.StringIO()
    clock = FakeClock()
    reporter = DrainReporter(Logger(out), clock=clock, repeat_interval=60)
    stuck = reply(buffered=20, complete=False, last_error="http 503")
    reporter.drained("invoke", stuck)
    clock.now += 10
    reporter.drained("invoke", stuck)
    reporter.drained("invoke", stuck)
    clock.now += 60
    reporter.drained("invoke", stuck)
    reporter.drained("invoke", reply(exported=20))
    lines = out.getvalue().splitlines()
    assert lines == [
        "[afterflush] WARNING drain (invoke) incomplete after 12 ms: exported 0 spans, 0 points, "
        "2 log records; still buffered 20 spans, 0 points, 0 log records (200 bytes); "
        "last error: http 503",
        "[afterflush] WARNING drain (invoke) incomplete after 12 ms: exported 0 spans, 0 points, "
        "2 log records; still buffered 20 spans, 0 points, 0 log records (200 bytes); "
        "last error: http 503 (2 more drains with problems since the last line)",
        "[afterflush] INFO drains complete again after 4 with problems",
    ]


def test_incomplete_drains_with_varying_errors_are_one_problem() -> None:
    out = io.StringIO()
    reporter = DrainReporter(Logger(out), clock=FakeClock())
    reporter.drained("invoke", reply(buffered=1, complete=False, last_error="POST /v1/traces: no answer within 1.73s"))
    reporter.drained("invoke", reply(buffered=2, complete=False, last_error="POST /v1/logs: no answer within 1.74s"))
    assert len(out.getvalue().splitlines()) == 1


def test_control_failures_differing_only_in_numbers_are_one_problem() -> None:
    out = io.StringIO()
    reporter = DrainReporter(Logger(out), clock=FakeClock())
    reporter.failed("invoke", "no answer within 1732 ms")
    reporter.failed("invoke", "no answer within 1741 ms")
    assert len(out.getvalue().splitlines()) == 1


def test_a_different_problem_gets_its_own_line() -> None:
    out = io.StringIO()
    reporter = DrainReporter(Logger(out), clock=FakeClock())
    reporter.failed("invoke", "Drain failed: UNAVAILABLE")
    reporter.drained("invoke", reply(dropped=4))
    reporter.failed("invoke", "Drain failed: UNAVAILABLE")
    assert [line.split(": ")[0] for line in out.getvalue().splitlines()] == [
        "[afterflush] WARNING drain (invoke) failed",
        "[afterflush] WARNING drain (invoke) complete after 12 ms",
        "[afterflush] WARNING drain (invoke) failed",
    ]
    assert reporter.totals.failed == 2 and reporter.totals.dropped == 4


# --- HTTP framing ------------------------------------------------------------------------------

def reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_bodies_are_read_by_length_chunks_or_to_the_end() -> None:
    assert await read_body(reader_of(b"abcdef"), {"content-length": "4"}, until_eof=False) == b"abcd"
    chunked = b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    assert await read_body(reader_of(chunked), {"transfer-encoding": "chunked"}, until_eof=False) == b"abcde"
    assert await read_body(reader_of(b"rest"), {}, until_eof=True) == b"rest"
    assert await read_body(reader_of(b"rest"), {}, until_eof=False) == b""


async def test_a_bad_content_length_is_an_http_error() -> None:
    with pytest.raises(HttpError, match="bad content-length"):
        await read_body(reader_of(b""), {"content-length": "-1"}, until_eof=False)


def test_register_responses_parse_with_length_or_chunks() -> None:
    plain = b"HTTP/1.1 200 OK\r\nLambda-Extension-Identifier: id-1\r\nContent-Length: 5\r\n\r\n{}   trailing"
    assert parse_response(plain) == (200, {"lambda-extension-identifier": "id-1", "content-length": "5"}, b"{}   ")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"
    assert parse_response(chunked)[2] == b'{"a":1}'
    with pytest.raises(RegisterError, match="not an HTTP response"):
        parse_response(b"garbage")


def test_a_registration_carries_the_identifier_and_the_account() -> None:
    body = b'{"functionName": "fn", "functionVersion": "$LATEST", "handler": "app.h", "accountId": "123"}'
    registration = registration_from(200, {"lambda-extension-identifier": "id-9"}, body, "afterflush")
    assert (registration.extension_id, registration.function_name, registration.account_id) == (
        "id-9", "fn", "123"
    )
    with pytest.raises(RegisterError, match="register as afterflush refused: 403 no more extensions"):
        registration_from(403, {}, b"no more extensions", "afterflush")


def test_extension_names_are_plain_file_names() -> None:
    assert [valid_extension_name(n) for n in ("afterflush", "a.b_c-1", "", "-x", "a/b", "x" * 65)] == [
        True, True, False, False, False, False
    ]


def test_runtime_api_addresses_split() -> None:
    assert split_host_port("127.0.0.1:9001") == ("127.0.0.1", 9001)
    assert split_host_port("[::1]:9001") == ("::1", 9001)
    with pytest.raises(ValueError, match="is not host:port"):
        split_host_port("localhost")


# --- supervision helpers -----------------------------------------------------------------------

def test_restart_backoff_doubles_up_to_its_bound_and_resets() -> None:
    backoff = Backoff(initial=0.2, maximum=1.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert backoff.next_delay() == 0.2


def test_exits_are_described_by_status_or_signal() -> None:
    assert (describe_exit(0), describe_exit(2), describe_exit(-9), describe_exit(-15)) == (
        "status 0", "status 2", "killed by SIGKILL", "killed by SIGTERM"
    )


def test_collector_output_lines_are_read_as_text_or_json_messages() -> None:
    assert message_of("  plain line \n") == "plain line"
    assert message_of('{"level": "ERROR", "message": "a::b (c.yaml:3): bad"}') == "a::b (c.yaml:3): bad"
    assert message_of("{not json") == "{not json"


def test_config_errors_read_as_one_line() -> None:
    lines = [
        "[afterflush collector] ERROR invalid config (2 problems):\n",
        "  a::b (/opt/c.yaml:3): must be > 0\n",
        "  x::y (/opt/c.yaml:9): unknown key\n",
        "\n",
    ]
    assert summarize_output(lines) == (
        "invalid config (2 problems): a::b (/opt/c.yaml:3): must be > 0; "
        "x::y (/opt/c.yaml:9): unknown key"
    )


# --- command line and the collector's environment ----------------------------------------------

def test_the_name_comes_from_the_command_line() -> None:
    assert parse_name([]) is None
    assert parse_name(["--name", "afterflush-x"]) == "afterflush-x"
    assert parse_name(["--name=ext"]) == "ext"
    with pytest.raises(ValueError, match="unexpected argument '--nme'"):
        parse_name(["--nme", "x"])
    with pytest.raises(ValueError, match="is not a plain file name"):
        parse_name(["--name", "a/b"])


def test_the_collector_gets_the_chosen_endpoint_and_the_rest_of_the_environment() -> None:
    settings = Settings(control_endpoint="unix:///tmp/t/c.sock")
    env = collector_env({"PYTHONPATH": "/var/task", "OTHER": "1"}, settings)
    assert env == {
        "PYTHONPATH": "/var/task",
        "OTHER": "1",
        "AFTERFLUSH_CONTROL_ENDPOINT": "unix:///tmp/t/c.sock",
        "AFTERFLUSH_HOLD": "true",
    }


def test_the_collector_binary_is_found_beside_the_companion_in_the_layer_and_the_source_tree(
    tmp_path,
) -> None:
    from companion._main import (
        collector_binary,
    )

    # Given a layer (afterflush/lib/common/companion) and a source tree (companion, bin/)
    layer_pkg = tmp_path / "opt" / "afterflush" / "lib" / "common" / "companion"
    layer_bin = tmp_path / "opt" / "afterflush" / "bin" / "afterflush-collector"
    tree_pkg = tmp_path / "src" / "companion"
    tree_bin = tmp_path / "src" / "bin" / "afterflush-collector"
    for path in (layer_bin, tree_bin):
        path.parent.mkdir(parents=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    layer_pkg.mkdir(parents=True)
    tree_pkg.mkdir(parents=True)
    # Then each finds its own, and without one the layer's place is named
    assert collector_binary(str(layer_pkg)) == str(layer_bin)
    assert collector_binary(str(tree_pkg)) == str(tree_bin)
    tree_bin.unlink()
    assert collector_binary(str(tree_pkg)) == str(tmp_path.parent / "bin" / "afterflush-collector")
