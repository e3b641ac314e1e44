"""The otlp receiver over HTTP: protobuf from the real SDK exporters, hand-made OTLP/JSON,
gzip and deflate bodies, and the status, headers and google.rpc.Status body of every refusal."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
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
    wait_for,
)

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
LINK_SPAN_ID = "0102030405060708"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=SDK_TIMEOUT_SECONDS)
    ) as client:
        yield client


async def _post(
    session: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


def _one_span(name: str) -> bytes:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=bytes.fromhex(TRACE_ID), span_id=bytes.fromhex(SPAN_ID), name=name
    )
    return request.SerializeToString()


# --- what arrives -------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
async def test_http_protobuf_delivers_sdk_spans_with_ids_intact(compression: Compression) -> None:
    consumer = RecordingConsumer()
    spans = sdk_spans(3)
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        exporter = OTLPSpanExporter(
            endpoint=f"http://{receiver.endpoints['http']}/v1/traces",
            timeout=SDK_TIMEOUT_SECONDS,
            compression=compression,
        )
        try:
            result = await asyncio.to_thread(exporter.export, spans)
        finally:
            exporter.shutdown()

    assert result is SpanExportResult.SUCCESS
    assert [p.items for p in consumer.payloads] == [3]
    arrived = {span.name: span for span in received_spans(consumer.payloads)}
    assert sorted(arrived) == ["child-0", "child-1", "root"]
    for sent in spans:
        assert int.from_bytes(arrived[sent.name].trace_id, "big") == sent.context.trace_id
        assert int.from_bytes(arrived[sent.name].span_id, "big") == sent.context.span_id
    assert {kv.key: kv.value.double_value for kv in arrived["child-1"].attributes}["ratio"] == 0.25
    assert receiver.rejected == {}


async def test_http_protobuf_delivers_sdk_metrics_and_logs() -> None:
    metrics_consumer, logs_consumer = RecordingConsumer(), RecordingConsumer()
    records = sdk_logs()
    consumers = {Signal.METRICS: metrics_consumer, Signal.LOGS: logs_consumer}
    async with running_receiver(consumers, loopback_config(grpc=False)) as receiver:
        base = f"http://{receiver.endpoints['http']}"
        metric_exporter = OTLPMetricExporter(
            endpoint=f"{base}/v1/metrics", timeout=SDK_TIMEOUT_SECONDS
        )
        log_exporter = OTLPLogExporter(endpoint=f"{base}/v1/logs", timeout=SDK_TIMEOUT_SECONDS)
        try:
            metric_result = await asyncio.to_thread(metric_exporter.export, sdk_metrics())
            log_result = await asyncio.to_thread(log_exporter.export, records)
        finally:
            metric_exporter.shutdown()
            log_exporter.shutdown()

    assert metric_result is MetricExportResult.SUCCESS
    assert log_result is LogRecordExportResult.SUCCESS
    assert [p.items for p in metrics_consumer.payloads] == [4]
    metrics = Signal.METRICS.decode(metrics_consumer.payloads[0].data)
    names = sorted(m.name for m in metrics.resource_metrics[0].scope_metrics[0].metrics)
    assert names == ["latency", "requests", "temperature"]
    assert [p.items for p in logs_consumer.payloads] == [2]
    logs = Signal.LOGS.decode(logs_consumer.payloads[0].data)
    got = logs.resource_logs[0].scope_logs[0].log_records
    assert [r.body.string_value for r in got] == ["disk almost full", "done"]
    assert int.from_bytes(got[0].span_id, "big") == records[0].log_record.span_id


async def test_http_protobuf_payload_is_the_exact_body_and_answer_is_an_empty_response(
    session: aiohttp.ClientSession,
) -> None:
    consumer = RecordingConsumer()
    body = _one_span("exact")
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        status, headers, answer = await _post(
            session, f"http://{receiver.endpoints['http']}/v1/traces", body, PROTOBUF
        )

    assert (status, headers["Content-Type"], answer) == (200, "application/x-protobuf", b"")
    assert [(p.data, p.items) for p in consumer.payloads] == [(body, 1)]


_JSON_TRACES = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
            "scopeSpans": [
                {
                    "scope": {"name": "hand-made"},
                    "spans": [
                        {
                            "traceId": TRACE_ID.upper(),
                            "spanId": SPAN_ID,
                            "name": "GET /cart",
                            "kind": 2,
                            "startTimeUnixNano": "1700000000000000000",
                            "endTimeUnixNano": 1700000000500000000,
                            "attributes": [
                                {"key": "http.status_code", "value": {"intValue": "200"}}
                            ],
                            "links": [{"traceId": TRACE_ID, "spanId": LINK_SPAN_ID}],
                            "status": {"code": 1},
                        },
                        {
                            "traceId": TRACE_ID,
                            "spanId": LINK_SPAN_ID,
                            "parentSpanId": SPAN_ID,
                            "name": "db",
                        },
                    ],
                }
            ],
        }
    ]
}


def _expected_traces() -> Any:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "cart"
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "hand-made"
    span = scope_spans.spans.add(
        trace_id=bytes.fromhex(TRACE_ID),
        span_id=bytes.fromhex(SPAN_ID),
        name="GET /cart",
        kind=2,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_500_000_000,
    )
    span.attributes.add(key="http.status_code").value.int_value = 200
    span.links.add(trace_id=bytes.fromhex(TRACE_ID), span_id=bytes.fromhex(LINK_SPAN_ID))
    span.status.code = 1
    scope_spans.spans.add(
        trace_id=bytes.fromhex(TRACE_ID),
        span_id=bytes.fromhex(LINK_SPAN_ID),
        parent_span_id=bytes.fromhex(SPAN_ID),
        name="db",
    )
    return request


_JSON_METRICS = {
    "resourceMetrics": [
        {
            "scopeMetrics": [
                {
                    "metrics": [
                        {
                            "name": "requests",
                            "sum": {
                                "aggregationTemporality": 2,
                                "isMonotonic": True,
                                "dataPoints": [
                                    {
                                        "asInt": "7",
                                        "timeUnixNano": "5",
                                        "exemplars": [
                                            {"asInt": "1", "traceId": TRACE_ID, "spanId": SPAN_ID}
                                        ],
                                    },
                                    {"asInt": 3, "timeUnixNano": "5"},
                                ],
                            },
                        }
                    ]
                }
            ]
        }
    ]
}


def _expected_metrics() -> Any:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="requests")
    metric.sum.aggregation_temporality = 2
    metric.sum.is_monotonic = True
    point = metric.sum.data_points.add(as_int=7, time_unix_nano=5)
    point.exemplars.add(as_int=1, trace_id=bytes.fromhex(TRACE_ID), span_id=bytes.fromhex(SPAN_ID))
    metric.sum.data_points.add(as_int=3, time_unix_nano=5)
    return request


_JSON_LOGS = {
    "resourceLogs": [
        {
            "scopeLogs": [
                {
                    "logRecords": [
                        {
                            "timeUnixNano": "9",
                            "severityNumber": 17,
                            "severityText": "ERROR",
                            "body": {"stringValue": "payment failed"},
                            "traceId": TRACE_ID,
                            "spanId": SPAN_ID,
                        }
                    ]
                }
            ]
        }
    ]
}


def _expected_logs() -> Any:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add(
        time_unix_nano=9,
        severity_number=17,
        severity_text="ERROR",
        trace_id=bytes.fromhex(TRACE_ID),
        span_id=bytes.fromhex(SPAN_ID),
    ).body.string_value = "payment failed"
    return request


@pytest.mark.parametrize(
    ("signal", "document", "expected", "items"),
    [
        (Signal.TRACES, _JSON_TRACES, _expected_traces, 2),
        (Signal.METRICS, _JSON_METRICS, _expected_metrics, 2),
        (Signal.LOGS, _JSON_LOGS, _expected_logs, 1),
    ],
)
async def test_http_json_arrives_as_the_equivalent_protobuf(
    session: aiohttp.ClientSession, signal: Signal, document: Any, expected: Any, items: int
) -> None:
    # Given a receiver with a pipeline for the signal
    consumer = RecordingConsumer()
    async with running_receiver({signal: consumer}, loopback_config(grpc=False)) as receiver:
        # When a hand-made OTLP/JSON request (hex ids, int enums, 64-bit ints as strings) comes
        status, headers, answer = await _post(
            session,
            f"http://{receiver.endpoints['http']}/v1/{signal.value}",
            json.dumps(document),
            {"Content-Type": "application/json; charset=utf-8"},
        )

    # Then it is answered in JSON and handed on as the protobuf request it stands for
    assert (status, headers["Content-Type"], answer) == (200, "application/json", b"{}")
    assert [p.items for p in consumer.payloads] == [items]
    assert signal.decode(consumer.payloads[0].data) == expected()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        # Some clients send a raw deflate stream without the zlib wrapper.
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),
    ],
)
async def test_http_compressed_bodies_arrive_decompressed(
    session: aiohttp.ClientSession, encoding: str, compress: Any
) -> None:
    consumer = RecordingConsumer()
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        url = f"http://{receiver.endpoints['http']}/v1/traces"
        proto_status, _, _ = await _post(
            session, url, compress(_one_span("proto")), {**PROTOBUF, "Content-Encoding": encoding}
        )
        json_status, _, answer = await _post(
            session,
            url,
            compress(json.dumps(_JSON_TRACES).encode()),
            {**JSON, "Content-Encoding": encoding},
        )

    assert (proto_status, json_status, answer) == (200, 200, b"{}")
    assert [s.name for s in received_spans(consumer.payloads)] == ["proto", "GET /cart", "db"]
    assert consumer.payloads[0].data == _one_span("proto")


async def test_http_gzip_body_of_several_members_is_read_whole(
    session: aiohttp.ClientSession,
) -> None:
    consumer = RecordingConsumer()
    body = _one_span("two-members")
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        status, _, _ = await _post(
            session,
            f"http://{receiver.endpoints['http']}/v1/traces",
            gzip.compress(body[:10]) + gzip.compress(body[10:]),
            {**PROTOBUF, "Content-Encoding": "gzip"},
        )

    assert status == 200
    assert [p.data for p in consumer.payloads] == [body]


async def test_http_serves_the_configured_url_paths(session: aiohttp.ClientSession) -> None:
    consumer = RecordingConsumer()
    config = loopback_config(grpc=False, http_options={"traces_url_path": "/otlp/spans"})
    async with running_receiver({Signal.TRACES: consumer}, config) as receiver:
        base = f"http://{receiver.endpoints['http']}"
        moved, _, _ = await _post(session, f"{base}/otlp/spans", _one_span("moved"), PROTOBUF)
        old, _, _ = await _post(session, f"{base}/v1/traces", _one_span("old"), PROTOBUF)

    assert (moved, old) == (200, 404)
    assert [s.name for s in received_spans(consumer.payloads)] == ["moved"]


async def test_http_empty_request_succeeds_and_reaches_no_consumer(
    session: aiohttp.ClientSession,
) -> None:
    consumer = RecordingConsumer()
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        url = f"http://{receiver.endpoints['http']}/v1/traces"
        json_answer = await _post(session, url, "{}", JSON)
        proto_answer = await _post(session, url, b"", PROTOBUF)

    assert (json_answer[0], json_answer[2]) == (200, b"{}")
    assert (proto_answer[0], proto_answer[2]) == (200, b"")
    assert consumer.calls == 0


# --- what a refused sender is told --------------------------------------------------------


async def test_http_garbage_protobuf_gets_400_with_a_status_message(
    session: aiohttp.ClientSession,
) -> None:
    consumer = RecordingConsumer()
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        status, headers, body = await _post(
            session, f"http://{receiver.endpoints['http']}/v1/traces", b"\x0a\xff\xff\xff", PROTOBUF
        )

    assert (status, headers["Content-Type"]) == (400, "application/x-protobuf")
    error = parse_status(body)
    assert (error.code, error.message) == (
        3,
        "the body is not a valid ExportTraceServiceRequest: Wire format was corrupt",
    )
    assert consumer.calls == 0
    assert receiver.rejected == {"bad_data": 1}


async def test_http_bad_json_gets_400_with_a_json_status(session: aiohttp.ClientSession) -> None:
    consumer = RecordingConsumer()
    bad_id = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "not-hex"}]}]}]}
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        url = f"http://{receiver.endpoints['http']}/v1/traces"
        broken = await _post(session, url, '{"resourceSpans": [', JSON)
        wrong_id = await _post(session, url, json.dumps(bad_id), JSON)

    assert (broken[0], broken[1]["Content-Type"]) == (400, "application/json")
    assert json.loads(broken[2]) == {
        "code": 3,
        "message": "invalid JSON: Expecting value: line 1 column 20 (char 19)",
    }
    assert wrong_id[0] == 400
    assert json.loads(wrong_id[2])["message"] == (
        "invalid OTLP JSON: resourceSpans[0].scopeSpans[0].spans[0].traceId: "
        'must be 32 hex digits, got "not-hex"'
    )
    assert consumer.calls == 0
    assert receiver.rejected == {"bad_data": 2}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (
            {"Content-Type": "text/plain"},
            'Content-Type "text/plain" is not supported; use application/x-protobuf or application/json',
        ),
        (
            {},
            'Content-Type "application/octet-stream" is not supported; use application/x-protobuf or application/json',
        ),
        (
            {**PROTOBUF, "Content-Encoding": "br"},
            'Content-Encoding "br" is not supported; use gzip, deflate or none',
        ),
    ],
)
async def test_http_unsupported_media_gets_415(
    session: aiohttp.ClientSession, headers: dict[str, str], message: str
) -> None:
    consumer = RecordingConsumer()
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        status, answer_headers, body = await _post(
            session, f"http://{receiver.endpoints['http']}/v1/traces", _one_span("x"), headers
        )

    assert (status, answer_headers["Content-Type"]) == (415, "application/x-protobuf")
    assert parse_status(body).message == message
    assert consumer.calls == 0
    assert receiver.rejected == {"unsupported_media_type": 1}


async def test_http_body_over_the_limit_gets_413_declared_or_streamed(
    session: aiohttp.ClientSession,
) -> None:
    # Given a receiver that takes bodies up to 1 KiB
    consumer = RecordingConsumer()
    config = loopback_config(grpc=False, http_options={"max_request_body_size": 1024})
    big = _one_span("x" * 2000)

    async def chunks() -> AsyncIterator[bytes]:
        # Sent without Content-Length (chunked), so the limit is found while reading.
        for start in range(0, len(big), 500):
            yield big[start : start + 500]

    async with running_receiver({Signal.TRACES: consumer}, config) as receiver:
        url = f"http://{receiver.endpoints['http']}/v1/traces"
        declared = await _post(session, url, big, PROTOBUF)
        streamed = await _post(session, url, chunks(), PROTOBUF)
        fits = await _post(session, url, _one_span("small"), PROTOBUF)

    expected_message = "the body is over max_request_body_size (1024 bytes)"
    assert declared[0] == 413
    assert parse_status(declared[2]).message == (
        f"the body ({len(big)} bytes) is over max_request_body_size (1024 bytes)"
    )
    assert streamed[0] == 413
    assert parse_status(streamed[2]).message == expected_message
    assert fits[0] == 200
    assert [s.name for s in received_spans(consumer.payloads)] == ["small"]
    assert receiver.rejected == {"too_large": 2}


async def test_http_gzip_bomb_gets_413(session: aiohttp.ClientSession) -> None:
    # Given a 64 KiB limit and a gzip body of a few KiB that inflates to 16 MiB
    consumer = RecordingConsumer()
    config = loopback_config(grpc=False, http_options={"max_request_body_size": 64 * 1024})
    bomb = gzip.compress(b"\0" * (16 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    async with running_receiver({Signal.TRACES: consumer}, config) as receiver:
        status, _, body = await _post(
            session,
            f"http://{receiver.endpoints['http']}/v1/traces",
            bomb,
            {**PROTOBUF, "Content-Encoding": "gzip"},
        )

    assert status == 413
    assert parse_status(body).message == (
        "the gzip-decoded body is over max_request_body_size (65536 bytes)"
    )
    assert receiver.rejected == {"too_large": 1}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (gzip.compress(_one_span("cut"))[:-12], "the gzip body is truncated"),
        (
            b"not gzip at all",
            "the body is not valid gzip: Error -3 while decompressing data: incorrect header check",
        ),
    ],
)
async def test_http_broken_gzip_gets_400(
    session: aiohttp.ClientSession, body: bytes, message: str
) -> None:
    consumer = RecordingConsumer()
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        status, _, answer = await _post(
            session,
            f"http://{receiver.endpoints['http']}/v1/traces",
            body,
            {**PROTOBUF, "Content-Encoding": "gzip"},
        )

    assert (status, parse_status(answer).message) == (400, message)
    assert consumer.calls == 0


async def test_http_wrong_method_gets_405_and_unknown_path_404(
    session: aiohttp.ClientSession,
) -> None:
    consumer = RecordingConsumer()
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        base = f"http://{receiver.endpoints['http']}"
        async with session.get(f"{base}/v1/traces") as response:
            get = response.status, response.headers.get("Allow"), await response.read()
        async with session.put(
            f"{base}/v1/traces", data=_one_span("x"), headers=PROTOBUF
        ) as response:
            put = response.status, response.headers.get("Allow")
        unknown = await _post(session, f"{base}/v2/foo", _one_span("x"), JSON)

    assert get[:2] == (405, "POST")
    assert parse_status(get[2]).message == "GET is not allowed; use POST"
    assert put == (405, "POST")
    assert unknown[0] == 404
    assert json.loads(unknown[2])["message"] == (
        "/v2/foo is not an OTLP path; use /v1/traces, /v1/metrics, /v1/logs"
    )
    assert consumer.calls == 0
    assert receiver.rejected == {"method_not_allowed": 2, "not_found": 1}


async def test_http_signal_without_pipeline_gets_404(session: aiohttp.ClientSession) -> None:
    consumer = RecordingConsumer()
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        status, _, body = await _post(
            session, f"http://{receiver.endpoints['http']}/v1/logs", "{}", JSON
        )

    assert status == 404
    assert json.loads(body) == {"code": 12, "message": "no logs pipeline uses receiver otlp"}
    assert receiver.rejected == {"no_pipeline": 1}


@pytest.mark.parametrize(("retry_after", "header"), [(2.5, "3"), (0.2, "1"), (0.0, "1")])
async def test_http_backpressure_gets_429_with_retry_after_and_retry_info(
    session: aiohttp.ClientSession, retry_after: float, header: str
) -> None:
    # Given a consumer whose buffer is full, twice
    consumer = RecordingConsumer(
        [
            BackpressureError("buffer full", retry_after),
            BackpressureError("buffer full", retry_after),
        ]
    )
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        url = f"http://{receiver.endpoints['http']}/v1/traces"
        # When a protobuf and a JSON request arrive
        proto = await _post(session, url, _one_span("a"), PROTOBUF)
        as_json = await _post(session, url, json.dumps(_JSON_TRACES), JSON)

    # Then both get 429, Retry-After in whole seconds (at least 1), and a Status holding a
    # RetryInfo with the exact delay, in the request's encoding
    assert (proto[0], proto[1]["Retry-After"]) == (429, header)
    assert (as_json[0], as_json[1]["Retry-After"]) == (429, header)
    proto_status = parse_status(proto[2])
    assert (proto_status.code, proto_status.message) == (8, "buffer full")
    assert retry_delay_of(proto_status) == retry_after
    json_status = json_format.Parse(as_json[2], status_pb2.Status())
    assert json_status == proto_status
    assert consumer.payloads == []
    assert receiver.rejected == {"backpressure": 2}


async def test_http_sdk_exporter_waits_retry_after_then_delivers_once() -> None:
    consumer = RecordingConsumer([BackpressureError("buffer full", retry_after=0.1)])
    spans = sdk_spans(2)
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        exporter = OTLPSpanExporter(
            endpoint=f"http://{receiver.endpoints['http']}/v1/traces", timeout=SDK_TIMEOUT_SECONDS
        )
        try:
            result = await asyncio.to_thread(exporter.export, spans)
        finally:
            exporter.shutdown()

    assert result is SpanExportResult.SUCCESS
    assert consumer.calls == 2
    assert [p.items for p in consumer.payloads] == [2]
    assert receiver.rejected == {"backpressure": 1}


@pytest.mark.parametrize(
    ("error", "status", "reason", "retry_after"),
    [
        (ExportError("backend unreachable"), 503, "export_failed", None),
        (ExportError("backend said 503", retry_after=4), 503, "export_failed", "4"),
        (PermanentExportError("backend said 400"), 400, "export_refused", None),
        (RuntimeError("bug"), 500, "internal", None),
    ],
)
async def test_http_consumer_failures_map_to_status_codes(
    session: aiohttp.ClientSession,
    error: Exception,
    status: int,
    reason: str,
    retry_after: str | None,
) -> None:
    consumer = RecordingConsumer([error])
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        answer = await _post(
            session, f"http://{receiver.endpoints['http']}/v1/traces", _one_span("a"), PROTOBUF
        )

    assert answer[0] == status
    assert answer[1].get("Retry-After") == retry_after
    expected = "internal error in the collector" if reason == "internal" else str(error)
    assert parse_status(answer[2]).message == expected
    assert receiver.rejected == {reason: 1}


async def test_http_bad_request_between_good_ones_does_not_affect_them(
    session: aiohttp.ClientSession,
) -> None:
    consumer = RecordingConsumer()
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        url = f"http://{receiver.endpoints['http']}/v1/traces"
        first = await _post(session, url, _one_span("first"), PROTOBUF)
        bad = await _post(session, url, b"\xff" * 64, PROTOBUF)
        second = await _post(session, url, json.dumps(_JSON_TRACES), JSON)

    assert (first[0], bad[0], second[0]) == (200, 400, 200)
    assert [s.name for s in received_spans(consumer.payloads)] == ["first", "GET /cart", "db"]
    assert consumer.payloads[0].data == _one_span("first")
    assert receiver.rejected == {"bad_data": 1}


async def test_http_sender_leaving_mid_body_is_counted_and_nothing_arrives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = RecordingConsumer()
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        host, _, port = receiver.endpoints["http"].rpartition(":")
        # Given a sender that promises 1000 bytes, sends 10 and hangs up
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/traces HTTP/1.1\r\nHost: collector\r\n"
            b"Content-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n0123456789"
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

        # Then the receiver counts it, without an error in the log
        await wait_for(lambda: receiver.rejected == {"disconnected": 1})

    assert consumer.calls == 0
    assert [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []


async def test_http_answers_expect_100_continue_before_the_body_is_sent() -> None:
    consumer = RecordingConsumer()
    body = _one_span("after continue")
    async with running_receiver({Signal.TRACES: consumer}, loopback_config(grpc=False)) as receiver:
        host, _, port = receiver.endpoints["http"].rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            # Given a sender (like curl) that asks before sending its body
            writer.write(
                b"POST /v1/traces HTTP/1.1\r\nHost: collector\r\nExpect: 100-continue\r\n"
                b"Content-Type: application/x-protobuf\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            await writer.drain()
            # Then it is told to go on, and its body is taken
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            writer.write(body)
            await writer.drain()
            final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        finally:
            writer.close()
            await writer.wait_closed()

    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    assert [p.data for p in consumer.payloads] == [body]
