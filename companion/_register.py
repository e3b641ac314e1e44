"""Registration with the Extensions API over a plain socket, before anything heavy is imported.

Lambda starts the runtime only once every extension has registered, so each millisecond before
the register call is a millisecond of Init; this module needs only `socket`, `json` and
companion.errors (which imports nothing).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence

# Still importable from here, where it was defined before companion.errors existed.
from companion.errors import LambdaApiError as LambdaApiError

EXTENSIONS_PATH = "/2020-01-01/extension"
NAME_HEADER = "Lambda-Extension-Name"
ID_HEADER = "Lambda-Extension-Identifier"
ACCEPT_FEATURE_HEADER = "Lambda-Extension-Accept-Feature"
EVENTS = ("INVOKE", "SHUTDOWN")
REGISTER_TIMEOUT = 5.0
MAX_RESPONSE_BYTES = 1024 * 1024


class Registration:
    """What register answered: the extension's identifier and the function it serves."""

    __slots__ = ("account_id", "extension_id", "function_name", "function_version", "handler")

    def __init__(
        self, extension_id: str, function_name: str = "", function_version: str = "",
        handler: str = "", account_id: str = "",
    ) -> None:
        self.extension_id = extension_id
        self.function_name = function_name
        self.function_version = function_version
        self.handler = handler
        self.account_id = account_id


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def valid_extension_name(name: str) -> bool:
    """A plain file name: Lambda passes it on to its logs and error messages."""
    return 0 < len(name) <= 64 and name[0].isalnum() and set(name) <= _NAME_CHARS


def split_host_port(address: str) -> tuple[str, int]:
    """("127.0.0.1", 9001) from "127.0.0.1:9001"; "[::1]:9001" for IPv6."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f'"{address}" is not host:port')
    return host.strip("[]"), int(port)


def registration_from(status: int, headers: dict[str, str], body: bytes, name: str) -> Registration:
    """The Registration in a register response; raises LambdaApiError if it was refused."""
    extension_id = headers.get(ID_HEADER.lower(), "")
    if status != 200 or not extension_id:
        text = body.decode("utf-8", "replace").strip()[:300]
        raise LambdaApiError(f"register as {name} refused: {status} {text}".rstrip())
    try:
        info = json.loads(body or b"{}")
    except ValueError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    return Registration(
        extension_id,
        function_name=str(info.get("functionName", "")),
        function_version=str(info.get("functionVersion", "")),
        handler=str(info.get("handler", "")),
        account_id=str(info.get("accountId", "")),
    )


def register(
    runtime_api: str, name: str, events: Sequence[str] = EVENTS, timeout: float = REGISTER_TIMEOUT
) -> Registration:
    """POST /extension/register for `events`, accepting the accountId feature."""
    try:
        host, port = split_host_port(runtime_api)
    except ValueError as exc:
        raise LambdaApiError(f"AWS_LAMBDA_RUNTIME_API: {exc}") from exc
    body = json.dumps({"events": list(events)}).encode()
    request = (
        f"POST {EXTENSIONS_PATH}/register HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"{NAME_HEADER}: {name}\r\n"
        f"{ACCEPT_FEATURE_HEADER}: accountId\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1") + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(request)
            raw = b""
            while len(raw) <= MAX_RESPONSE_BYTES:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                raw += chunk
    except OSError as exc:
        raise LambdaApiError(f"register on {host}:{port} failed: {exc}") from exc
    status, headers, payload = parse_response(raw)
    return registration_from(status, headers, payload, name)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, lower-cased headers and body of a whole HTTP/1.1 response read to EOF."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if not sep or len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise LambdaApiError(f"register: not an HTTP response: {raw[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            try:
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
            except ValueError as exc:
                raise LambdaApiError("register: malformed chunked body") from exc
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
        return int(parts[1]), headers, body
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        rest = rest[: int(length)]
    return int(parts[1]), headers, rest
