"""What the backend received: every export request and every item it accepted, with receipt
time and request index, and per-signal counts of unique and duplicate items.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from backend._signals import Signal


@dataclass(frozen=True, slots=True)
class Item:
    """One accepted span, metric point or log record."""

    signal: str
    # Spans: "<trace_id>:<span_id>" in hex; metric points and log records: a digest of their
    # content (metric name and point; log record), so a resend is recognised as a duplicate.
    key: str
    # Span name, metric name, or the log body as text.
    name: str
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    received: float  # time.time() at receipt
    request: int  # index of the request that carried it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One export request and how it was answered."""

    index: int
    signal: str
    protocol: str  # "grpc" or "http"
    # The client's address and port: one connection, one peer.
    peer: str
    received: float
    # Header names in lower case; values as sent.
    headers: dict[str, str]
    content_type: str
    content_encoding: str
    body_bytes: int  # as sent, before decompression
    items: int
    # "accepted", "partial", "http 503", "grpc UNAVAILABLE", "hang", "reset", "closed",
    # "invalid".
    outcome: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SignalStats:
    items: int = 0
    unique: int = 0
    duplicates: int = 0
    requests: int = 0
    rejected_requests: int = 0
    rejected_items: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _SignalStore:
    stats: SignalStats = field(default_factory=SignalStats)
    items: list[Item] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


class Store:
    """Append-only record of requests and items; reset() empties it."""

    def __init__(self) -> None:
        self._signals = {s: _SignalStore() for s in Signal}
        self._requests: list[RequestRecord] = []
        self._next_index = 0

    def reset(self) -> None:
        self._signals = {s: _SignalStore() for s in Signal}
        self._requests = []
        self._next_index = 0

    def next_request_index(self) -> int:
        index = self._next_index
        self._next_index += 1
        return index

    def record_request(self, record: RequestRecord, accepted: list[Item], rejected: int) -> None:
        store = self._signals[Signal(record.signal)]
        self._requests.append(record)
        store.stats.requests += 1
        if record.outcome not in ("accepted", "partial"):
            store.stats.rejected_requests += 1
        store.stats.rejected_items += rejected
        for item in accepted:
            store.items.append(item)
            store.stats.items += 1
            if item.key in store.seen:
                store.stats.duplicates += 1
            else:
                store.seen.add(item.key)
                store.stats.unique += 1

    def stats(self) -> dict[str, SignalStats]:
        return {s.value: SignalStats(**asdict(self._signals[s].stats)) for s in Signal}

    def items(self, signal: Signal) -> list[Item]:
        return list(self._signals[signal].items)

    def requests(self, signal: Signal | None = None) -> list[RequestRecord]:
        if signal is None:
            return list(self._requests)
        return [r for r in self._requests if r.signal == signal.value]


def items_of(signal: Signal, request: Any, received: float, index: int) -> list[Item]:
    """The items of a decoded Export*ServiceRequest, in order."""
    out: list[Item] = []
    if signal is Signal.TRACES:
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
                    out.append(
                        Item(
                            signal.value,
                            f"{trace_id}:{span_id}",
                            span.name,
                            trace_id,
                            span_id,
                            attributes(span.attributes),
                            received,
                            index,
                        )
                    )
    elif signal is Signal.LOGS:
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    body = any_value(record.body)
                    out.append(
                        Item(
                            signal.value,
                            _digest(record.SerializeToString(deterministic=True)),
                            body if isinstance(body, str) else repr(body),
                            record.trace_id.hex(),
                            record.span_id.hex(),
                            attributes(record.attributes),
                            received,
                            index,
                        )
                    )
    else:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is None:
                        continue
                    for point in getattr(metric, kind).data_points:
                        content = (
                            metric.name.encode()
                            + b"\0"
                            + point.SerializeToString(deterministic=True)
                        )
                        out.append(
                            Item(
                                signal.value,
                                _digest(content),
                                metric.name,
                                "",
                                "",
                                attributes(point.attributes),
                                received,
                                index,
                            )
                        )
    return out


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:32]


def attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in key_values}


def any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)
