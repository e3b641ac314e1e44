from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandoverRequest(_message.Message):
    __slots__ = ("request_id", "source")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    source: str
    def __init__(self, request_id: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class HandoverReply(_message.Message):
    __slots__ = ("first",)
    FIRST_FIELD_NUMBER: _ClassVar[int]
    first: bool
    def __init__(self, first: _Optional[bool] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("request_id", "reason", "spill_remaining", "await_handover", "handover_timeout_ms", "max_drain_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SPILL_REMAINING_FIELD_NUMBER: _ClassVar[int]
    AWAIT_HANDOVER_FIELD_NUMBER: _ClassVar[int]
    HANDOVER_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_DRAIN_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    reason: str
    spill_remaining: bool
    await_handover: bool
    handover_timeout_ms: int
    max_drain_ms: int
    def __init__(self, request_id: _Optional[str] = ..., reason: _Optional[str] = ..., spill_remaining: _Optional[bool] = ..., await_handover: _Optional[bool] = ..., handover_timeout_ms: _Optional[int] = ..., max_drain_ms: _Optional[int] = ...) -> None: ...

class SignalCounts(_message.Message):
    __slots__ = ("exported", "dropped", "buffered", "buffered_bytes", "spilled")
    class DroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    EXPORTED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SPILLED_FIELD_NUMBER: _ClassVar[int]
    exported: int
    dropped: _containers.ScalarMap[str, int]
    buffered: int
    buffered_bytes: int
    spilled: int
    def __init__(self, exported: _Optional[int] = ..., dropped: _Optional[_Mapping[str, int]] = ..., buffered: _Optional[int] = ..., buffered_bytes: _Optional[int] = ..., spilled: _Optional[int] = ...) -> None: ...

class DrainReply(_message.Message):
    __slots__ = ("traces", "metrics", "logs", "duration_us", "complete", "last_error", "rejected_requests", "handover", "handover_wait_us")
    class RejectedRequestsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TRACES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    HANDOVER_FIELD_NUMBER: _ClassVar[int]
    HANDOVER_WAIT_US_FIELD_NUMBER: _ClassVar[int]
    traces: SignalCounts
    metrics: SignalCounts
    logs: SignalCounts
    duration_us: int
    complete: bool
    last_error: str
    rejected_requests: _containers.ScalarMap[str, int]
    handover: str
    handover_wait_us: int
    def __init__(self, traces: _Optional[_Union[SignalCounts, _Mapping]] = ..., metrics: _Optional[_Union[SignalCounts, _Mapping]] = ..., logs: _Optional[_Union[SignalCounts, _Mapping]] = ..., duration_us: _Optional[int] = ..., complete: _Optional[bool] = ..., last_error: _Optional[str] = ..., rejected_requests: _Optional[_Mapping[str, int]] = ..., handover: _Optional[str] = ..., handover_wait_us: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("traces", "metrics", "logs", "ready", "last_export_error", "uptime_ms", "accepted_traces", "accepted_metrics", "accepted_logs", "pid", "rejected_requests")
    class RejectedRequestsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TRACES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    LAST_EXPORT_ERROR_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_TRACES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_METRICS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_LOGS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    traces: SignalCounts
    metrics: SignalCounts
    logs: SignalCounts
    ready: bool
    last_export_error: str
    uptime_ms: int
    accepted_traces: int
    accepted_metrics: int
    accepted_logs: int
    pid: int
    rejected_requests: _containers.ScalarMap[str, int]
    def __init__(self, traces: _Optional[_Union[SignalCounts, _Mapping]] = ..., metrics: _Optional[_Union[SignalCounts, _Mapping]] = ..., logs: _Optional[_Union[SignalCounts, _Mapping]] = ..., ready: _Optional[bool] = ..., last_export_error: _Optional[str] = ..., uptime_ms: _Optional[int] = ..., accepted_traces: _Optional[int] = ..., accepted_metrics: _Optional[int] = ..., accepted_logs: _Optional[int] = ..., pid: _Optional[int] = ..., rejected_requests: _Optional[_Mapping[str, int]] = ...) -> None: ...
