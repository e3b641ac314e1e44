"""The `debug` exporter (and its old name `logging`): writes what would be exported to stderr,
as a count per export, a line per item, or the OTLP/JSON itself.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from collector._component import BuildContext, ComponentFactory, ExportResult, Kind, Outcome
from collector._signals import Payload, Signal

Verbosity = Literal["basic", "normal", "detailed"]
LogLevel = Literal["debug", "info", "warn", "error"]

# The logging exporter's deprecated `loglevel`, mapped as the Collector mapped it.
LOGLEVEL_VERBOSITY: dict[str, Verbosity] = {
    "debug": "detailed",
    "info": "normal",
    "warn": "basic",
    "error": "basic",
}
_SAMPLING_IGNORED = "every export is written; the output is bounded by the drains"


@dataclass(frozen=True, kw_only=True)
class DebugConfig:
    """`exporters: debug`."""

    # basic: one line per export; normal: one line per item; detailed: the OTLP/JSON.
    verbosity: Verbosity = "basic"
    sampling_initial: int = field(default=2, metadata={"ignored": _SAMPLING_IGNORED})
    sampling_thereafter: int = field(default=1, metadata={"ignored": _SAMPLING_IGNORED})
    use_internal_logger: bool = field(
        default=True, metadata={"ignored": "the output always goes to stderr"}
    )

    @property
    def effective_verbosity(self) -> Verbosity:
        return self.verbosity


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    """`exporters: logging`, the debug exporter's former name; its default verbosity is
    normal, and the deprecated `loglevel` still sets it."""

    verbosity: Verbosity | None = None
    loglevel: LogLevel | None = None
    sampling_initial: int = field(default=2, metadata={"ignored": _SAMPLING_IGNORED})
    sampling_thereafter: int = field(default=500, metadata={"ignored": _SAMPLING_IGNORED})

    def validate(self) -> list[tuple[str, str]]:
        if self.verbosity is not None and self.loglevel is not None:
            return [("loglevel", "cannot be set together with verbosity; use verbosity only")]
        return []

    @property
    def effective_verbosity(self) -> Verbosity:
        if self.verbosity is not None:
            return self.verbosity
        if self.loglevel is not None:
            return LOGLEVEL_VERBOSITY[self.loglevel]
        return "normal"


class DebugExporter:
    """Writes each payload to `stream` (stderr by default) and flushes; never fails."""

    def __init__(self, exporter_id: str, verbosity: Verbosity, stream: TextIO | None = None):
        self._id = exporter_id
        self._verbosity = verbosity
        self._stream = stream

    @property
    def id(self) -> str:
        return self._id

    @property
    def verbosity(self) -> Verbosity:
        return self._verbosity

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def export(self, payload: Payload, deadline: float) -> ExportResult:
        lines = [f"{self._id}: {payload.items} {payload.signal.item_name} ({payload.signal.value})"]
        if self._verbosity != "basic":
            try:
                request = payload.signal.decode(payload.data)
            except Exception as exc:  # protobuf's DecodeError; the receiver checked it already
                return ExportResult(
                    Outcome.PERMANENT, error=f"{self._id}: invalid payload: {exc}", reason="decode"
                )
            if self._verbosity == "normal":
                lines += [f"{self._id}:   {line}" for line in item_lines(payload.signal, request)]
            else:
                from collector import _otlpjson

                lines.append(_otlpjson.encode(payload.signal, request))
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write("\n".join(lines) + "\n")
        stream.flush()
        return ExportResult.success()


def item_lines(signal: Signal, request: Any) -> list[str]:
    """One line per span, metric point or log record of a decoded request."""
    if signal is Signal.TRACES:
        return [
            f"span {span.name!r} trace_id={span.trace_id.hex()} span_id={span.span_id.hex()}"
            + _attributes(span.attributes)
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]
    if signal is Signal.LOGS:
        return [
            f"log {record.severity_text or record.severity_number} {_value(record.body)!r}"
            f" trace_id={record.trace_id.hex()} span_id={record.span_id.hex()}"
            + _attributes(record.attributes)
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for record in sl.log_records
        ]
    lines: list[str] = []
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                for point in getattr(metric, kind).data_points:
                    lines.append(
                        f"metric {metric.name!r} {kind} {_point_value(point)}"
                        + _attributes(point.attributes)
                    )
    return lines


def _point_value(point: Any) -> str:
    if hasattr(point, "as_double") and point.WhichOneof("value") is not None:
        return f"value={getattr(point, point.WhichOneof('value'))}"
    return f"count={point.count} sum={point.sum}"


def _attributes(attributes: Any) -> str:
    if not attributes:
        return ""
    return " " + " ".join(f"{kv.key}={_value(kv.value)!r}" for kv in attributes)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return getattr(any_value, kind)


def _build(config: DebugConfig | LoggingConfig, context: BuildContext) -> DebugExporter:
    return DebugExporter(context.id, config.effective_verbosity)


FACTORY = ComponentFactory("debug", Kind.EXPORTER, DebugConfig, _build)
LOGGING_FACTORY = ComponentFactory("logging", Kind.EXPORTER, LoggingConfig, _build)
