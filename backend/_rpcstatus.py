"""google.rpc.Status with a RetryInfo detail, written by hand on the protobuf wire.

The backend sends it in gRPC's `grpc-status-details-bin` trailer and in OTLP/HTTP error bodies,
as OTLP servers do.
"""

from __future__ import annotations

RETRY_INFO_TYPE_URL = "type.googleapis.com/google.rpc.RetryInfo"

_VARINT, _LENGTH = 0, 2


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
