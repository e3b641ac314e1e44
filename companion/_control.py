"""The FlushControl contract's client side and its endpoint settings.

The companion calls the collector's control endpoint with ControlClient; the collector serves
the service collector/proto/control.proto defines (`afterflush-collector ctl status|drain` is
the binary's own client of it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from companion.errors import ControlError

DEFAULT_CONTROL_ENDPOINT = "unix:///tmp/afterflush/control.sock"
# When set, overrides flushcontrol's control_endpoint; the companion sets it for its collector.
CONTROL_ENDPOINT_ENV = "AFTERFLUSH_CONTROL_ENDPOINT"


def socket_path(endpoint: str) -> str:
    """The filesystem path of a unix:// endpoint; raises ValueError for anything else."""
    for prefix in ("unix://", "unix:"):
        if endpoint.startswith(prefix):
            path = endpoint[len(prefix) :]
            if path.startswith("/") and len(path) > 1:
                return path
    raise ValueError(f'control endpoint "{endpoint}" must be unix:///absolute/path')


# The collector may not be listening yet (or may be restarting): retry connecting quickly
# instead of gRPC's default one-second backoff, and never wait for a connection past the
# call's deadline.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 200),
)


class ControlClient:
    """Calls Drain and Status on a collector's control endpoint over one gRPC channel."""

    def __init__(self, endpoint: str) -> None:
        socket_path(endpoint)  # validates early
        self.endpoint = endpoint
        self._channel: Any = None
        self._stub: Any = None

    def _connect(self) -> Any:
        if self._stub is None:
            import grpc

            from companion.proto import control_pb2_grpc

            self._channel = grpc.aio.insecure_channel(self.endpoint, options=CHANNEL_OPTIONS)
            self._stub = control_pb2_grpc.FlushControlStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def status(self, *, timeout: float) -> Any:
        """Returns a control_pb2.StatusReply; raises ControlError."""
        from companion.proto import control_pb2

        return await self._call("Status", control_pb2.StatusRequest(), timeout)

    async def drain(
        self, *, timeout: float, request_id: str = "", reason: str = "manual",
        spill_remaining: bool = False, await_handover: bool = False,
        handover_timeout: float = 0.0, max_drain: float = 0.0,
    ) -> Any:
        """Returns a control_pb2.DrainReply; raises ControlError. `timeout` (seconds) becomes
        the gRPC deadline, which the collector honours. With `await_handover` the collector
        first waits for the hand-over mark of `request_id` (at most `handover_timeout` when
        set), then exports for at most `max_drain` (when set)."""
        from companion.proto import control_pb2

        request = control_pb2.DrainRequest(
            request_id=request_id, reason=reason, spill_remaining=spill_remaining,
            await_handover=await_handover,
            handover_timeout_ms=_ms(handover_timeout), max_drain_ms=_ms(max_drain),
        )
        return await self._call("Drain", request, timeout)

    async def handover(self, request_id: str, *, source: str, timeout: float) -> Any:
        """Marks the end of `request_id`'s hand-over (source "runtime": the runtime finished
        without the function side's mark); returns a control_pb2.HandoverReply."""
        from companion.proto import control_pb2

        request = control_pb2.HandoverRequest(request_id=request_id, source=source)
        return await self._call("Handover", request, timeout)

    async def _call(self, method: str, request: Any, timeout: float) -> Any:
        import grpc

        stub = self._connect()
        try:
            return await getattr(stub, method)(request, timeout=max(timeout, 0.001))
        except grpc.aio.AioRpcError as exc:
            raise ControlError(
                f"{method} on {self.endpoint} failed: {exc.code().name}: {exc.details()}"
            ) from exc
        except asyncio.CancelledError as exc:
            # grpc.aio cancels a call whose channel closed under it (the collector died);
            # only a cancellation of the caller's own task is passed on as one.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise ControlError(f"{method} on {self.endpoint} failed: the channel closed") from exc

    async def aclose(self) -> None:
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close()


def _ms(seconds: float) -> int:
    """Whole milliseconds for a uint32 field, at least 1 for any positive time."""
    if seconds <= 0:
        return 0
    return min(max(round(seconds * 1000), 1), 2**32 - 1)
