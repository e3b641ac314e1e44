"""Reading what an OTLP backend answered: partial-success counts from a successful response
and a short message from an error body, in protobuf or JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from collector._rpcstatus import decode_status
from collector._signals import Signal

# The partial-success field that counts rejected items, per signal, in proto and JSON names.
_REJECTED_FIELD = {
    Signal.TRACES: ("rejected_spans", "rejectedSpans"),
    Signal.METRICS: ("rejected_data_points", "rejectedDataPoints"),
    Signal.LOGS: ("rejected_log_records", "rejectedLogRecords"),
}
# Error messages from a backend end up in one log line: keep them short and on one line.
_MAX_MESSAGE = 200


@dataclass(frozen=True, slots=True)
class PartialSuccess:
    rejected: int = 0
    message: str = ""


def partial_success_from_message(signal: Signal, response: Any) -> PartialSuccess:
    """From a decoded Export*ServiceResponse."""
    if not response.HasField("partial_success"):
        return PartialSuccess()
    partial = response.partial_success
    rejected = int(getattr(partial, _REJECTED_FIELD[signal][0]))
    return PartialSuccess(rejected, one_line(partial.error_message))


def parse_partial_success(signal: Signal, body: bytes, *, json_body: bool) -> PartialSuccess:
    """From a response body; an empty or unreadable body counts as full success, since the
    backend took the data and the status code already said so."""
    if not body:
        return PartialSuccess()
    if json_body:
        return _partial_success_from_json(signal, body)
    response = signal.response_type()
    try:
        response.ParseFromString(body)
    except Exception:  # a malformed success body must not turn delivered data into a failure
        return PartialSuccess()
    return partial_success_from_message(signal, response)


def _partial_success_from_json(signal: Signal, body: bytes) -> PartialSuccess:
    try:
        document = json.loads(body)
    except ValueError:
        return PartialSuccess()
    if not isinstance(document, dict):
        return PartialSuccess()
    partial = document.get("partialSuccess", document.get("partial_success"))
    if not isinstance(partial, dict):
        return PartialSuccess()
    snake, camel = _REJECTED_FIELD[signal]
    raw: object = partial.get(camel, partial.get(snake, 0))
    rejected = 0
    # OTLP/JSON writes int64 as a string; accept a number too.
    if isinstance(raw, (int, str)) and not isinstance(raw, bool):
        try:
            rejected = int(raw)
        except ValueError:
            rejected = 0
    message = partial.get("errorMessage", partial.get("error_message", ""))
    return PartialSuccess(max(0, rejected), one_line(message if isinstance(message, str) else ""))


def error_body_message(body: bytes, content_type: str) -> str:
    """The message of a google.rpc.Status error body (protobuf or JSON), else the body's text
    when it looks like text; one short line, "" when there is nothing useful."""
    if not body:
        return ""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("application/x-protobuf", "application/protobuf"):
        try:
            return one_line(decode_status(body).message)
        except ValueError:
            return ""
    if media == "application/json":
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if isinstance(document, dict) and isinstance(document.get("message"), str):
            return one_line(document["message"])
    if media.startswith("text/") or media == "application/json":
        return one_line(body.decode("utf-8", errors="replace"))
    return ""


def one_line(text: str) -> str:
    """Whitespace folded to single spaces and cut to a length fit for one log line."""
    folded = " ".join(text.split())
    if len(folded) > _MAX_MESSAGE:
        return folded[: _MAX_MESSAGE - 3] + "..."
    return folded


def scrub_secrets(text: str, secrets: frozenset[str]) -> str:
    """`text` with every secret (header value) replaced, for errors built from what a backend
    or a library said, which may echo a request's headers."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def secret_values(headers: dict[str, str]) -> frozenset[str]:
    """The header values to keep out of logs. Values shorter than 3 characters are left
    out: replacing them would garble messages, and such values are not keys."""
    return frozenset(v for v in headers.values() if len(v) >= 3)
