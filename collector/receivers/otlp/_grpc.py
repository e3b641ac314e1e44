"""OTLP/gRPC: the trace, metrics and logs Export services on a grpc.aio server.

Handlers take the raw request bytes (no deserializer): the request is parsed once to count
its items, and the original bytes travel on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from collector._signals import Signal
from collector.receivers.otlp import _listen
from collector.receivers.otlp._config import GRPCServerConfig
from collector.receivers.otlp._intake import Intake
from collector.receivers.otlp._status import Rejected, retry_info_bytes, status_bytes

_SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}
# Export responses are empty messages (no partial success), which serialize to no bytes.
_EMPTY_RESPONSE = b""


class GRPCServer:
    """One grpc.aio server in the running event loop."""

    def __init__(self, config: GRPCServerConfig, intake: Intake) -> None:
        self._config = config
        self._intake = intake
        self._server: Any = None

    async def start(self) -> str:
        """Binds and starts serving; returns the bound "host:port". Raises OSError naming
        the endpoint when it cannot bind."""
        endpoint = self._config.endpoint
        hosts, port = await _listen.addresses(endpoint)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._config.max_recv_msg_size),
                ("grpc.max_send_message_length", 64 * 1024),
                # grpc turns SO_REUSEPORT on by default, which would let a second collector
                # share the port silently instead of failing to start.
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    _SERVICES[signal],
                    {"Export": grpc.unary_unary_rpc_method_handler(self._handler(signal))},
                )
                for signal in Signal
            ]
        )
        try:
            bound = server.add_insecure_port(_listen.join(hosts[0], port))
        except RuntimeError:
            # grpc says only "Failed to bind"; a socket of our own tells why.
            raise _listen.bind_error(
                "OTLP/gRPC", endpoint, hosts[0], port, _listen.probe(hosts[0], port)
            ) from None
        for extra in hosts[1:]:
            # Probing first keeps grpc from logging a bind failure for a family the machine
            # lacks.
            if _listen.probe(extra, bound) is None:
                try:
                    server.add_insecure_port(_listen.join(extra, bound))
                except RuntimeError:
                    pass
        await server.start()
        self._server = server
        return _listen.join(hosts[0], bound)

    async def stop(self, grace: float) -> None:
        """Stops accepting calls; calls in flight get `grace` seconds to finish."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)

    def _handler(self, signal: Signal) -> Callable[[bytes, Any], Awaitable[bytes]]:
        intake = self._intake

        async def export(request: bytes, context: Any) -> bytes:
            try:
                await intake.accept(signal, request)
            except Rejected as rejection:
                intake.count(rejection)
                await context.abort(
                    grpc.StatusCode[rejection.problem.grpc_code],
                    rejection.message,
                    trailing_metadata=_trailers(rejection),
                )
            return _EMPTY_RESPONSE

        return export


def _trailers(rejection: Rejected) -> tuple[tuple[str, bytes], ...]:
    if rejection.retry_after is None:
        return ()
    return (
        # The standard place: a google.rpc.Status whose details hold the RetryInfo.
        (
            "grpc-status-details-bin",
            status_bytes(rejection.problem, rejection.message, rejection.retry_after),
        ),
        # The OpenTelemetry Python exporter reads RetryInfo from this key.
        ("google.rpc.retryinfo-bin", retry_info_bytes(rejection.retry_after)),
    )
