"""The three OTLP signals and the unit of data that moves through a pipeline.

A Payload is a serialized Export*ServiceRequest; requests of one signal concatenate into one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


class Signal(enum.Enum):
    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"

    @property
    def request_type(self) -> Any:
        return _REQUEST[self]

    @property
    def response_type(self) -> Any:
        return _RESPONSE[self]

    @property
    def http_path(self) -> str:
        """The OTLP/HTTP path, e.g. /v1/traces."""
        return f"/v1/{self.value}"

    @property
    def item_name(self) -> str:
        """What one item of this signal is called in logs and counts."""
        return _ITEM[self]

    def count_items(self, request: Any) -> int:
        """Spans, metric data points or log records in a decoded request."""
        if self is Signal.TRACES:
            return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        if self is Signal.LOGS:
            return sum(
                len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs
            )
        return sum(
            _metric_points(m)
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        )

    def id_problem(self, request: Any) -> str | None:
        """What is wrong with the request's trace and span ids, or None: an id is empty or
        exactly 16 (trace) / 8 (span) bytes, as OTLP and every OTLP backend require. A request
        with a bad id would make a backend refuse everything coalesced with it."""
        if self is Signal.TRACES:
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        if (
                            len(span.trace_id) not in _TRACE_ID_LENGTHS
                            or len(span.span_id) not in _SPAN_ID_LENGTHS
                            or len(span.parent_span_id) not in _SPAN_ID_LENGTHS
                        ):
                            return _bad_ids("span", span)
                        for link in span.links:
                            if (
                                len(link.trace_id) not in _TRACE_ID_LENGTHS
                                or len(link.span_id) not in _SPAN_ID_LENGTHS
                            ):
                                return _bad_ids("span link", link)
        elif self is Signal.LOGS:
            for rl in request.resource_logs:
                for sl in rl.scope_logs:
                    for record in sl.log_records:
                        if (
                            len(record.trace_id) not in _TRACE_ID_LENGTHS
                            or len(record.span_id) not in _SPAN_ID_LENGTHS
                        ):
                            return _bad_ids("log record", record)
        else:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        if kind is None or kind == "summary":
                            continue
                        for point in getattr(metric, kind).data_points:
                            for exemplar in point.exemplars:
                                if (
                                    len(exemplar.trace_id) not in _TRACE_ID_LENGTHS
                                    or len(exemplar.span_id) not in _SPAN_ID_LENGTHS
                                ):
                                    return _bad_ids("exemplar", exemplar)
        return None

    def decode(self, data: bytes) -> Any:
        """Parses a serialized request; raises google.protobuf.message.DecodeError."""
        request = self.request_type()
        request.ParseFromString(data)
        return request


_TRACE_ID_LENGTHS = (0, 16)
_SPAN_ID_LENGTHS = (0, 8)


def _bad_ids(what: str, item: Any) -> str:
    parent = len(getattr(item, "parent_span_id", b""))
    lengths = f"trace_id {len(item.trace_id)} bytes, span_id {len(item.span_id)} bytes"
    if parent:
        lengths += f", parent_span_id {parent} bytes"
    article = "an" if what[0] in "aeiou" else "a"
    return f"{article} {what} has an id of the wrong length ({lengths}); ids are 16 and 8 bytes"


def _metric_points(metric: Any) -> int:
    kind = metric.WhichOneof("data")
    if kind is None:
        return 0
    return len(getattr(metric, kind).data_points)


_REQUEST: dict[Signal, Any] = {
    Signal.TRACES: trace_service_pb2.ExportTraceServiceRequest,
    Signal.METRICS: metrics_service_pb2.ExportMetricsServiceRequest,
    Signal.LOGS: logs_service_pb2.ExportLogsServiceRequest,
}
_RESPONSE: dict[Signal, Any] = {
    Signal.TRACES: trace_service_pb2.ExportTraceServiceResponse,
    Signal.METRICS: metrics_service_pb2.ExportMetricsServiceResponse,
    Signal.LOGS: logs_service_pb2.ExportLogsServiceResponse,
}
_ITEM = {Signal.TRACES: "spans", Signal.METRICS: "metric points", Signal.LOGS: "log records"}


@dataclass(frozen=True, slots=True)
class Payload:
    """One serialized Export*ServiceRequest of `signal` holding `items` items."""

    signal: Signal
    data: bytes
    items: int

    @property
    def size(self) -> int:
        return len(self.data)

    @classmethod
    def join(cls, payloads: list[Payload]) -> Payload:
        """One request holding every payload's data: protobuf concatenation appends the
        repeated resource_* field, so the bytes need no re-encoding."""
        if not payloads:
            raise ValueError("nothing to join")
        signal = payloads[0].signal
        return cls(signal, b"".join(p.data for p in payloads), sum(p.items for p in payloads))
