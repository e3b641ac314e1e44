"""The Telemetry API listener: learns when the runtime has answered each request.

Lambda POSTs batches of platform events; `platform.runtimeDone` marks a requestId as done.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import OrderedDict

from companion._http11 import Request, Response, Server
from companion._lambda_api import SANDBOX_HOSTNAME
from companion._log import Logger

RUNTIME_DONE = "platform.runtimeDone"
LOOPBACK = "127.0.0.1"
# Lambda posts each batch at once; a started one that stalls this long is given up.
BATCH_READ_TIMEOUT_SECONDS = 10.0


class RuntimeDoneTracker:
    """Which requestIds the runtime has finished, kept for the newest `capacity` of them.

    runtimeDone can arrive before the companion has even read the INVOKE event, so a mark
    made first is kept until its wait comes.
    """

    def __init__(self, capacity: int = 256) -> None:
        self._capacity = capacity
        self._done: OrderedDict[str, asyncio.Event] = OrderedDict()
        self._status: dict[str, str] = {}
        self.events_seen = 0

    def mark_done(self, request_id: str, status: str) -> None:
        event = self._done.get(request_id)
        if event is None:
            event = self._done[request_id] = asyncio.Event()
        self._done.move_to_end(request_id)
        self._status[request_id] = status
        event.set()
        while len(self._done) > self._capacity:
            old, _ = self._done.popitem(last=False)
            self._status.pop(old, None)

    def is_done(self, request_id: str) -> bool:
        event = self._done.get(request_id)
        return event is not None and event.is_set()

    async def wait(self, request_id: str, timeout: float) -> str | None:
        """The runtimeDone status of `request_id`, or None when it did not come in time."""
        event = self._done.get(request_id)
        if event is None:
            event = self._done[request_id] = asyncio.Event()
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await event.wait()
            return self._status.get(request_id, "")
        except TimeoutError:
            return None
        finally:
            # Each requestId is waited for once; keeping it would only crowd out newer marks.
            self._done.pop(request_id, None)
            self._status.pop(request_id, None)


def handle_batch(body: bytes, tracker: RuntimeDoneTracker) -> int:
    """Feeds one POSTed batch to `tracker`; returns the number of events; ValueError if the
    body is not a JSON array of events."""
    events = json.loads(body)
    if not isinstance(events, list):
        raise ValueError("a telemetry batch must be a JSON array")
    for item in events:
        if not isinstance(item, dict):
            continue
        tracker.events_seen += 1
        if item.get("type") != RUNTIME_DONE:
            continue
        record = item.get("record")
        if isinstance(record, dict) and isinstance(record.get("requestId"), str):
            tracker.mark_done(record["requestId"], str(record.get("status", "")))
    return len(events)


class TelemetryListener:
    """The HTTP endpoint Lambda sends telemetry batches to; answers each POST at once."""

    def __init__(self, tracker: RuntimeDoneTracker, log: Logger) -> None:
        self._tracker = tracker
        self._log = log
        self._server = Server(self._handle, read_timeout=BATCH_READ_TIMEOUT_SECONDS)
        self.host = LOOPBACK
        self.port = 0

    async def start(self, port: int = 0, *, host: str | None = None) -> int:
        """Listens on `host` (default: what sandbox.localdomain resolves to, else loopback)."""
        self.host = host if host is not None else await resolve_sandbox_host()
        self.port = await self._server.start(self.host, port)
        return self.port

    async def _handle(self, request: Request) -> Response:
        if request.method != "POST":
            return Response(405, {"Allow": "POST"})
        # A body that cannot be read is answered by the server (400, 408, 413).
        body = await request.read()
        try:
            count = handle_batch(body, self._tracker)
        except ValueError as exc:
            self._log.debug(f"telemetry batch rejected: {exc}")
            return Response(400)
        self._log.debug(f"telemetry batch of {count} events")
        return Response(200)

    async def aclose(self) -> None:
        await self._server.aclose()


async def resolve_sandbox_host(hostname: str = SANDBOX_HOSTNAME, timeout: float = 1.0) -> str:
    """The IPv4 address `hostname` resolves to, or loopback when it does not resolve."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(
                hostname, None, family=socket.AF_INET, type=socket.SOCK_STREAM
            )
    except (OSError, TimeoutError):
        return LOOPBACK
    for info in infos:
        address = info[4][0]
        if isinstance(address, str):
            return address
    return LOOPBACK
