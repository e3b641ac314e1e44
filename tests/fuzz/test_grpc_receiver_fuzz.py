"""Fuzzing the OTLP/gRPC receiver of a running collector: truncated, garbage, deeply nested and
huge messages, gzip-compressed bombs, unknown methods. Every call ends with the status the
receiver documents (OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNIMPLEMENTED) and a one-line
message; a well-formed call from another sender right after each one succeeds; the collector
never crashes or prints a traceback, and counts exactly what it took and what it refused."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from collector._signals import Signal
from tests.fixtures.backend import trace_payload
from tests.fuzz.strategies import (
    BODY_LIMIT,
    EXAMPLES,
    FUZZ,
    SIGNALS,
    TIMEOUT_SECONDS,
    broken,
    requests,
)

pytestmark = pytest.mark.timeout(TIMEOUT_SECONDS)

SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}
# max_recv_msg_size_mib: 1 in the fuzz collector's config.
MAX_MESSAGE = BODY_LIMIT
GOOD = trace_payload(1)
WRONGS = ["nothing", "body", "size", "method", "compressed"]


@dataclass(frozen=True)
class Call:
    method: str
    data: bytes
    gzip: bool
    signal: Signal


@st.composite
def calls(draw, wrong: str) -> Call:
    signal = draw(st.sampled_from(SIGNALS))
    method = f"/{SERVICES[signal]}/Export"
    if wrong == "method":
        method = draw(st.sampled_from([
            f"/{SERVICES[signal]}/Exports", f"/{SERVICES[signal]}/export", "/x.Y/Export",
            f"/{SERVICES[signal].replace('v1', 'v2')}/Export",
        ]))
    data = draw(requests(signal)).SerializeToString()
    if wrong == "body":
        data = draw(broken(data))
    if wrong == "size":
        # A valid request whose one attribute takes it just over, or just under, the bound.
        filler = MAX_MESSAGE - 200 + draw(st.integers(0, 400))
        message = signal.request_type()
        _one_item(signal, message, "x" * filler)
        data = message.SerializeToString()
    return Call(method, data, wrong == "compressed", signal)


def _one_item(signal: Signal, message, text: str) -> None:
    if signal is Signal.TRACES:
        span = message.resource_spans.add().scope_spans.add().spans.add(name="big")
        span.attributes.add(key="filler").value.string_value = text
    elif signal is Signal.METRICS:
        point = message.resource_metrics.add().scope_metrics.add().metrics.add(
            name="big").gauge.data_points.add(as_int=1)
        point.attributes.add(key="filler").value.string_value = text
    else:
        record = message.resource_logs.add().scope_logs.add().log_records.add()
        record.body.string_value = text


def expected(call: Call) -> tuple[grpc.StatusCode, int]:
    """(status, items accepted) as the receiver documents them."""
    if not call.method.endswith(f"/{SERVICES[call.signal]}/Export"):
        return grpc.StatusCode.UNIMPLEMENTED, 0
    if len(call.data) > MAX_MESSAGE:
        return grpc.StatusCode.RESOURCE_EXHAUSTED, 0
    try:
        message = call.signal.decode(call.data)
    except DecodeError:
        return grpc.StatusCode.INVALID_ARGUMENT, 0
    return grpc.StatusCode.OK, call.signal.count_items(message)


def invoke(channel: grpc.Channel, call: Call) -> tuple[grpc.StatusCode, str]:
    stub = channel.unary_unary(call.method)  # bytes in, bytes out
    compression = grpc.Compression.Gzip if call.gzip else grpc.Compression.NoCompression
    try:
        stub(call.data, timeout=10, compression=compression)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("wrong", WRONGS)
def test_grpc_receiver_answers_every_malformed_call_as_documented(fuzz_collector, wrong):
    before = fuzz_collector.status()
    accepted: Counter[Signal] = Counter()
    refused = 0
    codes: Counter[grpc.StatusCode] = Counter()
    with grpc.insecure_channel(fuzz_collector.grpc_endpoint, options=[
        ("grpc.max_send_message_length", 4 * MAX_MESSAGE),
    ]) as channel:

        # Near-limit messages are a megabyte each: fewer of them.
        @settings(FUZZ, max_examples=max(10, EXAMPLES // 4) if wrong == "size" else EXAMPLES)
        @given(call=calls(wrong))
        def one_call(call: Call) -> None:
            nonlocal refused
            code, details = invoke(channel, call)
            want, items = expected(call)
            codes[code] += 1
            if code == want == grpc.StatusCode.OK:
                accepted[call.signal] += items
            elif code == want == grpc.StatusCode.INVALID_ARGUMENT:
                refused += 1
            assert code == want, f"{call.method} {len(call.data)} bytes: {code} {details!r}"
            if code != grpc.StatusCode.OK:
                assert details and "\n" not in details and "Traceback" not in details
            # Another sender, right after: unaffected
            good = Call(f"/{SERVICES[Signal.TRACES]}/Export", GOOD.data, False, Signal.TRACES)
            assert invoke(channel, good)[0] == grpc.StatusCode.OK
            accepted[Signal.TRACES] += GOOD.items

        one_call()
    assert codes[grpc.StatusCode.OK] if wrong in ("nothing", "compressed") else \
        set(codes) - {grpc.StatusCode.OK}, codes
    assert fuzz_collector.proc.poll() is None
    after = fuzz_collector.status()
    assert (
        after.accepted_traces - before.accepted_traces,
        after.accepted_metrics - before.accepted_metrics,
        after.accepted_logs - before.accepted_logs,
    ) == (accepted[Signal.TRACES], accepted[Signal.METRICS], accepted[Signal.LOGS])
    # The receiver counts what it refused itself; grpc refuses oversize and unknown calls
    # before they reach it.
    counted = Counter(dict(after.rejected_requests))
    counted.subtract(Counter(dict(before.rejected_requests)))
    assert +counted == (Counter({"bad_data": refused}) if refused else Counter())
    assert "Traceback" not in fuzz_collector.stderr
    assert " ERROR " not in fuzz_collector.stderr, fuzz_collector.stderr[-2000:]
