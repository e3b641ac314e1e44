"""Hypothesis strategies for the fuzz targets: OTLP export requests (valid, with huge or deeply
nested attributes), ways to break their bytes (any way, or so that no OTLP decoder can take
them), and compression bombs.

FUZZ is the settings every fuzz test uses: AFTERFLUSH_FUZZ_EXAMPLES examples per target
(40 by default, as `make test` runs them; `make chaos` asks for more), derandomized unless
AFTERFLUSH_FUZZ_RANDOM=1 so that `make test` is repeatable.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from backend import _otlpjson
from backend._signals import Signal

EXAMPLES = int(os.environ.get("AFTERFLUSH_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("AFTERFLUSH_FUZZ_RANDOM", "") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture, HealthCheck.large_base_example],
)
# pytest-timeout bound of one fuzz test, grown with the number of examples asked for.
TIMEOUT_SECONDS = max(120, EXAMPLES // 4)
# Bounds the receivers under fuzzing are configured with (small, so that oversize cases are
# cheap to make).
BODY_LIMIT = 1024 * 1024

SIGNALS = list(Signal)
_text = st.text(max_size=40)
_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        _text.map(lambda v: {"string_value": v}),
        st.booleans().map(lambda v: {"bool_value": v}),
        _ints.map(lambda v: {"int_value": v}),
        st.floats(allow_nan=True, allow_infinity=True).map(lambda v: {"double_value": v}),
        st.binary(max_size=20).map(lambda v: {"bytes_value": v}),
    )


any_values = st.recursive(
    _leaf(),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda vs: {"array_value": {"values": vs}}),
        st.lists(st.tuples(_text, inner), max_size=3).map(
            lambda kvs: {"kvlist_value": {"values": [{"key": k, "value": v} for k, v in kvs]}}
        ),
    ),
    max_leaves=8,
)


def nested_value(depth: int) -> dict[str, Any]:
    """A kvlist nested `depth` times: past about 31 levels, deeper than the protobuf parser
    and the OTLP JSON decoder take."""
    value: dict[str, Any] = {"string_value": "leaf"}
    for _ in range(depth):
        value = {"kvlist_value": {"values": [{"key": "k", "value": value}]}}
    return value


@st.composite
def attributes(draw: Any) -> list[dict[str, Any]]:
    kind = draw(st.sampled_from(["plain"] * 12 + ["huge", "deep"]))
    if kind == "huge":
        size = draw(st.sampled_from([1024, 64 * 1024, 600 * 1024, BODY_LIMIT + 4096]))
        return [{"key": "huge", "value": {"string_value": "x" * size}}]
    if kind == "deep":
        return [{"key": "deep", "value": nested_value(draw(st.integers(20, 60)))}]
    pairs = draw(st.lists(st.tuples(_text, any_values), max_size=4))
    return [{"key": k, "value": v} for k, v in pairs]


_ids = st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20))
_span_ids = st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=10))
# Ids as OTLP has them: empty, or exactly 16 (trace) and 8 (span) bytes.
_valid_ids = st.one_of(st.binary(min_size=16, max_size=16), st.just(b""))
_valid_span_ids = st.one_of(st.binary(min_size=8, max_size=8), st.just(b""))


@st.composite
def requests(draw: Any, signal: Signal, *, valid_ids: bool = False) -> Any:
    """An Export*ServiceRequest of `signal` with 1-2 resources, scopes and 1-3 items each
    (now and then an empty one, or one without items). Ids are of any length unless
    `valid_ids`."""
    ids, span_ids = (_valid_ids, _valid_span_ids) if valid_ids else (_ids, _span_ids)
    message = signal.request_type()
    if draw(st.sampled_from([False] * 19 + [True])):
        return message
    for _ in range(draw(st.integers(1, 2))):
        resource_attrs = draw(attributes())
        if signal is Signal.TRACES:
            rs = message.resource_spans.add()
            _set_attrs(rs.resource.attributes, resource_attrs)
            for _ in range(draw(st.integers(1, 2))):
                ss = rs.scope_spans.add()
                ss.scope.name = draw(_text)
                for _ in range(draw(st.integers(1, 3))):
                    span = ss.spans.add(
                        trace_id=draw(ids), span_id=draw(span_ids), name=draw(_text),
                        kind=draw(st.integers(0, 5)),
                        start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
                    )
                    _set_attrs(span.attributes, draw(attributes()))
        elif signal is Signal.METRICS:
            rm = message.resource_metrics.add()
            _set_attrs(rm.resource.attributes, resource_attrs)
            for _ in range(draw(st.integers(1, 2))):
                metric = rm.scope_metrics.add().metrics.add(name=draw(_text))
                kind = draw(st.sampled_from(["gauge", "sum", "histogram", "gauge", "none"]))
                if kind == "none":
                    continue
                for _ in range(draw(st.integers(1, 3))):
                    point = getattr(metric, kind).data_points.add()
                    if kind != "histogram":
                        point.as_double = draw(st.floats(allow_nan=True))
                    else:
                        point.count = draw(st.integers(0, 2**64 - 1))
                    _set_attrs(point.attributes, draw(attributes()))
        else:
            rl = message.resource_logs.add()
            _set_attrs(rl.resource.attributes, resource_attrs)
            for _ in range(draw(st.integers(1, 2))):
                sl = rl.scope_logs.add()
                for _ in range(draw(st.integers(1, 3))):
                    record = sl.log_records.add(severity_number=draw(st.integers(0, 24)),
                                                trace_id=draw(ids), span_id=draw(span_ids))
                    _fill(record.body, draw(any_values))
                    _set_attrs(record.attributes, draw(attributes()))
    return message


def _set_attrs(target: Any, pairs: list[dict[str, Any]]) -> None:
    for pair in pairs:
        kv = target.add(key=pair["key"])
        _fill(kv.value, pair["value"])


def _fill(target: Any, value: dict[str, Any]) -> None:
    (kind, content), = value.items()
    if kind == "array_value":
        for item in content["values"]:
            _fill(target.array_value.values.add(), item)
        if not content["values"]:
            target.array_value.SetInParent()
    elif kind == "kvlist_value":
        for pair in content["values"]:
            _fill(target.kvlist_value.values.add(key=pair["key"]).value, pair["value"])
        if not content["values"]:
            target.kvlist_value.SetInParent()
    else:
        setattr(target, kind, content)


# -- breaking bytes -----------------------------------------------------------------------------

@st.composite
def broken(draw: Any, data: bytes) -> bytes:
    """`data` as it is, truncated, with bytes flipped, with garbage around it, or garbage."""
    how = draw(st.sampled_from(["as is"] * 12 + ["truncated", "flipped", "wrapped", "garbage"]))
    if how == "truncated" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flipped" and data:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            index = draw(st.integers(0, len(out) - 1))
            out[index] ^= draw(st.integers(1, 255))
        return bytes(out)
    if how == "wrapped":
        return draw(st.binary(max_size=8)) + data + draw(st.binary(max_size=8))
    if how == "garbage":
        return draw(st.binary(max_size=200))
    return data


def gzip_bomb(size: int) -> bytes:
    """A few KB of gzip that inflate to `size` zero bytes."""
    return gzip.compress(b"\0" * size, compresslevel=9)


def deflate_bomb(size: int) -> bytes:
    return zlib.compress(b"\0" * size, 9)


@st.composite
def undecodable(draw: Any, signal: Signal, data: bytes, media: str) -> bytes:
    """`data` (a serialized request of `signal`, or its OTLP/JSON when media is "json") broken
    so that it cannot decode, whichever OTLP decoder reads it. Broken JSON is ASCII (its text
    \\u-escaped): the collector's answer quotes the bytes around the error, and a quote that is
    not UTF-8 changes the answer (see the HTTP receiver fuzz test)."""
    if media == "json":
        data = json.dumps(json.loads(data), separators=(",", ":")).encode()
        how = draw(st.sampled_from(["truncated", "not an object", "garbage", "bad id"]))
        if how == "truncated":
            # A JSON object is not complete before its last byte.
            return data[: draw(st.integers(0, len(data) - 1))]
        if how == "not an object":
            return draw(st.sampled_from([b"[]", b"1", b'"resourceSpans"', b"true", b"[{}]"]))
        if how == "garbage":
            return draw(st.sampled_from([b"x", b"<", b"]", b"\x00"])) + data
        bad = json.loads(_otlpjson.encode(signal, draw(with_bad_id(signal))))
        return json.dumps(bad, separators=(",", ":")).encode()
    how = draw(st.sampled_from(["truncated", "bad wire type", "overlong", "bad id"]))
    if how == "truncated" and data:
        # Cut inside the first field: its tag, its length, or the bytes its length promises.
        return data[: draw(st.integers(1, _first_field_end(data) - 1))]
    if how == "bad wire type":
        # Field 1 with wire type 7, which protobuf does not have.
        return b"\x0f" + data
    if how == "overlong":
        # A first field that promises more bytes than the body holds.
        return b"\x0a" + _varint(len(data) + draw(st.integers(1, 1000))) + data
    return draw(with_bad_id(signal)).SerializeToString()


@st.composite
def with_bad_id(draw: Any, signal: Signal) -> Any:
    """A valid request of `signal` plus one item whose trace or span id has the wrong length."""
    message = draw(requests(signal, valid_ids=True))
    trace_id, span_id = draw(st.sampled_from([
        (draw(st.binary(min_size=1, max_size=15)), b""),
        (draw(st.binary(min_size=17, max_size=20)), b"\x01" * 8),
        (b"\x01" * 16, draw(st.binary(min_size=1, max_size=7))),
        (b"", draw(st.binary(min_size=9, max_size=12))),
    ]))
    if signal is Signal.TRACES:
        message.resource_spans.add().scope_spans.add().spans.add(
            trace_id=trace_id, span_id=span_id, name="bad id")
    elif signal is Signal.LOGS:
        message.resource_logs.add().scope_logs.add().log_records.add(
            trace_id=trace_id, span_id=span_id)
    else:
        point = message.resource_metrics.add().scope_metrics.add().metrics.add(
            name="bad id").gauge.data_points.add(as_int=1)
        point.exemplars.add(as_int=1, trace_id=trace_id, span_id=span_id)
    return message


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _first_field_end(data: bytes) -> int:
    """Where the first field of a serialized request ends (its fields are all messages:
    a one-byte tag, a varint length, the bytes)."""
    length, shift, index = 0, 0, 1
    while True:
        byte = data[index]
        length |= (byte & 0x7F) << shift
        shift += 7
        index += 1
        if not byte & 0x80:
            return index + length
