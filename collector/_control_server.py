"""Serves the FlushControl gRPC service on a unix socket that only its owner may use.

Drain and Status are answered from the service's FlushController and its start-up state.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

import grpc

from collector._signals import Signal
from collector.control import socket_path
from collector.errors import AfterflushError
from collector.processors.flushcontrol import DrainOutcome, SignalTally
from collector.proto import control_pb2, control_pb2_grpc


def _counts(tally: SignalTally) -> Any:
    return control_pb2.SignalCounts(
        exported=tally.exported,
        dropped=tally.dropped,
        buffered=tally.buffered,
        buffered_bytes=tally.buffered_bytes,
        spilled=tally.spilled,
    )


def drain_reply(outcome: DrainOutcome, rejected: dict[str, int] | None = None) -> Any:
    return control_pb2.DrainReply(
        rejected_requests=rejected or {},
        traces=_counts(outcome.tallies[Signal.TRACES]),
        metrics=_counts(outcome.tallies[Signal.METRICS]),
        logs=_counts(outcome.tallies[Signal.LOGS]),
        duration_us=int(outcome.duration_s * 1e6),
        complete=outcome.complete,
        last_error=outcome.last_error,
    )


# The reply must reach the caller before its deadline: keep back a little of it.
REPLY_MARGIN_S = 0.05


def _usable(remaining: float | None) -> float | None:
    if remaining is None:
        return None
    return max(0.0, remaining - min(REPLY_MARGIN_S, remaining * 0.1))


class _Servicer(control_pb2_grpc.FlushControlServicer):
    def __init__(self, host: Any) -> None:
        self.host = host

    async def Drain(self, request: Any, context: Any) -> Any:
        outcome = await self.host.drain(
            timeout=_usable(context.time_remaining()),
            reason=request.reason or "manual",
            request_id=request.request_id,
            spill_remaining=request.spill_remaining,
        )
        return drain_reply(outcome, self.host.rejected_since_last_drain())

    async def Status(self, request: Any, context: Any) -> Any:
        return self.host.status_reply()


class ControlServer:
    """The FlushControl endpoint. `host` has drain(...) and status_reply()."""

    def __init__(self, endpoint: str, host: Any) -> None:
        self.endpoint = endpoint
        self.path = socket_path(endpoint)
        self.host = host
        self._server: Any = None

    async def start(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        _remove_stale_socket(self.path)
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        control_pb2_grpc.add_FlushControlServicer_to_server(_Servicer(self.host), server)  # type: ignore[no-untyped-call]
        # The socket is created with the umask's mode: make it 0600 from the start.
        old_umask = os.umask(0o177)
        try:
            bound = server.add_insecure_port(self.endpoint)
        finally:
            os.umask(old_umask)
        if not bound:
            raise AfterflushError(f"cannot listen on control endpoint {self.endpoint}")
        await server.start()
        os.chmod(self.path, 0o600)
        self._server = server

    async def shutdown(self, grace: float = 0.2) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _remove_stale_socket(path: str) -> None:
    """Removes a socket left by a collector that died; refuses to steal a live one."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
    else:
        raise AfterflushError(f"control endpoint unix://{path} is in use by another process")
    finally:
        probe.close()

