"""Just enough HTTP/1.1 over asyncio streams for Lambda's local APIs, client and server.

Importing aiohttp costs ~200 ms of cold start; these few calls need none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 64 * 1024
# Telemetry batches are at most 256 KiB of events; leave room for JSON framing.
MAX_BODY_BYTES = 8 * 1024 * 1024


class HttpError(Exception):
    """The peer could not be reached or did not speak the HTTP this module understands."""


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: Mapping[str, str]  # lower-cased names
    body: bytes = b""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-cased names
    body: bytes = b""


Handler = Callable[[Request], Awaitable[tuple[int, bytes]]]


async def _read_head(reader: asyncio.StreamReader) -> list[str]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise HttpError("header section too large") from exc
    if len(head) > MAX_HEADER_BYTES:
        raise HttpError("header section too large")
    return head.decode("latin-1").split("\r\n")[:-2]


def _parse_headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(f"malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


async def _read_body(
    reader: asyncio.StreamReader, headers: Mapping[str, str], *, until_eof: bool
) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Trailers end with an empty line; none are expected, skip any.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise HttpError("body too large")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length_text = headers.get("content-length")
    if length_text is not None:
        if not length_text.isdigit():
            raise HttpError(f"bad content-length {length_text!r}")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise HttpError("body too large")
        return await reader.readexactly(length)
    if until_eof:
        body = await reader.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise HttpError("body too large")
        return body
    return b""


async def request(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> Response:
    """One request on its own connection. The caller bounds it with asyncio.timeout(): the
    Extensions API's event/next is a long poll that only Lambda ends."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        raise HttpError(f"cannot connect to {host}:{port}: {exc}") from exc
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        head = await _read_head(reader)
        status_line, header_lines = head[0], head[1:]
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise HttpError(f"malformed status line {status_line[:80]!r}")
        response_headers = _parse_headers(header_lines)
        response_body = b""
        if method != "HEAD" and int(parts[1]) not in (204, 304):
            response_body = await _read_body(reader, response_headers, until_eof=True)
        return Response(
            int(parts[1]), parts[2] if len(parts) > 2 else "", response_headers, response_body
        )
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        raise HttpError(f"{method} {path} on {host}:{port} failed: {exc!r}") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 500: "Internal Server Error"}


class Server:
    """Serves `handler` on host:port with keep-alive; `aclose()` also ends open connections
    (asyncio.Server.close() leaves them running)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(
            self._serve_connection, host, port, limit=MAX_HEADER_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    # Idle keep-alive connections wait here for as long as the client keeps
                    # them; a frozen environment makes any idle timeout meaningless.
                    head = await _read_head(reader)
                except asyncio.IncompleteReadError:
                    return
                # A started request must arrive in full promptly.
                async with asyncio.timeout(10):
                    request_line, header_lines = head[0], head[1:]
                    parts = request_line.split(" ")
                    if len(parts) != 3:
                        raise HttpError(f"malformed request line {request_line[:80]!r}")
                    headers = _parse_headers(header_lines)
                    body = await _read_body(reader, headers, until_eof=False)
                try:
                    status, payload = await self._handler(
                        Request(parts[0], parts[1], headers, body)
                    )
                except Exception:
                    # The handler's own bug must not end the listener; the client sees a 500.
                    status, payload = 500, b""
                close = headers.get("connection", "").lower() == "close"
                head_out = (
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
                    f"Content-Length: {len(payload)}\r\n"
                    + ("Connection: close\r\n" if close else "")
                    + "\r\n"
                )
                writer.write(head_out.encode("latin-1") + payload)
                await writer.drain()
                if close:
                    return
        except (HttpError, OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            # A broken client costs its connection, nothing more.
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def aclose(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await server.wait_closed()
