"""Puts a platform without Telemetry API events in front of the companion: forwards every
Extensions API call to the real AWS_LAMBDA_RUNTIME_API, answers the Telemetry API subscription
with 202 "not supported" (as the AWS Runtime Interface Emulator does), runs
`python -m companion` against itself and exits with the companion's status.

usage: rie_like_proxy.py NAME
"""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
from aiohttp import web

UPSTREAM = os.environ["AWS_LAMBDA_RUNTIME_API"]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


async def not_supported(request: web.Request) -> web.Response:
    return web.json_response(
        {"errorMessage": "Telemetry API is not supported", "errorType": "Telemetry.NotSupported"},
        status=202,
    )


def forwarder(session: aiohttp.ClientSession):
    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with session.request(
            request.method, f"http://{UPSTREAM}{request.path_qs}", headers=headers,
            data=await request.read(),
        ) as upstream:
            body = await upstream.read()
            reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=upstream.status, body=body, headers=reply_headers)

    return forward


async def main(name: str) -> int:
    # event/next is a long poll: no total timeout on the way through.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        app = web.Application()
        app.router.add_put("/2022-07-01/telemetry", not_supported)
        app.router.add_route("*", "/{tail:.*}", forwarder(session))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}"}
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "companion", "--name", name, env=env
        )
        code = await child.wait()
        await runner.cleanup()
        return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
