"""The Backend: OTLP over gRPC and HTTP (protobuf or JSON, gzip) on loopback, recording what
it accepts and answering with the faults it is told to inject, plus its HTTP control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import json
import logging
import socket
import struct
import time
import urllib.parse
import weakref
from collections.abc import Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format

from backend import _otlpjson
from backend._faults import GRPC_CODE_OF_HTTP_STATUS, FaultPlan, FaultSpec
from backend._rpcstatus import encode_status
from backend._signals import Signal
from backend._store import Item, RequestRecord, SignalStats, Store, items_of

GRPC_SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
log = logging.getLogger("backend")
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# In-flight handlers get this long to finish when the listeners close.
_SHUTDOWN_GRACE_SECONDS = 0.5
_PARTIAL_MESSAGE = "rejected by the test backend"


class Backend:
    """An OTLP server for tests, `make run` and the benchmark.

    start() binds both protocols (port 0 = a free port; see endpoints()); stop() closes them
    and releases hanging requests. Faults change at run time through set_faults() or the
    control API (POST /_control on the HTTP port). Not thread-safe: call it from its loop.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        http_port: int = 0,
        latency_ms: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.host = host
        self._grpc_port = grpc_port
        self._http_port = http_port
        self._latency = latency_ms / 1000
        self._faults = FaultPlan(seed)
        self._store = Store()
        self._grpc_server: Any = None
        self._runner: web.AppRunner | None = None
        # Set when the listeners close, so hanging requests end with them.
        self._listeners_closed = asyncio.Event()
        self._changed = asyncio.Event()
        # HTTP transports that have carried an answer (for the close_idle fault).
        self._answered: weakref.WeakSet[Any] = weakref.WeakSet()
        self._tasks: set[asyncio.Task[None]] = set()
        # The pending return of go_down(), which come_up() makes happen at once.
        self._return: asyncio.Task[None] | None = None
        # Export requests being handled (read, waiting out latency or hanging, answering).
        self._in_flight = 0
        self._hanging = 0
        self._started = False
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self._open_listeners()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_listeners()

    async def __aenter__(self) -> Backend:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def go_down(self, seconds: float) -> None:
        """Stops listening (open connections are closed, hanging requests dropped) and
        listens again on the same ports after `seconds`."""
        await self._close_listeners()
        task = asyncio.create_task(self._come_back(seconds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._return = task

    async def come_up(self) -> None:
        """Ends a go_down() now: listens again on the same ports (no-op when up)."""
        task, self._return = self._return, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._runner is None and not self._stopped:
            await self._listen_again()

    async def _come_back(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self._stopped or self._runner is not None:
            return
        await self._listen_again()

    async def _listen_again(self) -> None:
        try:
            await self._open_listeners()
        except OSError as exc:
            # Someone took a port meanwhile; `up` stays False for tests to see.
            log.error("cannot listen again on %s: %s", self.endpoints(), exc)

    @property
    def up(self) -> bool:
        return self._runner is not None

    @property
    def in_flight(self) -> int:
        """Export requests being handled now: a request whose sender gave up (a cut
        deadline, a frozen client) may still be recorded when its latency has passed.
        Requests held by the hang fault are not counted: they never record items."""
        return self._in_flight - self._hanging

    async def _open_listeners(self) -> None:
        self._listeners_closed = asyncio.Event()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers([self._grpc_handler(s) for s in Signal])
        try:
            port = server.add_insecure_port(_host_port(self.host, self._grpc_port))
        except RuntimeError:  # grpc's way of saying the address is taken
            port = 0
        if port == 0:
            raise OSError(f"cannot listen for gRPC on {_host_port(self.host, self._grpc_port)}")
        self._grpc_port = port
        await server.start()
        try:
            runner = await self._start_http()
        except BaseException:
            await server.stop(0)
            raise
        self._grpc_server = server
        self._runner = runner
        self._notify()

    async def _start_http(self) -> web.AppRunner:
        app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
        app.router.add_post("/v1/{signal:traces|metrics|logs}", self._http_export)
        app.router.add_get("/_stats", self._http_stats)
        app.router.add_get("/_items", self._http_items)
        app.router.add_get("/_requests", self._http_requests)
        app.router.add_post("/_reset", self._http_reset)
        app.router.add_post("/_control", self._http_control)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_GRACE_SECONDS)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._http_port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._http_port = int(runner.addresses[0][1])
        return runner

    async def _close_listeners(self) -> None:
        self._listeners_closed.set()
        server, self._grpc_server = self._grpc_server, None
        runner, self._runner = self._runner, None
        if server is not None:
            await server.stop(0)
        if runner is not None:
            await runner.cleanup()
        self._notify()

    # -- where and what ----------------------------------------------------------------

    @property
    def grpc_endpoint(self) -> str:
        """host:port for an OTLP/gRPC client (plain text)."""
        return _host_port(self.host, self._grpc_port)

    @property
    def http_endpoint(self) -> str:
        """Base URL for an OTLP/HTTP client; the signal paths are /v1/<signal>."""
        return f"http://{_host_port(self.host, self._http_port)}"

    def endpoints(self) -> dict[str, str]:
        return {"grpc": self.grpc_endpoint, "http": self.http_endpoint}

    def stats(self) -> dict[str, SignalStats]:
        return self._store.stats()

    def items(self, signal: Signal) -> list[Item]:
        return self._store.items(signal)

    def requests(self, signal: Signal | None = None) -> list[RequestRecord]:
        return self._store.requests(signal)

    def reset(self) -> None:
        """Forgets every request and item (faults stay as they are)."""
        self._store.reset()
        self._answered = weakref.WeakSet()
        self._notify()

    # -- faults ------------------------------------------------------------------------

    def set_faults(self, spec: FaultSpec, signal: Signal | None = None) -> None:
        """Applies `spec` to `signal`'s requests (all signals without their own spec when
        None), replacing the previous spec there."""
        self._faults.set(spec, signal)

    def clear_faults(self) -> None:
        self._faults.clear()

    def set_latency(self, latency_ms: float) -> None:
        self._latency = latency_ms / 1000

    def reseed(self, seed: int) -> None:
        self._faults.reseed(seed)

    # -- waiting (for tests) -----------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Returns once predicate() holds, checked after every request and every change of
        `up`; raises TimeoutError."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Returns once no export request is being handled; raises TimeoutError."""
        await self.wait_until(lambda: self.in_flight == 0, timeout)

    async def wait_for_requests(
        self, count: int, signal: Signal | None = None, timeout: float = 10.0
    ) -> list[RequestRecord]:
        await self.wait_until(lambda: len(self._store.requests(signal)) >= count, timeout)
        return self._store.requests(signal)

    async def _hang(self, record: Callable[[], None]) -> None:
        """Holds a request until the listeners close; it will never record items, so it is
        not counted in flight."""
        self._hanging += 1
        try:
            record()
            await self._listeners_closed.wait()
        finally:
            self._hanging -= 1

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _record(self, record: RequestRecord, accepted: list[Item], rejected: int = 0) -> None:
        self._store.record_request(record, accepted, rejected)
        self._notify()

    # -- OTLP/HTTP ---------------------------------------------------------------------

    async def _http_export(self, request: web.Request) -> web.StreamResponse:
        self._in_flight += 1
        self._notify()
        try:
            return await self._http_export_counted(request)
        finally:
            self._in_flight -= 1
            self._notify()

    async def _http_export_counted(self, request: web.Request) -> web.StreamResponse:
        signal = Signal(request.match_info["signal"])
        index = self._store.next_request_index()
        received = time.time()
        transport = request.transport
        address = transport.get_extra_info("peername") if transport is not None else None
        peer = _host_port(str(address[0]), int(address[1])) if address else ""
        # aiohttp has already undone a gzip or deflate Content-Encoding.
        raw = await request.read()
        sent_bytes = request.content_length if request.content_length is not None else len(raw)
        content_type = request.headers.get("Content-Type", "")
        encoding = request.headers.get("Content-Encoding", "")
        json_body = content_type.split(";", 1)[0].strip() == "application/json"
        headers = {k.lower(): v for k, v in request.headers.items()}

        def record(
            outcome: str, accepted: list[Item] | None = None, rejected: int = 0, items: int = 0
        ) -> None:
            self._record(
                RequestRecord(
                    index,
                    signal.value,
                    "http",
                    peer,
                    received,
                    headers,
                    content_type,
                    encoding,
                    sent_bytes,
                    items,
                    outcome,
                ),
                accepted or [],
                rejected,
            )

        reused = transport is not None and transport in self._answered
        spec = self._faults.pick(signal, reused=reused)
        if spec is not None and spec.close_idle and reused:
            record("closed")
            _abort(transport, reset=False)
            return _unsendable()
        try:
            message = _decode_http(signal, raw, json_body)
        except ValueError as exc:
            record("invalid")
            return self._http_error(400, str(exc), None, False, json_body)
        all_items = items_of(signal, message, received, index)
        if spec is not None and spec.hang:
            await self._hang(lambda: record("hang", items=len(all_items)))
            _abort(transport, reset=True)
            return _unsendable()
        if spec is not None and spec.reset:
            record("reset", items=len(all_items))
            _abort(transport, reset=True)
            return _unsendable()
        if self._latency:
            await asyncio.sleep(self._latency)
        if spec is not None and spec.status:
            record(f"http {spec.status}", items=len(all_items))
            return self._http_error(
                spec.status,
                spec.message or f"fault {spec.status}",
                spec.retry_after,
                spec.retry_after_as_date,
                json_body,
            )
        rejected = min(spec.reject, len(all_items)) if spec is not None else 0
        record(
            "partial" if rejected else "accepted",
            all_items[rejected:],
            rejected,
            items=len(all_items),
        )
        response = _response(signal, rejected)
        if transport is not None:
            self._answered.add(transport)
        if json_body:
            body = json.dumps(json_format.MessageToDict(response)).encode()
            return web.Response(body=body, content_type="application/json")
        return web.Response(
            body=response.SerializeToString(), content_type="application/x-protobuf"
        )

    def _http_error(
        self, status: int, message: str, retry_after: float | None, as_date: bool, json_body: bool
    ) -> web.Response:
        headers: dict[str, str] = {}
        if retry_after is not None:
            if as_date:
                headers["Retry-After"] = _http_date(time.time() + retry_after)
            else:
                headers["Retry-After"] = str(round(retry_after))
        code = _GRPC_NUMBER.get(_code_name(status), 2)
        if json_body:
            body = json.dumps({"code": code, "message": message}).encode()
            return web.Response(
                status=status, body=body, headers=headers, content_type="application/json"
            )
        return web.Response(
            status=status,
            body=encode_status(code, message),
            headers=headers,
            content_type="application/x-protobuf",
        )

    async def _http_stats(self, request: web.Request) -> web.Response:
        return web.json_response({name: s.to_json() for name, s in self.stats().items()})

    async def _http_items(self, request: web.Request) -> web.Response:
        signal = _signal_param(request)
        return web.json_response([item.to_json() for item in self.items(signal)])

    async def _http_requests(self, request: web.Request) -> web.Response:
        signal = _signal_param(request, required=False)
        return web.json_response([r.to_json() for r in self.requests(signal)])

    async def _http_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    async def _http_control(self, request: web.Request) -> web.Response:
        """JSON object: {"clear": true} | {"latency_ms": N} | {"seed": N} |
        {"down_ms": N} | {"signal": "traces" (optional), "fault": {FaultSpec fields}}."""
        try:
            document = await request.json()
            if not isinstance(document, dict):
                raise ValueError("expected a JSON object")
            self._apply_control(document)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if "down_ms" in document:
            # After answering: closing the listeners ends this very connection.
            task = asyncio.create_task(self.go_down(float(document["down_ms"]) / 1000))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(
            {"faults": {k: _spec_json(v) for k, v in self._faults.specs().items()}}
        )

    def _apply_control(self, document: dict[str, Any]) -> None:
        known = {"clear", "latency_ms", "seed", "down_ms", "signal", "fault"}
        unknown = sorted(set(document) - known)
        if unknown:
            raise ValueError(f"unknown control fields: {', '.join(unknown)}")
        if document.get("clear"):
            self.clear_faults()
        if "latency_ms" in document:
            self.set_latency(float(document["latency_ms"]))
        if "seed" in document:
            self.reseed(int(document["seed"]))
        if "fault" in document:
            fault = document["fault"]
            if not isinstance(fault, dict):
                raise ValueError("fault must be an object")
            signal_name = document.get("signal")
            signal = Signal(signal_name) if signal_name not in (None, "*") else None
            self.set_faults(FaultSpec.from_json(fault), signal)

    # -- OTLP/gRPC ---------------------------------------------------------------------

    def _grpc_handler(self, signal: Signal) -> Any:
        async def export(request: bytes, context: Any) -> bytes:
            self._in_flight += 1
            self._notify()
            try:
                return await self._grpc_export(signal, request, context)
            finally:
                self._in_flight -= 1
                self._notify()

        return grpc.method_handlers_generic_handler(
            GRPC_SERVICES[signal],
            {"Export": grpc.unary_unary_rpc_method_handler(export)},
        )

    async def _grpc_export(self, signal: Signal, raw: bytes, context: Any) -> bytes:
        index = self._store.next_request_index()
        received = time.time()
        # "ipv4:127.0.0.1:53412" -> "127.0.0.1:53412", "ipv6:%5B::1%5D:53412" -> "[::1]:53412"
        peer = urllib.parse.unquote(str(context.peer() or "").split(":", 1)[-1])
        headers = {
            k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)
        }

        def record(
            outcome: str, accepted: list[Item] | None = None, rejected: int = 0, items: int = 0
        ) -> None:
            self._record(
                RequestRecord(
                    index,
                    signal.value,
                    "grpc",
                    peer,
                    received,
                    headers,
                    headers.get("content-type", "application/grpc"),
                    headers.get("grpc-encoding", ""),
                    len(raw),
                    items,
                    outcome,
                ),
                accepted or [],
                rejected,
            )

        try:
            message = signal.decode(raw)
        except Exception as exc:  # protobuf's DecodeError
            record("invalid")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot decode: {exc}")
            raise  # abort() raises; this line is never reached
        all_items = items_of(signal, message, received, index)
        spec = self._faults.pick(signal, reused=False)
        if spec is not None and spec.hang:
            await self._hang(lambda: record("hang", items=len(all_items)))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "backend went away")
        if spec is not None and spec.reset:
            record("reset", items=len(all_items))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        if self._latency:
            await asyncio.sleep(self._latency)
        if spec is not None and (spec.status or spec.grpc_code):
            name = spec.effective_grpc_code
            record(f"grpc {name}", items=len(all_items))
            trailing: tuple[tuple[str, bytes], ...] = ()
            if spec.retry_after is not None:
                details = encode_status(_GRPC_NUMBER.get(name, 2), spec.message, spec.retry_after)
                trailing = ((STATUS_DETAILS_KEY, details),)
            await context.abort(
                grpc.StatusCode[name], spec.message or f"fault {name}", trailing_metadata=trailing
            )
        rejected = min(spec.reject, len(all_items)) if spec is not None else 0
        record(
            "partial" if rejected else "accepted",
            all_items[rejected:],
            rejected,
            items=len(all_items),
        )
        data: bytes = _response(signal, rejected).SerializeToString()
        return data


def _unsendable() -> web.Response:
    """What a handler returns after dropping its connection on purpose: aiohttp finds the
    transport closed and sends nothing (raising instead would log a traceback)."""
    return web.Response(status=503)


def _abort(transport: Any, *, reset: bool) -> None:
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: closing sends RST instead of FIN, as a crashed peer or middlebox does.
            # A socket the peer or a shutdown already closed has nothing left to reset.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _decode_http(signal: Signal, body: bytes, json_body: bool) -> Any:
    if json_body:
        return _otlpjson.decode(signal, body)
    try:
        return signal.decode(body)
    except Exception as exc:  # protobuf's DecodeError
        raise ValueError(f"invalid protobuf body: {exc}") from exc


def _response(signal: Signal, rejected: int) -> Any:
    response = signal.response_type()
    if rejected:
        field = {
            Signal.TRACES: "rejected_spans",
            Signal.METRICS: "rejected_data_points",
            Signal.LOGS: "rejected_log_records",
        }[signal]
        setattr(response.partial_success, field, rejected)
        response.partial_success.error_message = _PARTIAL_MESSAGE
    return response


_GRPC_NUMBER = {code.name: code.value[0] for code in grpc.StatusCode}


def _code_name(status: int) -> str:
    return GRPC_CODE_OF_HTTP_STATUS.get(status, "UNKNOWN")


def _http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _signal_param(request: web.Request, *, required: bool = True) -> Any:
    name = request.query.get("signal")
    if name is None and not required:
        return None
    try:
        return Signal(name)
    except ValueError:
        raise web.HTTPBadRequest(text="signal must be traces, metrics or logs") from None


def _spec_json(spec: FaultSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)
