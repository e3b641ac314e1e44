"""The collector binary as a process: what it takes and refuses, and that nothing leaves before
Drain and all of it after.

Senders are the OpenTelemetry Python SDK's OTLP exporters (gRPC and http/protobuf), the
OpenTelemetry JS SDK's (http/json, http/protobuf, gRPC), and the raw OTLP client of
tests/fixtures/otlp.py for what no SDK sends; the backends are the local OTLP test backend and
loopback stand-ins for X-Ray and CloudWatch Logs; drains go through the control endpoint.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from backend import FaultSpec
from backend._signals import Signal
from bench._deploy import free_port
from tests.fixtures.aws import AWS_ENV, FakeAws
from tests.fixtures.backend import ThreadBackend
from tests.fixtures.collector import BINARY, ROOT, CollectorProcess, basic_config
from tests.fixtures.node import ASSETS as JS_ASSETS
from tests.fixtures.node import install_js_sdk, node_version
from tests.fixtures.otlp import (
    JSON,
    PROTOBUF,
    Payload,
    grpc_export,
    grpc_method,
    grpc_send,
    http_export,
    http_send,
    retry_info,
    trace_payload,
)

RESOURCE = Resource.create({"service.name": "checkout"})


def otlphttp_exporter(backend: ThreadBackend, extra: str = "") -> str:
    return f"""\
  otlphttp:
    endpoint: {backend.http_endpoint}
    compression: none
    retry_on_failure:
      initial_interval: 10ms
      max_interval: 50ms
{extra}"""


@pytest.fixture
def backend() -> Iterator[ThreadBackend]:
    with ThreadBackend() as running:
        yield running


def start_collector(backend: ThreadBackend, exporters: str | None = None, processors: str = "",
                    *, grpc_settings: str = "", http_settings: str = "",
                    **kwargs: Any) -> CollectorProcess:
    """The collector with the otlp receiver on free ports and an otlphttp exporter to
    `backend`; `grpc_settings` and `http_settings` are further lines of each protocol's
    receiver config (indented for it)."""
    grpc_port, http_port = free_port(), free_port()
    config = basic_config(
        grpc_port, http_port, exporters or otlphttp_exporter(backend), "otlphttp",
        processors=processors,
    )
    for port, settings in ((grpc_port, grpc_settings), (http_port, http_settings)):
        line = f"        endpoint: 127.0.0.1:{port}\n"
        config = config.replace(line, line + settings)
    return CollectorProcess(config, grpc_port=grpc_port, http_port=http_port, **kwargs)


@dataclass
class Sdk:
    """Tracer, meter and logger providers exporting to one collector over `protocol`."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    logger: logging.Logger

    def emit(self, spans: int, tag: str) -> None:
        tracer = self.tracer_provider.get_tracer("test")
        for i in range(spans):
            with tracer.start_as_current_span(f"{tag}-{i}", attributes={"payment.id": f"{tag}-{i}"}):
                pass
        counter = self.meter_provider.get_meter("test").create_counter("payments")
        counter.add(3, {"tag": tag})
        self.logger.warning("payment %s done", tag)

    def flush(self) -> None:
        assert self.tracer_provider.force_flush(5000)
        assert self.meter_provider.force_flush(5000)
        assert self.logger_provider.force_flush(5000)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()
        logging.getLogger(f"sdk-{id(self)}").handlers.clear()


def make_sdk(collector: CollectorProcess, protocol: str) -> Sdk:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        args: dict[str, Any] = {"endpoint": collector.grpc_endpoint, "insecure": True, "timeout": 5}
        spans, metrics, logs = OTLPSpanExporter(**args), OTLPMetricExporter(**args), OTLPLogExporter(**args)
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HLog
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HMetric,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HSpan

        base = collector.http_endpoint
        spans = HSpan(endpoint=f"{base}/v1/traces", timeout=5)
        metrics = HMetric(endpoint=f"{base}/v1/metrics", timeout=5)
        logs = HLog(endpoint=f"{base}/v1/logs", timeout=5)
    tracer_provider = TracerProvider(resource=RESOURCE)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = PeriodicExportingMetricReader(metrics, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    logger_provider = LoggerProvider(resource=RESOURCE)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    sdk = Sdk(tracer_provider, meter_provider, logger_provider, logging.getLogger("placeholder"))
    logger = logging.getLogger(f"sdk-{id(sdk)}")
    logger.propagate = False
    logger.addHandler(LoggingHandler(logger_provider=logger_provider))
    sdk.logger = logger
    return sdk


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_nothing_reaches_the_backend_before_drain_and_everything_once_after(backend, protocol):
    with start_collector(backend) as collector:
        sdk = make_sdk(collector, protocol)
        try:
            # Given the function's SDK has exported traces, metrics and logs
            sdk.emit(5, "inv1")
            sdk.flush()
            status = collector.status()
            assert (status.accepted_traces, status.accepted_metrics, status.accepted_logs) == (5, 1, 1)
            assert (status.traces.buffered, status.metrics.buffered, status.logs.buffered) == (5, 1, 1)
            # Then nothing has reached the backend yet
            assert {s: backend.stats()[s].items for s in ("traces", "metrics", "logs")} == {
                "traces": 0, "metrics": 0, "logs": 0}

            # When the companion drains
            reply = collector.drain(request_id="req-1", reason="invoke")

            # Then exactly what was sent arrives once, ids and attributes intact
            assert reply.complete is True
            assert (reply.traces.exported, reply.metrics.exported, reply.logs.exported) == (5, 1, 1)
            assert (reply.traces.buffered, reply.metrics.buffered, reply.logs.buffered) == (0, 0, 0)
            stats = backend.stats()
            assert (stats["traces"].unique, stats["traces"].duplicates) == (5, 0)
            assert (stats["metrics"].items, stats["logs"].items) == (1, 1)
            spans = backend.items(Signal.TRACES)
            assert sorted(s.name for s in spans) == [f"inv1-{i}" for i in range(5)]
            assert sorted(s.attributes["payment.id"] for s in spans) == [f"inv1-{i}" for i in range(5)]
            assert len({s.trace_id for s in spans}) == 5
            assert backend.items(Signal.LOGS)[0].name == "payment inv1 done"
            assert backend.items(Signal.METRICS)[0].name == "payments"
        finally:
            sdk.shutdown()


def test_drain_against_a_dead_backend_keeps_everything_for_the_next_drain(backend):
    with start_collector(backend) as collector:
        sdk = make_sdk(collector, "http")
        try:
            sdk.emit(3, "down")
            sdk.flush()
            backend.set_faults(FaultSpec(status=503, message="down for maintenance"))

            first = collector.drain(timeout=1.0)

            assert first.complete is False
            assert (first.traces.exported, first.traces.buffered) == (0, 3)
            assert (first.metrics.buffered, first.logs.buffered) == (1, 1)
            assert "503" in first.last_error
            assert collector.status().last_export_error == first.last_error

            backend.clear_faults()
            second = collector.drain()

            assert second.complete is True
            assert (second.traces.exported, second.metrics.exported, second.logs.exported) == (3, 1, 1)
            assert backend.stats()["traces"].unique == 3
            assert backend.stats()["traces"].duplicates == 0
        finally:
            sdk.shutdown()


def test_drain_against_a_hanging_backend_returns_at_its_deadline_with_counts(backend):
    exporters = otlphttp_exporter(backend, "    timeout: 30s\n")
    with start_collector(backend, exporters) as collector:
        sdk = make_sdk(collector, "grpc")
        try:
            sdk.emit(4, "hang")
            sdk.flush()
            backend.set_faults(FaultSpec(hang=True))

            reply = collector.drain(timeout=0.5)

            assert reply.complete is False
            assert (reply.traces.exported, reply.traces.buffered) == (0, 4)
            assert (reply.metrics.buffered, reply.logs.buffered) == (1, 1)
        finally:
            sdk.shutdown()


def test_full_buffer_answers_senders_with_backpressure(backend):
    processors = "processors:\n  flushcontrol:\n    max_buffer_size_mib: 1\n"
    with start_collector(backend, processors=processors) as collector:
        big = trace_payload(3000, name="x" * 200)  # about 0.75 MiB
        # Given a buffer that holds one big request
        assert http_export(collector.http_endpoint, big).status == 200

        # When another arrives over HTTP, and one over gRPC
        refused = http_export(collector.http_endpoint, big)
        with grpc.insecure_channel(collector.grpc_endpoint) as channel:
            refused_grpc = grpc_send(channel, grpc_method(Signal.TRACES), big.data)

        # Then HTTP says 429 with Retry-After, and the google.rpc.Status body says it again
        assert (refused.status, refused.headers.get("retry-after")) == (429, "1")
        status = refused.rpc_status()
        assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert status.message.startswith("flushcontrol buffer full")
        assert retry_info(status).retry_delay.seconds == 1
        # And gRPC says RESOURCE_EXHAUSTED with a RetryInfo detail
        assert refused_grpc.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused_grpc.details.startswith("flushcontrol buffer full")
        delay = retry_info(refused_grpc.rpc_status()).retry_delay
        assert (delay.seconds, delay.nanos) == (1, 0)
        # And Status counts both under backpressure, and holds only the first request
        status = collector.status()
        assert (status.accepted_traces, status.traces.buffered) == (3000, 3000)
        assert dict(status.rejected_requests) == {"backpressure": 2}
        first = collector.drain()
        assert first.traces.exported == 3000
        assert dict(first.rejected_requests) == {"backpressure": 2}
        assert dict(collector.drain().rejected_requests) == {}
        # And once drained, the buffer takes requests again
        assert http_export(collector.http_endpoint, big).status == 200
        assert backend.stats()["traces"].unique == 3000


def test_sigterm_drains_then_spills_what_cannot_be_sent_as_otlp_json(backend):
    exporters = otlphttp_exporter(backend)
    processors = "processors:\n  flushcontrol:\n    shutdown_timeout: 300ms\n"
    collector = start_collector(backend, exporters, processors=processors)
    with collector:
        sdk = make_sdk(collector, "http")
        try:
            sdk.emit(2, "last")
            sdk.flush()
        finally:
            sdk.shutdown()
        backend.set_faults(FaultSpec(status=503))
        accepted = collector.status()  # the SDK's shutdown exported the metric point again

        assert collector.stop() == 0

    lines = [json.loads(line) for line in collector.stdout.splitlines()]
    spans = [
        span["name"]
        for line in lines
        for rs in line.get("resourceSpans", [])
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]
    assert sorted(spans) == ["last-0", "last-1"]
    assert len(lines) == 3  # one request per signal
    assert (accepted.accepted_traces, accepted.accepted_logs) == (2, 1)
    assert (
        f"spilled 2 spans, {accepted.accepted_metrics} metric points, 1 log records"
        in collector.stderr
    )


def test_sigterm_with_a_working_backend_delivers_everything_and_exits_0(backend):
    with start_collector(backend) as collector:
        sdk = make_sdk(collector, "grpc")
        try:
            sdk.emit(3, "bye")
            sdk.flush()
        finally:
            sdk.shutdown()
        assert collector.stop() == 0
    assert backend.stats()["traces"].unique == 3
    assert collector.stdout == ""


def test_no_hold_mode_exports_before_answering_the_sender(backend):
    with start_collector(backend, env={"AFTERFLUSH_HOLD": "false"}) as collector:
        sdk = make_sdk(collector, "http")
        try:
            sdk.emit(2, "sync")
            sdk.flush()
            # The SDK's flush returned only after the backend had the data.
            assert backend.stats()["traces"].unique == 2
            assert collector.drain().traces.exported == 0
        finally:
            sdk.shutdown()


def test_a_restarted_collector_delivers_what_a_killed_one_had_accepted(backend):
    # Given a collector that accepted data and was killed before any drain
    first = start_collector(backend)
    with first:
        sdk = make_sdk(first, "http")
        try:
            sdk.emit(4, "crash")
            sdk.flush()
        finally:
            sdk.shutdown()
        accepted = first.status()
        first.kill()

        # When a new collector starts in its place
        second = CollectorProcess(
            Path(first.config_path).read_text(), grpc_port=first.grpc_port,
            http_port=first.http_port, directory=first.dir,
        )
        with second:
            status = second.status()
            reply = second.drain()

    # Then it took the data back from the spool and delivered it once
    assert (status.traces.buffered, status.logs.buffered) == (4, 1)
    assert status.metrics.buffered == accepted.accepted_metrics
    assert (reply.traces.exported, reply.logs.exported) == (4, 1)
    assert backend.stats()["traces"].unique == 4
    assert backend.stats()["traces"].duplicates == 0
    assert "replayed from the spool: 4 spans" in second.stderr


# -- what the receiver refuses ------------------------------------------------------------

BODY_LIMIT = 64 * 1024


def _span_with_span_id(span_id: bytes) -> Payload:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=span_id, name="refused")
    return Payload.of(Signal.TRACES, request)

# (what is wrong, request, the receiver's answer). The answers are the OpenTelemetry
# Collector's otlp receiver's (confighttp, Go's ServeMux, the receiver's handlers): an
# unknown path is 404, a method other than POST 405, a content type other than protobuf or
# JSON 415, and a body that does not decode, one over max_request_body_size, or a content
# coding without a decoder 400 with a google.rpc.Status (code 3) saying why.
MALFORMED_HTTP = [
    ("protobuf that does not decode", dict(body=b"\xff\xff\xff"), 400, "unexpected EOF"),
    ("JSON that does not decode", dict(body=b"{not json", content_type=JSON), 400,
     "ReadObject: expect \" after {, but found n"),
    ("a JSON array", dict(body=b"[]", content_type=JSON), 400, "ReadObject: expect { or , or } or n"),
    ("a span id of the wrong length", dict(body=_span_with_span_id(b"\x01" * 7).data), 400,
     "unmarshal: invalid SpanID length"),
    ("an unsupported content type", dict(content_type="text/plain"), 415,
     "415 unsupported media type, supported: [application/json, application/x-protobuf]"),
    ("no content type", dict(content_type=None), 415,
     "415 unsupported media type, supported: [application/json, application/x-protobuf]"),
    ("an unknown path", dict(path="/v1/spans"), 404, "404 page not found\n"),
    ("a wrong method", dict(method="GET"), 405, "405 method not allowed, supported: [POST]"),
    ("a body over max_request_body_size", dict(body=b"\x00" * (BODY_LIMIT + 1)), 400,
     "http: request body too large"),
    ("a streamed body over max_request_body_size",
     dict(body=b"\x00" * (BODY_LIMIT + 1), chunked=True), 400, "http: request body too large"),
    ("a gzip body that inflates past max_request_body_size",
     dict(body=gzip.compress(b"\x00" * (BODY_LIMIT + 1)), headers={"Content-Encoding": "gzip"}),
     400, "http: request body too large"),
    ("a broken gzip body", dict(body=b"\x1f\x8b\x08\x00abcdefgh", headers={"Content-Encoding": "gzip"}),
     400, "flate: corrupt input"),
    ("a truncated gzip body",
     dict(body=gzip.compress(trace_payload(1).data)[:-6], headers={"Content-Encoding": "gzip"}),
     400, "unexpected EOF"),
    ("a content coding without a decoder", dict(headers={"Content-Encoding": "br"}), 400,
     "unsupported Content-Encoding: br"),
]


@pytest.mark.parametrize(("wrong", "request_", "status", "reason"), MALFORMED_HTTP,
                         ids=[case[0] for case in MALFORMED_HTTP])
def test_malformed_otlp_over_http_is_refused_and_the_next_sender_is_served(
        backend, wrong, request_, status, reason):
    good = trace_payload(2, name="good")
    with start_collector(backend, http_settings=f"        max_request_body_size: {BODY_LIMIT}\n") as collector:
        # When a sender sends a request with something wrong about it
        sent = {"path": "/v1/traces", "body": trace_payload(1, name="refused").data, **request_}
        answer = http_send(collector.http_endpoint, sent.pop("path"), sent.pop("body"), **sent)

        # Then it gets the receiver's answer, saying why
        assert answer.status == status, answer
        if status == 400:
            expected_type = JSON if request_.get("content_type") == JSON else PROTOBUF
            assert answer.headers["content-type"] == expected_type
            refusal = answer.rpc_status()
            assert (refusal.code, refusal.message.startswith(reason)) == (3, True), refusal
        else:
            assert answer.body == reason.encode()
        # And another sender right after is served, by a collector still up
        assert http_export(collector.http_endpoint, good).status == 200
        assert collector.proc.poll() is None
        # And nothing refused counts as accepted, or reaches the backend
        status_reply = collector.status()
        assert (status_reply.accepted_traces, status_reply.traces.buffered) == (2, 2)
        assert dict(status_reply.rejected_requests) == {}
        assert collector.drain().traces.exported == 2
    assert sorted(item.name for item in backend.items(Signal.TRACES)) == ["good-0", "good-1"]


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_a_gzip_body_is_taken_like_a_plain_one(backend, encoding):
    payload = trace_payload(3, name="zipped")
    body = payload.as_json() if encoding == "json" else payload.data
    with start_collector(backend) as collector:
        answer = http_send(collector.http_endpoint, "/v1/traces", gzip.compress(body),
                           content_type=JSON if encoding == "json" else PROTOBUF,
                           headers={"Content-Encoding": "gzip"})
        assert answer.status == 200
        assert collector.status().accepted_traces == 3
        assert backend.stats()["traces"].items == 0
        assert collector.drain().traces.exported == 3
    assert sorted(item.name for item in backend.items(Signal.TRACES)) == [
        "zipped-0", "zipped-1", "zipped-2"]


# (what is wrong, call, the answer). grpc-go answers a message its codec cannot unmarshal
# with INTERNAL before the receiver sees it, one over max_recv_msg_size_mib with
# RESOURCE_EXHAUSTED, an unknown method or a compression without a decompressor with
# UNIMPLEMENTED.
MALFORMED_GRPC = [
    ("a message that does not decode", dict(data=b"\xff\xff\xff"), grpc.StatusCode.INTERNAL,
     "grpc: error unmarshalling request: unexpected EOF"),
    ("an id of the wrong length", dict(data=trace_payload(1, trace_id=b"\x01" * 5).data),
     grpc.StatusCode.INTERNAL, "grpc: error unmarshalling request: unmarshal: invalid TraceID length"),
    ("a message over max_recv_msg_size_mib",
     dict(data=trace_payload(1, name="x" * (1024 * 1024)).data), grpc.StatusCode.RESOURCE_EXHAUSTED,
     "grpc: received message larger than max"),
    ("an unknown method", dict(method="/opentelemetry.proto.collector.trace.v1.TraceService/Exports"),
     grpc.StatusCode.UNIMPLEMENTED, "unknown method Exports for service"),
    ("deflate compression", dict(data=trace_payload(1, name="y" * 4000).data,
                                 compression=grpc.Compression.Deflate),
     grpc.StatusCode.UNIMPLEMENTED, 'grpc: Decompressor is not installed for grpc-encoding "deflate"'),
]


@pytest.mark.parametrize(("wrong", "call", "code", "details"), MALFORMED_GRPC,
                         ids=[case[0] for case in MALFORMED_GRPC])
def test_malformed_otlp_over_grpc_is_refused_and_the_next_sender_is_served(
        backend, wrong, call, code, details):
    good = trace_payload(2, name="good")
    options = [("grpc.max_send_message_length", 8 * 1024 * 1024)]
    with start_collector(backend, grpc_settings="        max_recv_msg_size_mib: 1\n") as collector:
        sent = {"method": grpc_method(Signal.TRACES), "data": trace_payload(1).data, **call}
        with grpc.insecure_channel(collector.grpc_endpoint, options=options) as channel:
            answer = grpc_send(channel, sent.pop("method"), sent.pop("data"), **sent)
        assert (answer.code, answer.details.startswith(details)) == (code, True), answer
        # Another sender, on a channel of its own
        with grpc.insecure_channel(collector.grpc_endpoint) as other:
            assert grpc_send(other, grpc_method(Signal.TRACES), good.data).code == grpc.StatusCode.OK
        assert collector.proc.poll() is None
        status = collector.status()
        assert (status.accepted_traces, status.traces.buffered) == (2, 2)
        assert dict(status.rejected_requests) == {}
        assert collector.drain().traces.exported == 2
    assert sorted(item.name for item in backend.items(Signal.TRACES)) == ["good-0", "good-1"]


def test_a_gzip_compressed_grpc_call_is_taken(backend):
    with start_collector(backend) as collector:
        with grpc.insecure_channel(collector.grpc_endpoint) as channel:
            answer = grpc_send(channel, grpc_method(Signal.TRACES), trace_payload(4).data,
                               compression=grpc.Compression.Gzip)
        assert answer.code == grpc.StatusCode.OK
        assert collector.drain().traces.exported == 4
    assert backend.stats()["traces"].unique == 4


# -- the ADOT configs, against stand-ins for X-Ray and CloudWatch Logs -----------------------

TESTDATA = ROOT / "collector" / "testdata"


def adot_config(name: str, grpc_port: int, http_port: int, aws: FakeAws, *exporters: str) -> str:
    """collector/testdata/`name` as written, but listening on free ports and with each of
    `exporters` sending to `aws` (its region us-east-1)."""
    text = (TESTDATA / name).read_text()
    text = text.replace("localhost:4317", f"127.0.0.1:{grpc_port}")
    text = text.replace("localhost:4318", f"127.0.0.1:{http_port}")
    for exporter in exporters:
        line = f"  {exporter}:\n"
        assert line in text, f"{name} has no {exporter} exporter"
        extra = f"    endpoint: {aws.endpoint}\n"
        if f"{line}    region:" not in text:
            extra += "    region: us-east-1\n"
        text = text.replace(line, line + extra, 1)
    return text


def xray_payload(count: int, first: int = 0) -> Payload:
    """`count` server spans of service "orders" (span i has span_id i+first+1, p-i its payment
    id) in one trace whose id starts with the current time, as X-Ray requires (the exporter
    drops spans of other trace ids)."""
    now = time.time_ns()
    trace_id = int(now // 1_000_000_000).to_bytes(4, "big") + bytes.fromhex("0af7651916cd43dd8448eb21")
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "orders"
    scope = resource_spans.scope_spans.add()
    for i in range(first, first + count):
        span = scope.spans.add(trace_id=trace_id, span_id=(i + 1).to_bytes(8, "big"),
                               name=f"charge-{i}", kind=2, start_time_unix_nano=now,
                               end_time_unix_nano=now + 2_000_000)
        span.attributes.add(key="payment.id").value.string_value = f"p-{i}"
        span.attributes.add(key="http.route").value.string_value = "/charge"
    return Payload.of(Signal.TRACES, request)


def emf_payload(values: dict[str, int]) -> Payload:
    """One gauge "payments" of service "orders" with a point per tag, timed now (CloudWatch
    Logs takes no event older than 14 days)."""
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.add(key="service.name").value.string_value = "orders"
    metric = resource_metrics.scope_metrics.add().metrics.add(name="payments", unit="1")
    for tag, value in values.items():
        point = metric.gauge.data_points.add(as_int=value, time_unix_nano=time.time_ns())
        point.attributes.add(key="tag").value.string_value = tag
    return Payload.of(Signal.METRICS, request)


def segments(aws: FakeAws) -> list[dict[str, Any]]:
    return [json.loads(document) for call in aws.calls_of("PutTraceSegments")
            for document in call.body["TraceSegmentDocuments"]]


def test_the_adot_default_config_sends_segments_to_xray_only_after_drain():
    grpc_port, http_port = free_port(), free_port()
    with FakeAws() as aws:
        config = adot_config("adot-default.yaml", grpc_port, http_port, aws, "awsxray")
        with CollectorProcess(config, grpc_port=grpc_port, http_port=http_port,
                              env=AWS_ENV) as collector:
            # Given spans from two senders, and a metric (to the debug exporter)
            spans = xray_payload(3)
            assert http_export(collector.http_endpoint, spans).status == 200
            more = xray_payload(1, first=3)
            assert grpc_export(collector.grpc_endpoint, more).code == grpc.StatusCode.OK
            assert http_export(collector.http_endpoint, emf_payload({"a": 1})).status == 200
            # Then everything is held by flushcontrol (which alone hands data to the exporters,
            # and only when drained), and nothing has gone to X-Ray
            assert collector.status().traces.buffered == 4
            assert aws.operations() == []

            # When the companion drains
            reply = collector.drain(timeout=10)

        # Then X-Ray got one segment per span, signed with the environment's credentials
        assert reply.complete is True, reply.last_error
        assert (reply.traces.exported, reply.metrics.exported) == (4, 1)
    calls = aws.calls_of("PutTraceSegments")
    assert calls and all(c.status == 200 for c in calls)
    assert all("Credential=AKIDAFTERFLUSHTEST/" in c.headers["authorization"] for c in calls)
    assert all("/us-east-1/xray/aws4_request" in c.headers["authorization"] for c in calls)
    got = segments(aws)
    sent = [span for payload in (spans, more) for span in
            Signal.TRACES.decode(payload.data).resource_spans[0].scope_spans[0].spans]
    assert sorted((s["trace_id"], s["id"]) for s in got) == sorted(
        (f"1-{span.trace_id.hex()[:8]}-{span.trace_id.hex()[8:]}", span.span_id.hex())
        for span in sent)
    assert all(s["name"] == "orders" for s in got)
    assert sorted(s["metadata"]["default"]["payment.id"] for s in got) == ["p-0", "p-1", "p-2", "p-3"]
    assert {s["metadata"]["default"]["http.route"] for s in got} == {"/charge"}


def test_the_awsemf_config_puts_metrics_into_cloudwatch_logs_only_after_drain():
    grpc_port, http_port = free_port(), free_port()
    with FakeAws() as aws:
        config = adot_config("awsemf.yaml", grpc_port, http_port, aws, "awsxray", "awsemf")
        with CollectorProcess(config, grpc_port=grpc_port, http_port=http_port,
                              env=AWS_ENV) as collector:
            # Given metrics and spans from the function
            assert http_export(collector.http_endpoint, emf_payload({"card": 7, "cash": 2})).status == 200
            assert http_export(collector.http_endpoint, xray_payload(2)).status == 200
            # Then everything is held by flushcontrol, and nothing has gone to CloudWatch Logs
            # or X-Ray
            assert collector.status().metrics.buffered == 2
            assert aws.operations() == []

            # When the companion drains
            reply = collector.drain(timeout=10)

        assert reply.complete is True, reply.last_error
        assert (reply.metrics.exported, reply.traces.exported) == (2, 2)
    # Then the exporter created its log group and stream when CloudWatch Logs said they were
    # missing, and put the points as embedded metric format events
    operations = [op for op in aws.operations() if op != "PutTraceSegments"]
    assert operations[0] == "PutLogEvents" and operations[-1] == "PutLogEvents", operations
    assert {"CreateLogGroup", "CreateLogStream"} <= set(operations), operations
    put = aws.calls_of("PutLogEvents")[-1]
    assert put.status == 200
    assert put.body["logGroupName"] == "/aws/lambda/orders/metrics"
    assert "Credential=AKIDAFTERFLUSHTEST/" in put.headers["authorization"]
    events = [json.loads(event["message"]) for event in put.body["logEvents"]]
    assert sorted((e["tag"], e["payments"]) for e in events) == [("card", 7), ("cash", 2)]
    for event in events:
        [directive] = event["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Orders"
        assert [m["Name"] for m in directive["Metrics"]] == ["payments"]
        assert event["service.name"] == "orders"
    assert len(segments(aws)) == 2


# -- the OpenTelemetry JS SDK as a sender -----------------------------------------------------

JS_SPANS_PER_PROTOCOL = 4


@pytest.fixture(scope="session")
def js_node_modules() -> Path:
    assert node_version() >= (20,), "the JS SDK sender test needs Node 20 or later"
    return install_js_sdk()


def test_js_sdk_spans_over_every_protocol_reach_the_backend_only_after_drain(backend, js_node_modules):
    with start_collector(backend) as collector:
        # Given a Node function's SDK that exported spans over http/json, http/protobuf and grpc
        result = subprocess.run(
            ["node", str(JS_ASSETS / "send_spans.js"), collector.http_endpoint,
             collector.grpc_endpoint, str(JS_SPANS_PER_PROTOCOL)],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "NODE_PATH": str(js_node_modules)},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        sent = report["sent"]
        assert {p: len(r) for p, r in report["results"].items()} == {
            "http/json": JS_SPANS_PER_PROTOCOL, "http/protobuf": JS_SPANS_PER_PROTOCOL,
            "grpc": JS_SPANS_PER_PROTOCOL}
        # Then the collector took all of them, and nothing reached the backend
        total = 3 * JS_SPANS_PER_PROTOCOL
        status = collector.status()
        assert (status.accepted_traces, status.traces.buffered) == (total, total)
        assert backend.stats()["traces"].items == 0

        # When the companion drains
        reply = collector.drain()

    # Then every span arrived once, ids, names and attributes intact
    assert (reply.complete, reply.traces.exported) == (True, total)
    stats = backend.stats()["traces"]
    assert (stats.unique, stats.duplicates) == (total, 0)
    items = backend.items(Signal.TRACES)
    assert sorted((i.trace_id, i.span_id, i.name) for i in items) == sorted(
        (s["trace_id"], s["span_id"], s["name"]) for s in sent)
    by_name = {i.name: i.attributes for i in items}
    for span in sent:
        assert by_name[span["name"]] == {
            "payment.id": span["name"], "sender.protocol": span["protocol"],
            "attempt": int(span["name"].rsplit("-", 1)[1]), "retried": False,
        }


# -- the command line ------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BINARY), *args],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_ctl_prints_status_and_drain_replies_as_json(backend):
    with start_collector(backend) as collector:
        status = run_cli("ctl", "status", "--endpoint", collector.endpoint)
        drain = run_cli("ctl", "drain", "--endpoint", collector.endpoint, "--timeout", "2s")

    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["ready"] is True
    assert document["traces"]["buffered"] == "0"  # uint64 is a string in proto JSON
    assert drain.returncode == 0, drain.stderr
    assert json.loads(drain.stdout)["complete"] is True


def test_ctl_without_a_collector_says_so_and_fails(tmp_path):
    endpoint = f"unix://{tmp_path}/none.sock"
    result = run_cli("ctl", "status", "--endpoint", endpoint, "--timeout", "1s")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"Error: no collector serves {endpoint} (no such file or directory)\n"


def test_validate_reports_every_problem_with_key_path_and_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "receivers:\n"
        "  otlp:\n"
        "    protocols:\n"
        "      grpc:\n"
        "        endpiont: localhost:4317\n"
        "exporters:\n"
        "  kafka:\n"
        "service:\n"
        "  pipelines:\n"
        "    traces:\n"
        "      receivers: [otlp]\n"
        "      exporters: [kafka]\n"
    )
    result = run_cli("validate", "--config", str(path))

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "invalid config (2 problems):",
        f'  receivers::otlp::protocols::grpc::endpiont ({path}:5): unknown key "endpiont"',
        f'  exporters::kafka ({path}:7): unknown exporter type "kafka"; supported: awsemf, '
        "awsxray, debug, otlp, otlphttp, prometheusremotewrite",
    ]


def test_run_with_an_invalid_config_exits_2_with_the_errors(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("receivers:\n  otlp:\n    protocols: {grpc: {max_recv_msg_size_mib: -1}}\n"
                    "exporters:\n  debug:\n"
                    "service:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [debug]}\n")
    result = run_cli("--config", str(path))

    assert result.returncode == 2
    assert (
        f"receivers::otlp::protocols::grpc ({path}:3): invalid max_recv_msg_size_mib value, "
        "must be between 1 and 8796093022207: -1"
    ) in result.stderr


def test_validate_accepts_a_good_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(basic_config(4317, 4318, "  debug:\n    verbosity: basic\n", "debug"))
    result = run_cli("validate", "--config", f"file:{path}")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "config is valid\n"
