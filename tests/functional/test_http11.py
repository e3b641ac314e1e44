"""The companion's HTTP/1.1 module on loopback: keep-alive and pipelining, chunked bodies, size
limits, 100-continue, timeouts, malformed input, graceful shutdown, and the one-shot client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from companion import _http11
from companion._http11 import Request, Response, Server

WAIT_SECONDS = 10.0
Raw = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def echo(request: Request) -> Response:
    body = await request.read()
    return Response(
        200,
        {"Content-Type": "text/plain", "X-Seen": f"{request.method} {request.path}"},
        body,
    )


@contextlib.asynccontextmanager
async def running_server(
    handler: Callable[[Request], Awaitable[Response]] = echo, **options: Any
) -> AsyncIterator[Server]:
    server = Server(handler, **options)
    await server.start("127.0.0.1")
    try:
        yield server
    finally:
        await server.aclose()


@contextlib.asynccontextmanager
async def connection(server: Server) -> AsyncIterator[Raw]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response framed by Content-Length (as this server writes them)."""
    async with asyncio.timeout(WAIT_SECONDS):
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *lines = head.split("\r\n")[:-2]
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split(" ")[1]), headers, body


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True when the server closes the connection with nothing more to read."""
    async with asyncio.timeout(WAIT_SECONDS):
        return await reader.read(1) == b""


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while not condition():
            await asyncio.sleep(0.01)


# --- keep-alive and pipelining ------------------------------------------------------------


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with running_server() as server, connection(server) as (reader, writer):
        await send(writer, post("/a", b"first"))
        first = await read_response(reader)
        await send(writer, post("/b", b"second"))
        second = await read_response(reader)

    assert (first[0], first[1]["x-seen"], first[2]) == (200, "POST /a", b"first")
    assert (second[0], second[1]["x-seen"], second[2]) == (200, "POST /b", b"second")
    assert "connection" not in first[1]


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with running_server() as server, connection(server) as (reader, writer):
        # Given three requests sent in one write, the last asking to close
        await send(
            writer,
            post("/1", b"one") + post("/2", b"") + post("/3", b"three", "Connection: close"),
        )
        answers = [await read_response(reader) for _ in range(3)]
        closed = await closed_by_server(reader)

    assert [(a[1]["x-seen"], a[2]) for a in answers] == [
        ("POST /1", b"one"),
        ("POST /2", b""),
        ("POST /3", b"three"),
    ]
    assert answers[2][1]["connection"] == "close"
    assert closed


async def test_http_1_0_closes_unless_asked_to_keep_alive() -> None:
    async with running_server() as server:
        async with connection(server) as (reader, writer):
            await send(writer, b"GET /plain HTTP/1.0\r\n\r\n")
            plain = await read_response(reader)
            plain_closed = await closed_by_server(reader)
        async with connection(server) as (reader, writer):
            await send(writer, b"GET /kept HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            kept = await read_response(reader)
            await send(writer, b"GET /again HTTP/1.0\r\n\r\n")
            again = await read_response(reader)

    assert (plain[0], plain[1]["connection"], plain_closed) == (200, "close", True)
    assert (kept[0], "connection" in kept[1]) == (200, False)
    assert again[1]["x-seen"] == "GET /again"


async def test_answers_carry_server_date_and_length_and_head_gets_no_body() -> None:
    async def hello(request: Request) -> Response:
        return Response(200, {"Content-Type": "text/plain"}, b"hello")

    async with running_server(hello) as server, connection(server) as (reader, writer):
        await send(writer, b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n")
        async with asyncio.timeout(WAIT_SECONDS):
            head = await reader.readuntil(b"\r\n\r\n")
        # The HEAD answer has no body: the next answer follows right after its head.
        await send(writer, post("/y", b""))
        after = await read_response(reader)

    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    assert lines[1] == "Server: afterflush"
    assert re.fullmatch(r"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", lines[2])
    assert lines[3:] == ["Content-Type: text/plain", "Content-Length: 5", "", ""]
    assert (after[0], after[2]) == (200, b"hello")


async def test_leading_empty_lines_and_absolute_form_targets_are_accepted() -> None:
    async with running_server() as server, connection(server) as (reader, writer):
        await send(writer, b"\r\n" + post("http://collector:4318/v1/traces?x=1", b"abs"))
        status, headers, body = await read_response(reader)

    assert (status, headers["x-seen"], body) == (200, "POST /v1/traces", b"abs")


async def test_repeated_fields_are_joined_and_names_lower_cased() -> None:
    seen: list[dict[str, str]] = []

    async def keep_headers(request: Request) -> Response:
        seen.append(dict(request.headers))
        return Response(204)

    async with running_server(keep_headers) as server, connection(server) as (reader, writer):
        await send(
            writer,
            b"GET / HTTP/1.1\r\nHost: t\r\nX-Tag: a\r\nx-tag:  b \r\nContent-Length: 0\r\n"
            b"Content-Length: 0\r\n\r\n",
        )
        status, headers, _ = await read_response(reader)

    assert (status, "content-length" in headers) == (204, False)
    assert seen == [{"host": "t", "x-tag": "a, b", "content-length": "0"}]


# --- chunked bodies -----------------------------------------------------------------------


async def test_chunked_body_is_reassembled_and_trailers_dropped() -> None:
    async with running_server() as server, connection(server) as (reader, writer):
        await send(
            writer,
            b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n"
            + post("/next", b"still in sync"),
        )
        first = await read_response(reader)
        second = await read_response(reader)

    assert (first[0], first[2]) == (200, b"hello 0123456789")
    assert second[2] == b"still in sync"


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        (b"zz\r\nhello\r\n0\r\n\r\n", "malformed chunk size line 'zz\\r\\n'"),
        (b"-1\r\nx\r\n0\r\n\r\n", "malformed chunk size line '-1\\r\\n'"),
        (b"2\r\nhello\r\n0\r\n\r\n", "a chunk is longer than its size"),
    ],
)
async def test_malformed_chunking_gets_400_and_closes(chunks: bytes, message: str) -> None:
    async with running_server() as server, connection(server) as (reader, writer):
        await send(
            writer, b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
        )
        status, headers, body = await read_response(reader)
        closed = await closed_by_server(reader)

    assert (status, headers["connection"], body.decode()) == (400, "close", message + "\n")
    assert closed


# --- limits -------------------------------------------------------------------------------


async def test_declared_body_over_the_limit_gets_413_and_the_answer_survives_the_close() -> None:
    # Given a 1 KiB limit and a client that sends a 4 MiB body in full, without waiting
    async with (
        running_server(max_body_bytes=1024) as server,
        connection(server) as (reader, writer),
    ):
        writer.write(post("/big", b"x" * (4 * 1024 * 1024)))
        # Then it reads a 413 (not a reset: the server drains before closing)
        status, headers, body = await read_response(reader)
        await writer.drain()

    assert (status, headers["connection"], body) == (413, "close", b"the body is over 1024 bytes\n")


async def test_chunked_body_over_the_limit_gets_413_before_it_is_all_sent() -> None:
    async with (
        running_server(max_body_bytes=1024) as server,
        connection(server) as (reader, writer),
    ):
        # Given a chunked upload that passes the limit with its third chunk
        await send(writer, b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            await send(writer, b"1F4\r\n" + b"y" * 500 + b"\r\n")
        # Then the 413 comes while the body is still unfinished
        status, headers, _ = await read_response(reader)

    assert (status, headers["connection"]) == (413, "close")


async def test_a_handler_may_read_with_its_own_limit() -> None:
    async def small(request: Request) -> Response:
        try:
            await request.read(limit=4)
        except _http11.BodyTooLarge as exc:
            return Response(413, {}, f"limit {exc.limit}".encode())
        return Response(200)

    async with running_server(small) as server, connection(server) as (reader, writer):
        await send(writer, post("/", b"1234"))
        fits = await read_response(reader)
        await send(writer, post("/", b"12345"))
        over = await read_response(reader)

    assert (fits[0], over[0], over[2]) == (200, 413, b"limit 4")


async def test_head_over_the_limit_gets_431() -> None:
    async with (
        running_server(max_head_bytes=1024) as server,
        connection(server) as (reader, writer),
    ):
        await send(writer, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 2048 + b"\r\n\r\n")
        status, headers, _ = await read_response(reader)

    assert (status, headers["connection"]) == (431, "close")


async def test_too_many_header_fields_get_431() -> None:
    fields = b"".join(b"X-%d: v\r\n" % n for n in range(_http11.MAX_HEADER_FIELDS + 1))
    async with running_server() as server, connection(server) as (reader, writer):
        await send(writer, b"GET / HTTP/1.1\r\n" + fields + b"\r\n")
        status, _, body = await read_response(reader)

    assert (status, body) == (431, b"more than 100 header fields\n")


# --- 100-continue -------------------------------------------------------------------------


async def test_100_continue_is_sent_when_the_handler_reads_the_body() -> None:
    async with running_server() as server, connection(server) as (reader, writer):
        await send(
            writer,
            b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        )
        async with asyncio.timeout(WAIT_SECONDS):
            interim = await reader.readuntil(b"\r\n\r\n")
        await send(writer, b"body")
        status, _, body = await read_response(reader)

    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert (status, body) == (200, b"body")


async def test_a_refusal_before_reading_skips_100_continue_and_closes() -> None:
    async def refuse(request: Request) -> Response:
        return Response(404)

    async with running_server(refuse) as server, connection(server) as (reader, writer):
        await send(
            writer,
            b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n",
        )
        # The first thing back is the final answer, and the body is no longer expected.
        status, headers, _ = await read_response(reader)
        closed = await closed_by_server(reader)

    assert (status, headers["connection"], closed) == (404, "close", True)


async def test_an_unknown_expectation_gets_417() -> None:
    async with running_server() as server, connection(server) as (reader, writer):
        await send(writer, b"POST / HTTP/1.1\r\nExpect: magic\r\nContent-Length: 0\r\n\r\n")
        status, _, body = await read_response(reader)

    assert (status, body) == (417, b"Expect: 'magic' is not supported\n")


# --- timeouts -----------------------------------------------------------------------------


async def test_a_stalled_head_gets_408_and_closes() -> None:
    async with (
        running_server(read_timeout=0.2) as server,
        connection(server) as (reader, writer),
    ):
        await send(writer, b"POST /slow HTTP/1.1\r\nHost: t\r\n")
        status, headers, body = await read_response(reader)
        closed = await closed_by_server(reader)

    assert (status, headers["connection"], closed) == (408, "close", True)
    assert body == b"the request head did not arrive within 0.2 s\n"


async def test_a_stalled_body_gets_408_and_the_handler_learns_why() -> None:
    errors: list[Exception] = []

    async def record(request: Request) -> Response:
        try:
            return await echo(request)
        except _http11.HttpError as exc:
            errors.append(exc)
            raise

    async with (
        running_server(record, read_timeout=0.2) as server,
        connection(server) as (reader, writer),
    ):
        await send(writer, b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345")
        status, _, body = await read_response(reader)

    assert (status, body) == (408, b"the body did not arrive within 0.2 s\n")
    assert [type(e) for e in errors] == [_http11.BodyTimeout]


async def test_a_handler_taking_longer_than_the_read_timeout_is_not_cut() -> None:
    # Given a handler whose work lasts several read timeouts (the deadline is checked
    # every read_timeout / 4)
    async def slow(request: Request) -> Response:
        body = await request.read()
        await asyncio.sleep(0.3)
        return Response(200, {}, body)

    async with (
        running_server(slow, read_timeout=0.05) as server,
        connection(server) as (reader, writer),
    ):
        # When two requests follow each other on one connection
        await send(writer, post("/", b""))
        first = await read_response(reader)
        await send(writer, post("/", b"again"))
        second = await read_response(reader)

    # Then both are answered: only reads are timed
    assert [(a[0], a[2]) for a in (first, second)] == [(200, b""), (200, b"again")]


async def test_idle_connections_close_after_the_idle_timeout_when_one_is_set() -> None:
    async with (
        running_server(idle_timeout=0.1) as server,
        connection(server) as (reader, writer),
    ):
        await send(writer, post("/", b"x"))
        status, _, _ = await read_response(reader)
        closed = await closed_by_server(reader)

    assert (status, closed) == (200, True)


# --- malformed requests -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (b"GARBAGE\r\n\r\n", 400, "malformed request line 'GARBAGE'"),
        (b"GET /a b HTTP/1.1\r\n\r\n", 400, "malformed request line 'GET /a b HTTP/1.1'"),
        (b"GET / HTTP/2.0\r\n\r\n", 505, "HTTP/2.0 is not supported; use HTTP/1.1"),
        (b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n", 400, "malformed header line 'Bad Name: v'"),
        (b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400, "malformed header line ' folded'"),
        (b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", 400, "malformed header line 'X-A: a\\x00b'"),
        (b"GET / HTTP/1.1\r\nX-A: a\nb\r\n\r\n", 400, "malformed header line 'X-A: a\\nb'"),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "bad content-length '-1'"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "conflicting Content-Length fields",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "both Content-Length and Transfer-Encoding are set",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            "Transfer-Encoding 'gzip, chunked' is not supported",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
            "Transfer-Encoding 'gzip' has no chunked framing",
        ),
    ],
)
async def test_malformed_requests_get_an_error_and_the_connection_closes(
    request_bytes: bytes, status: int, message: str
) -> None:
    calls: list[Request] = []

    async def count(request: Request) -> Response:
        calls.append(request)
        return Response(200)

    async with running_server(count) as server, connection(server) as (reader, writer):
        await send(writer, request_bytes + post("/never", b"x"))
        answer = await read_response(reader)
        closed = await closed_by_server(reader)

    assert answer == (
        status,
        {
            "server": "afterflush",
            "date": answer[1]["date"],
            "content-type": "text/plain; charset=utf-8",
            "content-length": str(len(message) + 1),
            "connection": "close",
        },
        message.encode() + b"\n",
    )
    assert closed
    assert calls == []


async def test_a_handler_bug_gets_500_once_logged_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def buggy(request: Request) -> Response:
        if request.path == "/bug":
            raise RuntimeError("boom")
        return Response(200)

    with caplog.at_level(logging.ERROR, logger="companion.http"):
        async with running_server(buggy) as server, connection(server) as (reader, writer):
            answers = []
            for path in ("/bug", "/bug", "/fine"):
                await send(writer, post(path, b""))
                answers.append((await read_response(reader))[0])

    assert answers == [500, 500, 200]
    assert [r.getMessage() for r in caplog.records] == ["the HTTP handler failed on POST /bug"]


async def test_a_client_leaving_mid_body_is_told_to_the_handler_as_disconnected() -> None:
    errors: list[Exception] = []
    done = asyncio.Event()

    async def record(request: Request) -> Response:
        try:
            return await echo(request)
        except _http11.HttpError as exc:
            errors.append(exc)
            raise
        finally:
            done.set()

    async with running_server(record) as server:
        async with connection(server) as (_, writer):
            await send(writer, b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789")
        await asyncio.wait_for(done.wait(), WAIT_SECONDS)

    assert [(type(e), str(e)) for e in errors] == [
        (_http11.Disconnected, "the connection closed mid-body")
    ]


# --- graceful shutdown --------------------------------------------------------------------


async def test_shutdown_closes_idle_connections_and_refuses_new_ones() -> None:
    server = Server(echo)
    await server.start("127.0.0.1")
    try:
        async with connection(server) as (reader, writer):
            await send(writer, post("/", b"x"))
            await read_response(reader)
            # When the server shuts down with a long grace, the idle connection still closes
            await asyncio.wait_for(server.aclose(grace=WAIT_SECONDS), WAIT_SECONDS)
            assert await closed_by_server(reader)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", server.port)
    finally:
        await server.aclose()


async def test_shutdown_lets_a_request_in_flight_answer_then_closes_its_connection() -> None:
    entered, gate = asyncio.Event(), asyncio.Event()

    async def held(request: Request) -> Response:
        body = await request.read()
        entered.set()
        await asyncio.wait_for(gate.wait(), WAIT_SECONDS)
        return Response(200, {}, body)

    server = Server(held)
    await server.start("127.0.0.1")
    try:
        async with connection(server) as (reader, writer):
            await send(writer, post("/", b"in flight"))
            await asyncio.wait_for(entered.wait(), WAIT_SECONDS)
            # When shutdown starts while the handler works
            stopping = asyncio.create_task(server.aclose(grace=WAIT_SECONDS))
            await wait_until(lambda: server.sockets == [])
            assert not stopping.done()
            # Then the request is answered, told the connection closes, and shutdown ends
            gate.set()
            status, headers, body = await read_response(reader)
            assert await closed_by_server(reader)
            await asyncio.wait_for(stopping, WAIT_SECONDS)
    finally:
        gate.set()
        await server.aclose()

    assert (status, headers["connection"], body) == (200, "close", b"in flight")


async def test_shutdown_cuts_a_request_still_running_after_the_grace() -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck(request: Request) -> Response:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response(200)

    server = Server(stuck)
    await server.start("127.0.0.1")
    try:
        async with connection(server) as (reader, writer):
            await send(writer, post("/", b""))
            await asyncio.wait_for(entered.wait(), WAIT_SECONDS)
            await asyncio.wait_for(server.aclose(grace=0.05), WAIT_SECONDS)
            assert await closed_by_server(reader)
    finally:
        await server.aclose()

    assert cancelled.is_set()


async def test_start_on_serves_every_given_socket() -> None:
    sockets = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    server = Server(echo)
    await server.start_on(sockets)
    try:
        answers = [
            await _http11.request("127.0.0.1", port, "POST", "/p", body=b"%d" % port)
            for port in ports
        ]
    finally:
        await server.aclose()

    assert [(a.status, a.body) for a in answers] == [(200, b"%d" % p) for p in ports]
    assert server.port == ports[0]


# --- the client ---------------------------------------------------------------------------


async def test_client_sends_and_reads_a_response() -> None:
    async with running_server() as server:
        response = await _http11.request(
            "127.0.0.1", server.port, "PUT", "/r?q=1", headers={"X-A": "b"}, body=b"payload"
        )

    assert (response.status, response.reason, response.body) == (200, "OK", b"payload")
    assert response.headers["x-seen"] == "PUT /r"
    assert response.headers["content-type"] == "text/plain"


async def _serve_raw(answer: bytes) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    raw = await asyncio.start_server(handle, "127.0.0.1", 0)
    return raw, raw.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            200,
            b"abc",
        ),
        (b"HTTP/1.1 202 Accepted\r\n\r\nto the end", 202, b"to the end"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 204, b""),
    ],
)
async def test_client_reads_chunked_until_close_and_interim_answers(
    answer: bytes, status: int, body: bytes
) -> None:
    raw, port = await _serve_raw(answer)
    try:
        response = await _http11.request("127.0.0.1", port, "GET", "/")
    finally:
        raw.close()
        await raw.wait_closed()

    assert (response.status, response.body) == (status, body)


async def test_client_errors_are_http_errors() -> None:
    raw, port = await _serve_raw(b"SPDY/9 what\r\n\r\n")
    try:
        with pytest.raises(_http11.HttpError, match="malformed status line 'SPDY/9 what'"):
            await _http11.request("127.0.0.1", port, "GET", "/")
    finally:
        raw.close()
        await raw.wait_closed()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        free = unused.getsockname()[1]
    with pytest.raises(_http11.HttpError, match=f"cannot connect to 127.0.0.1:{free}"):
        await _http11.request("127.0.0.1", free, "GET", "/")
