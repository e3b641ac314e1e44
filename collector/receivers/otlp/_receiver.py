"""The otlp receiver: an OTLP/gRPC and an OTLP/HTTP server feeding the pipelines' consumers,
and the factory the collector builds it with."""

from __future__ import annotations

import asyncio
from typing import Protocol

from collector._component import BuildContext, ComponentFactory, Kind
from collector.receivers.otlp._config import OTLPReceiverConfig
from collector.receivers.otlp._intake import Intake

# In-flight requests get this long to finish at shutdown; Lambda's whole SHUTDOWN phase is
# 2 s, and the drain after this needs most of it.
SHUTDOWN_GRACE_SECONDS = 0.5


class _Server(Protocol):
    async def start(self) -> str: ...

    async def stop(self, grace: float) -> None: ...


class OTLPReceiver:
    """Serves OTLP on the configured protocols; `rejected` counts refused requests by
    reason ("bad_data", "too_large", "backpressure", ...)."""

    def __init__(self, config: OTLPReceiverConfig, context: BuildContext) -> None:
        self.id = context.id
        self.config = config
        self._intake = Intake(context.id, context.consumers)
        self.rejected: dict[str, int] = self._intake.rejected
        # Seconds requests in flight get at shutdown.
        self.shutdown_grace = SHUTDOWN_GRACE_SECONDS
        self._servers: dict[str, _Server] = {}
        self._endpoints: dict[str, str] = {}
        self._state = "new"

    @property
    def endpoints(self) -> dict[str, str]:
        """The bound "host:port" per protocol ("grpc", "http") once started."""
        return dict(self._endpoints)

    async def start(self) -> None:
        """Binds every configured protocol; raises OSError naming the endpoint when one
        cannot listen (nothing stays bound then)."""
        if self._state != "new":
            raise RuntimeError(f"receiver {self.id} was already started")
        self._state = "started"
        protocols = self.config.protocols
        try:
            # Imported here: each server pulls in code (grpc above all) that a
            # config without that protocol should not pay for at cold start.
            if protocols.grpc is not None:
                from collector.receivers.otlp._grpc import GRPCServer

                await self._start_server("grpc", GRPCServer(protocols.grpc, self._intake))
            if protocols.http is not None:
                from collector.receivers.otlp._http import HTTPServer

                await self._start_server("http", HTTPServer(protocols.http, self._intake))
        except BaseException:
            await self.shutdown()
            raise

    async def _start_server(self, name: str, server: _Server) -> None:
        try:
            endpoint = await server.start()
        except OSError as exc:
            raise OSError(exc.errno, f"receiver {self.id}: {exc.strerror or exc}") from None
        self._servers[name] = server
        self._endpoints[name] = endpoint

    async def shutdown(self) -> None:
        """Stops accepting; requests in flight get `shutdown_grace` seconds. Idempotent."""
        self._state = "stopped"
        servers, self._servers = self._servers, {}
        if servers:
            async with asyncio.TaskGroup() as group:
                for server in servers.values():
                    group.create_task(server.stop(self.shutdown_grace))


# As in the OpenTelemetry Collector, no protocol is on until the config names one.
FACTORY = ComponentFactory("otlp", Kind.RECEIVER, OTLPReceiverConfig, OTLPReceiver)
