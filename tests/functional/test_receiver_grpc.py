"""The otlp receiver over gRPC, fed by the real OpenTelemetry SDK exporters and a raw
channel: what arrives, and what a sender is told when a request is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    Compression,
    OTLPSpanExporter,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from collector._signals import Signal
from collector.errors import BackpressureError, ExportError, PermanentExportError
from tests.fixtures.receiver import (
    SDK_TIMEOUT_SECONDS,
    RecordingConsumer,
    loopback_config,
    parse_status,
    received_spans,
    retry_delay_of,
    running_receiver,
    sdk_logs,
    sdk_metrics,
    sdk_spans,
)

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def _one_span_request(name: str) -> bytes:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=bytes(range(16)), span_id=bytes(range(8)), name=name
    )
    return request.SerializeToString()


@pytest.fixture
async def channel() -> AsyncIterator[Any]:
    channels: list[Any] = []

    def open_channel(endpoint: str) -> Any:
        channels.append(grpc.aio.insecure_channel(endpoint))
        return channels[-1]

    try:
        yield open_channel
    finally:
        for opened in channels:
            await opened.close()


async def _call(channel: Any, method: str, body: bytes) -> bytes:
    result: bytes = await channel.unary_unary(method)(body, timeout=SDK_TIMEOUT_SECONDS)
    return result


async def test_grpc_delivers_sdk_spans_with_ids_and_attributes_intact() -> None:
    # Given a receiver and spans from the real SDK
    consumer = RecordingConsumer()
    spans = sdk_spans(3)
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(http=False)) as receiver:
        exporter = OTLPSpanExporter(
            endpoint=receiver.endpoints["grpc"], insecure=True, timeout=SDK_TIMEOUT_SECONDS
        )
        try:
            # When the SDK's gRPC exporter sends them
            result = await asyncio.to_thread(exporter.export, spans)
        finally:
            exporter.shutdown()

    # Then one payload of three spans arrived, ids and attributes as the SDK made them
    assert result is SpanExportResult.SUCCESS
    assert [p.items for p in consumer.payloads] == [3]
    assert consumer.payloads[0].signal is Signal.TRACES
    arrived = {span.name: span for span in received_spans(consumer.payloads)}
    for sent in spans:
        got = arrived[sent.name]
        assert int.from_bytes(got.trace_id, "big") == sent.context.trace_id
        assert int.from_bytes(got.span_id, "big") == sent.context.span_id
        parent = sent.parent.span_id if sent.parent else 0
        assert int.from_bytes(got.parent_span_id or b"\0", "big") == parent
    assert {kv.key: kv.value.int_value for kv in arrived["child-1"].attributes}["index"] == 1
    assert arrived["child-1"].links[0].span_id == arrived["root"].span_id
    resource = Signal.TRACES.decode(consumer.payloads[0].data).resource_spans[0].resource
    assert {kv.key: kv.value.string_value for kv in resource.attributes}[
        "service.name"
    ] == "checkout"
    assert receiver.rejected == {}


async def test_grpc_delivers_sdk_metrics_with_every_data_point() -> None:
    consumer = RecordingConsumer()
    async with running_receiver(
        {Signal.METRICS: consumer}, loopback_config(http=False)
    ) as receiver:
        exporter = OTLPMetricExporter(
            endpoint=receiver.endpoints["grpc"], insecure=True, timeout=SDK_TIMEOUT_SECONDS
        )
        try:
            result = await asyncio.to_thread(exporter.export, sdk_metrics())
        finally:
            exporter.shutdown()

    assert result is MetricExportResult.SUCCESS
    assert [p.items for p in consumer.payloads] == [4]
    request = Signal.METRICS.decode(consumer.payloads[0].data)
    metrics = {m.name: m for m in request.resource_metrics[0].scope_metrics[0].metrics}
    assert sorted(metrics) == ["latency", "requests", "temperature"]
    assert sorted(p.as_int for p in metrics["requests"].sum.data_points) == [2, 5]
    assert metrics["latency"].histogram.data_points[0].sum == 12.5
    assert metrics["temperature"].gauge.data_points[0].as_double == 21.5


async def test_grpc_delivers_sdk_logs_with_their_trace_context() -> None:
    consumer = RecordingConsumer()
    records = sdk_logs()
    async with running_receiver({Signal.LOGS: consumer}, loopback_config(http=False)) as receiver:
        exporter = OTLPLogExporter(
            endpoint=receiver.endpoints["grpc"], insecure=True, timeout=SDK_TIMEOUT_SECONDS
        )
        try:
            result = await asyncio.to_thread(exporter.export, records)
        finally:
            exporter.shutdown()

    assert result is LogRecordExportResult.SUCCESS
    assert [p.items for p in consumer.payloads] == [2]
    request = Signal.LOGS.decode(consumer.payloads[0].data)
    got = list(request.resource_logs[0].scope_logs[0].log_records)
    assert [r.body.string_value for r in got] == ["disk almost full", "done"]
    assert int.from_bytes(got[0].trace_id, "big") == records[0].log_record.trace_id
    assert int.from_bytes(got[0].span_id, "big") == records[0].log_record.span_id
    assert got[1].trace_id == b""


async def test_grpc_gzip_export_arrives_decompressed() -> None:
    consumer = RecordingConsumer()
    spans = sdk_spans(5)
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(http=False)) as receiver:
        exporter = OTLPSpanExporter(
            endpoint=receiver.endpoints["grpc"],
            insecure=True,
            timeout=SDK_TIMEOUT_SECONDS,
            compression=Compression.Gzip,
        )
        try:
            result = await asyncio.to_thread(exporter.export, spans)
        finally:
            exporter.shutdown()

    assert result is SpanExportResult.SUCCESS
    assert sorted(s.name for s in received_spans(consumer.payloads)) == sorted(
        s.name for s in spans
    )


async def test_grpc_payload_carries_the_exact_bytes_sent(channel: Any) -> None:
    consumer = RecordingConsumer()
    body = _one_span_request("exact")
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(http=False)) as receiver:
        answer = await _call(channel(receiver.endpoints["grpc"]), TRACE_EXPORT, body)

    assert answer == b""  # an ExportTraceServiceResponse without partial_success
    assert [(p.data, p.items) for p in consumer.payloads] == [(body, 1)]


async def test_grpc_empty_request_succeeds_and_reaches_no_consumer(channel: Any) -> None:
    consumer = RecordingConsumer()
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(http=False)) as receiver:
        answer = await _call(channel(receiver.endpoints["grpc"]), TRACE_EXPORT, b"")

    assert answer == b""
    assert consumer.calls == 0


async def test_grpc_garbage_gets_invalid_argument_with_a_message(channel: Any) -> None:
    consumer = RecordingConsumer()
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(http=False)) as receiver:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel(receiver.endpoints["grpc"]), TRACE_EXPORT, b"\x0a\xff\xff\xff")

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "the body is not a valid ExportTraceServiceRequest: Wire format was corrupt"
    )
    assert consumer.calls == 0
    assert receiver.rejected == {"bad_data": 1}


async def test_grpc_request_over_max_size_gets_resource_exhausted(channel: Any) -> None:
    consumer = RecordingConsumer()
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="x" * (1024 * 1024 + 1))
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(http=False)) as receiver:
        # The default limit is 4 MiB; a second receiver has 1 MiB.
        small = loopback_config(http=False, grpc_options={"max_recv_msg_size_mib": 1})
        async with running_receiver({Signal.TRACES: consumer}, small) as limited:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _call(
                    channel(limited.endpoints["grpc"]), TRACE_EXPORT, request.SerializeToString()
                )
            # The same request is fine under the default limit.
            await _call(
                channel(receiver.endpoints["grpc"]), TRACE_EXPORT, request.SerializeToString()
            )

    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (caught.value.details() or "")
    assert [p.items for p in consumer.payloads] == [1]


async def test_grpc_backpressure_gets_resource_exhausted_with_retry_info(channel: Any) -> None:
    # Given a consumer whose buffer is full
    consumer = RecordingConsumer([BackpressureError("buffer full: 16 MiB held", retry_after=2.5)])
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(http=False)) as receiver:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel(receiver.endpoints["grpc"]), TRACE_EXPORT, _one_span_request("a"))

    # Then the sender gets RESOURCE_EXHAUSTED with a RetryInfo in the status details, and in
    # the key the OpenTelemetry Python exporter reads
    error = caught.value
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "buffer full: 16 MiB held"
    trailers = dict(error.trailing_metadata() or ())
    status = parse_status(trailers["grpc-status-details-bin"])
    assert (status.code, status.message) == (8, "buffer full: 16 MiB held")
    assert retry_delay_of(status) == 2.5
    assert trailers["google.rpc.retryinfo-bin"] == status.details[0].value
    assert receiver.rejected == {"backpressure": 1}


async def test_grpc_sdk_exporter_retries_after_backpressure_and_delivers_once() -> None:
    # Given a consumer that is full twice, asking for a 10 ms wait, then has room
    full = BackpressureError("buffer full", retry_after=0.01)
    consumer = RecordingConsumer([full, BackpressureError("buffer full", retry_after=0.01)])
    spans = sdk_spans(2)
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(http=False)) as receiver:
        # With a 5 s budget the exporter's own backoff (1 s, 2 s, ...) would still fit two
        # retries; a 2.5 s budget only fits them when it follows the RetryInfo delay.
        exporter = OTLPSpanExporter(endpoint=receiver.endpoints["grpc"], insecure=True, timeout=2.5)
        try:
            result = await asyncio.to_thread(exporter.export, spans)
        finally:
            exporter.shutdown()

    assert result is SpanExportResult.SUCCESS
    assert consumer.calls == 3
    assert [p.items for p in consumer.payloads] == [2]
    assert receiver.rejected == {"backpressure": 2}


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (ExportError("backend unreachable"), grpc.StatusCode.UNAVAILABLE, "export_failed"),
        (
            PermanentExportError("backend said 400"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "export_refused",
        ),
        (RuntimeError("bug"), grpc.StatusCode.INTERNAL, "internal"),
    ],
)
async def test_grpc_consumer_failures_map_to_status_codes(
    channel: Any, error: Exception, code: grpc.StatusCode, reason: str
) -> None:
    consumer = RecordingConsumer([error])
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(http=False)) as receiver:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel(receiver.endpoints["grpc"]), TRACE_EXPORT, _one_span_request("a"))

    assert caught.value.code() is code
    expected = "internal error in the collector" if reason == "internal" else str(error)
    assert caught.value.details() == expected
    assert receiver.rejected == {reason: 1}


async def test_grpc_signal_without_pipeline_gets_unimplemented(channel: Any) -> None:
    consumer = RecordingConsumer()
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "x"
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(http=False)) as receiver:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel(receiver.endpoints["grpc"]), LOGS_EXPORT, logs.SerializeToString())

    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.details() == "no logs pipeline uses receiver otlp"
    assert receiver.rejected == {"no_pipeline": 1}


async def test_grpc_bad_request_between_good_ones_does_not_affect_them(channel: Any) -> None:
    consumer = RecordingConsumer()
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(http=False)) as receiver:
        client = channel(receiver.endpoints["grpc"])
        await _call(client, TRACE_EXPORT, _one_span_request("first"))
        with pytest.raises(grpc.aio.AioRpcError):
            await _call(client, TRACE_EXPORT, b"\xff\xff\xff")
        await _call(client, TRACE_EXPORT, _one_span_request("second"))

    assert [s.name for s in received_spans(consumer.payloads)] == ["first", "second"]
    assert [p.data for p in consumer.payloads] == [
        _one_span_request("first"),
        _one_span_request("second"),
    ]
    assert receiver.rejected == {"bad_data": 1}
