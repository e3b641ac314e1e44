"""The companion's client of Lambda's Extensions API (2020-01-01) and Telemetry API (2022-07-01).

Requests, headers and bodies follow AWS's Lambda developer guide; errors become LambdaApiError.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from companion._http11 import HttpError, Response, request
from companion._register import (
    ACCEPT_FEATURE_HEADER,
    EXTENSIONS_PATH,
    ID_HEADER,
    NAME_HEADER,
    Registration,
    registration_from,
    split_host_port,
)
from companion.errors import LambdaApiError

TELEMETRY_PATH = "/2022-07-01/telemetry"
ERROR_TYPE_HEADER = "Lambda-Extension-Function-Error-Type"
TELEMETRY_SCHEMA_VERSION = "2022-12-13"
# The smallest buffering Lambda accepts: runtimeDone reaches the companion ~25 ms after the
# response instead of the default 1 s.
TELEMETRY_BUFFERING = {"timeoutMs": 25, "maxItems": 1000, "maxBytes": 262144}
# Telemetry listeners are addressed by this name inside the execution environment.
SANDBOX_HOSTNAME = "sandbox.localdomain"
__all__ = ["LambdaApiError", "Registration"]


@dataclass(frozen=True)
class InvokeEvent:
    request_id: str
    deadline_ms: int  # Unix epoch milliseconds
    invoked_function_arn: str = ""


@dataclass(frozen=True)
class ShutdownEvent:
    reason: str  # "spindown", "timeout" or "failure"
    deadline_ms: int  # Unix epoch milliseconds


Event = InvokeEvent | ShutdownEvent


class Subscription(enum.Enum):
    ACTIVE = "active"
    # The platform answered 202: it accepts the call but will send no events (as RIE does).
    NOT_SUPPORTED = "not supported"
    FAILED = "failed"


@dataclass(frozen=True)
class SubscribeResult:
    outcome: Subscription
    detail: str = ""


def parse_event(body: bytes) -> Event:
    """An INVOKE or SHUTDOWN event from event/next's JSON body; raises LambdaApiError."""
    try:
        data = json.loads(body)
        kind = data["eventType"]
        deadline_ms = int(data["deadlineMs"])
        if kind == "INVOKE":
            return InvokeEvent(
                request_id=str(data["requestId"]),
                deadline_ms=deadline_ms,
                invoked_function_arn=str(data.get("invokedFunctionArn", "")),
            )
        if kind == "SHUTDOWN":
            return ShutdownEvent(reason=str(data.get("shutdownReason", "")), deadline_ms=deadline_ms)
    except (ValueError, KeyError, TypeError) as exc:
        raise LambdaApiError(f"event/next returned an event that is not valid: {exc!r}") from exc
    raise LambdaApiError(f'event/next returned an unknown eventType "{kind}"')


class ExtensionsApi:
    """One registered extension's calls; `runtime_api` is AWS_LAMBDA_RUNTIME_API (host:port)."""

    def __init__(self, runtime_api: str) -> None:
        try:
            self._host, self._port = split_host_port(runtime_api)
        except ValueError as exc:
            raise LambdaApiError(f"AWS_LAMBDA_RUNTIME_API: {exc}") from exc
        self.extension_id = ""

    async def _call(
        self, method: str, path: str, headers: dict[str, str], body: Any = None
    ) -> Response:
        payload = b"" if body is None else json.dumps(body).encode()
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        try:
            return await request(
                self._host, self._port, method, path, headers=headers, body=payload
            )
        except HttpError as exc:
            raise LambdaApiError(str(exc)) from exc

    async def register(self, name: str, events: Sequence[str]) -> Registration:
        """The asynchronous twin of companion._register.register, for a companion started
        from a running loop."""
        response = await self._call(
            "POST",
            f"{EXTENSIONS_PATH}/register",
            {NAME_HEADER: name, ACCEPT_FEATURE_HEADER: "accountId"},
            {"events": list(events)},
        )
        registration = registration_from(
            response.status, dict(response.headers), response.body, name
        )
        self.extension_id = registration.extension_id
        return registration

    async def next_event(self) -> Event:
        response = await self._call(
            "GET", f"{EXTENSIONS_PATH}/event/next", {ID_HEADER: self.extension_id}
        )
        if response.status != 200:
            raise LambdaApiError(
                f"event/next answered {response.status} {_excerpt(response.body)}"
            )
        return parse_event(response.body)

    async def init_error(self, error_type: str, message: str) -> None:
        await self._report_error("init", error_type, message)

    async def exit_error(self, error_type: str, message: str) -> None:
        await self._report_error("exit", error_type, message)

    async def _report_error(self, phase: str, error_type: str, message: str) -> None:
        response = await self._call(
            "POST",
            f"{EXTENSIONS_PATH}/{phase}/error",
            {ID_HEADER: self.extension_id, ERROR_TYPE_HEADER: error_type},
            {"errorMessage": message, "errorType": error_type, "stackTrace": []},
        )
        if response.status >= 300:
            raise LambdaApiError(
                f"{phase}/error answered {response.status} {_excerpt(response.body)}"
            )

    async def subscribe_telemetry(self, port: int) -> SubscribeResult:
        """Subscribes to platform events sent to http://sandbox.localdomain:`port`."""
        body = {
            "schemaVersion": TELEMETRY_SCHEMA_VERSION,
            "types": ["platform"],
            "buffering": TELEMETRY_BUFFERING,
            "destination": {"protocol": "HTTP", "URI": f"http://{SANDBOX_HOSTNAME}:{port}"},
        }
        try:
            response = await self._call(
                "PUT", TELEMETRY_PATH, {ID_HEADER: self.extension_id}, body
            )
        except LambdaApiError as exc:
            return SubscribeResult(Subscription.FAILED, str(exc))
        if response.status == 200:
            return SubscribeResult(Subscription.ACTIVE)
        if response.status == 202:
            return SubscribeResult(Subscription.NOT_SUPPORTED, _excerpt(response.body))
        return SubscribeResult(
            Subscription.FAILED, f"{response.status} {_excerpt(response.body)}".strip()
        )


def _excerpt(body: bytes, limit: int = 300) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."
