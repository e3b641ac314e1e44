"""The `otlp` exporter: OTLP/gRPC to a backend over one long-lived grpc.aio channel, sending
each payload's bytes as they are and retrying inside the drain's deadline.
"""

from __future__ import annotations

import asyncio
import functools
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from collector._component import ComponentFactory, ExportResult, Kind, Outcome
from collector._rpcstatus import decode_status
from collector._signals import Payload, Signal
from collector.errors import ExportError
from collector.exporters._response import (
    partial_success_from_message,
    scrub_secrets,
    secret_values,
)
from collector.exporters._retry import (
    Retrier,
    RetryConfig,
    StaleConnectionError,
    is_retryable_grpc,
)
from collector.exporters._tls import TLSConfig, read_pem_files

TYPE_NAME = "otlp"
USER_AGENT = "afterflush-collector/0.1"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
_METHODS = {
    Signal.TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    Signal.METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    Signal.LOGS: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
_IGNORED_TUNING = "grpc's channel defaults fit one exporter"
_QUEUE_IGNORED = "flushcontrol holds the data between drains"


@dataclass(frozen=True, kw_only=True)
class OTLPConfig:
    """`exporters: otlp`: the Collector's otlpexporter keys."""

    # host:port (TLS unless tls.insecure), http://host:port (plain text) or
    # https://host:port (TLS); gRPC target names such as dns:///host:port also work.
    endpoint: str = ""
    # Sent as gRPC metadata with every request (API keys go here); never logged.
    headers: dict[str, str] = field(default_factory=dict, metadata={"secret": True})
    tls: TLSConfig = field(default_factory=TLSConfig)
    # Message compression; "" and "none" send it as it is.
    compression: Literal["gzip", "none", ""] = "gzip"
    # Bound of one attempt (the drain's deadline may cut it shorter); must be > 0.
    timeout: timedelta = timedelta(seconds=5)
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)
    # Overrides the :authority pseudo-header (virtual hosts behind one address).
    authority: str = ""
    # Any mapping; typed Any because its content is never read.
    sending_queue: Any = field(default=None, metadata={"ignored": _QUEUE_IGNORED})
    balancer_name: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})
    keepalive: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})
    wait_for_ready: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})
    read_buffer_size: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})
    write_buffer_size: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})

    def validate(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if not self.endpoint:
            problems.append(("endpoint", "must be set, e.g. api.honeycomb.io:443"))
        else:
            target, _ = self.target()
            if not target or ("/" in target and ":/" not in target):
                problems.append(
                    ("endpoint", f'"{self.endpoint}" must be host:port or http(s)://host:port')
                )
        if self.timeout <= timedelta(0):
            problems.append(("timeout", "must be > 0"))
        if self.tls.insecure_skip_verify:
            problems.append(
                ("tls::insecure_skip_verify", "is not supported by the gRPC exporter; set ca_file")
            )
        for name, value in self.headers.items():
            if not name or name != name.strip() or any(c in name for c in "\r\n:"):
                problems.append((f"headers::{name}", "is not a valid metadata key"))
            elif "\r" in value or "\n" in value:
                problems.append((f"headers::{name}", "value must not contain a line break"))
        return problems

    def target(self) -> tuple[str, bool]:
        """The gRPC target and whether the channel uses TLS."""
        for scheme, secure in (("http://", False), ("https://", True)):
            if self.endpoint.startswith(scheme):
                return self.endpoint[len(scheme) :].rstrip("/"), secure
        return self.endpoint, not self.tls.insecure


class OTLPExporter:
    """Calls the signal's OTLP Export method with the payload as the serialized request."""

    def __init__(
        self, exporter_id: str, config: OTLPConfig, *, rng: random.Random | None = None
    ) -> None:
        self._id = exporter_id
        self._config = config
        self._retrier = Retrier(config.retry_on_failure, rng=rng)
        self._secrets = secret_values(config.headers)
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())
        self._grpc: Any = None
        self._channel: Any = None
        self._calls: dict[Signal, Any] = {}
        # Whether the channel has carried a call: an UNAVAILABLE after that is most likely a
        # connection the peer closed while the process was frozen.
        self._connected_once = False
        self._closed = False

    @property
    def id(self) -> str:
        return self._id

    async def start(self) -> None:
        if self._channel is not None or self._closed:
            return
        # Imported here: grpc is a noticeable part of a cold start.
        import grpc

        config = self._config
        target, secure = config.target()
        retry = config.retry_on_failure
        # The channel's own reconnect pace follows the retry settings; its default (1s, then
        # growing to 2 minutes) would keep refusing calls long after a backend came back.
        initial_ms = max(1, int(retry.initial_interval.total_seconds() * 1000))
        max_ms = max(initial_ms, int(retry.max_interval.total_seconds() * 1000))
        options: list[tuple[str, Any]] = [
            ("grpc.primary_user_agent", USER_AGENT),
            ("grpc.initial_reconnect_backoff_ms", initial_ms),
            ("grpc.min_reconnect_backoff_ms", initial_ms),
            ("grpc.max_reconnect_backoff_ms", max_ms),
        ]
        if config.authority:
            options.append(("grpc.default_authority", config.authority))
        compression = grpc.Compression.Gzip if config.compression == "gzip" else None
        if secure:
            pem = read_pem_files(config.tls, f"exporters::{self._id}")
            credentials = grpc.ssl_channel_credentials(
                root_certificates=pem.ca, private_key=pem.key, certificate_chain=pem.cert
            )
            if config.tls.server_name_override:
                options.append(("grpc.ssl_target_name_override", config.tls.server_name_override))
            channel = grpc.aio.secure_channel(target, credentials, options, compression)
        else:
            channel = grpc.aio.insecure_channel(target, options, compression)
        self._grpc = grpc
        self._channel = channel
        # No (de)serializers: the payload already is a serialized request, sent as it is.
        self._calls = {signal: channel.unary_unary(method) for signal, method in _METHODS.items()}

    async def shutdown(self) -> None:
        self._closed = True
        self._retrier.close()
        channel, self._channel = self._channel, None
        self._calls = {}
        if channel is not None:
            await channel.close()

    async def export(self, payload: Payload, deadline: float) -> ExportResult:
        call = self._calls.get(payload.signal)
        if call is None:
            why = "shut down" if self._closed else "not started"
            return ExportResult(Outcome.RETRYABLE, error=f"{self._id}: exporter {why}")
        attempt = functools.partial(self._attempt, call, payload)
        result = await self._retrier.run(attempt, deadline)
        if result.error:
            return ExportResult(
                result.outcome,
                rejected=result.rejected,
                error=scrub_secrets(result.error, self._secrets),
                reason=result.reason,
            )
        return result

    async def _attempt(self, call: Any, payload: Payload, remaining: float) -> ExportResult:
        grpc = self._grpc
        signal = payload.signal
        where = f"{self._id}: {signal.value} to {self._config.target()[0]}"
        timeout = min(self._config.timeout.total_seconds(), remaining)
        try:
            response_bytes = await call(payload.data, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            return self._failed(exc, where, timeout)
        except grpc.aio.UsageError as exc:  # the channel was closed by shutdown()
            raise ExportError(f"{where}: exporter shut down") from exc
        except asyncio.CancelledError:
            # Closing the channel cancels its calls; only a cancellation of this task itself
            # must travel on.
            task = asyncio.current_task()
            if not self._closed or (task is not None and task.cancelling()):
                raise
            raise ExportError(f"{where}: exporter shut down") from None
        self._connected_once = True
        response = signal.response_type()
        try:
            response.ParseFromString(response_bytes)
        except Exception:  # the backend took the data; an unreadable answer changes nothing
            return ExportResult.success()
        partial = partial_success_from_message(signal, response)
        error = ""
        if partial.rejected or partial.message:
            error = (
                f"{where}: backend rejected {partial.rejected} {signal.item_name}: "
                f"{partial.message or 'no reason given'}"
            )
        return ExportResult.success(partial.rejected, error)

    def _failed(self, exc: Any, where: str, timeout: float) -> ExportResult:
        """The result for a failed call, or raises ExportError when it may be retried."""
        code = exc.code()
        name: str = code.name
        details = " ".join(str(exc.details() or "").split())
        retry_delay = _retry_delay(exc.trailing_metadata())
        if name == "DEADLINE_EXCEEDED" and details in ("", "Deadline Exceeded"):
            details = f"no answer within {timeout:.3g}s"
        text = f"{where}: grpc {name}" + (f": {details}" if details else "")
        if name == "UNAVAILABLE" and self._connected_once and retry_delay is None:
            self._connected_once = False
            raise StaleConnectionError(text)
        if is_retryable_grpc(name, retry_delay):
            raise ExportError(text, retry_after=retry_delay)
        return ExportResult(Outcome.PERMANENT, error=text, reason=f"grpc {name}")


def _retry_delay(metadata: Any) -> float | None:
    """The RetryInfo delay from the grpc-status-details-bin trailer, if any."""
    if not metadata:
        return None
    for key, value in metadata:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return decode_status(value).retry_delay
            except ValueError:
                return None
    return None


FACTORY = ComponentFactory(
    TYPE_NAME, Kind.EXPORTER, OTLPConfig, lambda config, context: OTLPExporter(context.id, config)
)
