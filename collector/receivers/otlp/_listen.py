"""Listening sockets for the OTLP servers: which addresses an endpoint binds, and errors that
name the endpoint when a port is taken."""

from __future__ import annotations

import asyncio
import errno
import socket

from collector.receivers.otlp._config import bind_hosts, split_endpoint


async def addresses(endpoint: str) -> tuple[tuple[str, ...], int]:
    """The hosts to bind for `endpoint` (the first required, the rest best effort) and the
    port; raises OSError when a host name does not resolve."""
    host, port = split_endpoint(endpoint)
    hosts = bind_hosts(host)
    if hosts is None:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise OSError(
                errno.EADDRNOTAVAIL, f'cannot resolve "{host}" of {endpoint}: {exc}'
            ) from None
        hosts = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    return hosts, port


def join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port, not yet listening; raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR lets a restarted collector bind past TIME_WAIT; on Linux it never lets
        # two listeners share a port (SO_REUSEPORT would, and is left off).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def probe(host: str, port: int) -> OSError | None:
    """Why host:port cannot be bound right now, or None when it can."""
    try:
        bind(host, port).close()
    except OSError as exc:
        return exc
    return None


def bind_error(what: str, endpoint: str, host: str, port: int, cause: OSError | None) -> OSError:
    """One line naming the endpoint, e.g. `cannot listen for OTLP/gRPC on localhost:4317
    (127.0.0.1:4317): address already in use`."""
    code = cause.errno if cause is not None and cause.errno else errno.EADDRNOTAVAIL
    reason = (cause.strerror if cause is not None else None) or "cannot bind"
    return OSError(
        code, f"cannot listen for {what} on {endpoint} ({join(host, port)}): {reason.lower()}"
    )
