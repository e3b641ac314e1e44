"""The `otlphttp` exporter: OTLP/HTTP (protobuf or JSON, gzip) to a backend over one pooled
aiohttp session, made at the first export, retrying inside the drain's deadline.
"""

from __future__ import annotations

import functools
import gzip
import random
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from collector._component import ComponentFactory, ExportResult, Kind, Outcome
from collector._signals import Payload, Signal
from collector.errors import ExportError
from collector.exporters._response import (
    error_body_message,
    parse_partial_success,
    scrub_secrets,
    secret_values,
)
from collector.exporters._retry import (
    Retrier,
    RetryConfig,
    StaleConnectionError,
    is_retryable_http,
    parse_retry_after,
)
from collector.exporters._tls import TLSConfig, ssl_context

if TYPE_CHECKING:
    import aiohttp

TYPE_NAME = "otlphttp"
USER_AGENT = "afterflush-collector/0.1"
# Idle pooled connections are kept this long: long enough to span the gaps between the
# invocations of a busy function, so a drain rarely pays for a new TLS handshake. A peer that
# closed the connection first is handled by the one immediate retry on a fresh connection.
KEEPALIVE_SECONDS = 60.0
# Level 1: on 200 SDK spans it compressed 36 KB to 11.0 KB in a third of the CPU time of
# level 6 (10.6 KB); post-invoke CPU is billed and scarce at small memory sizes.
GZIP_LEVEL = 1
# Error and success bodies are short; reading more would only cost memory.
MAX_RESPONSE_BYTES = 64 * 1024
_IGNORED_TUNING = "aiohttp's connection pool is used with settings fit for one exporter"
_QUEUE_IGNORED = "flushcontrol holds the data between drains"


@dataclass(frozen=True, kw_only=True)
class OTLPHTTPConfig:
    """`exporters: otlphttp`: the Collector's otlphttpexporter keys."""

    # Base URL, e.g. https://api.honeycomb.io; /v1/traces etc. are appended per signal.
    endpoint: str = ""
    # Full URLs used as they are, instead of endpoint + /v1/<signal>.
    traces_endpoint: str = ""
    metrics_endpoint: str = ""
    logs_endpoint: str = ""
    # Sent with every request (API keys go here); never logged.
    headers: dict[str, str] = field(default_factory=dict, metadata={"secret": True})
    tls: TLSConfig = field(default_factory=TLSConfig)
    # Request body compression; "" and "none" send it as it is.
    compression: Literal["gzip", "none", ""] = "gzip"
    # Bound of one attempt (the drain's deadline may cut it shorter); must be > 0.
    timeout: timedelta = timedelta(seconds=30)
    encoding: Literal["proto", "json"] = "proto"
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)
    # Any mapping; typed Any because its content is never read.
    sending_queue: Any = field(default=None, metadata={"ignored": _QUEUE_IGNORED})
    read_buffer_size: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})
    write_buffer_size: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})
    max_idle_conns: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})
    max_idle_conns_per_host: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})
    max_conns_per_host: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})
    idle_conn_timeout: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})
    disable_keep_alives: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})
    http2_read_idle_timeout: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})
    http2_ping_timeout: Any = field(default=None, metadata={"ignored": _IGNORED_TUNING})

    def validate(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        keys = ("endpoint", "traces_endpoint", "metrics_endpoint", "logs_endpoint")
        for key in keys:
            url = getattr(self, key)
            if url and not _is_http_url(url):
                problems.append((key, f'"{url}" must be an http:// or https:// URL'))
        if not any(getattr(self, key) for key in keys):
            problems.append(
                ("endpoint", "must be set (or traces_endpoint, metrics_endpoint, logs_endpoint)")
            )
        if self.timeout <= timedelta(0):
            problems.append(("timeout", "must be > 0"))
        problems += header_problems(self.headers)
        return problems

    def url(self, signal: Signal) -> str:
        """Where `signal` goes; "" when neither its own nor the base endpoint is set."""
        explicit: str = getattr(self, f"{signal.value}_endpoint")
        if explicit:
            return explicit
        if not self.endpoint:
            return ""
        base = self.endpoint
        path = signal.http_path
        return base + path[1:] if base.endswith("/") else base + path


def header_problems(headers: dict[str, str]) -> list[tuple[str, str]]:
    """Header names and values that cannot go on the wire; values are never echoed."""
    problems: list[tuple[str, str]] = []
    for name, value in headers.items():
        if not name or any(c in name for c in " \t\r\n:"):
            problems.append((f"headers::{name}", "is not a valid header name"))
        elif "\r" in value or "\n" in value:
            problems.append((f"headers::{name}", "value must not contain a line break"))
    return problems


def _is_http_url(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _display_url(url: str) -> str:
    """The URL without user info or query, fit for a log line."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class OTLPHTTPExporter:
    """Sends each payload as one POST to its signal's URL."""

    def __init__(
        self, exporter_id: str, config: OTLPHTTPConfig, *, rng: random.Random | None = None
    ) -> None:
        self._id = exporter_id
        self._config = config
        self._retrier = Retrier(config.retry_on_failure, rng=rng)
        self._secrets = secret_values(config.headers)
        self._session: aiohttp.ClientSession | None = None
        self._aiohttp: Any = None
        # True: aiohttp's default verification; a context only when TLS settings apply.
        self._tls: Any = True
        self._started = False
        self._closed = False

    @property
    def id(self) -> str:
        return self._id

    async def start(self) -> None:
        if self._started or self._closed:
            return
        # Built here so that unreadable TLS files fail the start, not the first drain.
        if any(self._config.url(s).startswith("https:") for s in Signal):
            self._tls = ssl_context(self._config.tls, f"exporters::{self._id}")
        self._started = True

    def _client(self) -> aiohttp.ClientSession:
        """The pooled session, made at the first export: importing aiohttp takes ~140 ms,
        which the first drain (after the response) pays instead of the cold start."""
        if self._session is None:
            import aiohttp

            self._aiohttp = aiohttp
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._tls, keepalive_timeout=KEEPALIVE_SECONDS),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def shutdown(self) -> None:
        self._closed = True
        self._retrier.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def export(self, payload: Payload, deadline: float) -> ExportResult:
        if self._closed or not self._started:
            why = "shut down" if self._closed else "not started"
            return ExportResult(Outcome.RETRYABLE, error=f"{self._id}: exporter {why}")
        url = self._config.url(payload.signal)
        if not url:
            return ExportResult(
                Outcome.PERMANENT,
                error=f"{self._id}: no endpoint configured for {payload.signal.value}",
                reason="no endpoint",
            )
        try:
            body, content_type = self._encode(payload)
        except ValueError as exc:
            return ExportResult(
                Outcome.PERMANENT, error=f"{self._id}: cannot encode: {exc}", reason="encoding"
            )
        headers = dict(self._config.headers)
        headers["Content-Type"] = content_type
        if self._config.compression == "gzip":
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            headers["Content-Encoding"] = "gzip"
        session = self._client()
        attempt = functools.partial(self._attempt, session, url, body, headers, payload.signal)
        result = await self._retrier.run(attempt, deadline)
        if result.error:
            return ExportResult(
                result.outcome,
                rejected=result.rejected,
                error=scrub_secrets(result.error, self._secrets),
                reason=result.reason,
            )
        return result

    def _encode(self, payload: Payload) -> tuple[bytes, str]:
        if self._config.encoding == "proto":
            return payload.data, "application/x-protobuf"
        from collector import _otlpjson

        try:
            message = payload.signal.decode(payload.data)
        except Exception as exc:  # protobuf's DecodeError; the receiver checked it already
            raise ValueError(f"invalid protobuf payload: {exc}") from exc
        return _otlpjson.encode(payload.signal, message).encode(), "application/json"

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        url: str,
        body: bytes,
        headers: dict[str, str],
        signal: Signal,
        remaining: float,
    ) -> ExportResult:
        aiohttp = self._aiohttp
        where = f"{self._id}: POST {_display_url(url)}"
        timeout = min(self._config.timeout.total_seconds(), remaining)
        server_hostname = self._config.tls.server_name_override or None
        try:
            async with session.post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
                server_hostname=server_hostname,
            ) as response:
                status = response.status
                response_body = await response.content.read(MAX_RESPONSE_BYTES)
                response_type = response.headers.get("Content-Type", "")
                retry_after_header = response.headers.get("Retry-After")
        except TimeoutError as exc:
            raise ExportError(f"{where}: no answer within {timeout:.3g}s") from exc
        except aiohttp.ClientConnectorError as exc:
            raise ExportError(f"{where}: cannot connect: {_reason(exc)}") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise StaleConnectionError(f"{where}: connection lost: {_reason(exc)}") from exc
        except aiohttp.ClientError as exc:
            raise ExportError(f"{where}: {type(exc).__name__}: {_reason(exc)}") from exc
        if 200 <= status < 300:
            partial = parse_partial_success(
                signal, response_body, json_body=response_type.startswith("application/json")
            )
            error = ""
            if partial.rejected or partial.message:
                error = (
                    f"{where}: backend rejected {partial.rejected} {signal.item_name}: "
                    f"{partial.message or 'no reason given'}"
                )
            return ExportResult.success(partial.rejected, error)
        message = error_body_message(response_body, response_type)
        text = f"{where}: http {status}" + (f": {message}" if message else "")
        if is_retryable_http(status):
            raise ExportError(text, retry_after=parse_retry_after(retry_after_header, time.time()))
        return ExportResult(Outcome.PERMANENT, error=text, reason=f"http {status}")


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


FACTORY = ComponentFactory(
    TYPE_NAME,
    Kind.EXPORTER,
    OTLPHTTPConfig,
    lambda config, context: OTLPHTTPExporter(context.id, config),
)
