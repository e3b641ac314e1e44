"""The two HTTP servers: the Lambda APIs at AWS_LAMBDA_RUNTIME_API (Runtime, Extensions,
Telemetry, and a Logs API that refuses) and the RIE-compatible invoke door for callers."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from emulator import _protocol as p
from emulator._lifecycle import ApiError, ApiReply, Environment, monotonic

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY_LIMIT: Final = 2 * p.MAX_PAYLOAD_BYTES
SHUTDOWN_TIMEOUT_S: Final = 0.5


def _error(status: int, error_type: str, message: str) -> web.Response:
    body = json.dumps({"errorMessage": message, "errorType": error_type}).encode()
    return web.Response(status=status, body=body, headers={"Content-Type": p.JSON_CONTENT_TYPE})


def _reply(reply: ApiReply) -> web.Response:
    return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


def _guard(fn: Callable[[web.Request], Awaitable[ApiReply]]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return _reply(await fn(request))
        except ApiError as exc:
            return _error(exc.status, exc.error_type, exc.message)

    return handler


def lambda_api(env: Environment) -> web.Application:
    """Runtime API 2018-06-01, Extensions API 2020-01-01, Telemetry API 2022-07-01."""

    async def runtime_next(_: web.Request) -> ApiReply:
        return await env.runtime_next()

    async def runtime_response(request: web.Request) -> ApiReply:
        started = monotonic()
        body = await request.read()
        content_type = request.headers.get("Content-Type", p.JSON_CONTENT_TYPE)
        return env.runtime_response(request.match_info["request_id"], body, content_type, started)

    async def runtime_error(request: web.Request) -> ApiReply:
        started = monotonic()
        body = await request.read()
        error_type = request.headers.get(p.H_FUNCTION_ERROR_TYPE)
        return env.runtime_error(request.match_info["request_id"], error_type, body, started)

    async def runtime_init_error(request: web.Request) -> ApiReply:
        body = await request.read()
        return env.runtime_init_error(request.headers.get(p.H_FUNCTION_ERROR_TYPE), body)

    async def register(request: web.Request) -> ApiReply:
        body = await request.read()
        return env.register(request.headers.get(p.H_EXTENSION_NAME), body,
                            request.headers.get(p.H_EXTENSION_FEATURES))

    async def extension_next(request: web.Request) -> ApiReply:
        return await env.extension_next(request.headers.get(p.H_EXTENSION_ID))

    async def extension_init_error(request: web.Request) -> ApiReply:
        body = await request.read()
        return env.extension_error(request.headers.get(p.H_EXTENSION_ID),
                                   request.headers.get(p.H_EXTENSION_ERROR_TYPE), body,
                                   during_init=True)

    async def extension_exit_error(request: web.Request) -> ApiReply:
        body = await request.read()
        return env.extension_error(request.headers.get(p.H_EXTENSION_ID),
                                   request.headers.get(p.H_EXTENSION_ERROR_TYPE), body,
                                   during_init=False)

    async def telemetry(request: web.Request) -> ApiReply:
        body = await request.read()
        return env.subscribe(request.headers.get(p.H_EXTENSION_ID), body)

    async def logs(_: web.Request) -> ApiReply:
        raise ApiError(400, p.ERR_LOGS_NOT_SUPPORTED,
                       f"The Logs API ({p.LOGS_API_VERSION}) is not supported by this emulator; "
                       f"subscribe with the Telemetry API ({p.TELEMETRY_API_VERSION}) instead")

    app = web.Application(client_max_size=BODY_LIMIT)
    app.router.add_get(p.RUNTIME_NEXT, _guard(runtime_next))
    app.router.add_post(p.RUNTIME_RESPONSE, _guard(runtime_response))
    app.router.add_post(p.RUNTIME_ERROR, _guard(runtime_error))
    app.router.add_post(p.RUNTIME_INIT_ERROR, _guard(runtime_init_error))
    app.router.add_post(p.EXTENSION_REGISTER, _guard(register))
    app.router.add_get(p.EXTENSION_NEXT, _guard(extension_next))
    app.router.add_post(p.EXTENSION_INIT_ERROR, _guard(extension_init_error))
    app.router.add_post(p.EXTENSION_EXIT_ERROR, _guard(extension_exit_error))
    app.router.add_put(p.TELEMETRY_SUBSCRIBE, _guard(telemetry))
    app.router.add_put(p.TELEMETRY_SUBSCRIBE + "/", _guard(telemetry))
    app.router.add_put(p.LOGS_SUBSCRIBE, _guard(logs))
    app.router.add_put(p.LOGS_SUBSCRIBE + "/", _guard(logs))
    return app


def invoke_door(env: Environment) -> web.Application:
    """POST /2015-03-31/functions/{function}/invocations, as RIE and Lambda's Invoke API answer."""

    async def invoke(request: web.Request) -> web.StreamResponse:
        arrived = monotonic()
        body = await request.read()
        if len(body) > p.MAX_PAYLOAD_BYTES:
            return _error(413, p.ERR_REQUEST_TOO_LARGE,
                          f"Exceeded maximum allowed payload size ({p.MAX_PAYLOAD_BYTES} bytes).")
        invocation_type = request.headers.get(p.H_INVOCATION_TYPE, "RequestResponse")
        if invocation_type == "DryRun":
            return web.Response(status=204)
        inv = env.submit(body, request.headers, arrived)
        if invocation_type == "Event":
            return web.Response(status=202, headers={p.H_AMZ_REQUEST_ID: inv.request_id})
        try:
            async with asyncio.timeout(env.max_wait_s() + SHUTDOWN_TIMEOUT_S * 10):
                reply = await asyncio.shield(inv.response)
        except TimeoutError:
            return _error(504, "Emulator.Timeout", "the invocation did not end in time")
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    app = web.Application(client_max_size=BODY_LIMIT)
    app.router.add_post(p.INVOKE_PATH, invoke)
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


class Server:
    """One aiohttp application served on an already bound socket."""

    def __init__(self, app: web.Application, sock: socket.socket) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        self._sock = sock

    @property
    def address(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def start(self) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def aclose(self) -> None:
        await self._runner.cleanup()
