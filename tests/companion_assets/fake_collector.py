"""A stand-in collector for the companion's functional tests: serves FlushControl on
AFTERFLUSH_CONTROL_ENDPOINT and journals every call, behaving as FAKE_COLLECTOR_* asks.

FAKE_COLLECTOR_JOURNAL   file to append one JSON object per event (start, ready, drain, sigterm)
FAKE_COLLECTOR_MODE      ok | config-invalid | never-ready | crash-after-drain | crash-at-start
                         | failing-drains | dropping
FAKE_COLLECTOR_READY_DELAY  seconds before Status says ready (default 0)
FAKE_COLLECTOR_RESTART_READY_DELAY  the same for every process but the first
FAKE_COLLECTOR_IGNORE_SIGTERM  "1" to keep running on SIGTERM
FAKE_COLLECTOR_BUFFERED  spans held per drain request reported as buffered (default 0)
Modes that fail (crash-after-drain, crash-at-start) do so only in the first process of a journal, so that a
restarted collector behaves.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import grpc

from companion.proto import control_pb2, control_pb2_grpc

JOURNAL = os.environ.get("FAKE_COLLECTOR_JOURNAL", "")
MODE = os.environ.get("FAKE_COLLECTOR_MODE", "ok")
READY_DELAY = float(os.environ.get("FAKE_COLLECTOR_READY_DELAY", "0"))
ENDPOINT = os.environ["AFTERFLUSH_CONTROL_ENDPOINT"]


def journal(event: str, **fields: object) -> None:
    if JOURNAL:
        with open(JOURNAL, "a") as out:
            out.write(json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields}) + "\n")
            out.flush()


def earlier_starts() -> int:
    if not JOURNAL or not os.path.exists(JOURNAL):
        return 0
    with open(JOURNAL) as source:
        return sum(1 for line in source if json.loads(line)["event"] == "start")


class Service(control_pb2_grpc.FlushControlServicer):
    def __init__(self, first: bool) -> None:
        self.first = first
        self.started = time.monotonic()
        self.drains = 0
        self.ready_logged = False

    async def Status(self, request, context):
        delay = READY_DELAY if self.first else float(
            os.environ.get("FAKE_COLLECTOR_RESTART_READY_DELAY", READY_DELAY)
        )
        ready = MODE != "never-ready" and time.monotonic() - self.started >= delay
        if ready and not self.ready_logged:
            self.ready_logged = True
            journal("ready")
        return control_pb2.StatusReply(ready=ready, pid=os.getpid())

    async def Drain(self, request, context):
        self.drains += 1
        journal(
            "drain", request_id=request.request_id, reason=request.reason,
            spill=request.spill_remaining, time_remaining=context.time_remaining(),
        )
        if MODE == "failing-drains":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "backend unreachable")
        if MODE == "crash-after-drain" and self.first:
            os._exit(3)
        buffered = int(os.environ.get("FAKE_COLLECTOR_BUFFERED", "0"))
        traces = control_pb2.SignalCounts(exported=1, buffered=buffered, buffered_bytes=100 * buffered)
        if MODE == "dropping":
            traces = control_pb2.SignalCounts(dropped={"permanent:http 400": 3})
        return control_pb2.DrainReply(
            traces=traces, duration_us=1500, complete=buffered == 0,
            last_error="http 503 from backend" if buffered else "",
        )


async def serve() -> None:
    first = earlier_starts() == 0
    journal("start", first=first)
    if MODE == "config-invalid":
        print("exporters::otlphttp::endpoint (config.yaml:7): must be an http(s) URL", file=sys.stderr)
        print("processors::flushcontrol::max_buffer_size_mib (config.yaml:12): must be > 0", file=sys.stderr)
        sys.exit(2)
    if MODE == "crash-at-start" and first:
        print("Traceback (most recent call last):", file=sys.stderr)
        print("OSError: cannot listen on 127.0.0.1:4317: address in use", file=sys.stderr)
        sys.exit(1)
    print("fake collector starting", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_sigterm() -> None:
        journal("sigterm")
        if os.environ.get("FAKE_COLLECTOR_IGNORE_SIGTERM") != "1":
            stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    server = grpc.aio.server()
    control_pb2_grpc.add_FlushControlServicer_to_server(Service(first), server)
    server.add_insecure_port(ENDPOINT)
    await server.start()
    await stop.wait()
    await server.stop(0.2)
    journal("exit")


if __name__ == "__main__":
    asyncio.run(serve())
