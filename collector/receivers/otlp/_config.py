"""The otlp receiver's configuration, in the OpenTelemetry Collector's own schema.

Also parses listen endpoints ("localhost:4317", "[::1]:0", ":4318") into bind addresses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

MIB = 1024 * 1024

_IGNORED_TUNING = "afterflush serves one local client; the defaults fit it"


@dataclass(frozen=True, kw_only=True)
class GRPCServerConfig:
    # host:port to listen on. "localhost" binds 127.0.0.1 (and ::1 when the machine has it);
    # port 0 picks a free port (see OTLPReceiver.endpoints).
    endpoint: str = "localhost:4317"
    # Largest request accepted, in MiB after decompression; larger ones get
    # RESOURCE_EXHAUSTED. Must be > 0.
    max_recv_msg_size_mib: int = 4
    transport: Literal["tcp"] = "tcp"
    max_concurrent_streams: int = field(default=0, metadata={"ignored": _IGNORED_TUNING})
    read_buffer_size: int = field(default=0, metadata={"ignored": _IGNORED_TUNING})
    write_buffer_size: int = field(default=0, metadata={"ignored": _IGNORED_TUNING})
    include_metadata: bool = field(
        default=False, metadata={"ignored": "no processor here reads client metadata"}
    )
    # Any mapping; typed Any because its content is never read.
    keepalive: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})

    def validate(self) -> list[tuple[str, str]]:
        problems = _endpoint_problems(self.endpoint)
        if self.max_recv_msg_size_mib <= 0:
            problems.append(("max_recv_msg_size_mib", "must be > 0"))
        return problems

    @property
    def max_recv_msg_size(self) -> int:
        return self.max_recv_msg_size_mib * MIB


@dataclass(frozen=True, kw_only=True)
class HTTPServerConfig:
    # host:port to listen on; as for gRPC.
    endpoint: str = "localhost:4318"
    # Largest request body in bytes, both as sent and after gzip/deflate decoding; larger
    # bodies get 413. Must be > 0.
    max_request_body_size: int = 20 * MIB
    traces_url_path: str = "/v1/traces"
    metrics_url_path: str = "/v1/metrics"
    logs_url_path: str = "/v1/logs"
    include_metadata: bool = field(
        default=False, metadata={"ignored": "no processor here reads client metadata"}
    )
    # Any mapping; typed Any because its content is never read.
    cors: Any = field(
        default=None, metadata={"ignored": "the only client is the function, not a browser"}
    )

    def validate(self) -> list[tuple[str, str]]:
        problems = _endpoint_problems(self.endpoint)
        if self.max_request_body_size <= 0:
            problems.append(("max_request_body_size", "must be > 0"))
        seen: dict[str, str] = {}
        for key in ("traces_url_path", "metrics_url_path", "logs_url_path"):
            path = getattr(self, key)
            if not path.startswith("/"):
                problems.append((key, f'must start with "/", got "{path}"'))
            elif path in seen:
                problems.append((key, f'"{path}" is already used by {seen[path]}'))
            seen.setdefault(path, key)
        return problems


@dataclass(frozen=True, kw_only=True)
class Protocols:
    # None: the protocol is off. An empty mapping in YAML (`grpc:`) turns it on with defaults.
    grpc: GRPCServerConfig | None = None
    http: HTTPServerConfig | None = None


@dataclass(frozen=True, kw_only=True)
class OTLPReceiverConfig:
    protocols: Protocols = field(default_factory=Protocols)

    def validate(self) -> list[tuple[str, str]]:
        if self.protocols.grpc is None and self.protocols.http is None:
            return [("protocols", "must enable at least one of grpc and http")]
        return []


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """("127.0.0.1", 4317) from "127.0.0.1:4317"; an IPv6 host is written in brackets and
    returned without them. Raises ValueError with a message fit for a config error."""
    host, sep, port_text = endpoint.rpartition(":")
    if not sep:
        raise ValueError(f'"{endpoint}" must be host:port')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f'"{endpoint}": "{host}" is not an IPv6 address') from None
    elif ":" in host:
        raise ValueError(f'"{endpoint}": write an IPv6 host in brackets, e.g. [::1]:4317')
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f'"{endpoint}": port must be a number from 0 to 65535')
    return host, int(port_text)


def bind_hosts(host: str) -> tuple[str, ...] | None:
    """The addresses to bind for `host`, the first one required and the others best effort;
    None when `host` is a name to resolve."""
    if host == "":
        # As in the Go collector, ":4317" means every interface.
        return ("0.0.0.0", "::")
    if host.lower() == "localhost":
        # Clients resolve localhost to either family; answering on both saves them a
        # refused first attempt.
        return ("127.0.0.1", "::1")
    try:
        return (str(ipaddress.ip_address(host)),)
    except ValueError:
        return None


def _endpoint_problems(endpoint: str) -> list[tuple[str, str]]:
    try:
        split_endpoint(endpoint)
    except ValueError as exc:
        return [("endpoint", str(exc))]
    return []
