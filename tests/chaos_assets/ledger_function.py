"""A function for the fault scenarios, run by the real awslambdaric with the real OpenTelemetry
SDK: every span, metric point and log record it makes carries a unique `ledger.id`, and it
writes what it produced and what the collector acknowledged to a ledger file.

LEDGER_FILE            JSON lines appended here (one write per line, from any thread):
                       {"kind": "produced", "signal", "ids"} before the SDK sees the items,
                       {"kind": "export", "signal", "ids", "ok", "why"} per SDK export call
LEDGER_PROTOCOL        grpc | http/protobuf
LEDGER_COLLECTOR_GRPC  host:port of the collector's OTLP/gRPC receiver
LEDGER_COLLECTOR_HTTP  http://host:port of its OTLP/HTTP receiver
LEDGER_EXPORT_TIMEOUT  seconds an SDK export may take, retries included (default 0.5)
LEDGER_REPO            the repository root, for {"status": true}

The event says what to make and what to do then:
  {"spans": 20, "points": 2, "logs": 2, "attr_bytes": 0,
   "then": "return" | "kill_collector" | "kill_extensions" | "crash" | "hang",
   "sleep": 0, "status": false}
sleep is seconds the handler works before it makes anything (time its environment is thawed).
status asks the collector for its Status (afterflush-collector ctl status) at the end and writes
the reply to the ledger file as {"kind": "status", "reply"}.
kill_collector makes a second, unacknowledged batch after the SIGKILL, as a function that keeps
working while its collector is gone would.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExportResult
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

LEDGER_FILE = os.environ["LEDGER_FILE"]
PROTOCOL = os.environ.get("LEDGER_PROTOCOL", "http/protobuf")
TIMEOUT = float(os.environ.get("LEDGER_EXPORT_TIMEOUT", "0.5"))
ID = "ledger.id"
RESOURCE = Resource.create({"service.name": "afterflush-chaos"})
# One point per id: each collection sends only what was recorded since the last one.
DELTA = {Counter: AggregationTemporality.DELTA}

_fd = os.open(LEDGER_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
_why = threading.local()


def record(entry: dict) -> None:
    # One write per line: O_APPEND keeps lines from several threads whole.
    os.write(_fd, (json.dumps(entry) + "\n").encode())


class _LastError(logging.Handler):
    """Remembers, per thread, the last thing the SDK's exporters complained about: the reason
    an export failed, without reaching into their internals."""

    def emit(self, log_record: logging.LogRecord) -> None:
        if not getattr(_why, "text", ""):
            _why.text = log_record.getMessage()[:300]


_sdk_log = logging.getLogger("opentelemetry.exporter")
_sdk_log.addHandler(_LastError(level=logging.WARNING))


def _acknowledging(base: type, signal: str, ids_of, success) -> type:
    """A subclass of an SDK exporter that writes which ids each export carried and whether
    the collector acknowledged them."""

    class Acknowledging(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            client = getattr(self, "_client", None)
            if PROTOCOL != "grpc" and callable(getattr(client, "export", None)):
                # The HTTP exporters log only "timeout, max retries or shutdown" when they
                # give up; the status or error of the last attempt says why.
                inner = client.export

                def export(data):
                    result = inner(data)
                    if not result.success:
                        _why.text = (f"code: {result.status_code}" if result.status_code
                                     else repr(result.error))
                    return result

                client.export = export

        def export(self, batch, *args, **kwargs):
            _why.text = ""
            result = super().export(batch, *args, **kwargs)
            why = getattr(_why, "text", "")
            ids = ids_of(batch)
            if ids:
                ok = result == success
                record({"kind": "export", "signal": signal, "ids": ids, "ok": ok,
                        "why": "" if ok else (why or "export failed")})
            return result

    return Acknowledging


def _span_ids(spans) -> list[str]:
    return [s.attributes[ID] for s in spans if s.attributes and ID in s.attributes]


def _point_ids(data) -> list[str]:
    return [
        point.attributes[ID]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
        if point.attributes and ID in point.attributes
    ]


def _log_ids(batch) -> list[str]:
    return [
        r.log_record.attributes[ID]
        for r in batch
        if r.log_record.attributes and ID in r.log_record.attributes
    ]


if PROTOCOL == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    # The gRPC exporters log a repeated failure once; the ledger wants the reason every time.
    for _filter in list(logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").filters):
        logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").removeFilter(_filter)
    _options = {"endpoint": os.environ["LEDGER_COLLECTOR_GRPC"], "insecure": True, "timeout": TIMEOUT}
    _traces, _metrics, _logs = dict(_options), dict(_options), dict(_options)
else:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    _base = os.environ["LEDGER_COLLECTOR_HTTP"]
    _traces = {"endpoint": f"{_base}/v1/traces", "timeout": TIMEOUT}
    _metrics = {"endpoint": f"{_base}/v1/metrics", "timeout": TIMEOUT}
    _logs = {"endpoint": f"{_base}/v1/logs", "timeout": TIMEOUT}

span_exporter = _acknowledging(OTLPSpanExporter, "traces", _span_ids, SpanExportResult.SUCCESS)(**_traces)
metric_exporter = _acknowledging(
    OTLPMetricExporter, "metrics", _point_ids, MetricExportResult.SUCCESS
)(**_metrics, preferred_temporality=DELTA)
log_exporter = _acknowledging(
    OTLPLogExporter, "logs", _log_ids, LogRecordExportResult.SUCCESS
)(**_logs)

tracer_provider = TracerProvider(resource=RESOURCE)
# A queue larger than any scenario's invocation, so the SDK itself drops nothing.
tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter, max_queue_size=20_000))
meter_provider = MeterProvider(
    resource=RESOURCE,
    metric_readers=[PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)],
)
logger_provider = LoggerProvider(resource=RESOURCE)
logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter, max_queue_size=20_000))
logger = logging.getLogger("afterflush-chaos")
logger.propagate = False
logger.setLevel(logging.INFO)
logger.addHandler(LoggingHandler(logger_provider=logger_provider))

tracer = tracer_provider.get_tracer("afterflush-chaos")
points = meter_provider.get_meter("afterflush-chaos").create_counter("ledger.points")


def make(rid: str, batch: str, event: dict) -> None:
    """Spans, metric points and log records with ids "<rid>/<batch>/<signal>/<n>"."""
    counts = {"traces": int(event.get("spans", 20)), "metrics": int(event.get("points", 2)),
              "logs": int(event.get("logs", 2))}
    ids = {s: [f"{rid}/{batch}/{s}/{i}" for i in range(n)] for s, n in counts.items()}
    for signal_name, signal_ids in ids.items():
        if signal_ids:
            record({"kind": "produced", "signal": signal_name, "ids": signal_ids})
    filler = "x" * int(event.get("attr_bytes", 0))
    with tracer.start_as_current_span(f"{batch}-work", attributes={ID: ids["traces"][0]}
                                      if ids["traces"] else {}):
        for span_id in ids["traces"][1:]:
            attributes = {ID: span_id, "filler": filler} if filler else {ID: span_id}
            with tracer.start_as_current_span("step", attributes=attributes):
                pass
    for point_id in ids["metrics"]:
        points.add(1, {ID: point_id})
    for log_id in ids["logs"]:
        logger.info("step done", extra={ID: log_id})


def flush() -> None:
    millis = int(TIMEOUT * 1000) + 500
    tracer_provider.force_flush(millis)
    meter_provider.force_flush(millis)
    logger_provider.force_flush(millis)


COLLECTOR = ["afterflush-collector"]
COMPANION = ["-m", "companion"]


def own_processes(kind: list[str]) -> list[int]:
    """Pids of this environment's companion or collector (found by command line and control
    endpoint), for the scenarios that kill them."""
    import psutil

    endpoint = os.environ.get("AFTERFLUSH_CONTROL_ENDPOINT")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if kind == COLLECTOR:
            if not cmdline or os.path.basename(cmdline[0]) != COLLECTOR[0]:
                continue
        elif cmdline[1 : 1 + len(kind)] != kind:
            continue
        try:
            if proc.environ().get("AFTERFLUSH_CONTROL_ENDPOINT") == endpoint:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def handler(event, context):
    rid = context.aws_request_id
    if event.get("sleep"):
        time.sleep(float(event["sleep"]))
    # The instrumentation's own span for this invocation is accounted for like every other.
    root_id = f"{rid}/a/traces/root"
    record({"kind": "produced", "signal": "traces", "ids": [root_id]})
    trace.get_current_span().set_attribute(ID, root_id)
    make(rid, "a", event)
    then = event.get("then", "return")
    if then != "return":
        # What the scenario does next must not take unflushed data with it.
        flush()
    if then == "kill_collector":
        kill(own_processes(COLLECTOR))
        make(rid, "b", event)
    elif then == "kill_extensions":
        kill(own_processes(COLLECTOR))
        kill(own_processes(COMPANION))
    elif then == "crash":
        os._exit(3)
    elif then == "hang":
        time.sleep(context.get_remaining_time_in_millis() / 1000 + 5)
    logger_provider.force_flush(int(TIMEOUT * 1000) + 500)
    if event.get("status"):
        record({"kind": "status", "reply": collector_status()})
    return {"requestId": rid}


def collector_status() -> dict:
    import subprocess

    binary = os.path.join(os.environ["LEDGER_REPO"], "bin", COLLECTOR[0])
    done = subprocess.run(
        [binary, "ctl", "status", "--timeout", "2s"],
        capture_output=True, text=True, timeout=10, check=False,
    )
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr.strip()}


# Wraps `handler` (named by _HANDLER), the way the layer's wrapper would; it flushes traces and
# metrics after each invocation.
from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor  # noqa: E402

AwsLambdaInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
