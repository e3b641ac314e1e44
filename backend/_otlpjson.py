"""OTLP/JSON: the OTLP export requests in the JSON encoding the OTLP specification defines.

It is the protobuf JSON mapping except that trace and span ids are hex strings (not base64)
and enums are integers; decoding also takes snake_case keys and enum names, and ignores
unknown fields. The backend decodes OTLP/HTTP JSON bodies with it, and the tests' ledger the
OTLP JSON lines the collector spills.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from backend._signals import Signal

# The bytes fields that OTLP/JSON writes in hex, with their length in bytes.
_ID_LENGTHS = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}
# Deepest message nesting accepted; the binary protobuf parser stops at the same depth, so
# what decodes here also decodes again from its serialized form.
MAX_DEPTH = 100


def decode(signal: Signal, body: bytes | str) -> Any:
    """The Export*ServiceRequest of `signal` that `body` encodes; raises ValueError with a
    message that says what is wrong and where."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"invalid OTLP JSON: expected an object, got {type(document).__name__}")
    try:
        _hex_to_base64(document, _ROUTES[signal])
    except _IdError as exc:
        raise ValueError(f"invalid OTLP JSON: {exc.where()}: {exc}") from None
    message = signal.request_type()
    try:
        # json_format and the binary parser count depth differently: parse a little deeper
        # here, then hold the request to the binary parser's limit below, so that whatever is
        # accepted can be read back from its serialized form and from its own OTLP/JSON.
        json_format.ParseDict(
            document, message, ignore_unknown_fields=True, max_recursion_depth=MAX_DEPTH + 2
        )
    except RecursionError:
        raise ValueError("invalid OTLP JSON: nested too deeply") from None
    except json_format.ParseError as exc:
        raise ValueError(f"invalid OTLP JSON: {_tidy(str(exc))}") from None
    try:
        signal.request_type().ParseFromString(message.SerializeToString())
    except DecodeError:
        raise ValueError(f"invalid OTLP JSON: messages nested more than {MAX_DEPTH} deep") from None
    return message


def encode(signal: Signal, message: Any) -> str:
    """`message` (an Export*ServiceRequest of `signal`) as one compact line of OTLP/JSON."""
    document = json_format.MessageToDict(message, use_integers_for_enums=True)
    _base64_to_hex(document, _ROUTES[signal])
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


_NESTED = re.compile(r"Failed to parse (\w+) field: ")
_AT_PATH = re.compile(r" at Export\w+ServiceRequest\.(\S+?)\.*$")


def _tidy(message: str) -> str:
    """Shortens json_format's "Failed to parse a field: Failed to parse b field: ... reason
    at ExportTraceServiceRequest.a[0].b[1].c...." to "a[0].b[1].c: reason"."""
    fields = _NESTED.findall(message)
    reason = _NESTED.sub("", message)
    if reason.startswith("Message too deep"):
        return f"messages nested more than {MAX_DEPTH} deep"
    at = _AT_PATH.search(reason)
    if at:
        return f"{at.group(1)}: {reason[: at.start()]}"
    reason = reason.rstrip(".")
    return f"{'.'.join(fields)}: {reason}" if fields else reason


@dataclass(frozen=True, slots=True)
class _Route:
    """How to reach the id fields below one field of a message."""

    name: str  # the field's lowerCamelCase JSON name
    keys: tuple[str, ...]  # the JSON name and, when it differs, the proto name
    id_length: int  # > 0: the field is an id of that many bytes
    repeated: bool
    children: tuple[_Route, ...]


def _routes(descriptor: Descriptor, visiting: frozenset[str] = frozenset()) -> tuple[_Route, ...]:
    """The fields of `descriptor` that are ids or lead to messages holding ids."""
    routes: list[_Route] = []
    for fd in descriptor.fields:
        keys = tuple(dict.fromkeys((fd.json_name, fd.name)))
        if fd.type == FieldDescriptor.TYPE_BYTES and fd.name in _ID_LENGTHS:
            routes.append(_Route(fd.json_name, keys, _ID_LENGTHS[fd.name], fd.is_repeated, ()))
        elif (
            fd.type == FieldDescriptor.TYPE_MESSAGE
            and fd.message_type is not None
            and fd.message_type.full_name not in visiting
        ):
            children = _routes(fd.message_type, visiting | {descriptor.full_name})
            if children:
                routes.append(_Route(fd.json_name, keys, 0, fd.is_repeated, children))
    return tuple(routes)


_ROUTES = {signal: _routes(signal.request_type.DESCRIPTOR) for signal in Signal}


class _IdError(Exception):
    """A bad id; `path` is filled in as the error travels up the document."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.path = [key]

    def where(self) -> str:
        return "".join(self.path).lstrip(".")


def _hex_to_base64(node: dict[str, Any], routes: tuple[_Route, ...]) -> None:
    # json_format reads bytes as base64; rewriting the ids in place lets it do the rest.
    for route in routes:
        for key in route.keys:
            value = node.get(key)
            if value is None:
                continue
            if route.id_length:
                node[key] = _id_base64(value, route.id_length, key)
            else:
                _hex_to_base64_below(value, route.children, key)


def _hex_to_base64_below(value: Any, routes: tuple[_Route, ...], key: str) -> None:
    # Shapes other than an object or a list of objects are left for json_format to report.
    try:
        if isinstance(value, dict):
            _hex_to_base64(value, routes)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    try:
                        _hex_to_base64(item, routes)
                    except _IdError as exc:
                        exc.path.insert(0, f"[{index}]")
                        raise
    except _IdError as exc:
        exc.path.insert(0, f".{key}")
        raise


def _id_base64(value: Any, length: int, key: str) -> str:
    if not isinstance(value, str):
        raise _IdError(f"must be a hex string, got {json.dumps(value)[:40]}", f".{key}")
    if value == "":
        return ""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    # fromhex skips whitespace, so the length check also refuses "ab cd".
    if len(raw) != length or len(value) != 2 * length:
        raise _IdError(
            f'must be {2 * length} hex digits, got "{value[: 2 * length + 8]}"', f".{key}"
        )
    return base64.b64encode(raw).decode("ascii")


def _base64_to_hex(node: dict[str, Any], routes: tuple[_Route, ...]) -> None:
    # MessageToDict writes lowerCamelCase keys only.
    for route in routes:
        value = node.get(route.name)
        if value is None:
            continue
        if route.id_length:
            node[route.name] = binascii.a2b_base64(value).hex()
        elif isinstance(value, list):
            for item in value:
                _base64_to_hex(item, route.children)
        else:
            _base64_to_hex(value, route.children)
