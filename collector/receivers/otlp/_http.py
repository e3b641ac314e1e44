"""OTLP/HTTP: POST of binary protobuf or OTLP/JSON, optionally gzip/deflate, on the
collector's own HTTP/1.1 server; answers and errors follow the OTLP/HTTP specification."""

from __future__ import annotations

import enum
import zlib

from collector import _http11
from collector._signals import Signal
from collector.receivers.otlp import _listen
from collector.receivers.otlp._config import HTTPServerConfig
from collector.receivers.otlp._intake import Intake
from collector.receivers.otlp._status import (
    Problem,
    Rejected,
    retry_after_header,
    status_bytes,
    status_json,
)


class Encoding(enum.Enum):
    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"


_MEDIA_TYPES = {"application/x-protobuf": Encoding.PROTOBUF, "application/json": Encoding.JSON}
_SUCCESS = {
    encoding: _http11.Response(200, {"Content-Type": encoding.value}, body)
    for encoding, body in ((Encoding.PROTOBUF, b""), (Encoding.JSON, b"{}"))
}
# A client whose body we refused early gets its answer once the rest of the body is read
# and thrown away; bounded so a large upload cannot hold the connection long.
_LINGER_SECONDS = 2.0
_READ_TIMEOUT_SECONDS = 30.0
_SERVER_NAME = "afterflush-collector"


class HTTPServer:
    """One HTTP/1.1 server on one or more listening sockets."""

    def __init__(self, config: HTTPServerConfig, intake: Intake) -> None:
        self._config = config
        self._intake = intake
        self._limit = config.max_request_body_size
        self._paths = {
            config.traces_url_path: Signal.TRACES,
            config.metrics_url_path: Signal.METRICS,
            config.logs_url_path: Signal.LOGS,
        }
        self._server: _http11.Server | None = None

    async def start(self) -> str:
        """Binds and starts serving; returns the bound "host:port". Raises OSError naming
        the endpoint when it cannot bind."""
        endpoint = self._config.endpoint
        hosts, port = await _listen.addresses(endpoint)
        try:
            sockets = [_listen.bind(hosts[0], port)]
        except OSError as exc:
            raise _listen.bind_error("OTLP/HTTP", endpoint, hosts[0], port, exc) from None
        bound = sockets[0].getsockname()[1]
        for extra in hosts[1:]:
            try:
                sockets.append(_listen.bind(extra, bound))
            except OSError:
                pass
        server = self._server = _http11.Server(
            self._handle,
            max_body_bytes=self._limit,
            read_timeout=_READ_TIMEOUT_SECONDS,
            linger=_LINGER_SECONDS,
            server_name=_SERVER_NAME,
        )
        try:
            await server.start_on(sockets)
        except BaseException:
            for sock in sockets:
                sock.close()
            await self.stop(0)
            raise
        return _listen.join(hosts[0], bound)

    async def stop(self, grace: float) -> None:
        """Stops accepting connections; requests in flight get `grace` seconds to finish."""
        server, self._server = self._server, None
        if server is not None:
            await server.aclose(grace)

    async def _handle(self, request: _http11.Request) -> _http11.Response:
        encoding = _encoding_of(request.headers.get("content-type", ""))
        try:
            signal = self._paths.get(request.path)
            if signal is None:
                raise Rejected(
                    Problem.NOT_FOUND,
                    f"{request.path} is not an OTLP path; use {', '.join(self._paths)}",
                )
            if request.method != "POST":
                raise Rejected(
                    Problem.METHOD_NOT_ALLOWED, f"{request.method} is not allowed; use POST"
                )
            self._intake.check_pipeline(signal)
            if encoding is None:
                raise Rejected(
                    Problem.UNSUPPORTED_MEDIA_TYPE,
                    f'Content-Type "{request.headers.get("content-type", "")}" is not supported;'
                    " use application/x-protobuf or application/json",
                )
            body = await self._read_body(request)
            if encoding is Encoding.JSON:
                # Imported here: the SDKs send protobuf; JSON senders are rare enough that
                # the first one, not every cold start, pays for the codec (~2 ms).
                from collector import _otlpjson

                try:
                    message = _otlpjson.decode(signal, body)
                except ValueError as exc:
                    raise Rejected(Problem.BAD_DATA, str(exc)) from None
                await self._intake.accept(signal, message.SerializeToString(), message)
            else:
                await self._intake.accept(signal, body)
        except Rejected as rejection:
            self._intake.count(rejection)
            return _error_response(rejection, encoding or Encoding.PROTOBUF)
        return _SUCCESS[encoding]

    async def _read_body(self, request: _http11.Request) -> bytes:
        limit = self._limit
        length = request.content_length
        if length is not None and length > limit:
            raise _too_large(f"the body ({length} bytes)", limit)
        coding = request.headers.get("content-encoding", "").strip().lower()
        if coding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise Rejected(
                Problem.UNSUPPORTED_MEDIA_TYPE,
                f'Content-Encoding "{coding}" is not supported; use gzip, deflate or none',
            )
        try:
            # Answers Expect: 100-continue before reading.
            body = await request.read(limit)
        except _http11.BodyTooLarge:
            raise _too_large("the body", limit) from None
        except _http11.BodyTimeout:
            raise Rejected(
                Problem.TIMEOUT, f"the body did not arrive within {_READ_TIMEOUT_SECONDS:g} s"
            ) from None
        except _http11.RequestError as exc:
            raise Rejected(Problem.BAD_DATA, f"the body is malformed: {exc.message}") from None
        except _http11.Disconnected:
            # The sender went away mid-body; nobody is left to answer, only to count.
            raise Rejected(Problem.DISCONNECTED, "the connection closed mid-body") from None
        if coding in ("gzip", "x-gzip"):
            return _inflate(body, 16 + zlib.MAX_WBITS, "gzip", limit)
        if coding == "deflate":
            return _inflate(body, _deflate_wbits(body), "deflate", limit)
        return body


def _encoding_of(content_type: str) -> Encoding | None:
    media_type = content_type.partition(";")[0].strip().lower()
    return _MEDIA_TYPES.get(media_type)


def _inflate(body: bytes, wbits: int, coding: str, limit: int) -> bytes:
    """Decompresses `body`, never producing more than limit + 1 bytes, so a small bomb
    costs no memory; a gzip body may hold several members."""
    out: list[bytes] = []
    size = 0
    rest = body
    try:
        while True:
            inflater = zlib.decompressobj(wbits)
            chunk = inflater.decompress(rest, limit - size + 1)
            size += len(chunk)
            if size > limit or inflater.unconsumed_tail:
                raise _too_large(f"the {coding}-decoded body", limit)
            if not inflater.eof:
                raise Rejected(Problem.BAD_DATA, f"the {coding} body is truncated")
            out.append(chunk)
            rest = inflater.unused_data
            if not rest or coding == "deflate":
                break
    except zlib.error as exc:
        raise Rejected(Problem.BAD_DATA, f"the body is not valid {coding}: {exc}") from None
    return b"".join(out)


def _deflate_wbits(body: bytes) -> int:
    # "deflate" should be zlib-wrapped (RFC 9110), but some clients send a raw stream.
    zlib_wrapped = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
    return zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS


def _too_large(what: str, limit: int) -> Rejected:
    return Rejected(Problem.TOO_LARGE, f"{what} is over max_request_body_size ({limit} bytes)")


def _error_response(rejection: Rejected, encoding: Encoding) -> _http11.Response:
    problem = rejection.problem
    if encoding is Encoding.JSON:
        body = status_json(problem, rejection.message, rejection.retry_after)
    else:
        body = status_bytes(problem, rejection.message, rejection.retry_after)
    headers = {"Content-Type": encoding.value}
    if rejection.retry_after is not None and problem.http_status in (429, 503):
        headers["Retry-After"] = retry_after_header(rejection.retry_after)
    if problem is Problem.METHOD_NOT_ALLOWED:
        headers["Allow"] = "POST"
    return _http11.Response(problem.http_status, headers, body)
