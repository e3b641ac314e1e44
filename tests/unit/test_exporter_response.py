"""Reading backend answers: partial success (protobuf and JSON), google.rpc.Status with
RetryInfo on the wire, error bodies, and keeping header values out of error text."""

from __future__ import annotations

import json

import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collector._rpcstatus import RpcStatus, decode_status, encode_status
from collector._signals import Signal
from collector.exporters._response import (
    PartialSuccess,
    error_body_message,
    one_line,
    parse_partial_success,
    scrub_secrets,
    secret_values,
)


def test_partial_success_counts_rejected_items_of_each_signal_in_protobuf() -> None:
    traces = ExportTraceServiceResponse()
    traces.partial_success.rejected_spans = 3
    traces.partial_success.error_message = "span too large"
    metrics = ExportMetricsServiceResponse()
    metrics.partial_success.rejected_data_points = 4
    logs = ExportLogsServiceResponse()
    logs.partial_success.rejected_log_records = 5
    assert parse_partial_success(
        Signal.TRACES, traces.SerializeToString(), json_body=False
    ) == PartialSuccess(3, "span too large")
    assert parse_partial_success(
        Signal.METRICS, metrics.SerializeToString(), json_body=False
    ) == PartialSuccess(4, "")
    assert parse_partial_success(
        Signal.LOGS, logs.SerializeToString(), json_body=False
    ) == PartialSuccess(5, "")


def test_partial_success_in_json_takes_int64_as_string_or_number() -> None:
    body = json.dumps({"partialSuccess": {"rejectedSpans": "2", "errorMessage": "dropped"}})
    assert parse_partial_success(Signal.TRACES, body.encode(), json_body=True) == PartialSuccess(
        2, "dropped"
    )
    body = json.dumps({"partialSuccess": {"rejectedLogRecords": 7}})
    assert parse_partial_success(Signal.LOGS, body.encode(), json_body=True) == PartialSuccess(7)


@pytest.mark.parametrize("body", [b"", b"{}", b"not json", b"\xff\x00garbage"])
def test_empty_or_unreadable_success_body_is_full_success(body: bytes) -> None:
    assert parse_partial_success(Signal.TRACES, body, json_body=True) == PartialSuccess()
    assert parse_partial_success(Signal.TRACES, body, json_body=False) == PartialSuccess()


def test_status_with_retry_info_reads_what_googleapis_protos_write() -> None:
    # Given a google.rpc.Status with a RetryInfo detail, built by the official classes
    retry_info = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000)
    )
    status = status_pb2.Status(code=8, message="slow down")
    status.details.add().Pack(retry_info)
    # When it is decoded by hand, then code, message and delay come out
    assert decode_status(status.SerializeToString()) == RpcStatus(8, "slow down", 2.5)


def test_status_written_by_hand_reads_back_with_googleapis_protos() -> None:
    data = encode_status(14, "try later", 0.25)
    status = status_pb2.Status()
    status.ParseFromString(data)
    assert (status.code, status.message) == (14, "try later")
    retry_info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry_info)
    assert (retry_info.retry_delay.seconds, retry_info.retry_delay.nanos) == (0, 250_000_000)


def test_status_without_retry_info_has_no_delay() -> None:
    other = status_pb2.Status(code=3, message="bad")
    other.details.add().Pack(error_details_pb2.ErrorInfo(reason="x"))
    assert decode_status(other.SerializeToString()) == RpcStatus(3, "bad", None)
    assert decode_status(b"") == RpcStatus()


@pytest.mark.parametrize(
    "data",
    [b"\x0a\x05ab", b"\x08", b"\x0f\x01", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"],
)
def test_malformed_status_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_status(data)


def test_error_body_message_from_protobuf_json_and_text() -> None:
    proto = status_pb2.Status(code=3, message="invalid span").SerializeToString()
    assert error_body_message(proto, "application/x-protobuf") == "invalid span"
    assert error_body_message(b'{"code": 3, "message": "bad\\nrequest"}', "application/json") == (
        "bad request"
    )
    assert error_body_message(b"Service  Unavailable\n", "text/plain; charset=utf-8") == (
        "Service Unavailable"
    )
    assert error_body_message(b"\x00\x01", "application/octet-stream") == ""


def test_one_line_folds_whitespace_and_cuts_long_text() -> None:
    assert one_line("a\n b\t\tc") == "a b c"
    long = one_line("x" * 500)
    assert len(long) == 200
    assert long.endswith("...")


def test_secrets_are_scrubbed_from_error_text_longest_first() -> None:
    secrets = secret_values({"x-api-key": "abc123", "x-team": "abc123456", "x-flag": "1"})
    assert secrets == frozenset({"abc123", "abc123456"})
    assert scrub_secrets("bad key abc123456 and abc123 (1)", secrets) == "bad key *** and *** (1)"
