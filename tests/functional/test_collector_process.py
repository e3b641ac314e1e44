"""The collector as a process: the real SDK sends, nothing leaves before Drain, all of it after.

Senders are the OpenTelemetry Python SDK's OTLP exporters (gRPC and http/protobuf); the backend
is the local OTLP test backend; drains go through the control endpoint.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from backend import FaultSpec
from collector._signals import Signal
from tests.fixtures.backend import ThreadBackend, trace_payload
from tests.fixtures.collector import ROOT, CollectorProcess, basic_config, free_port

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
                    **kwargs: Any) -> CollectorProcess:
    grpc_port, http_port = free_port(), free_port()
    config = basic_config(
        grpc_port, http_port, exporters or otlphttp_exporter(backend), "otlphttp",
        processors=processors,
    )
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
        import urllib.error
        import urllib.request

        big = trace_payload(3000, name="x" * 200)  # about 0.75 MiB
        url = f"{collector.http_endpoint}/v1/traces"

        def post() -> tuple[int, str | None]:
            request = urllib.request.Request(
                url, data=big.data, headers={"Content-Type": "application/x-protobuf"}
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, None
            except urllib.error.HTTPError as exc:
                return exc.code, exc.headers.get("Retry-After")

        assert post() == (200, None)
        assert post() == (429, "1")
        status = collector.status()
        assert status.traces.buffered == 3000
        assert dict(status.rejected_requests) == {"backpressure": 1}
        first = collector.drain()
        assert first.traces.exported == 3000
        assert dict(first.rejected_requests) == {"backpressure": 1}
        assert dict(collector.drain().rejected_requests) == {}
        assert post() == (200, None)


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


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector", *args],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
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
    result = run_cli("ctl", "status", "--endpoint", f"unix://{tmp_path}/none.sock", "--timeout", "1s")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: Status on unix://{tmp_path}/none.sock failed: UNAVAILABLE")


def test_validate_reports_every_problem_with_key_path_and_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "receivers:\n"
        "  otlp:\n"
        "    protocols:\n"
        "      grpc:\n"
        "        endpiont: localhost:4317\n"
        "exporters:\n"
        "  awsxray:\n"
        "service:\n"
        "  pipelines:\n"
        "    traces:\n"
        "      receivers: [otlp]\n"
        "      exporters: [awsxray]\n"
    )
    result = run_cli("validate", "--config", str(path))

    assert result.returncode == 1
    assert f"receivers::otlp::protocols::grpc::endpiont ({path}:5): unknown key" in result.stderr
    assert f'exporters::awsxray ({path}:7): unknown exporter type "awsxray"' in result.stderr


def test_run_with_an_invalid_config_exits_2_with_the_errors(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("receivers:\n  otlp:\n    protocols: {grpc: {max_recv_msg_size_mib: 0}}\n"
                    "exporters:\n  debug:\n"
                    "service:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [debug]}\n")
    result = run_cli("run", "--config", str(path))

    assert result.returncode == 2
    assert f"receivers::otlp::protocols::grpc::max_recv_msg_size_mib ({path}:3): must be > 0" in result.stderr


def test_validate_accepts_a_good_config_with_a_one_line_summary(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(basic_config(4317, 4318, "  debug:\n    verbosity: basic\n", "debug"))
    result = run_cli("validate", "--config", f"file:{path}")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"{path}: valid; 3 pipelines: traces: otlp -> flushcontrol -> debug; "
        "metrics: otlp -> flushcontrol -> debug; logs: otlp -> flushcontrol -> debug"
    )

