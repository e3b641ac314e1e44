"""Fuzzing the OTLP/gRPC receiver of the collector binary: messages no decoder can take,
messages just over and under max_recv_msg_size_mib, gzip and deflate compression, unknown
services and methods. Every call ends with the status the table in expected() derives from what
is wrong with it (the answers of grpc-go under the OpenTelemetry Collector's otlp receiver, which
the binary runs) and a one-line message; a well-formed call from another sender right after
each one succeeds; the collector never crashes, logs no error, and its accepted counts grow by
exactly the items of the calls that ended OK."""

from __future__ import annotations

import gzip
from collections import Counter
from dataclasses import dataclass

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend._signals import Signal
from tests.fixtures.otlp import GRPC_SERVICES, count_items, grpc_method, grpc_send, trace_payload
from tests.fuzz.strategies import (
    BODY_LIMIT,
    EXAMPLES,
    FUZZ,
    SIGNALS,
    TIMEOUT_SECONDS,
    requests,
    undecodable,
)

pytestmark = pytest.mark.timeout(TIMEOUT_SECONDS)

# max_recv_msg_size_mib: 1 in the fuzz collector's config.
MAX_MESSAGE = BODY_LIMIT
GOOD = trace_payload(1)
WRONGS = ["nothing", "body", "size", "method", "compressed"]


@dataclass(frozen=True)
class Call:
    method: str
    data: bytes
    compression: grpc.Compression
    signal: Signal
    decodes: bool
    items: int


@st.composite
def calls(draw, wrong: str) -> Call:
    signal = draw(st.sampled_from(SIGNALS))
    method = grpc_method(signal)
    if wrong == "method":
        service = GRPC_SERVICES[signal]
        method = draw(st.sampled_from([
            f"/{service}/Exports", f"/{service}/export", "/x.Y/Export",
            f"/{service.replace('v1', 'v2')}/Export", f"/{GRPC_SERVICES[Signal.LOGS]}/Export2",
        ]))
    message = draw(requests(signal, valid_ids=True))
    if wrong == "size":
        # A valid request whose one attribute takes it just over, or just under, the bound.
        message = signal.request_type()
        _one_item(signal, message, "x" * (MAX_MESSAGE - 200 + draw(st.integers(0, 400))))
    compression = grpc.Compression.NoCompression
    if wrong == "compressed":
        compression = draw(st.sampled_from([grpc.Compression.Gzip, grpc.Compression.Deflate]))
    if compression == grpc.Compression.Deflate:
        # Deflate, which the collector has no decompressor for: a message that compresses
        # well, so that gRPC does send it compressed.
        message = signal.request_type()
        _one_item(signal, message, "y" * draw(st.integers(200, 5000)))
    data = message.SerializeToString()
    decodes = wrong != "body"
    if not decodes:
        data = draw(undecodable(signal, data, "protobuf"))
    return Call(method, data, compression, signal, decodes, count_items(signal, message))


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
    """(status, items accepted) as the collector answers `call`, in the order grpc-go looks."""
    # An unknown service or method is refused before the message is read.
    if call.method != grpc_method(call.signal):
        return grpc.StatusCode.UNIMPLEMENTED, 0
    # The message as it travels: over the bound, refused before it is decompressed.
    wire = gzip.compress(call.data) if call.compression == grpc.Compression.Gzip else call.data
    if min(len(wire), len(call.data)) > MAX_MESSAGE:
        return grpc.StatusCode.RESOURCE_EXHAUSTED, 0
    if call.compression == grpc.Compression.Deflate:
        return grpc.StatusCode.UNIMPLEMENTED, 0  # no deflate decompressor is installed
    if len(call.data) > MAX_MESSAGE:
        return grpc.StatusCode.RESOURCE_EXHAUSTED, 0  # after decompression
    if not call.decodes:
        # grpc-go answers a message its codec cannot unmarshal with INTERNAL ("grpc: error
        # unmarshalling request: ..."), before the receiver sees it.
        return grpc.StatusCode.INTERNAL, 0
    return grpc.StatusCode.OK, call.items


@pytest.mark.parametrize("wrong", WRONGS)
def test_grpc_receiver_answers_every_malformed_call_as_the_table_says(fuzz_collector, wrong):
    before = fuzz_collector.status()
    accepted: Counter[Signal] = Counter()
    codes: Counter[grpc.StatusCode] = Counter()
    with grpc.insecure_channel(fuzz_collector.grpc_endpoint, options=[
        ("grpc.max_send_message_length", 4 * MAX_MESSAGE),
    ]) as channel:

        # Near-limit messages are a megabyte each: fewer of them.
        @settings(FUZZ, max_examples=max(10, EXAMPLES // 4) if wrong == "size" else EXAMPLES)
        @given(call=calls(wrong))
        def one_call(call: Call) -> None:
            answer = grpc_send(channel, call.method, call.data, compression=call.compression)
            want, items = expected(call)
            codes[answer.code] += 1
            assert answer.code == want, (
                f"{call.method} {len(call.data)} bytes {call.compression}: {answer.code} "
                f"{answer.details!r}, expected {want}")
            if answer.code == grpc.StatusCode.OK:
                accepted[call.signal] += items
            else:
                assert answer.details and "\n" not in answer.details, answer.details
            # Another sender, right after: unaffected
            good = grpc_send(channel, grpc_method(Signal.TRACES), GOOD.data)
            assert good.code == grpc.StatusCode.OK, good
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
    # grpc-go and the receiver refuse these before flushcontrol sees them: none is counted
    # there (its only refusal is backpressure).
    assert dict(after.rejected_requests) == dict(before.rejected_requests)
    assert '"level":"error"' not in fuzz_collector.stderr, fuzz_collector.stderr[-2000:]
    assert "panic" not in fuzz_collector.stderr, fuzz_collector.stderr[-2000:]
