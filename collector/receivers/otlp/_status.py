"""Why the receiver refused a request, and the google.rpc.Status that tells the sender.

Status and RetryInfo are written by collector/_rpcstatus.py, by hand, so that the collector
does not need googleapis-common-protos at run time.
"""

from __future__ import annotations

import enum
import json
import math

from collector._rpcstatus import RETRY_INFO_TYPE_URL, encode_retry_info, encode_status


class Problem(enum.Enum):
    """A reason to refuse a request: (counter key, HTTP status, gRPC status code name)."""

    BAD_DATA = ("bad_data", 400, "INVALID_ARGUMENT")
    TOO_LARGE = ("too_large", 413, "RESOURCE_EXHAUSTED")
    UNSUPPORTED_MEDIA_TYPE = ("unsupported_media_type", 415, "INVALID_ARGUMENT")
    NO_PIPELINE = ("no_pipeline", 404, "UNIMPLEMENTED")
    NOT_FOUND = ("not_found", 404, "NOT_FOUND")
    METHOD_NOT_ALLOWED = ("method_not_allowed", 405, "UNIMPLEMENTED")
    TIMEOUT = ("timeout", 408, "DEADLINE_EXCEEDED")
    DISCONNECTED = ("disconnected", 400, "CANCELLED")
    BACKPRESSURE = ("backpressure", 429, "RESOURCE_EXHAUSTED")
    EXPORT_FAILED = ("export_failed", 503, "UNAVAILABLE")
    EXPORT_REFUSED = ("export_refused", 400, "INVALID_ARGUMENT")
    INTERNAL = ("internal", 500, "INTERNAL")

    def __init__(self, key: str, http_status: int, grpc_code: str) -> None:
        self.key = key
        self.http_status = http_status
        self.grpc_code = grpc_code

    @property
    def grpc_code_value(self) -> int:
        return _GRPC_CODE_VALUES[self.grpc_code]


_GRPC_CODE_VALUES = {
    "CANCELLED": 1,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "RESOURCE_EXHAUSTED": 8,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
}


class Rejected(Exception):
    """A request is refused for `problem`; `retry_after` (seconds) goes back as RetryInfo /
    Retry-After when set."""

    def __init__(self, problem: Problem, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message
        self.retry_after = retry_after


def retry_after_header(seconds: float) -> str:
    """Retry-After in whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


def retry_info_bytes(seconds: float) -> bytes:
    """A serialized google.rpc.RetryInfo{retry_delay: seconds}."""
    return encode_retry_info(seconds)


def status_bytes(problem: Problem, message: str, retry_after: float | None = None) -> bytes:
    """A serialized google.rpc.Status, with a RetryInfo detail when retry_after is set."""
    return encode_status(problem.grpc_code_value, message, retry_after)


def status_json(problem: Problem, message: str, retry_after: float | None = None) -> bytes:
    """The same google.rpc.Status in the protobuf JSON mapping."""
    status: dict[str, object] = {"code": problem.grpc_code_value, "message": message}
    if retry_after is not None:
        whole, nanos = _split_seconds(retry_after)
        # The JSON form of a Duration has 0, 3, 6 or 9 fractional digits.
        digits = next(n for n in (0, 3, 6, 9) if nanos % 10 ** (9 - n) == 0)
        fraction = f".{nanos // 10 ** (9 - digits):0{digits}d}" if digits else ""
        delay = f"{whole}{fraction}s"
        status["details"] = [{"@type": RETRY_INFO_TYPE_URL, "retryDelay": delay}]
    return json.dumps(status, separators=(",", ":")).encode()


def _split_seconds(seconds: float) -> tuple[int, int]:
    seconds = max(0.0, seconds)
    whole = int(seconds)
    nanos = min(round((seconds - whole) * 1e9), 999_999_999)
    return whole, nanos
