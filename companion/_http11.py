"""Just enough HTTP/1.1 over asyncio streams: the server behind the companion's Telemetry API
listener, and the one-shot client the companion calls Lambda with.

No third-party imports: aiohttp costs ~140 ms of cold start, and these needs are small.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger("companion.http")

# Request line plus header section; larger heads get 431.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 100
# A request's head must arrive within this long of its first byte, and its body within this
# long of the handler asking for it; otherwise 408.
READ_TIMEOUT_SECONDS = 30.0
# Bodies a handler reads without naming its own limit.
MAX_BODY_BYTES = 8 * 1024 * 1024
# After answering a request whose body was not read, the rest of it is read and thrown away
# for at most this long before the socket closes: closing with unread data makes the kernel
# send a reset, which can destroy the answer before the client has read it.
LINGER_SECONDS = 2.0
SERVER_NAME = "afterflush"
_MAX_CHUNK_LINE = 4096
_MAX_INTERIM_RESPONSES = 8
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([^\x00-\x20\x7f]+) HTTP/(\d)\.(\d)")
# Field values: visible characters, spaces and tabs, and obs-text; no other controls.
# (Surrounding whitespace is stripped afterwards: a lazy pattern would take quadratic time.)
_HEADER_LINE = re.compile(rf"({_TOKEN}):([^\x00-\x08\x0a-\x1f\x7f]*)")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")
_REASONS = {
    100: "Continue",
    200: "OK",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
# The server writes these itself; a handler's own would contradict the framing.
_SERVER_OWNED = frozenset(("content-length", "transfer-encoding", "connection", "date", "server"))
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class HttpError(Exception):
    """A peer could not be reached, or did not speak the HTTP this module understands."""


class RequestError(HttpError):
    """A request the server cannot take; it is answered with `status` and the connection
    closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BodyTooLarge(RequestError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body is over {limit} bytes")
        self.limit = limit


class BodyTimeout(RequestError):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the body did not arrive within {seconds:g} s")
        self.seconds = seconds


class Disconnected(HttpError):
    """The peer closed the connection before its request was complete."""


@dataclass(frozen=True, slots=True)
class Response:
    """What a handler answers, or what the client got back (then with lower-cased header
    names and the status line's reason)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    reason: str = ""


Handler = Callable[["Request"], Awaitable[Response]]


class _TimedOut(Exception):
    """Set on a connection's reader when its read deadline passes."""


class _Connection:
    """A client connection as the server and the request reading its body share it."""

    __slots__ = ("busy", "deadline", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        # From the first byte of a request to the end of its answer. At shutdown idle
        # connections close at once, busy ones get the grace period.
        self.busy = False
        # Loop time by which the read in progress must complete; None when none is timed.
        # One server-wide timer checks it: an asyncio.timeout() per read costs more than
        # the rest of the request's parsing.
        self.deadline: float | None = None


class Request:
    """One request as the server read its head; the body is read on demand with read()."""

    __slots__ = (
        "_body",
        "_connection",
        "_default_limit",
        "_expect_continue",
        "_state",
        "_timeout",
        "chunked",
        "content_length",
        "headers",
        "method",
        "path",
        "query",
        "target",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: tuple[int, int],
        headers: dict[str, str],
        *,
        content_length: int | None = 0,
        chunked: bool = False,
        expect_continue: bool = False,
        connection: _Connection | None = None,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.method = method
        self.target = target
        path, _, self.query = target.partition("?")
        if not path.startswith("/"):
            # absolute-form (http://host/path): the path is what follows the authority.
            after_scheme = path.partition("://")[2]
            path = "/" + after_scheme.partition("/")[2] if after_scheme else path
        self.path = path
        self.version = version
        # Lower-cased names; repeated fields joined with ", ".
        self.headers = headers
        # The declared length (0 when none was announced); None for a chunked body.
        self.content_length = content_length
        self.chunked = chunked
        self._connection = connection
        self._timeout = read_timeout
        self._default_limit = max_body_bytes
        self._expect_continue = expect_continue
        self._body: bytes | None = None if chunked or content_length else b""
        # "unread", "done" or "broken" (a read failed part-way; the connection must close).
        self._state = "done" if self._body is not None else "unread"

    @property
    def body_consumed(self) -> bool:
        return self._state == "done"

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (again on later calls). Raises BodyTooLarge past `limit` bytes
        (the server's max_body_bytes when None) without reading the rest, BodyTimeout,
        RequestError (400) for malformed chunking, Disconnected when the peer leaves."""
        if self._body is not None:
            return self._body
        connection = self._connection
        if self._state == "broken" or connection is None:
            raise Disconnected("the body can no longer be read")
        limit = self._default_limit if limit is None else limit
        length = self.content_length
        if length is not None and length > limit:
            raise BodyTooLarge(limit)
        if self._expect_continue:
            # The client waits for this before it sends the body (curl: over 1 KiB).
            self._expect_continue = False
            connection.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._state = "broken"
        connection.deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            if length is None:
                body = await _read_chunked(connection.reader, limit)
            else:
                body = await connection.reader.readexactly(length)
        except _TimedOut:
            raise BodyTimeout(self._timeout) from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise Disconnected("the connection closed mid-body") from None
        finally:
            connection.deadline = None
        self._body = body
        self._state = "done"
        return body


class Server:
    """Serves one handler over HTTP/1.1 with keep-alive and pipelining on one or more
    listening sockets; aclose() stops it gracefully."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        idle_timeout: float | None = None,
        linger: float = LINGER_SECONDS,
        max_head_bytes: int = MAX_HEAD_BYTES,
        server_name: str = SERVER_NAME,
    ) -> None:
        self._handler = handler
        self._max_body = max_body_bytes
        self._read_timeout = read_timeout
        # None: idle keep-alive connections stay until the client closes them. In Lambda a
        # frozen environment's clock runs on, so a timeout would close the SDK's pooled
        # connection just as the next invocation wants it.
        self._idle_timeout = idle_timeout
        self._linger = linger
        self._max_head = max_head_bytes
        self._server_header = f"Server: {server_name}\r\n"
        # Timeouts fire up to this much late; a quarter of the shortest keeps them close.
        self._sweep_period = min(1.0, read_timeout / 4, (idle_timeout or 4.0) / 4)
        self._sweeper: asyncio.TimerHandle | None = None
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._closing = False
        self._date_second = -1
        self._date_line = ""
        self._bug_logged = False
        self.port = 0

    @property
    def sockets(self) -> list[socket.socket]:
        return [sock for server in self._servers for sock in server.sockets]

    async def start(self, host: str, port: int = 0) -> int:
        """Listens on host:port; returns the bound port. Raises OSError."""
        server = await asyncio.start_server(
            self._serve, host, port, limit=self._max_head, backlog=128
        )
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def start_on(self, sockets: Iterable[socket.socket]) -> None:
        """Listens on bound, not yet listening, sockets (which it then owns)."""
        for sock in sockets:
            server = await asyncio.start_server(
                self._serve, sock=sock, limit=self._max_head, backlog=128
            )
            self._servers.append(server)
            if not self.port:
                self.port = sock.getsockname()[1]

    async def aclose(self, grace: float = 0.0) -> None:
        """Stops accepting connections and closes idle ones; requests in flight get `grace`
        seconds to be answered, then their connections are cut. Idempotent."""
        self._closing = True
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for task, connection in list(self._connections.items()):
            if not connection.busy:
                task.cancel()
        if self._connections:
            _, late = await asyncio.wait(list(self._connections), timeout=max(grace, 0.0))
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in servers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await server.wait_closed()

    def _sweep(self) -> None:
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        for connection in self._connections.values():
            deadline = connection.deadline
            if deadline is not None and now >= deadline:
                connection.deadline = None
                connection.reader.set_exception(_TimedOut())
        if self._connections:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_period, self._sweep)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closing or task is None:
            writer.close()
            return
        connection = self._connections[task] = _Connection(reader, writer)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_period, self._sweep)
        try:
            if await self._converse(connection) and not self._closing:
                connection.busy = False
                await self._linger_close(reader, writer)
        except asyncio.CancelledError:
            # aclose() cut the connection. Ending quietly: asyncio's stream server logs an
            # error for a connection task that ends cancelled.
            pass
        except Exception:
            if not self._bug_logged:
                self._bug_logged = True
                log.exception("HTTP connection failed")
        finally:
            del self._connections[task]
            writer.close()

    async def _converse(self, connection: _Connection) -> bool:
        """Answers requests until the connection is to close; True when input may be left
        unread (then it is drained before closing)."""
        loop = asyncio.get_running_loop()
        reader = connection.reader
        try:
            while not self._closing:
                connection.busy = False
                if self._idle_timeout is not None:
                    connection.deadline = loop.time() + self._idle_timeout
                try:
                    first = await reader.readexactly(1)
                except (asyncio.IncompleteReadError, _TimedOut):
                    return False
                connection.busy = True
                keep_alive, unread = await self._exchange(first, connection)
                if not keep_alive:
                    return unread
        except ConnectionError:
            # The client went away; nobody is left to answer.
            pass
        return False

    async def _exchange(self, first: bytes, connection: _Connection) -> tuple[bool, bool]:
        """Reads one request and answers it; returns (keep the connection, input may be
        left unread)."""
        reader, writer = connection.reader, connection.writer
        connection.deadline = asyncio.get_running_loop().time() + self._read_timeout
        try:
            head = first + await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False, False
        except asyncio.LimitOverrunError:
            self._write_error(writer, 431, f"the request head is over {self._max_head} bytes")
            return False, True
        except _TimedOut:
            self._write_error(
                writer, 408, f"the request head did not arrive within {self._read_timeout:g} s"
            )
            return False, False
        finally:
            connection.deadline = None
        if head[0] in b"\r\n":
            # RFC 9112 asks servers to ignore empty lines before a request line.
            head = head.lstrip(b"\r\n")
            if not head:
                return True, False
        try:
            request = self._parse(head, connection)
        except RequestError as exc:
            self._write_error(writer, exc.status, exc.message)
            return False, True
        try:
            response = await self._handler(request)
        except RequestError as exc:
            response = _error_response(exc.status, exc.message)
        except Disconnected:
            return False, False
        except Exception:
            # A handler's bug costs its request a 500, not the listener; said once.
            if not self._bug_logged:
                self._bug_logged = True
                log.exception("the HTTP handler failed on %s %s", request.method, request.path)
            response = _error_response(500, "internal error")
        consumed = request.body_consumed
        keep_alive = consumed and not self._closing and _keeps_alive(request)
        self._write(writer, response, keep_alive, head_only=request.method == "HEAD")
        await writer.drain()
        return keep_alive, not consumed

    def _parse(self, head: bytes, connection: _Connection) -> Request:
        text = head.decode("latin-1")
        lines = text.split("\r\n")
        del lines[-2:]
        matched = _REQUEST_LINE.fullmatch(lines[0])
        if matched is None:
            raise RequestError(400, f"malformed request line {_excerpt(lines[0])}")
        method, target, major, minor = matched.groups()
        if major != "1":
            raise RequestError(505, f"HTTP/{major}.{minor} is not supported; use HTTP/1.1")
        version = (1, 1 if minor != "0" else 0)
        if len(lines) > MAX_HEADER_FIELDS + 1:
            raise RequestError(431, f"more than {MAX_HEADER_FIELDS} header fields")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            field_match = _HEADER_LINE.fullmatch(line)
            if field_match is None:
                raise RequestError(400, f"malformed header line {_excerpt(line)}")
            name = field_match[1].lower()
            value = field_match[2].strip(" \t")
            known = headers.get(name)
            if known is None:
                headers[name] = value
            elif name == "content-length":
                if known != value:
                    raise RequestError(400, "conflicting Content-Length fields")
            else:
                headers[name] = f"{known}, {value}"
        length, chunked = _framing(headers, version)
        expect_continue = False
        expect = headers.get("expect")
        if expect is not None and version >= (1, 1):
            if expect.lower() != "100-continue":
                raise RequestError(417, f"Expect: {_excerpt(expect)} is not supported")
            # Nothing to continue to without a body.
            expect_continue = chunked or bool(length)
        return Request(
            method,
            target,
            version,
            headers,
            content_length=length,
            chunked=chunked,
            expect_continue=expect_continue,
            connection=connection,
            read_timeout=self._read_timeout,
            max_body_bytes=self._max_body,
        )

    def _write(
        self,
        writer: asyncio.StreamWriter,
        response: Response,
        keep_alive: bool,
        *,
        head_only: bool = False,
    ) -> None:
        status = response.status
        parts = [
            f"HTTP/1.1 {status} {response.reason or _REASONS.get(status, 'Unknown')}\r\n",
            self._server_header,
            self._date(),
        ]
        for name, value in response.headers.items():
            if name.lower() not in _SERVER_OWNED:
                parts.append(f"{name}: {value}\r\n")
        if status >= 200 and status not in (204, 304):
            parts.append(f"Content-Length: {len(response.body)}\r\n")
        if not keep_alive:
            parts.append("Connection: close\r\n")
        parts.append("\r\n")
        out = "".join(parts).encode("latin-1")
        if response.body and not head_only:
            out += response.body
        writer.write(out)

    def _write_error(self, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        self._write(writer, _error_response(status, message), keep_alive=False)

    def _date(self) -> str:
        now = int(time.time())
        if now != self._date_second:
            t = time.gmtime(now)
            self._date_second = now
            self._date_line = (
                f"Date: {_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} "
                f"{t.tm_year} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT\r\n"
            )
        return self._date_line

    async def _linger_close(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Half-closes, then reads and drops what the client still sends until it closes
        too or `linger` runs out."""
        try:
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(self._linger):
                while await reader.read(65536):
                    pass
        except (OSError, TimeoutError, _TimedOut):
            pass


def _framing(headers: Mapping[str, str], version: tuple[int, int]) -> tuple[int | None, bool]:
    """(declared length or None for chunked, chunked) of a message; raises RequestError."""
    coding = headers.get("transfer-encoding")
    length_text = headers.get("content-length")
    if coding is not None:
        if length_text is not None:
            # Both at once is how requests are smuggled past intermediaries.
            raise RequestError(400, "both Content-Length and Transfer-Encoding are set")
        codings = [c.strip().lower() for c in coding.split(",")]
        if codings[-1] != "chunked" or version < (1, 1):
            raise RequestError(400, f"Transfer-Encoding {_excerpt(coding)} has no chunked framing")
        if len(codings) > 1:
            raise RequestError(501, f"Transfer-Encoding {_excerpt(coding)} is not supported")
        return None, True
    if length_text is None:
        return 0, False
    if not (length_text.isascii() and length_text.isdigit()) or len(length_text) > 18:
        raise RequestError(400, f"bad content-length {_excerpt(length_text)}")
    return int(length_text), False


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    """A chunked body (trailers are read and dropped); raises BodyTooLarge as soon as a
    chunk size takes it past `limit`, RequestError for broken framing."""
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            line = await reader.readuntil(b"\r\n")
            size_text = line[:-2].partition(b";")[0].strip(b" \t")
            if len(line) > _MAX_CHUNK_LINE or not _CHUNK_SIZE.fullmatch(size_text):
                raise RequestError(400, f"malformed chunk size line {_excerpt(line)}")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise BodyTooLarge(limit)
            chunks.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise RequestError(400, "a chunk is longer than its size")
        trailers = 0
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            trailers += len(line)
            if trailers > MAX_HEAD_BYTES:
                raise RequestError(400, f"the trailer section is over {MAX_HEAD_BYTES} bytes")
    except asyncio.LimitOverrunError:
        raise RequestError(400, "a chunk size or trailer line is too long") from None
    return b"".join(chunks)


async def read_body(
    reader: asyncio.StreamReader,
    headers: Mapping[str, str],
    *,
    until_eof: bool,
    limit: int = MAX_BODY_BYTES,
) -> bytes:
    """A message body framed by `headers` (lower-cased names): chunked, by length, or (for
    a response without either, `until_eof`) up to the end of the stream. Raises
    RequestError, BodyTooLarge, asyncio.IncompleteReadError."""
    length, chunked = _framing(headers, (1, 1))
    if chunked:
        return await _read_chunked(reader, limit)
    if "content-length" in headers:
        if length is not None and length > limit:
            raise BodyTooLarge(limit)
        return await reader.readexactly(length or 0)
    if until_eof:
        body = await reader.read(limit + 1)
        while len(body) <= limit and (more := await reader.read(limit + 1 - len(body))):
            body += more
        if len(body) > limit:
            raise BodyTooLarge(limit)
        return body
    return b""


def _keeps_alive(request: Request) -> bool:
    tokens = request.headers.get("connection", "").lower()
    if request.version >= (1, 1):
        return "close" not in _tokens(tokens)
    return "keep-alive" in _tokens(tokens)


def _tokens(value: str) -> list[str]:
    return [token.strip() for token in value.split(",")] if value else []


def _error_response(status: int, message: str) -> Response:
    return Response(
        status, {"Content-Type": "text/plain; charset=utf-8"}, (message + "\n").encode()
    )


def _excerpt(text: str | bytes, limit: int = 80) -> str:
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return repr(text[:limit])


async def request(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Response:
    """One request on its own connection; raises HttpError. The caller bounds it with
    asyncio.timeout(): the Extensions API's event/next is a long poll only Lambda ends."""
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD_BYTES)
    except OSError as exc:
        raise HttpError(f"cannot connect to {host}:{port}: {exc}") from exc
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        # Interim 1xx answers may precede the final one.
        for _ in range(_MAX_INTERIM_RESPONSES + 1):
            status, reason, header_lines = _parse_status_head(await reader.readuntil(b"\r\n\r\n"))
            if status >= 200:
                break
        else:
            raise HttpError(f"more than {_MAX_INTERIM_RESPONSES} interim responses")
        response_headers = _parse_response_headers(header_lines)
        response_body = b""
        if method != "HEAD" and status not in (204, 304):
            response_body = await read_body(
                reader, response_headers, until_eof=True, limit=max_body_bytes
            )
        return Response(status, response_headers, response_body, reason)
    except HttpError as exc:
        raise HttpError(f"{method} {path} on {host}:{port}: {exc}") from exc
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise HttpError(f"{method} {path} on {host}:{port} failed: {exc!r}") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _parse_status_head(head: bytes) -> tuple[int, str, list[str]]:
    status_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
    parts = status_line.split(" ", 2)
    code = parts[1] if len(parts) > 1 else ""
    if (
        not parts[0].startswith("HTTP/1.")
        or len(code) != 3
        or not code.isascii()
        or not code.isdigit()
    ):
        raise HttpError(f"malformed status line {_excerpt(status_line)}")
    return int(code), parts[2] if len(parts) > 2 else "", header_lines


def _parse_response_headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(f"malformed header line {_excerpt(line)}")
        name = name.strip().lower()
        known = headers.get(name)
        headers[name] = value.strip() if known is None else f"{known}, {value.strip()}"
    return headers
