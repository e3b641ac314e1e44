"""The three OTLP signals, as the backend decodes and answers their export requests."""

from __future__ import annotations

import enum
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
    def item_name(self) -> str:
        """What one item of this signal is called in logs and counts."""
        return _ITEM[self]

    def decode(self, data: bytes) -> Any:
        """Parses a serialized request; raises google.protobuf.message.DecodeError."""
        request = self.request_type()
        request.ParseFromString(data)
        return request


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
