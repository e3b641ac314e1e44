"""Fuzzing the OTLP/HTTP receiver of a running collector: truncated, garbage, deeply nested
and huge bodies, gzip and deflate bombs, broken compression, wrong content types, methods and
paths. Every request gets the status the receiver documents (200, 400, 404, 405, 413, 415)
with a one-line reason; a well-formed request from another sender right after each one is
accepted; the collector never crashes or prints a traceback, and counts exactly what it took
and what it refused."""

from __future__ import annotations

import gzip
import http.client
import json
import urllib.parse
import zlib
from collections import Counter
from dataclasses import dataclass

import pytest
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from hypothesis import given
from hypothesis import strategies as st

from collector import _otlpjson
from collector._signals import Signal
from tests.fixtures.backend import trace_payload
from tests.fuzz.strategies import (
    BODY_LIMIT,
    FUZZ,
    SIGNALS,
    TIMEOUT_SECONDS,
    broken,
    deflate_bomb,
    gzip_bomb,
    requests,
)

pytestmark = pytest.mark.timeout(TIMEOUT_SECONDS)

PROTOBUF, JSON = "application/x-protobuf", "application/json"
WRONG_TYPES = ["", "text/plain", "application/xml", "application/protobuf", "application/grpc",
               "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "json",
               "*/*", "application/json5"]
RIGHT_TYPES = {PROTOBUF: [PROTOBUF, "application/x-protobuf; charset=binary", "Application/X-Protobuf"],
               JSON: [JSON, "application/json; charset=utf-8", "APPLICATION/JSON"]}
CODINGS = ["gzip", "x-gzip", "deflate", "raw deflate", "identity", "br", "zstd",
           "gzip bomb", "deflate bomb", "truncated gzip", "garbage gzip", "two gzip members"]
WRONG_PATHS = ["/", "/v1", "/v1/trace", "/v1/traces/", "/v1/TRACES", "/v2/traces", "/v1/spans",
               "//v1/traces", "/v1/traces/../logs"]
REASONS = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type",
           413: "too_large", 400: "bad_data"}
GOOD = trace_payload(1)


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    content_type: str
    coding_header: str
    body: bytes
    chunked: bool
    describe: str


def _now_and_then(draw) -> bool:
    # About one case in ten; hypothesis favours the ends of a range, so the list is long.
    return draw(st.sampled_from([False] * 19 + [True]))


WRONGS = ["nothing", "body", "path", "method", "content type", "coding", "chunked"]


@st.composite
def cases(draw, wrong: str) -> Case:
    """A request with `wrong` wrong about it (and now and then something else too)."""
    wrongs = {wrong}
    if draw(st.sampled_from([False] * 9 + [True])):
        wrongs.add(draw(st.sampled_from(WRONGS)))
    signal = draw(st.sampled_from(SIGNALS))
    path = signal.http_path
    if "path" in wrongs:
        path = draw(st.sampled_from([*WRONG_PATHS, signal.http_path + "?x=1"]))
    method = "POST"
    if "method" in wrongs:
        method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]))
    media = draw(st.sampled_from([PROTOBUF, JSON]))
    message = draw(requests(signal))
    raw = (_otlpjson.encode(signal, message).encode() if media == JSON
           else message.SerializeToString())
    payload = draw(broken(raw)) if "body" in wrongs else raw
    content_type = draw(st.sampled_from(RIGHT_TYPES[media]))
    if "content type" in wrongs:
        content_type = draw(st.sampled_from(WRONG_TYPES))
    coding = draw(st.sampled_from(CODINGS)) if "coding" in wrongs else ""
    header, body = _compress(coding, payload, draw(st.integers(1, 64)))
    return Case(method, path, content_type, header, body, "chunked" in wrongs,
                f"{method} {path} {content_type!r} {coding!r} {len(body)} bytes")


def _compress(coding: str, data: bytes, cut: int) -> tuple[str, bytes]:
    if coding in ("gzip", "x-gzip"):
        return coding, gzip.compress(data)
    if coding == "deflate":
        return coding, zlib.compress(data)
    if coding == "raw deflate":
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return "deflate", compressor.compress(data) + compressor.flush()
    if coding == "gzip bomb":
        return "gzip", gzip_bomb(BODY_LIMIT + 1)
    if coding == "deflate bomb":
        return "deflate", deflate_bomb(4 * BODY_LIMIT)
    if coding == "truncated gzip":
        whole = gzip.compress(data)
        return "gzip", whole[: max(0, len(whole) - cut)]
    if coding == "garbage gzip":
        return "gzip", b"\x1f\x8b\x08\x00" + bytes(range(cut))
    if coding == "two gzip members":
        half = len(data) // 2
        return "gzip", gzip.compress(data[:half]) + gzip.compress(data[half:])
    return coding, data


def expected(case: Case) -> tuple[int, Signal | None, int]:
    """What the receiver documents for `case`: (status, signal, items accepted)."""
    signal = {s.http_path: s for s in Signal}.get(urllib.parse.urlsplit(case.path).path)
    if signal is None:
        return 404, None, 0
    if case.method != "POST":
        return 405, signal, 0
    media = case.content_type.partition(";")[0].strip().lower()
    if media not in (PROTOBUF, JSON):
        return 415, signal, 0
    if not case.chunked and len(case.body) > BODY_LIMIT:
        return 413, signal, 0
    coding = case.coding_header.strip().lower()
    if coding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        return 415, signal, 0
    if len(case.body) > BODY_LIMIT:
        return 413, signal, 0
    status, data = _inflate(case.body, coding)
    if status != 200:
        return status, signal, 0
    try:
        message = _otlpjson.decode(signal, data) if media == JSON else signal.decode(data)
    except (ValueError, DecodeError):
        return 400, signal, 0
    return 200, signal, signal.count_items(message)


def _inflate(body: bytes, coding: str) -> tuple[int, bytes]:
    """HTTP content coding as RFC 9110 has it: gzip may hold several members, deflate is
    zlib-wrapped (raw accepted); more than BODY_LIMIT decoded bytes is too large."""
    if coding in ("", "identity"):
        return 200, body
    if coding == "deflate":
        wrapped = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
    else:
        wbits = 16 + zlib.MAX_WBITS
    out, rest = b"", body
    try:
        while True:
            inflater = zlib.decompressobj(wbits)
            out += inflater.decompress(rest, BODY_LIMIT - len(out) + 1)
            if len(out) > BODY_LIMIT or inflater.unconsumed_tail:
                return 413, b""
            if not inflater.eof:
                return 400, b""
            rest = inflater.unused_data
            if not rest or coding == "deflate":
                return 200, out
    except zlib.error:
        return 400, b""


def send(port: int, case: Case) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": case.content_type}
        if case.coding_header:
            headers["Content-Encoding"] = case.coding_header
        if case.chunked:
            connection.request(case.method, case.path, body=iter([case.body]), headers=headers,
                               encode_chunked=True)
        else:
            connection.request(case.method, case.path, body=case.body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def check_answer(case: Case, status: int, headers: dict[str, str], body: bytes) -> None:
    """A success is an empty ExportResponse; a refusal carries one line saying why, as a
    google.rpc.Status in the request's encoding."""
    json_answer = case.content_type.partition(";")[0].strip().lower() == JSON
    if status == 200:
        assert body == (b"{}" if json_answer else b""), body[:200]
        return
    if case.method == "HEAD":
        return
    if status == 405:
        assert headers.get("allow") == "POST"
    if json_answer:
        document = json.loads(body)
        message = document["message"]
        assert isinstance(document["code"], int)
    else:
        parsed = status_pb2.Status()
        parsed.ParseFromString(body)
        message = parsed.message
    assert message and "\n" not in message and "Traceback" not in message, message


@pytest.mark.parametrize("wrong", WRONGS)
def test_http_receiver_answers_every_malformed_request_as_documented(fuzz_collector, wrong):
    port = fuzz_collector.http_port
    before = fuzz_collector.status()
    accepted: Counter[Signal] = Counter()
    refused: Counter[str] = Counter()
    statuses: Counter[int] = Counter()

    @FUZZ
    @given(case=cases(wrong))
    def one_request(case: Case) -> None:
        status, headers, body = send(port, case)
        want, signal, items = expected(case)
        statuses[status] += 1
        if status == want == 200:
            accepted[signal] += items
        elif status == want:
            refused[REASONS[want]] += 1
        assert status == want, f"{case.describe}: got {status}, expected {want}: {body[:300]!r}"
        check_answer(case, status, headers, body)
        # Another sender, right after: unaffected
        good = Case("POST", "/v1/traces", PROTOBUF, "", GOOD.data, False, "good")
        assert send(port, good)[0] == 200
        accepted[Signal.TRACES] += GOOD.items

    one_request()
    # Then the run met what it was after: accepted data, or refusals
    assert statuses[200] if wrong in ("nothing", "chunked") else set(statuses) - {200}, statuses
    # And the collector is still serving, printed no traceback, and counted exactly what it
    # accepted and what it refused, by reason
    assert fuzz_collector.proc.poll() is None
    after = fuzz_collector.status()
    assert (
        after.accepted_traces - before.accepted_traces,
        after.accepted_metrics - before.accepted_metrics,
        after.accepted_logs - before.accepted_logs,
    ) == (accepted[Signal.TRACES], accepted[Signal.METRICS], accepted[Signal.LOGS])
    counted = Counter(dict(after.rejected_requests))
    counted.subtract(Counter(dict(before.rejected_requests)))
    assert +counted == refused
    assert "Traceback" not in fuzz_collector.stderr
    assert " ERROR " not in fuzz_collector.stderr, fuzz_collector.stderr[-2000:]


def test_a_span_with_a_trace_id_of_the_wrong_length_never_travels_with_other_data(fuzz_collector):
    # Coalesced with other senders' requests, it would make a backend that checks ids (the
    # OpenTelemetry Collector does) refuse them all: OTLP/JSON refuses it at once (its ids are
    # decoded there); as protobuf it is dropped alone at the drain, counted with its reason.
    message = Signal.TRACES.request_type()
    message.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 5, span_id=b"\x02" * 8, name="bad id")
    as_json = Case("POST", "/v1/traces", JSON, "", _otlpjson.encode(Signal.TRACES, message).encode(),
                   False, "json")
    as_protobuf = Case("POST", "/v1/traces", PROTOBUF, "", message.SerializeToString(), False,
                       "protobuf")
    port = fuzz_collector.http_port
    fuzz_collector.drain()  # whatever earlier cases left
    assert (send(port, as_json)[0], send(port, as_protobuf)[0]) == (400, 200)
    reply = fuzz_collector.drain()
    assert dict(reply.traces.dropped) == {"invalid_ids": 1}
    assert reply.traces.buffered == 0
