"""The exporters' retry policy: which answers are worth retrying, backoff with jitter, and the
loop that retries one export inside its deadline and stops at once when the exporter shuts down.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from collector._component import ExportResult, Outcome
from collector.errors import ExportError

# OTLP/HTTP: the status codes the spec calls retryable; every other non-2xx is permanent.
RETRYABLE_HTTP_STATUS = frozenset({429, 502, 503, 504})

# OTLP/gRPC: the status codes the spec calls retryable (by grpc.StatusCode name, so this
# module does not import grpc).
RETRYABLE_GRPC_CODES = frozenset(
    {"CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"}
)
# Retryable only when the server says when to come back (a RetryInfo detail); without one the
# spec treats it as permanent.
RETRYABLE_WITH_RETRY_INFO_GRPC_CODES = frozenset({"RESOURCE_EXHAUSTED"})


def is_retryable_http(status: int) -> bool:
    return status in RETRYABLE_HTTP_STATUS


def is_retryable_grpc(code_name: str, retry_delay: float | None) -> bool:
    if code_name in RETRYABLE_GRPC_CODES:
        return True
    return code_name in RETRYABLE_WITH_RETRY_INFO_GRPC_CODES and retry_delay is not None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (`now` is
    epoch seconds). None when absent or unreadable, so the caller falls back to backoff."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT; a date without a zone is read the same way.
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, kw_only=True)
class RetryConfig:
    """`retry_on_failure`: how one export retries a retryable failure.

    The defaults differ from the OpenTelemetry Collector's (initial 5s, max 30s), which would
    never retry inside a drain of one or two seconds: here the first retry comes after about
    100ms and waits grow to at most 1s. Explicit values are honoured. Every wait is also cut
    by the drain's deadline, so a retry that cannot happen before it is not waited for.
    """

    enabled: bool = True
    # Wait before the first retry.
    initial_interval: timedelta = timedelta(milliseconds=100)
    # Upper bound of the wait between two attempts (before jitter).
    max_interval: timedelta = timedelta(seconds=1)
    # Stop retrying one export after this long; 0 = only the deadline bounds it.
    max_elapsed_time: timedelta = timedelta(seconds=300)
    # Each wait is the previous one times this.
    multiplier: float = 1.5
    # Each wait is drawn from [w * (1 - f), w * (1 + f)].
    randomization_factor: float = 0.5

    def validate(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.initial_interval <= timedelta(0):
            problems.append(("initial_interval", "must be > 0"))
        if self.max_interval < self.initial_interval:
            problems.append(("max_interval", "must be >= initial_interval"))
        if self.max_elapsed_time < timedelta(0):
            problems.append(("max_elapsed_time", "must be >= 0 (0 = no limit)"))
        if not math.isfinite(self.multiplier) or self.multiplier < 1:
            problems.append(("multiplier", "must be >= 1"))
        if not 0 <= self.randomization_factor <= 1:
            problems.append(("randomization_factor", "must be between 0 and 1"))
        return problems


class Backoff:
    """The waits between attempts: exponential, capped, each with jitter from `rng`."""

    def __init__(self, config: RetryConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._interval = config.initial_interval.total_seconds()

    def next_delay(self) -> float:
        interval = self._interval
        spread = interval * self._config.randomization_factor
        delay = self._rng.uniform(interval - spread, interval + spread)
        self._interval = min(
            interval * self._config.multiplier, self._config.max_interval.total_seconds()
        )
        return delay


class StaleConnectionError(ExportError):
    """A pooled connection turned out to be closed by the peer (typically while the process
    was frozen); one immediate retry on a fresh connection is expected to succeed."""


Sleep = Callable[[float], Awaitable[bool]]
Attempt = Callable[[float], Awaitable[ExportResult]]


class Retrier:
    """Runs attempts of one export until one succeeds or fails for good, the deadline or
    max_elapsed_time leaves no room for another, or close() is called.

    An attempt gets the seconds left before the deadline and returns a SUCCESS or PERMANENT
    result, or raises ExportError for a retryable failure (with retry_after when the server
    said when to come back, which then replaces the backoff wait).
    """

    def __init__(
        self,
        config: RetryConfig,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self._config = config
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._sleep = sleep if sleep is not None else self._interruptible_sleep
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Ends every backoff wait now; later runs return RETRYABLE without an attempt."""
        self._closed.set()

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    async def _interruptible_sleep(self, seconds: float) -> bool:
        """Waits `seconds`; True when close() cut the wait short."""
        try:
            async with asyncio.timeout(seconds):
                await self._closed.wait()
        except TimeoutError:
            return False
        return True

    async def run(self, attempt: Attempt, deadline: float) -> ExportResult:
        start = self._now()
        backoff = Backoff(self._config, self._rng)
        max_elapsed = self._config.max_elapsed_time.total_seconds()
        stale_retried = False
        attempts = 0
        last_error = ""
        while True:
            if self.closed:
                return _retryable(last_error, "exporter shut down", attempts)
            remaining = deadline - self._now()
            if remaining <= 0:
                return _retryable(last_error, "deadline reached", attempts)
            attempts += 1
            try:
                return await attempt(remaining)
            except StaleConnectionError as exc:
                last_error = str(exc)
                if not stale_retried:
                    stale_retried = True
                    continue
                delay_hint = exc.retry_after
            except ExportError as exc:
                # An attempt the deadline cut short says less than the backend's own answer
                # before it: keep that one too.
                if last_error and self._now() >= deadline:
                    last_error = f"{last_error}; then {exc}"
                else:
                    last_error = str(exc)
                delay_hint = exc.retry_after
            if self.closed:
                return _retryable(last_error, "exporter shut down", attempts)
            if not self._config.enabled:
                return _retryable(last_error, "retry_on_failure disabled", attempts)
            delay = delay_hint if delay_hint is not None else backoff.next_delay()
            now = self._now()
            if max_elapsed > 0 and now + delay - start > max_elapsed:
                return _retryable(last_error, "max_elapsed_time reached", attempts)
            if now + delay >= deadline:
                return _retryable(last_error, "deadline reached", attempts)
            if await self._sleep(delay):
                return _retryable(last_error, "exporter shut down", attempts)


def _retryable(last_error: str, why: str, attempts: int) -> ExportResult:
    noun = "attempt" if attempts == 1 else "attempts"
    if not last_error:
        return ExportResult(Outcome.RETRYABLE, error=f"not sent: {why}")
    return ExportResult(Outcome.RETRYABLE, error=f"{last_error} ({why} after {attempts} {noun})")
