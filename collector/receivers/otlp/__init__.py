"""The `otlp` receiver: OTLP over gRPC (4317) and HTTP (4318) into the collector's pipelines.

FACTORY builds it from an OTLPReceiverConfig; grpc and the HTTP server load only when a protocol
that needs them starts.
"""

from __future__ import annotations

from collector.receivers.otlp._config import (
    GRPCServerConfig,
    HTTPServerConfig,
    OTLPReceiverConfig,
    Protocols,
)
from collector.receivers.otlp._receiver import FACTORY, SHUTDOWN_GRACE_SECONDS, OTLPReceiver

__all__ = [
    "FACTORY",
    "SHUTDOWN_GRACE_SECONDS",
    "GRPCServerConfig",
    "HTTPServerConfig",
    "OTLPReceiver",
    "OTLPReceiverConfig",
    "Protocols",
]
