"""A function for the companion's end-to-end tests, run by the real awslambdaric: the real
OpenTelemetry SDK exports traces, metrics and logs to the collector, and
opentelemetry-instrumentation-aws-lambda wraps the handler and flushes at the end of each
invocation, as a function using the layer would.

E2E_OTLP_PROTOCOL   grpc | http/protobuf
E2E_COLLECTOR_GRPC  host:port of the collector's OTLP/gRPC receiver
E2E_COLLECTOR_HTTP  http://host:port of its OTLP/HTTP receiver
E2E_BACKEND_HTTP    http://host:port of the test backend, asked for its counts at the start
E2E_SPANS           spans per invocation besides the handler's own (default 3)
E2E_EXPORT_TIMEOUT  seconds the SDK's exporters may take, retries included (default 5)
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request

from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

PROTOCOL = os.environ.get("E2E_OTLP_PROTOCOL", "http/protobuf")
SPANS = int(os.environ.get("E2E_SPANS", "3"))
TIMEOUT = float(os.environ.get("E2E_EXPORT_TIMEOUT", "5"))
BACKEND = os.environ.get("E2E_BACKEND_HTTP", "")
RESOURCE = Resource.create({"service.name": "afterflush-e2e"})
# One metric point per invocation: each flush sends only what that invocation recorded.
DELTA = {Counter: AggregationTemporality.DELTA}

if PROTOCOL == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    _grpc = {"endpoint": os.environ["E2E_COLLECTOR_GRPC"], "insecure": True, "timeout": TIMEOUT}
    span_exporter = OTLPSpanExporter(**_grpc)
    metric_exporter = OTLPMetricExporter(**_grpc, preferred_temporality=DELTA)
    log_exporter = OTLPLogExporter(**_grpc)
else:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    _base = os.environ["E2E_COLLECTOR_HTTP"]
    span_exporter = OTLPSpanExporter(endpoint=f"{_base}/v1/traces", timeout=TIMEOUT)
    metric_exporter = OTLPMetricExporter(
        endpoint=f"{_base}/v1/metrics", timeout=TIMEOUT, preferred_temporality=DELTA
    )
    log_exporter = OTLPLogExporter(endpoint=f"{_base}/v1/logs", timeout=TIMEOUT)

tracer_provider = TracerProvider(resource=RESOURCE)
tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
meter_provider = MeterProvider(
    resource=RESOURCE,
    metric_readers=[PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)],
)
logger_provider = LoggerProvider(resource=RESOURCE)
logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
logger = logging.getLogger("afterflush-e2e")
logger.propagate = False
logger.setLevel(logging.INFO)
logger.addHandler(LoggingHandler(logger_provider=logger_provider))

tracer = tracer_provider.get_tracer("afterflush-e2e")
invocations = meter_provider.get_meter("afterflush-e2e").create_counter("invocations")


def backend_counts() -> dict[str, int]:
    with urllib.request.urlopen(f"{BACKEND}/_stats", timeout=5) as response:
        stats = json.loads(response.read())
    return {signal: stats[signal]["items"] for signal in ("traces", "metrics", "logs")}


def handler(event, context):
    rid = context.aws_request_id
    at_start = backend_counts() if BACKEND and event.get("count", True) else None
    tag = {"invocation": rid}
    with tracer.start_as_current_span("work", attributes=tag):
        for i in range(SPANS):
            with tracer.start_as_current_span(f"step-{i}", attributes=tag):
                pass
    invocations.add(1, tag)
    logger.info("invocation %s done", rid, extra=tag)
    # The instrumentation flushes traces and metrics after the handler; logs are ours to flush.
    logger_provider.force_flush(int(TIMEOUT * 1000))
    if event.get("sleep"):
        time.sleep(float(event["sleep"]))
    return {"requestId": rid, "backendAtStart": at_start, "pid": os.getpid()}


# Wraps `handler` in this module (named by _HANDLER), the way the layer's wrapper would.
from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor  # noqa: E402

AwsLambdaInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
