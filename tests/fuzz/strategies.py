"""Hypothesis strategies for the fuzz targets: OTLP export requests (valid, with huge or deeply
nested attributes), ways to break their bytes, and collector YAML (valid, broken, mistyped,
naming unknown components).

FUZZ is the settings every fuzz test uses: AFTERFLUSH_FUZZ_EXAMPLES examples per target
(40 by default, as `make test` runs them; `make chaos` asks for more), derandomized unless
AFTERFLUSH_FUZZ_RANDOM=1 so that `make test` is repeatable.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from collector._signals import Signal

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


@st.composite
def requests(draw: Any, signal: Signal) -> Any:
    """An Export*ServiceRequest of `signal` with 1-2 resources, scopes and 1-3 items each
    (now and then an empty one, or one without items)."""
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
                        trace_id=draw(_ids), span_id=draw(_span_ids), name=draw(_text),
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
                                                trace_id=draw(_ids), span_id=draw(_span_ids))
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


# -- collector YAML -----------------------------------------------------------------------------

VALID_CONFIG = """\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
      http:
        endpoint: 127.0.0.1:4318
processors:
  batch:
    send_batch_size: 512
    timeout: 1s
  flushcontrol:
    max_buffer_size_mib: 8
exporters:
  otlphttp:
    endpoint: https://api.example.com
    headers:
      x-api-key: ${env:API_KEY}
    retry_on_failure:
      initial_interval: 100ms
  debug:
    verbosity: basic
extensions:
  health_check: {}
service:
  extensions: [health_check]
  telemetry:
    logs:
      level: info
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch, flushcontrol]
      exporters: [otlphttp]
    metrics:
      receivers: [otlp]
      processors: [flushcontrol]
      exporters: [otlphttp, debug]
    logs:
      receivers: [otlp]
      exporters: [debug]
"""

_KEYS = ["receivers", "processors", "exporters", "extensions", "service", "pipelines", "otlp",
         "otlphttp", "debug", "batch", "flushcontrol", "decouple", "kafka", "zipkin", "grpc",
         "http", "endpoint", "traces", "metrics", "logs", "traces/2", "otlp/", "/x", "protocols",
         "retry_on_failure", "timeout", "headers", "max_buffer_size_mib", "compression",
         "verbosity", "telemetry", "level", "tls", "insecure", ""]
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 2**40), st.floats(allow_nan=True),
    st.sampled_from(["", "5s", "250ms", "-1s", "1h", "abc", "127.0.0.1:0", "http://x",
                     "${env:NOPE}", "${env:API_KEY}", "${unknown:x}", "$${env:X}", "gzip",
                     "[otlp]", "{a: 1}", "~", "yes", "0x10", "1e3", "*a"]),
    _text,
)
yaml_documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5),
    ),
    max_leaves=30,
)


@st.composite
def broken_configs(draw: Any) -> str:
    """The valid config with lines deleted, duplicated, re-indented or replaced, values
    swapped for other types, or fragments of YAML syntax dropped in."""
    lines = VALID_CONFIG.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        index = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "value", "key",
                                     "syntax"]))
        line = lines[index]
        if edit == "delete":
            del lines[index]
        elif edit == "duplicate":
            lines.insert(index, line)
        elif edit == "indent":
            lines[index] = "  " + line
        elif edit == "dedent":
            lines[index] = line[2:]
        elif edit == "value" and ":" in line:
            key = line.split(":", 1)[0]
            lines[index] = f"{key}: {draw(_scalars.map(_yaml_scalar))}"
        elif edit == "key" and ":" in line:
            indent = line[: len(line) - len(line.lstrip())]
            lines[index] = f"{indent}{draw(st.sampled_from(_KEYS))}:{line.split(':', 1)[1]}"
        else:
            lines.insert(index, draw(st.sampled_from(
                ["- [", "{", "}", ": :", "? x", "&a x", "*a", "!!python/object:os.system x",
                 "\t- tab", "key: 'unterminated", "<<: *a", "---", "...", "%YAML 1.1"])))
    return "\n".join(lines) + "\n"


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return repr(value)
