"""google.rpc.Status with a RetryInfo detail, read and written by hand on the protobuf wire.

OTLP servers send it in gRPC's `grpc-status-details-bin` trailer and in OTLP/HTTP error
bodies: the receiver writes it, the exporters read it. These three small messages do not
justify a dependency on googleapis-common-protos.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY_INFO_TYPE_URL = "type.googleapis.com/google.rpc.RetryInfo"

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True, slots=True)
class RpcStatus:
    code: int = 0
    message: str = ""
    # From a google.rpc.RetryInfo detail, in seconds; None when the server sent none.
    retry_delay: float | None = None


def decode_status(data: bytes) -> RpcStatus:
    """Parses a serialized google.rpc.Status; raises ValueError when it is not one."""
    code = 0
    message = ""
    retry_delay: float | None = None
    for number, value in _fields(data):
        if number == 1 and isinstance(value, int):
            code = _int32(value)
        elif number == 2 and isinstance(value, bytes):
            message = value.decode("utf-8", errors="replace")
        elif number == 3 and isinstance(value, bytes):
            delay = _retry_delay_of_any(value)
            if delay is not None:
                retry_delay = delay
    return RpcStatus(code, message, retry_delay)


def encode_status(code: int, message: str = "", retry_delay: float | None = None) -> bytes:
    """Serializes a google.rpc.Status, with a RetryInfo detail when retry_delay is given."""
    out = bytearray()
    if code:
        out += _key(1, _VARINT) + _varint(code & 0xFFFFFFFFFFFFFFFF)
    if message:
        out += _length_delimited(2, message.encode())
    if retry_delay is not None:
        any_message = _length_delimited(1, RETRY_INFO_TYPE_URL.encode()) + _length_delimited(
            2, encode_retry_info(retry_delay)
        )
        out += _length_delimited(3, any_message)
    return bytes(out)


def encode_retry_info(retry_delay: float) -> bytes:
    """Serializes a google.rpc.RetryInfo{retry_delay} (negative delays count as 0)."""
    retry_delay = max(0.0, retry_delay)
    seconds = int(retry_delay)
    nanos = min(round((retry_delay - seconds) * 1e9), 999_999_999)
    duration = bytearray()
    if seconds:
        duration += _key(1, _VARINT) + _varint(seconds)
    if nanos:
        duration += _key(2, _VARINT) + _varint(nanos)
    return _length_delimited(1, bytes(duration))


def _retry_delay_of_any(data: bytes) -> float | None:
    type_url = ""
    value = b""
    for number, field in _fields(data):
        if number == 1 and isinstance(field, bytes):
            type_url = field.decode("utf-8", errors="replace")
        elif number == 2 and isinstance(field, bytes):
            value = field
    if type_url.rsplit("/", 1)[-1] != "google.rpc.RetryInfo":
        return None
    seconds = 0
    nanos = 0
    for number, field in _fields(value):
        if number == 1 and isinstance(field, bytes):
            for duration_number, part in _fields(field):
                if duration_number == 1 and isinstance(part, int):
                    seconds = _int64(part)
                elif duration_number == 2 and isinstance(part, int):
                    nanos = _int32(part)
    return max(0.0, seconds + nanos / 1e9)


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message: ints for varints and fixed-width fields,
    bytes for length-delimited ones."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire_type == _VARINT:
            value, pos = _read_varint(data, pos)
            fields.append((number, value))
        elif wire_type == _LENGTH:
            size, pos = _read_varint(data, pos)
            if pos + size > end:
                raise ValueError("truncated field")
            fields.append((number, data[pos : pos + size]))
            pos += size
        elif wire_type in (_FIXED64, _FIXED32):
            width = 8 if wire_type == _FIXED64 else 4
            if pos + width > end:
                raise ValueError("truncated field")
            fields.append((number, int.from_bytes(data[pos : pos + width], "little")))
            pos += width
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    return fields


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
    raise ValueError("varint too long")


def _int64(value: int) -> int:
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _key(number, _LENGTH) + _varint(len(payload)) + payload
