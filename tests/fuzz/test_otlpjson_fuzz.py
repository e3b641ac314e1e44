"""Fuzzing the backend's OTLP/JSON codec (backend._otlpjson, which decodes the backend's
OTLP/HTTP JSON bodies and, in the tests' ledger, the OTLP JSON lines the collector spills): any
bytes either decode to a request or raise ValueError with a one-line reason (never another
exception), what decodes also survives the binary round trip, and what it encodes decodes
again to the same request."""

from __future__ import annotations

import json

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from backend import _otlpjson
from backend._signals import Signal
from tests.fuzz.strategies import FUZZ, SIGNALS, TIMEOUT_SECONDS, broken, nested_value, requests

pytestmark = pytest.mark.timeout(TIMEOUT_SECONDS)

_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20,
)
_keys = ["resourceSpans", "resource_spans", "resourceMetrics", "resourceLogs", "scopeSpans",
         "spans", "traceId", "spanId", "attributes", "key", "value", "stringValue", "intValue",
         "kvlistValue", "arrayValue", "values", "gauge", "dataPoints", "asInt", "logRecords",
         "body", "kind", "severityNumber", "name", "startTimeUnixNano"]
# Documents shaped like OTLP/JSON (its field names, any values): they reach the field parser.
_otlp_shaped = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
              st.sampled_from(["0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "zz", "",
                               "SPAN_KIND_SERVER", "1e400", "-1", "18446744073709551616"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(_keys), inner, max_size=4)),
    max_leaves=25,
)



def _decodes_or_says_why(signal: Signal, body: bytes) -> None:
    try:
        message = _otlpjson.decode(signal, body)
    except ValueError as exc:
        text = str(exc)
        assert text and "\n" not in text and len(text) < 2000, text
        return
    # What the backend accepted is handled as protobuf: it must parse again.
    again = signal.decode(message.SerializeToString())
    assert again == message or again.SerializeToString() == message.SerializeToString()


@pytest.mark.parametrize("signal", SIGNALS, ids=lambda s: s.value)
def test_any_bytes_decode_or_raise_value_error_with_one_line(signal):
    @FUZZ
    @given(body=st.one_of(
        st.binary(max_size=300),
        _json_values.map(lambda v: json.dumps(v).encode()),
        _otlp_shaped.map(lambda v: json.dumps(v).encode()),
        st.builds(lambda d: json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
            {"attributes": [{"key": "k", "value": nested_value(d)}]}]}]}]}).encode(),
            st.integers(0, 200)),
    ))
    def one(body: bytes) -> None:
        _decodes_or_says_why(signal, body)

    one()


@pytest.mark.parametrize("signal", SIGNALS, ids=lambda s: s.value)
def test_broken_otlp_json_of_real_requests_decodes_or_says_why(signal):
    @FUZZ
    @given(data=st.data())
    def one(data) -> None:
        message = data.draw(requests(signal))
        text = _otlpjson.encode(signal, message).encode()
        _decodes_or_says_why(signal, data.draw(broken(text)))

    one()


@pytest.mark.parametrize("signal", SIGNALS, ids=lambda s: s.value)
def test_what_the_codec_encodes_decodes_to_the_same_request(signal):
    # Requests the binary protobuf parser accepts, with ids of the proper length (OTLP
    # receivers refuse others)
    @FUZZ
    @given(message=requests(signal).filter(_ids_well_formed).filter(_parses(signal)))
    def one(message) -> None:
        line = _otlpjson.encode(signal, message)
        assert "\n" not in line
        decoded = _otlpjson.decode(signal, line)
        # Equal as OTLP/JSON (NaN points compare unequal as messages)
        assert _otlpjson.encode(signal, decoded) == line

    one()


def _parses(signal: Signal):
    def parses(message) -> bool:
        try:
            signal.decode(message.SerializeToString())
        except DecodeError:
            return False
        return True

    return parses


def _ids_well_formed(message) -> bool:
    sizes = (("trace_id", 16), ("span_id", 8))
    return all(len(getattr(item, field)) in (0, size)
               for item in _items(message) for field, size in sizes)


def _items(message):
    for rs in getattr(message, "resource_spans", []):
        for ss in rs.scope_spans:
            yield from ss.spans
    for rl in getattr(message, "resource_logs", []):
        for sl in rl.scope_logs:
            yield from sl.log_records


# Nested kvlists in a metric data point where the two parsers used to disagree by one level.
BOUNDARY_DEPTH = 31


def test_a_metrics_request_the_binary_parser_takes_decodes_from_its_otlp_json():
    message = Signal.METRICS.request_type()
    point = message.resource_metrics.add().scope_metrics.add().metrics.add(
        name="m").gauge.data_points.add(as_int=1)
    value = nested_value(BOUNDARY_DEPTH)
    _set(point.attributes.add(key="deep").value, value)
    Signal.METRICS.decode(message.SerializeToString())  # the receiver takes it
    _otlpjson.decode(Signal.METRICS, _otlpjson.encode(Signal.METRICS, message))


def _set(target, value) -> None:
    (kind, content), = value.items()
    if kind == "kvlist_value":
        for pair in content["values"]:
            _set(target.kvlist_value.values.add(key=pair["key"]).value, pair["value"])
    else:
        setattr(target, kind, content)
