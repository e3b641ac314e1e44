"""The backend's OTLP/JSON codec (backend._otlpjson): it decodes the OTLP/HTTP JSON bodies the
backend receives and the OTLP JSON lines the ledger reads from the collector's spill, and tests
encode JSON bodies with it. Hex ids wherever they occur, enum and integer forms, unknown fields,
and clear errors for bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from backend import _otlpjson
from backend._signals import Signal
from tests.fixtures.otlp import count_items

TRACE_ID_HEX = "5b8efff798038103d269b633813fc60c"
SPAN_ID_HEX = "eee19b7ec3c1b174"
PARENT_ID_HEX = "0102030405060708"
LINK_TRACE_HEX = "000102030405060708090a0b0c0d0e0f"
LINK_SPAN_HEX = "f0f1f2f3f4f5f6f7"


def _spans_doc(span: dict[str, Any]) -> str:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})


def _only_span(request: Any) -> Any:
    return request.resource_spans[0].scope_spans[0].spans[0]


def _trace_request() -> Any:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "checkout"
    resource_spans.schema_url = "https://opentelemetry.io/schemas/1.21.0"
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "tests"
    scope_spans.scope.version = "1.0"
    span = scope_spans.spans.add(
        trace_id=bytes.fromhex(TRACE_ID_HEX),
        span_id=bytes.fromhex(SPAN_ID_HEX),
        parent_span_id=bytes.fromhex(PARENT_ID_HEX),
        name="GET /cart",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=1_700_000_000_123_456_789,
        end_time_unix_nano=18_446_744_073_709_551_615,  # largest fixed64
        trace_state="vendor=1",
        flags=0x101,
        dropped_attributes_count=2,
    )
    span.attributes.add(key="http.status_code").value.int_value = -9_007_199_254_740_993
    span.attributes.add(key="ratio").value.double_value = 0.25
    span.attributes.add(key="ok").value.bool_value = True
    span.attributes.add(key="raw").value.bytes_value = b"\x00\xffbytes"
    span.attributes.add(key="list").value.array_value.values.add().string_value = "x"
    span.attributes.add(key="map").value.kvlist_value.values.add(
        key="inner", value=AnyValue(int_value=7)
    )
    span.events.add(time_unix_nano=5, name="retry").attributes.add(key="n").value.int_value = 1
    span.links.add(
        trace_id=bytes.fromhex(LINK_TRACE_HEX),
        span_id=bytes.fromhex(LINK_SPAN_HEX),
        trace_state="a=b",
        flags=1,
    )
    span.status.code = Status.STATUS_CODE_ERROR
    span.status.message = "boom\nsecond line"
    return request


def _metrics_request() -> Any:
    request = ExportMetricsServiceRequest()
    scope_metrics = request.resource_metrics.add().scope_metrics.add()
    exemplar_ids = {"trace_id": bytes.fromhex(TRACE_ID_HEX), "span_id": bytes.fromhex(SPAN_ID_HEX)}

    gauge = scope_metrics.metrics.add(name="temperature", unit="Cel")
    point = gauge.gauge.data_points.add(time_unix_nano=10, as_double=21.5)
    point.exemplars.add(as_double=21.5, time_unix_nano=9, **exemplar_ids)

    counter = scope_metrics.metrics.add(name="requests")
    counter.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    counter.sum.is_monotonic = True
    point = counter.sum.data_points.add(time_unix_nano=10, as_int=12)
    point.exemplars.add(as_int=3, **exemplar_ids)

    histogram = scope_metrics.metrics.add(name="latency")
    histogram.histogram.aggregation_temporality = 1
    point = histogram.histogram.data_points.add(
        count=3, sum=1.5, bucket_counts=[1, 2], explicit_bounds=[0.5]
    )
    point.exemplars.add(as_double=0.7, **exemplar_ids)

    expo = scope_metrics.metrics.add(name="size")
    point = expo.exponential_histogram.data_points.add(count=2, scale=3, zero_count=1)
    point.positive.bucket_counts.extend([1])
    point.exemplars.add(as_double=4.0, **exemplar_ids)

    summary = scope_metrics.metrics.add(name="quantiles")
    summary.summary.data_points.add(count=4, sum=8.0).quantile_values.add(quantile=0.5, value=2)
    return request


def _logs_request() -> Any:
    request = ExportLogsServiceRequest()
    scope_logs = request.resource_logs.add().scope_logs.add()
    scope_logs.log_records.add(
        time_unix_nano=1,
        observed_time_unix_nano=2,
        severity_number=SeverityNumber.SEVERITY_NUMBER_WARN,
        severity_text="WARN",
        body=AnyValue(string_value="disk almost full"),
        trace_id=bytes.fromhex(TRACE_ID_HEX),
        span_id=bytes.fromhex(SPAN_ID_HEX),
        flags=1,
        event_name="disk.warning",
    )
    return request


@pytest.mark.parametrize(
    ("signal", "make"),
    [
        (Signal.TRACES, _trace_request),
        (Signal.METRICS, _metrics_request),
        (Signal.LOGS, _logs_request),
    ],
)
def test_encode_then_decode_gives_back_the_same_request(signal: Signal, make: Any) -> None:
    # Given a request using every id location of its signal and many field types
    request = make()

    # When it goes through OTLP/JSON and back
    decoded = _otlpjson.decode(signal, _otlpjson.encode(signal, request))

    # Then nothing is lost or changed, down to the serialized bytes
    assert decoded == request
    assert decoded.SerializeToString() == request.SerializeToString()


def test_encode_writes_span_ids_as_lowercase_hex_and_enums_as_integers() -> None:
    document = json.loads(_otlpjson.encode(Signal.TRACES, _trace_request()))

    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == TRACE_ID_HEX
    assert span["spanId"] == SPAN_ID_HEX
    assert span["parentSpanId"] == PARENT_ID_HEX
    assert span["links"][0]["traceId"] == LINK_TRACE_HEX
    assert span["links"][0]["spanId"] == LINK_SPAN_HEX
    assert span["kind"] == 2
    assert span["status"] == {"code": 2, "message": "boom\nsecond line"}
    # 64-bit integers are decimal strings, per the protobuf JSON mapping.
    assert span["startTimeUnixNano"] == "1700000000123456789"
    assert span["endTimeUnixNano"] == "18446744073709551615"
    assert span["attributes"][0] == {
        "key": "http.status_code",
        "value": {"intValue": "-9007199254740993"},
    }
    # Bytes that are not ids stay base64.
    assert span["attributes"][3] == {"key": "raw", "value": {"bytesValue": "AP9ieXRlcw=="}}


def test_encode_writes_exemplar_and_log_record_ids_as_hex() -> None:
    metrics = json.loads(_otlpjson.encode(Signal.METRICS, _metrics_request()))
    logs = json.loads(_otlpjson.encode(Signal.LOGS, _logs_request()))

    kinds = ("gauge", "sum", "histogram", "exponentialHistogram")
    for metric, kind in zip(
        metrics["resourceMetrics"][0]["scopeMetrics"][0]["metrics"], kinds, strict=False
    ):
        exemplar = metric[kind]["dataPoints"][0]["exemplars"][0]
        assert (exemplar["traceId"], exemplar["spanId"]) == (TRACE_ID_HEX, SPAN_ID_HEX)
    record = logs["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert (record["traceId"], record["spanId"]) == (TRACE_ID_HEX, SPAN_ID_HEX)
    assert record["severityNumber"] == 13


def test_decode_reads_uppercase_hex_and_empty_ids() -> None:
    body = _spans_doc(
        {"traceId": TRACE_ID_HEX.upper(), "spanId": SPAN_ID_HEX.upper(), "parentSpanId": ""}
    )

    span = _only_span(_otlpjson.decode(Signal.TRACES, body))

    assert span.trace_id == bytes.fromhex(TRACE_ID_HEX)
    assert span.span_id == bytes.fromhex(SPAN_ID_HEX)
    assert span.parent_span_id == b""


def test_decode_accepts_snake_case_keys_everywhere() -> None:
    body = json.dumps(
        {
            "resource_spans": [
                {
                    "scope_spans": [
                        {
                            "spans": [
                                {
                                    "trace_id": TRACE_ID_HEX,
                                    "span_id": SPAN_ID_HEX,
                                    "parent_span_id": PARENT_ID_HEX,
                                    "start_time_unix_nano": "12",
                                    "links": [
                                        {"trace_id": LINK_TRACE_HEX, "span_id": LINK_SPAN_HEX}
                                    ],
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    )

    span = _only_span(_otlpjson.decode(Signal.TRACES, body))

    assert span.trace_id.hex() == TRACE_ID_HEX
    assert span.span_id.hex() == SPAN_ID_HEX
    assert span.parent_span_id.hex() == PARENT_ID_HEX
    assert span.start_time_unix_nano == 12
    assert (span.links[0].trace_id.hex(), span.links[0].span_id.hex()) == (
        LINK_TRACE_HEX,
        LINK_SPAN_HEX,
    )


def test_decode_reads_exemplar_ids_in_every_metric_kind_with_snake_case() -> None:
    exemplar = {"trace_id": TRACE_ID_HEX, "spanId": SPAN_ID_HEX, "asInt": "5"}
    point = {"data_points": [{"exemplars": [exemplar]}]}
    body = json.dumps(
        {
            "resourceMetrics": [
                {
                    "scope_metrics": [
                        {
                            "metrics": [
                                {"name": "g", "gauge": point},
                                {"name": "s", "sum": point},
                                {"name": "h", "histogram": point},
                                {"name": "e", "exponential_histogram": point},
                            ]
                        }
                    ]
                }
            ]
        }
    )

    request = _otlpjson.decode(Signal.METRICS, body)

    metrics = request.resource_metrics[0].scope_metrics[0].metrics
    points = [
        metrics[0].gauge.data_points[0],
        metrics[1].sum.data_points[0],
        metrics[2].histogram.data_points[0],
        metrics[3].exponential_histogram.data_points[0],
    ]
    for data_point in points:
        assert data_point.exemplars[0].trace_id.hex() == TRACE_ID_HEX
        assert data_point.exemplars[0].span_id.hex() == SPAN_ID_HEX
        assert data_point.exemplars[0].as_int == 5
    assert count_items(Signal.METRICS, request) == 4


def test_decode_reads_log_record_ids() -> None:
    body = json.dumps(
        {
            "resourceLogs": [
                {
                    "scopeLogs": [
                        {
                            "logRecords": [
                                {
                                    "traceId": TRACE_ID_HEX,
                                    "span_id": SPAN_ID_HEX,
                                    "body": {"stringValue": "hi"},
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    )

    record = _otlpjson.decode(Signal.LOGS, body).resource_logs[0].scope_logs[0].log_records[0]

    assert (record.trace_id.hex(), record.span_id.hex()) == (TRACE_ID_HEX, SPAN_ID_HEX)
    assert record.body.string_value == "hi"


@pytest.mark.parametrize(
    ("kind", "status", "expected_kind", "expected_status"),
    [
        (3, 2, Span.SPAN_KIND_CLIENT, Status.STATUS_CODE_ERROR),
        ("SPAN_KIND_CONSUMER", "STATUS_CODE_OK", Span.SPAN_KIND_CONSUMER, Status.STATUS_CODE_OK),
    ],
)
def test_decode_accepts_enums_as_integers_or_names(
    kind: Any, status: Any, expected_kind: int, expected_status: int
) -> None:
    span = _only_span(
        _otlpjson.decode(Signal.TRACES, _spans_doc({"kind": kind, "status": {"code": status}}))
    )

    assert span.kind == expected_kind
    assert span.status.code == expected_status


@pytest.mark.parametrize("value", ["1700000000123456789", 1700000000123456789])
def test_decode_accepts_64_bit_integers_as_strings_or_numbers(value: Any) -> None:
    body = _spans_doc(
        {"startTimeUnixNano": value, "attributes": [{"key": "n", "value": {"intValue": value}}]}
    )

    span = _only_span(_otlpjson.decode(Signal.TRACES, body))

    assert span.start_time_unix_nano == 1_700_000_000_123_456_789
    assert span.attributes[0].value.int_value == 1_700_000_000_123_456_789


def test_decode_ignores_unknown_fields_at_every_level() -> None:
    body = json.dumps(
        {
            "futureTopLevel": {"x": [1, 2]},
            "resourceSpans": [
                {
                    "newResourceField": 1,
                    "scopeSpans": [
                        {
                            "scope": {"name": "s", "unknown": None},
                            "spans": [
                                {"name": "op", "spanId": SPAN_ID_HEX, "shinyNewField": {"a": "b"}}
                            ],
                        }
                    ],
                }
            ],
        }
    )

    request = _otlpjson.decode(Signal.TRACES, body)

    expected = ExportTraceServiceRequest()
    scope_spans = expected.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = "s"
    scope_spans.spans.add(name="op", span_id=bytes.fromhex(SPAN_ID_HEX))
    assert request == expected


def test_decode_takes_null_as_absent() -> None:
    request = _otlpjson.decode(Signal.TRACES, '{"resourceSpans": null}')

    assert request == ExportTraceServiceRequest()


@pytest.mark.parametrize(
    ("span", "message"),
    [
        (
            {"traceId": "5b8efff798038103d269b633813fc60z"},
            'resourceSpans[0].scopeSpans[0].spans[0].traceId: must be 32 hex digits, got "5b8efff798038103d269b633813fc60z"',
        ),
        (
            {"traceId": "5b8efff798038103d269b633813fc6"},
            'resourceSpans[0].scopeSpans[0].spans[0].traceId: must be 32 hex digits, got "5b8efff798038103d269b633813fc6"',
        ),
        (
            {"spanId": "eee19b7e c3c1b17"},
            'resourceSpans[0].scopeSpans[0].spans[0].spanId: must be 16 hex digits, got "eee19b7e c3c1b17"',
        ),
        (
            # The standard protobuf JSON mapping would write base64; OTLP/JSON does not.
            {"span_id": "7uGbfsPBsXQ="},
            'resourceSpans[0].scopeSpans[0].spans[0].span_id: must be 16 hex digits, got "7uGbfsPBsXQ="',
        ),
        (
            {"parentSpanId": 42},
            "resourceSpans[0].scopeSpans[0].spans[0].parentSpanId: must be a hex string, got 42",
        ),
        (
            {"links": [{"traceId": TRACE_ID_HEX}, {"traceId": "xyz"}]},
            'resourceSpans[0].scopeSpans[0].spans[0].links[1].traceId: must be 32 hex digits, got "xyz"',
        ),
    ],
)
def test_decode_refuses_bad_ids_naming_where_they_are(span: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        _otlpjson.decode(Signal.TRACES, _spans_doc(span))

    assert str(caught.value) == f"invalid OTLP JSON: {message}"


def test_decode_refuses_a_bad_exemplar_id_naming_its_path() -> None:
    body = json.dumps(
        {
            "resourceMetrics": [
                {
                    "scopeMetrics": [
                        {
                            "metrics": [
                                {"sum": {"dataPoints": [{}, {"exemplars": [{"spanId": "00"}]}]}}
                            ]
                        }
                    ]
                }
            ]
        }
    )

    with pytest.raises(ValueError) as caught:
        _otlpjson.decode(Signal.METRICS, body)

    assert str(caught.value) == (
        "invalid OTLP JSON: resourceMetrics[0].scopeMetrics[0].metrics[0].sum.dataPoints[1]"
        '.exemplars[0].spanId: must be 16 hex digits, got "00"'
    )


@pytest.mark.parametrize(
    ("span", "message"),
    [
        (
            {"droppedAttributesCount": 1.5},
            "invalid OTLP JSON: resourceSpans[0].scopeSpans[0].spans[0].droppedAttributesCount: "
            "Couldn't parse integer: 1.5",
        ),
        (
            {"droppedAttributesCount": True},
            "invalid OTLP JSON: resourceSpans[0].scopeSpans[0].spans[0].droppedAttributesCount: "
            "Bool value True is not acceptable for integer field",
        ),
        (
            {"startTimeUnixNano": "soon"},
            "invalid OTLP JSON: resourceSpans.scopeSpans.spans.startTimeUnixNano: "
            "invalid literal for int() with base 10: 'soon'",
        ),
        (
            {"name": 5},
            "invalid OTLP JSON: resourceSpans.scopeSpans.spans.name: "
            "expected string or bytes-like object, got 'int'",
        ),
    ],
)
def test_decode_refuses_wrong_types_naming_the_field(span: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        _otlpjson.decode(Signal.TRACES, _spans_doc(span))

    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[]", "invalid OTLP JSON: expected an object, got list"),
        ('"resourceSpans"', "invalid OTLP JSON: expected an object, got str"),
        (
            "{",
            "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        ("", "invalid JSON: Expecting value: line 1 column 1 (char 0)"),
        (
            b"\xff{}",
            "invalid JSON: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
        ),
    ],
)
def test_decode_refuses_what_is_not_a_json_object(body: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        _otlpjson.decode(Signal.TRACES, body)

    assert str(caught.value) == message


def test_decode_refuses_a_number_where_a_list_belongs() -> None:
    with pytest.raises(ValueError) as caught:
        _otlpjson.decode(Signal.TRACES, '{"resourceSpans": 5}')

    assert str(caught.value).startswith("invalid OTLP JSON: resourceSpans: repeated field")


def _nested_attribute(depth: int) -> str:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(depth):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return _spans_doc({"attributes": [{"key": "a", "value": value}]})


def test_decode_accepts_nesting_the_binary_parser_accepts_and_refuses_deeper() -> None:
    # Given attribute values nested as deep as protobuf's binary parser allows (31 maps
    # inside a span's attribute), and one level more
    deepest = _otlpjson.decode(Signal.TRACES, _nested_attribute(31))

    # Then the deepest one decodes and re-parses from its serialized form
    reparsed = Signal.TRACES.decode(deepest.SerializeToString())
    assert reparsed == deepest
    # And one level more is refused with a clear message
    with pytest.raises(ValueError) as caught:
        _otlpjson.decode(Signal.TRACES, _nested_attribute(32))
    assert str(caught.value) == "invalid OTLP JSON: messages nested more than 100 deep"


def test_decode_refuses_absurd_json_nesting_without_crashing() -> None:
    with pytest.raises(ValueError) as caught:
        _otlpjson.decode(Signal.TRACES, '{"resourceSpans": ' + "[" * 200_000 + "]" * 200_000 + "}")

    assert str(caught.value) == "invalid JSON: nested too deeply"

